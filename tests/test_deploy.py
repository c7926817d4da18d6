"""Heroku deployment: Procfile, app.json, pinned Python, and the `web` process run for real."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from bot.core.db import POSTGRES_MAX_OVERFLOW, POSTGRES_POOL_SIZE
from bot.core.settings import SETTING_NAMES, load_settings
from tests.conftest import BRIXO_KEY, REPO, Env
from tests.fakes import FakeBrixo, FakeSlackAPI, SlackSender
from tests.fakes import slack_requests as sr
from tests.procs import Proc, start_bot
from tests.slack_harness import BOT_TOKEN, SIGNING_SECRET
from tests.waiting import wait_until

HEROKU_SECRETS_REQUIRED = {"SLACK_SIGNING_SECRET", "BRIXO_API_KEY"}


# --- helpers shared with the other deployment tests ------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_example_names() -> list[str]:
    """The variable names `.env.example` lists (fails clearly when the file is missing)."""
    path = REPO / ".env.example"
    if not path.exists():
        pytest.fail(".env.example is missing at the repository root (the lead adds it)")
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*(?:export\s+)?([A-Z][A-Z0-9_]*)\s*=", line)
        if match:
            names.append(match.group(1))
    assert names, ".env.example lists no variables"
    return names


def seed_reply(slack: FakeSlackAPI, channel: str, message_id: str, team: str = "T1") -> str:
    """A reply in `channel` carrying brixo_message metadata for `message_id`; returns its ts."""
    ts = slack.next_ts()
    slack.add_message(
        channel,
        ts,
        text="an assistant reply",
        bot_id="BOTHER",
        team=team,
        metadata={"event_type": "brixo_message", "event_payload": {"message_id": message_id}},
    )
    return ts


def click(
    sender: SlackSender,
    channel: str,
    ts: str,
    value: str = "up",
    user: str = "U1",
    team: str = "T1",
) -> requests.Response:
    """A signed 👍/👎 click on message `ts`."""
    payload = sr.block_action(
        user, team, channel, ts, sr.feedback_button_action(value), message_bot_id="BOTHER"
    )
    return sender.interaction(payload)


def relay_env(env: Env, slack: FakeSlackAPI, **overrides: str | None) -> dict[str, str]:
    """A child-process environment for a single-workspace relay talking to the fakes."""
    return env.process(
        SLACK_API_URL=slack.url,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        ASK_COMMENT="never",
        **overrides,
    )


def heroku_url(postgres_url: str) -> str:
    """The URL as Heroku Postgres gives it: `postgres://…`."""
    return "postgres://" + postgres_url.split("://", 1)[1]


# --- static files ------------------------------------------------------------------------------


def procfile() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text(encoding="utf-8").splitlines()
    entries = {}
    for line in lines:
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def test_procfile_declares_web_worker_and_discord() -> None:
    assert procfile() == {
        "web": "python -m bot serve",
        "worker": "python -m bot socket",
        "discord": "python -m bot discord",
    }


def load_app_json() -> dict[str, Any]:
    doc = json.loads((REPO / "app.json").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def test_app_json_describes_the_deploy_button() -> None:
    doc = load_app_json()
    assert doc["name"] and doc["description"] and doc["keywords"]
    assert doc["repository"].startswith("https://")
    assert {"url": "heroku/python"} in doc["buildpacks"]
    assert doc["formation"]["web"] == {"quantity": 1, "size": "basic"}
    plans = [a["plan"] if isinstance(a, dict) else a for a in doc["addons"]]
    assert any(p.split(":")[0] == "heroku-postgresql" for p in plans), plans


def test_app_json_lists_every_setting_with_a_description() -> None:
    env = load_app_json()["env"]
    expected = set(SETTING_NAMES) | set(env_example_names())
    assert sorted(expected - set(env)) == [], "settings missing from app.json"
    assert sorted(set(env) - expected) == [], "app.json lists unknown settings"
    for name, spec in env.items():
        assert len(spec.get("description", "")) > 10, f"{name}: no description"
    required = {name for name, spec in env.items() if spec.get("required", True)}
    assert required == HEROKU_SECRETS_REQUIRED
    assert "OAuth" in env["SLACK_BOT_TOKEN"]["description"]
    # No generator: one OAuth setting alone stops the relay (all three or none).
    assert not any("generator" in spec for spec in env.values())


def test_app_json_defaults_are_valid_settings() -> None:
    values = {n: s["value"] for n, s in load_app_json()["env"].items() if "value" in s}
    assert values, "app.json gives no default value"
    defaults = load_settings({}, dotenv=None)
    settings = load_settings(values, dotenv=None)
    for name in values:
        field = name.lower()
        assert getattr(settings, field) == getattr(defaults, field), f"{name}: not the default"


def test_the_deploy_button_leaves_room_on_the_smallest_postgres_plan() -> None:
    """Every web worker may hold its pool; `heroku run python -m bot check` needs one more."""
    doc = load_app_json()
    processes = doc["formation"]["web"]["quantity"] * int(doc["env"]["WEB_CONCURRENCY"]["value"])
    per_process = POSTGRES_POOL_SIZE + POSTGRES_MAX_OVERFLOW
    assert "heroku-postgresql:essential-0" in [a["plan"] for a in doc["addons"]]
    assert processes * per_process + 1 <= 20  # essential-0's connection limit


def pinned_python() -> tuple[int, int]:
    """The Python version `.python-version` pins (Heroku's runtime)."""
    pinned = (REPO / ".python-version").read_text(encoding="utf-8").strip()
    assert re.fullmatch(r"3\.\d+", pinned), pinned
    major, minor = pinned.split(".")
    return int(major), int(minor)


def test_python_version_is_pinned_and_matches_pyproject() -> None:
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    low = re.search(r">=\s*3\.(\d+)", requires)
    assert low and pinned_python()[1] >= int(low.group(1))


def test_the_suite_runs_on_the_pinned_python() -> None:
    """CI tests what Heroku runs; on a laptop, any Python that pyproject allows will do."""
    if sys.version_info[:2] != pinned_python() and os.environ.get("CI") != "true":
        pytest.skip(f"Python {sys.version_info[0]}.{sys.version_info[1]}, not the pinned one")
    assert sys.version_info[:2] == pinned_python()


def test_heroku_python_buildpack_finds_a_package_manager_file() -> None:
    """The buildpack installs from requirements.txt / uv.lock / poetry.lock, not pyproject alone."""
    lockfiles = [REPO / n for n in ("uv.lock", "poetry.lock", "Pipfile.lock")]
    if any(p.exists() for p in lockfiles):
        return
    path = REPO / "requirements.txt"
    assert path.exists(), (
        "Heroku's Python buildpack needs requirements.txt (or a lock file) at the root; "
        "add one containing `.[discord]` so it installs this project from pyproject.toml"
    )
    lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
    assert any(re.fullmatch(r"(-e\s+|--editable\s+)?\.(\[[\w,]+\])?", ln) for ln in lines), lines


# --- the `web` process run by a Procfile runner ------------------------------------------------


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A folder holding a copy of the Procfile and an empty env file (no developer .env)."""
    folder = tmp_path / "app"
    folder.mkdir()
    shutil.copy(REPO / "Procfile", folder / "Procfile")
    (folder / "empty.env").write_text("")
    return folder


def start_procfile(process: str, run_dir: Path, environ: dict[str, str], port: int) -> Proc:
    """`honcho start PROCESS` from the Procfile copy, with PORT set."""
    argv = [
        str(Path(sys.executable).with_name("honcho")),
        "-f", str(run_dir / "Procfile"),
        "-d", str(run_dir),
        "-e", str(run_dir / "empty.env"),
        "start", "--no-colour", "-p", str(port), process,
    ]  # fmt: skip
    return Proc(argv, {**environ, "PORT": str(port)}, run_dir)


@pytest.mark.parametrize("database", ["sqlite", "heroku-postgres"])
def test_procfile_web_serves_health_and_slack(
    database: str,
    request: pytest.FixtureRequest,
    env: Env,
    brixo: FakeBrixo,
    fake_slack: FakeSlackAPI,
    run_dir: Path,
) -> None:
    pg_url = str(request.getfixturevalue("postgres_url")) if database != "sqlite" else ""
    overrides = {"DATABASE_URL": heroku_url(pg_url)} if pg_url else {}
    port = free_port()
    proc = start_procfile("web", run_dir, relay_env(env, fake_slack, **overrides), port)
    try:
        base = f"http://127.0.0.1:{port}"
        health = proc.wait_healthy(f"{base}/healthz", timeout=30).json()
        assert health["database"] == "ok" and health["ok"] is True
        assert re.search(rf"Listening at: http://0\.0\.0\.0:{port}\b", proc.stdout), proc.stdout
        sender = SlackSender(base, SIGNING_SECRET)
        answer = sender.url_verification("challenge-42")
        assert answer.status_code == 200 and "challenge-42" in answer.text
        forged = SlackSender(base, "not-the-signing-secret").url_verification("x")
        assert forged.status_code == 401
        ts = seed_reply(fake_slack, "C1", "msg-heroku")
        assert click(sender, "C1", ts).status_code == 200
        got = brixo.wait_for_accepted(1, timeout=15)[0]
        assert got.id == "msg-heroku" and got.headers.get("authorization") == f"Bearer {BRIXO_KEY}"
        if pg_url:
            with psycopg.connect(pg_url) as conn:

                def delivered() -> bool:
                    row = conn.execute("SELECT state FROM brixo_acts").fetchone()
                    conn.commit()
                    return bool(row and row[0] == "delivered")

                wait_until(delivered, timeout=10, message="act not delivered in PostgreSQL")
        proc.terminate()  # honcho passes SIGTERM on to the process group, as Heroku does
        proc.wait(timeout=30)
        assert "Shutting down: Master" in proc.stdout, proc.describe()
        assert "Traceback" not in proc.stdout, proc.describe()
    finally:
        if proc.returncode is None:  # honcho stops its processes on SIGTERM; SIGKILL orphans them
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        proc.stop()


def test_serve_asks_slack_nothing_to_authorize_a_vote(
    env: Env, brixo: FakeBrixo, fake_slack: FakeSlackAPI, tmp_path: Path
) -> None:
    """The token is checked once before serving; every worker's first vote is then acked
    from that answer, so Slack faltering at auth.test costs no vote (Bolt's default asks
    during the first request and answers 200 "please reinstall")."""
    port = free_port()
    environ = relay_env(env, fake_slack, WEB_CONCURRENCY="2", PORT=str(port))
    proc = start_bot("serve", env=environ, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        proc.wait_healthy(f"{base}/healthz", timeout=30)
        assert len(fake_slack.calls_to("auth.test")) == 1
        fake_slack.fail_next("auth.test", 100, status=503, retry_after=None)
        sender = SlackSender(base, SIGNING_SECRET)
        targets = [f"msg-first-{n}" for n in range(6)]  # enough for both workers
        for target in targets:
            assert click(sender, "C1", seed_reply(fake_slack, "C1", target)).status_code == 200
        accepted = brixo.wait_for_accepted(len(targets), timeout=15)
        assert sorted(r.id for r in accepted) == sorted(targets)
        assert len(fake_slack.calls_to("auth.test")) == 1
    finally:
        proc.stop()


def test_serve_takes_an_empty_web_concurrency_as_unset(
    env: Env, fake_slack: FakeSlackAPI, tmp_path: Path
) -> None:
    """`WEB_CONCURRENCY=` (compose's `${WEB_CONCURRENCY}` with nothing set) means one worker,
    as for every setting, though gunicorn reads the variable with int() itself."""
    port = free_port()
    environ = relay_env(env, fake_slack, WEB_CONCURRENCY="", PORT=str(port))
    proc = start_bot("serve", env=environ, cwd=tmp_path)
    try:
        proc.wait_healthy(f"http://127.0.0.1:{port}/healthz", timeout=30)
        proc.terminate()
        proc.wait(timeout=30)
        logged = proc.stdout + proc.stderr
        assert logged.count("Booting worker") == 1, proc.describe()
        assert "Traceback" not in logged, proc.describe()
    finally:
        proc.stop()


def test_serve_warns_at_start_of_the_scopes_the_token_lacks(
    env: Env, fake_slack: FakeSlackAPI, tmp_path: Path
) -> None:
    """It serves (what it can), and says at once what `check` would: no vote has to fail
    first for the missing scope to show."""
    fake_slack.scopes = [s for s in fake_slack.scopes if s not in ("users:read", "reactions:write")]
    port = free_port()
    proc = start_bot("serve", env=relay_env(env, fake_slack, PORT=str(port)), cwd=tmp_path)
    try:
        proc.wait_healthy(f"http://127.0.0.1:{port}/healthz", timeout=30)
        line = proc.wait_for_line("lacks scopes", stream="stderr", timeout=10)
        assert "the Slack token lacks scopes: reactions:write, users:read; reinstall" in line, line
    finally:
        proc.stop()
