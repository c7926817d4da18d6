"""`python -m bot …` as a user runs it: send, outbox, check, --help, and bad settings."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import main
from bot.slack.server import check_port
from tests.conftest import BRIXO_KEY, REPO, Env
from tests.discord_fakes import FakeDiscordAPI
from tests.fakes import FakeBrixo
from tests.procs import run_bot, start_python

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound by nobody who listens: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# -- --help ----------------------------------------------------------------------------


def test_top_level_help_as_a_process(env: Env, tmp_path: Path) -> None:
    result = run_bot("--help", env=env.process(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "socket", "manifest", "check", "send", "outbox"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["serve"],
        ["socket"],
        ["discord"],
        ["manifest"],
        ["check"],
        ["send"],
        ["outbox"],
        ["outbox", "list"],
        ["outbox", "retry"],
        ["outbox", "purge"],
    ],
)
def test_help_for_every_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: brixo-relay " + " ".join(argv))
    assert len(out.splitlines()) > 2


# -- send ------------------------------------------------------------------------------


def test_settings_from_dotenv_with_the_environment_winning(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        f"BRIXO_API_URL={brixo.url}\nBRIXO_API_KEY=stale-key-from-dotenv\n", encoding="utf-8"
    )
    # Key in the environment wins over the stale one in .env; the URL comes from .env.
    process_env = env.process(BRIXO_API_URL=None)
    result = run_bot("send", "--message", "m1", "--value", "up", env=process_env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Without it in the environment, .env's key is used (and refused).
    result = run_bot(
        "send",
        "--message",
        "m2",
        "--value",
        "up",
        env=env.process(BRIXO_API_URL=None, BRIXO_API_KEY=None),
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "401" in result.stdout
    assert [r.id for r in brixo.accepted] == ["m1"]


# -- bad settings ----------------------------------------------------------------------


@pytest.mark.parametrize("command", [["check"], ["send", "--message", "m", "--value", "up"]])
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DELIVERY_MAX_AGE", "banana"),
        ("PORT", "99999"),
        ("DATABASE_URL", "mysql://x"),
        ("SEED_REACTIONS", "maybe"),
    ],
)
def test_bad_setting_gives_one_line_and_exit_2(
    env: Env, brixo: FakeBrixo, tmp_path: Path, command: list[str], name: str, value: str
) -> None:
    result = run_bot(*command, env=env.process(**{name: value}), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {name}: expected"), lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert brixo.requests == []


def test_bad_setting_in_dotenv_is_reported_too(env: Env, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("NOT_FOUND_GRACE=soon\n", encoding="utf-8")
    result = run_bot("check", env=env.process(), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: NOT_FOUND_GRACE: expected")


def test_discord_without_its_extra_names_the_extra_in_one_line(env: Env, tmp_path: Path) -> None:
    """Without discord.py (the `discord` extra), `discord` stops with status 2 and one line
    that says what to install, not that DISCORD_TOKEN, which is fine, is wrong."""
    blocked = tmp_path / "without-discord"
    (blocked / "discord").mkdir(parents=True)
    (blocked / "discord" / "__init__.py").write_text("raise ImportError('no discord.py')\n")
    environ = env.process(DISCORD_TOKEN="discord-token")
    environ["PYTHONPATH"] = f"{blocked}{os.pathsep}{environ['PYTHONPATH']}"
    result = run_bot("discord", env=environ, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: the Discord adapter needs the 'discord' extra: make run MODE=discord, "
        "or pip install '.[discord]' in the relay's folder"
    ]


# -- check -----------------------------------------------------------------------------


def check_lines(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)


def test_check_reports_database_and_brixo_and_sends_no_signal(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    result = run_bot("check", env=env.process(), cwd=tmp_path)
    lines = check_lines(result.stdout)
    assert lines["database"].startswith("ok (SQLite"), result.stdout
    assert lines["brixo"].startswith("ok"), result.stdout
    assert result.returncode != 0  # no Slack token here, so the Slack line fails
    assert brixo.accepted == []
    assert all(r.status != 204 for r in brixo.requests)
    assert BRIXO_KEY not in result.stdout + result.stderr


def test_check_with_a_refused_key(env: Env, brixo: FakeBrixo, tmp_path: Path) -> None:
    wrong = "wrong-key-0123456789"
    result = run_bot("check", env=env.process(BRIXO_API_KEY=wrong), cwd=tmp_path)
    lines = check_lines(result.stdout)
    assert lines["database"].startswith("ok"), result.stdout
    assert lines["brixo"].startswith("unauthorized"), result.stdout
    assert result.returncode == 1
    assert wrong not in result.stdout + result.stderr
    assert brixo.accepted == []


def test_check_with_brixo_unreachable(env: Env, tmp_path: Path, closed_port: int) -> None:
    result = run_bot(
        "check", env=env.process(BRIXO_API_URL=f"http://127.0.0.1:{closed_port}"), cwd=tmp_path
    )
    assert check_lines(result.stdout)["brixo"].startswith("unreachable"), result.stdout
    assert result.returncode == 1


def test_check_with_heroku_postgres(
    env: Env, brixo: FakeBrixo, tmp_path: Path, postgres_url: str
) -> None:
    heroku = postgres_url.replace("postgresql://", "postgres://", 1)
    result = run_bot("check", env=env.process(DATABASE_URL=heroku), cwd=tmp_path)
    lines = check_lines(result.stdout)
    assert lines["database"].startswith("ok (PostgreSQL"), result.stdout
    assert lines["brixo"].startswith("ok"), result.stdout
    assert brixo.accepted == []


def test_check_with_an_unreachable_database(
    env: Env, brixo: FakeBrixo, tmp_path: Path, closed_port: int
) -> None:
    result = run_bot(
        "check",
        env=env.process(DATABASE_URL=f"postgresql://u:secretpw@127.0.0.1:{closed_port}/x"),
        cwd=tmp_path,
    )
    lines = check_lines(result.stdout)
    assert lines["database"].startswith("cannot connect"), result.stdout
    assert result.returncode == 1
    assert "secretpw" not in result.stdout


def test_manifest_refuses_a_url_for_socket_mode(tmp_path: Path) -> None:
    env = Env({}).process()
    result = run_bot("manifest", "--socket", "--url", "https://x.example", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "error: --url: a Socket Mode manifest has no URLs; leave --url out"
    )


def test_manifest_needs_no_settings(tmp_path: Path) -> None:
    """`manifest` works with no settings at all (and even with bad ones)."""
    env = Env({"DELIVERY_MAX_AGE": "banana"}).process()
    result = run_bot("manifest", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), dict)
    # What it prints is, byte for byte, the manifest the repository holds.
    assert result.stdout == (REPO / "manifests" / "manifest.http.json").read_text("utf-8")


def test_manifest_with_a_url_slack_cannot_send_to_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A plain-http --url is a bad argument: one line naming --url, exit 2, no manifest."""
    env = Env({}).process()
    result = run_bot("manifest", "--url", "http://relay.example", env=env, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    [line] = result.stderr.splitlines()
    assert line.startswith("error: --url: expected the relay's public https:// base URL"), line


DISCORD_AT = """
import sys

import discord.http

discord.http.Route.BASE = sys.argv[1]  # where discord.py finds Discord's REST API
from bot.cli import main

sys.exit(main(["discord"]))
"""


@pytest.fixture
def hanging_up_port() -> Iterator[int]:
    """A port whose server accepts each connection and closes it before any answer."""
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.parametrize("discord_is", ["unreachable", "down", "hanging_up"])
def test_discord_failing_at_start_is_a_log_line_not_a_traceback(
    discord_is: str, env: Env, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """As a Slack it can't reach stops serve and socket with one line, a Discord it can't reach
    (DNS, a firewall: a closed port), answering 503 (DiscordServerError) or closing the
    connection unanswered (aiohttp's ServerDisconnectedError, no OSError) stops `discord` with
    one log line and status 1: no 80-line traceback, and under LOG_FORMAT=json still one JSON
    object a line."""
    environ = env.process(DISCORD_TOKEN="discord-token", LOG_FORMAT="json")
    with FakeDiscordAPI() as discord_api:
        discord_api.fail("GET /users/@me", 503)
        base = discord_api.api_base
        if discord_is != "down":
            fixture = "closed_port" if discord_is == "unreachable" else "hanging_up_port"
            base = f"http://127.0.0.1:{request.getfixturevalue(fixture)}/api/v10"
        proc = start_python(DISCORD_AT, base, env=environ, cwd=tmp_path)
        try:
            assert proc.wait(timeout=30) == 1, proc.describe()
        finally:
            proc.stop()
    entries = [json.loads(line) for line in proc.stderr_lines if line.strip()]
    errors = [e["message"] for e in entries if e["level"] == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("Discord unreachable"), entries
    assert not any("exception" in e for e in entries), entries  # no traceback either


def test_serve_on_a_port_in_use_says_so_in_one_line(
    env: Env, tmp_path: Path, closed_port: int
) -> None:
    """Another process listens on PORT: one line and exit 2, before asking Slack anything
    (gunicorn alone would retry for 5 s with a dozen lines)."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        environ = env.process(
            PORT=str(port),
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_SIGNING_SECRET="secret",
            SLACK_API_URL=f"http://127.0.0.1:{closed_port}/api/",  # never reached
        )
        result = run_bot("serve", env=environ, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: PORT: expected a port to listen on, got {port} (in use by another process)"
    ]


def test_a_port_whose_last_connections_linger_closing_is_free_to_serve_on() -> None:
    """A relay restarted at once: connections its predecessor closed (TIME_WAIT) hold the port
    but don't stop gunicorn binding it, so PORT is not called in use."""
    with socket.socket() as old:
        old.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        old.bind(("0.0.0.0", 0))
        old.listen()
        port = old.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        served, _ = old.accept()
    with client, served:
        served.close()  # the server closes first: its end lingers on the port
        assert client.recv(1) == b""
        client.close()
        check_port(port)
