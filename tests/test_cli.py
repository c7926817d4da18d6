"""`python -m bot …` as a user runs it: send, outbox, check, --help, and bad settings."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from time import time

import pytest
from sqlalchemy import update

from bot.cli import main
from bot.core.acts import Act, Target
from bot.core.db import Database, acts
from bot.core.outbox import DEAD, DELIVERED, PENDING, Outbox
from tests.conftest import BRIXO_KEY, Env
from tests.fakes import FakeBrixo
from tests.procs import run_bot

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


def test_send_message_up_prints_the_answer_and_exits_0(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    before = time()
    result = run_bot(
        "send", "--message", "msg_1042", "--value", "up", env=env.process(), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "delivered: HTTP 204"
    (request,) = brixo.requests
    assert request.raw_path == "/v1/messages/msg_1042/signals"
    assert request.headers["Content-Type"] == "application/vnd.api+json"
    assert request.headers["Authorization"] == f"Bearer {BRIXO_KEY}"
    attrs = request.attributes
    assert set(attrs) == {"name", "value", "occurred_at"}
    assert (attrs["name"], attrs["value"]) == ("feedback", "thumbs_up")
    assert attrs["occurred_at"].endswith("Z")
    from datetime import datetime

    sent_at = datetime.fromisoformat(attrs["occurred_at"].replace("Z", "+00:00")).timestamp()
    assert before - 1 <= sent_at <= time() + 1


def test_send_conversation_down_with_comment_and_odd_id(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    odd = "conv/ä b?c#d%e"
    result = run_bot(
        "send",
        "--conversation",
        odd,
        "--value",
        "down",
        "--comment",
        "  Très lent 🐢  ",
        env=env.process(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (request,) = brixo.accepted
    assert request.kind == "conversations" and request.id == odd
    assert request.attributes["value"] == "thumbs_down"
    assert request.attributes["user_message"] == "Très lent 🐢"


def test_send_not_found_prints_brixos_detail_and_exits_1(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    brixo.mark_missing("nope")
    result = run_bot("send", "--message", "nope", "--value", "up", env=env.process(), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.strip() == "not_found: HTTP 404: Message 'nope' not found"
    assert brixo.accepted == []


def test_send_with_a_refused_key_exits_1_without_showing_it(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    wrong = "wrong-key-0123456789"
    result = run_bot(
        "send",
        "--message",
        "m",
        "--value",
        "up",
        env=env.process(BRIXO_API_KEY=wrong, LOG_LEVEL="debug"),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "unauthorized: HTTP 401" in result.stdout
    assert wrong not in result.stdout + result.stderr


def test_send_when_brixo_is_down_exits_1(env: Env, tmp_path: Path, closed_port: int) -> None:
    result = run_bot(
        "send",
        "--message",
        "m",
        "--value",
        "up",
        env=env.process(BRIXO_API_URL=f"http://127.0.0.1:{closed_port}"),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stdout.startswith("retry: no answer")
    assert BRIXO_KEY not in result.stdout + result.stderr


def test_send_never_logs_the_key(env: Env, brixo: FakeBrixo, tmp_path: Path) -> None:
    result = run_bot(
        "send", "--message", "m", "--value", "up", env=env.process(LOG_LEVEL="debug"), cwd=tmp_path
    )
    assert result.returncode == 0
    assert BRIXO_KEY not in result.stdout + result.stderr


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


def test_send_without_a_key_is_a_settings_error(env: Env, tmp_path: Path) -> None:
    result = run_bot(
        "send", "--message", "m", "--value", "up", env=env.process(BRIXO_API_KEY=None), cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: BRIXO_API_KEY: required")


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


# -- outbox ----------------------------------------------------------------------------


def seed(database_url: str, rows: list[tuple[str, str, str | None]]) -> list[int]:
    """Acts in the given (target, state, last_error), written straight into the store."""
    from bot.core.settings import parse_database_url

    database = Database(parse_database_url("DATABASE_URL", database_url))
    database.migrate(time())
    outbox = Outbox(database)
    ids = []
    for n, (target, state, error) in enumerate(rows):
        act = Act("slack", "T1", f"U{n}", "button", Target("message", target), "thumbs_up", time())
        act_id = outbox.record(act, time()).act_id
        assert act_id is not None
        with database.write() as conn:
            conn.execute(
                update(acts).where(acts.c.id == act_id).values(state=state, last_error=error)
            )
        ids.append(act_id)
    database.dispose()
    return ids


def states(database_url: str) -> dict[str, str]:
    from bot.core.settings import parse_database_url

    database = Database(parse_database_url("DATABASE_URL", database_url))
    with database.read() as conn:
        found = {r.target_id: r.state for r in conn.execute(acts.select())}
    database.dispose()
    return found


def test_outbox_list_empty(env: Env, tmp_path: Path) -> None:
    result = run_bot("outbox", env=env.process(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "outbox empty" in result.stdout


def test_outbox_list_shows_pending_and_dead_with_last_error(env: Env, tmp_path: Path) -> None:
    url = env()["DATABASE_URL"]
    ids = seed(
        url,
        [
            ("waiting", PENDING, "HTTP 503: busy"),
            ("broken", DEAD, "HTTP 400: occurred_at is not a valid RFC3339 timestamp"),
            ("done", DELIVERED, None),
        ],
    )
    result = run_bot("outbox", "list", env=env.process(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split("\t")[:2] == ["ID", "STATE"]
    body = {line.split("\t")[0]: line for line in lines[1:]}
    assert set(body) == {str(ids[0]), str(ids[1])}  # delivered ones are not listed
    assert "pending" in body[str(ids[0])] and "message:waiting" in body[str(ids[0])]
    assert body[str(ids[0])].endswith("HTTP 503: busy")
    assert "dead" in body[str(ids[1])]
    assert body[str(ids[1])].endswith("HTTP 400: occurred_at is not a valid RFC3339 timestamp")
    dead_only = run_bot("outbox", "list", "--dead", env=env.process(), cwd=tmp_path)
    assert [line.split("\t")[0] for line in dead_only.stdout.splitlines()[1:]] == [str(ids[1])]


def test_outbox_retry_all_and_given_ids(env: Env, tmp_path: Path) -> None:
    url = env()["DATABASE_URL"]
    ids = seed(url, [("d1", DEAD, "x"), ("d2", DEAD, "x"), ("d3", DEAD, "x"), ("p", PENDING, None)])
    one = run_bot("outbox", "retry", str(ids[1]), env=env.process(), cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == "1 dead letter(s) put back in line"
    assert states(url) == {"d1": DEAD, "d2": PENDING, "d3": DEAD, "p": PENDING}
    missing = run_bot("outbox", "retry", "9999", env=env.process(), cwd=tmp_path)
    assert missing.returncode == 1 and missing.stdout.startswith("0 dead letter(s)")
    rest = run_bot("outbox", "retry", env=env.process(), cwd=tmp_path)
    assert rest.returncode == 0 and rest.stdout.startswith("2 dead letter(s)")
    assert set(states(url).values()) == {PENDING}


def test_outbox_retried_dead_letter_is_delivered(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    """A retried dead letter really goes out again (through a worker on the same store)."""
    from bot.core.relay import Relay

    url = env()["DATABASE_URL"]
    (dead_id,) = seed(url, [("was-dead", DEAD, "HTTP 404: not found")])
    assert run_bot("outbox", "retry", env=env.process(), cwd=tmp_path).returncode == 0
    relay = Relay(env.settings())
    relay.start()
    try:
        brixo.wait_for_accepted(1, timeout=10)
    finally:
        relay.stop(timeout=2)
        relay.db.dispose()
    assert [r.id for r in brixo.accepted] == ["was-dead"]
    assert dead_id


def test_outbox_purge(env: Env, tmp_path: Path) -> None:
    url = env()["DATABASE_URL"]
    seed(
        url,
        [("a", DELIVERED, None), ("b", DELIVERED, None), ("c", DEAD, "x"), ("d", PENDING, None)],
    )
    result = run_bot("outbox", "purge", env=env.process(), cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "2 signal(s) deleted"
    assert states(url) == {"c": DEAD, "d": PENDING}
    result = run_bot("outbox", "purge", "--dead", env=env.process(), cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "1 signal(s) deleted"
    assert states(url) == {"d": PENDING}


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


def test_manifest_needs_no_settings(tmp_path: Path) -> None:
    """`manifest` works with no settings at all (and even with bad ones)."""
    env = Env({"DELIVERY_MAX_AGE": "banana"}).process()
    result = run_bot("manifest", env=env, cwd=tmp_path)
    if result.returncode != 0 and "ModuleNotFoundError" in result.stderr:
        pytest.skip("bot.slack.manifest is not written yet")
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), dict)
