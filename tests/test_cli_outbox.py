"""`python -m bot send` and `python -m bot outbox …` as a user runs them, against FakeBrixo.

Each command runs as a child process on a real SQLite file (or PostgreSQL, where a running
relay shares the database); the store is seeded and inspected through bot.core directly.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from time import monotonic, time
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, select, update

from bot.cli import main
from bot.commands.outbox import retry as retry_now
from bot.core.acts import Act, Target
from bot.core.db import Database, acts
from bot.core.outbox import AWAITING_COMMENT, DEAD, DELIVERED, PENDING, Claimed, Outbox
from bot.core.settings import parse_database_url
from tests.conftest import BRIXO_KEY, Env
from tests.fakes import FakeBrixo
from tests.pg import database_params
from tests.procs import Proc, run_bot, start_bot
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

RELAY_WOULD_RETRY = "failed (not delivered; the relay would retry this, send does not): "


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound by nobody who listens: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def send(
    env: Env, tmp_path: Path, *args: str, **overrides: str | None
) -> subprocess.CompletedProcess[str]:
    """`python -m bot send ARGS` to completion."""
    return run_bot("send", *args, env=env.process(**overrides), cwd=tmp_path)


# -- send ------------------------------------------------------------------------------


def test_send_message_up_prints_the_answer_and_exits_0(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    before = time()
    result = send(env, tmp_path, "--message", "msg_1042", "--value", "up")
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
    sent_at = datetime.fromisoformat(attrs["occurred_at"].replace("Z", "+00:00")).timestamp()
    assert before - 1 <= sent_at <= time() + 1


def test_send_conversation_down_with_comment_and_odd_id(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    odd = "conv/ä b?c#d%e"
    result = send(
        env, tmp_path, "--conversation", odd, "--value", "down", "--comment", "  Très lent 🐢  "
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    (request,) = brixo.accepted
    assert request.kind == "conversations" and request.id == odd
    assert request.attributes["value"] == "thumbs_down"
    assert request.attributes["user_message"] == "Très lent 🐢"


def test_send_not_found_prints_brixos_detail_and_exits_1(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    brixo.mark_missing("nope")
    result = send(env, tmp_path, "--message", "nope", "--value", "up")
    assert result.returncode == 1
    assert result.stdout.startswith("failed (Brixo doesn't know this ID, or not yet")
    assert result.stdout.strip().endswith("): HTTP 404: Message 'nope' not found")
    assert brixo.accepted == []


def test_send_with_a_refused_key_exits_1_without_showing_it(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    wrong = "wrong-key-0123456789"
    result = send(
        env, tmp_path, "--message", "m", "--value", "up", BRIXO_API_KEY=wrong, LOG_LEVEL="debug"
    )
    assert result.returncode == 1
    assert result.stdout.strip() == "failed (Brixo refused the API key): HTTP 401: Invalid API key"
    assert wrong not in result.stdout + result.stderr


def test_send_when_brixo_is_down_exits_1(env: Env, tmp_path: Path, closed_port: int) -> None:
    result = send(
        env,
        tmp_path,
        "--message",
        "m",
        "--value",
        "up",
        BRIXO_API_URL=f"http://127.0.0.1:{closed_port}",
    )
    assert result.returncode == 1
    assert result.stdout.startswith(RELAY_WOULD_RETRY + "no answer")
    assert len(result.stdout.splitlines()) == 1
    assert BRIXO_KEY not in result.stdout + result.stderr


def test_send_says_an_unanswered_signal_may_have_reached_brixo(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    """Sent, then the connection dropped (or timed out) with no answer: Brixo may have the
    signal, so the line doesn't say "not delivered" and warns that sending again may count
    it twice."""
    brixo.drop_next(1)
    result = send(env, tmp_path, "--message", "m", "--value", "up")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "failed (sent, but Brixo didn't answer: it may have the signal, and sending it again "
        "may count it twice; the relay would retry this, send does not): "
        "no answer: ConnectionError: connection dropped"
    ]
    assert len(brixo.requests) == 1


def test_send_says_a_server_error_is_not_retried(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    brixo.fail_next(1, 500, detail="boom")
    result = send(env, tmp_path, "--message", "m", "--value", "up")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [RELAY_WOULD_RETRY + "HTTP 500: boom"]
    assert [r.status for r in brixo.requests] == [500]  # send tries once


def test_send_honours_and_stores_the_relays_429_hold(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    """A 429's Retry-After holds back every request to Brixo: `send`'s own 429 holds the relays
    on its database, and `send` asks nothing while a hold is in force."""
    database = Database(parse_database_url("DATABASE_URL", env()["DATABASE_URL"]))
    database.migrate(time())
    brixo.fail_next(1, status=429, retry_after="300")
    result = send(env, tmp_path, "--message", "m", "--value", "up")
    assert result.returncode == 1
    assert result.stdout.endswith(
        "; every relay on this database now holds its sends for 300 s (Retry-After)\n"
    ), result.stdout
    assert 290 < Outbox(database).held_until() - time() <= 300
    result = send(env, tmp_path, "--message", "m", "--value", "up")
    database.dispose()
    assert result.returncode == 1
    assert re.fullmatch(
        r"not sent: Brixo asked to wait \(Retry-After\); try again in (2\d\d|300) s\n",
        result.stdout,
    ), result.stdout
    assert [r.status for r in brixo.requests] == [429]


def test_send_needs_no_database(env: Env, brixo: FakeBrixo, tmp_path: Path) -> None:
    """Without the relay's database (none yet, none reachable, or one that never answers),
    `send` sends, leaves no SQLite file behind, and says when a stored hold couldn't be read;
    a server that doesn't answer holds it 2 s, not the URL's `connect_timeout`."""
    missing = tmp_path / "nowhere.db"
    result = send(
        env, tmp_path, "--message", "m", "--value", "up", DATABASE_URL=f"sqlite:///{missing}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert not missing.exists()
    with socket.socket() as silent:  # connections queue, nobody answers them
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        for n, url in enumerate(
            [
                "postgresql://u@127.0.0.1:1/relay",
                f"postgresql://u@127.0.0.1:{port}/relay?connect_timeout=60",
            ]
        ):
            started = monotonic()
            result = send(env, tmp_path, "--message", f"m{n}", "--value", "up", DATABASE_URL=url)
            assert result.returncode == 0, result.stdout + result.stderr
            assert monotonic() - started < 20  # not the URL's 60 s
            assert result.stderr.startswith("note: the relays' database can't be read"), result
    assert [r.id for r in brixo.accepted] == ["m", "m0", "m1"]


def test_a_429_to_send_without_a_database_holds_no_relay(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    """No database: no relay to hold, so the line doesn't say any is held."""
    brixo.fail_next(1, status=429, retry_after="300")
    missing = tmp_path / "nowhere.db"
    result = send(
        env, tmp_path, "--message", "m", "--value", "up", DATABASE_URL=f"sqlite:///{missing}"
    )
    assert result.returncode == 1
    assert result.stdout.startswith("failed (not delivered; the relay would retry this")
    assert "holds its sends" not in result.stdout and not missing.exists()


def test_ctrl_c_on_outbox_retry_is_one_line(env: Env, brixo: FakeBrixo, tmp_path: Path) -> None:
    """Ctrl-C on any command that runs and ends: `interrupted`, exit 130, no traceback (the
    act it held goes back to the relays when its lease lapses)."""
    url = env()["DATABASE_URL"]
    seed(url, [("held", DEAD, "x")])
    proc = start_stalled_retry(env, brixo, tmp_path, url)
    try:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        proc.stop()
    assert proc.stderr.strip() == "interrupted", proc.describe()


def test_send_never_logs_the_key(env: Env, brixo: FakeBrixo, tmp_path: Path) -> None:
    result = send(env, tmp_path, "--message", "m", "--value", "up", LOG_LEVEL="debug")
    assert result.returncode == 0
    assert BRIXO_KEY not in result.stdout + result.stderr


def test_send_without_a_key_is_a_settings_error(env: Env, tmp_path: Path) -> None:
    result = send(env, tmp_path, "--message", "m", "--value", "up", BRIXO_API_KEY=None)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: BRIXO_API_KEY: required")


@pytest.mark.parametrize("option", ["--message", "--conversation"])
def test_send_with_an_id_that_is_not_utf8_gives_one_line_and_exit_2(
    env: Env, brixo: FakeBrixo, tmp_path: Path, option: str
) -> None:
    raw = os.fsdecode(b"msg-\xff")  # how Python hands over argv bytes that aren't UTF-8
    result = send(env, tmp_path, option, raw, "--value", "up")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {option}: not valid UTF-8"]
    assert result.stdout == ""
    assert brixo.requests == []


@pytest.mark.parametrize("blank", ["", " ", "\t \u3000"])
def test_send_with_a_blank_id_says_it_is_blank(
    env: Env, brixo: FakeBrixo, tmp_path: Path, blank: str
) -> None:
    """IDs are text of 1 to 1024 characters, not only blanks: one of blanks isn't called empty
    (it isn't), nor a string of the wrong length."""
    result = send(env, tmp_path, "--conversation", blank, "--value", "up")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: --conversation: target ID is empty or blank"]
    assert brixo.requests == []


def test_send_with_a_comment_that_is_not_utf8_gives_one_line_and_exit_2(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    raw = os.fsdecode(b"merci \xe9")  # Latin-1 bytes on the command line
    result = send(env, tmp_path, "--message", "m", "--value", "up", "--comment", raw)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: --comment: not valid UTF-8"]
    assert brixo.requests == []


def test_send_says_when_a_long_comment_is_cut(env: Env, brixo: FakeBrixo, tmp_path: Path) -> None:
    result = send(env, tmp_path, "--message", "m", "--value", "down", "--comment", "x" * 3001)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["note: comment cut to 3000 characters"]
    assert brixo.accepted[0].attributes["user_message"] == "x" * 3000
    exact = send(env, tmp_path, "--message", "m", "--value", "up", "--comment", "y" * 3000)
    assert exact.returncode == 0 and exact.stderr == ""
    # What is removed anyway (control characters, blanks around it) is no cut.
    padded = "\a" * 20 + "z" * 2990 + " " * 20
    clean = send(env, tmp_path, "--message", "m2", "--value", "up", "--comment", padded)
    assert clean.returncode == 0 and clean.stderr == ""
    assert brixo.accepted[-1].attributes["user_message"] == "z" * 2990


def test_send_too_large_with_a_comment_is_sent_once_more_with_it_cut(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    brixo.max_body_bytes = 1500
    comment = "é" * 2000  # 4000 bytes in UTF-8; cut to 500 characters, 1000
    result = send(env, tmp_path, "--message", "m", "--value", "down", "--comment", comment)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "delivered: HTTP 204 (comment cut to 500 characters after HTTP 413)"
    ]
    assert [r.status for r in brixo.requests] == [413, 204]
    assert brixo.accepted[0].attributes["user_message"] == comment[:500]


def test_send_too_large_twice_or_without_a_comment_fails(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    brixo.fail_next(2, 413, detail="Request body too large")
    result = send(env, tmp_path, "--message", "m", "--value", "down", "--comment", "c" * 1000)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "failed (too large for Brixo): HTTP 413: Request body too large"
        " (comment cut to 500 characters after HTTP 413)"
    ]
    assert len(brixo.requests) == 2
    # A short comment is cut to half; without a comment the same body isn't sent again.
    brixo.clear()
    brixo.fail_next(1, 413, detail="Request body too large")
    short = send(env, tmp_path, "--message", "m", "--value", "down", "--comment", "short!")
    assert short.stdout.splitlines() == [
        "delivered: HTTP 204 (comment cut to 3 characters after HTTP 413)"
    ]
    assert brixo.accepted[-1].attributes["user_message"] == "sho"
    brixo.clear()
    brixo.fail_next(1, 413, detail="Request body too large")
    plain = send(env, tmp_path, "--message", "m", "--value", "down")
    assert plain.returncode == 1
    assert plain.stdout.splitlines() == [
        "failed (too large for Brixo): HTTP 413: Request body too large"
    ]
    assert len(brixo.requests) == 1


# -- the store, seeded and read directly ---------------------------------------------------


def open_store(database_url: str) -> Database:
    database = Database(parse_database_url("DATABASE_URL", database_url))
    database.migrate(time())
    return database


def seed(
    database_url: str, rows: list[tuple[str, str, str | None]], comment: str = ""
) -> list[int]:
    """Acts in the given (target, state, last_error), written straight into the store."""
    database = open_store(database_url)
    outbox = Outbox(database)
    ids = []
    for n, (target, state, error) in enumerate(rows):
        act = Act(
            "slack",
            "T1",
            f"U{n}",
            "button",
            Target("message", target),
            "thumbs_up",
            time(),
            comment,
        )
        act_id = outbox.record(act, time()).act_id
        assert act_id is not None
        with database.write() as conn:
            conn.execute(
                update(acts).where(acts.c.id == act_id).values(state=state, last_error=error)
            )
        ids.append(act_id)
    database.dispose()
    return ids


def stored(database_url: str) -> dict[str, Any]:
    """Every act's row, by target ID."""
    database = open_store(database_url)
    with database.read() as conn:
        found = {r.target_id: r for r in conn.execute(select(acts))}
    database.dispose()
    return found


def states(database_url: str) -> dict[str, str]:
    return {target: row.state for target, row in stored(database_url).items()}


# -- outbox list -----------------------------------------------------------------------


def test_outbox_list_empty(env: Env, tmp_path: Path) -> None:
    Database(parse_database_url("DATABASE_URL", env()["DATABASE_URL"])).migrate(time())
    result = run_bot("outbox", env=env.process(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "outbox empty" in result.stdout


def test_outbox_list_dead_with_only_pending_acts_says_no_dead_letters(
    env: Env, tmp_path: Path
) -> None:
    """`--dead` lists dead letters only: with none, it says so, not that nothing is pending."""
    seed(env()["DATABASE_URL"], [("waiting", PENDING, "HTTP 503: busy")])
    result = run_bot("outbox", "list", "--dead", env=env.process(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["no dead letters"]


def test_outbox_commands_in_a_folder_without_the_database_create_none(
    env: Env, tmp_path: Path
) -> None:
    """The default DATABASE_URL is a file in the working folder: run elsewhere, the commands
    say there is no database there instead of creating an empty one."""
    path = tmp_path / "brixo-relay.db"
    environ = env.process(DATABASE_URL=None)
    for action in (["list"], ["purge"], ["retry"]):
        result = run_bot("outbox", *action, env=environ, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (
            result.stdout
            == f"no database at {path} (DATABASE_URL): nothing pending, no dead letters\n"
        )
    result = run_bot("outbox", "retry", "7", "3", env=environ, cwd=tmp_path)
    assert result.returncode == 1
    unknown = ["no dead letter with ID 3", "no dead letter with ID 7"]
    assert result.stdout.splitlines()[1:] == unknown
    assert not path.exists()


@pytest.mark.parametrize("database_url", database_params(), indirect=True)
def test_outbox_commands_on_a_database_no_relay_used_leave_it_untouched(
    env: Env, tmp_path: Path, database_url: str
) -> None:
    """A DATABASE_URL naming some other database (a typo, an empty file): the commands say it
    has no relay tables, and create none there."""
    if database_url.startswith("sqlite"):
        Path(database_url.removeprefix("sqlite:///")).touch()
    environ = env.process(DATABASE_URL=database_url)
    for action in (["list"], ["purge", "--dead"], ["retry"]):
        result = run_bot("outbox", *action, env=environ, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("no relay tables in the database at "), result.stdout
        assert result.stdout.endswith(" (DATABASE_URL): nothing pending, no dead letters\n")
    result = run_bot("outbox", "retry", "5", env=environ, cwd=tmp_path)
    assert result.returncode == 1 and result.stdout.splitlines()[1] == "no dead letter with ID 5"
    engine = create_engine(parse_database_url("DATABASE_URL", database_url))
    assert inspect(engine).get_table_names() == []
    engine.dispose()


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


def test_outbox_list_escapes_control_characters_in_fields(env: Env, tmp_path: Path) -> None:
    url = env()["DATABASE_URL"]
    (act_id,) = seed(url, [("a\tb\nc\x1bd", DEAD, "HTTP 400: bad\tvalue\r\nC:\\x \u2028end")])
    result = run_bot("outbox", "list", env=env.process(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, line = result.stdout.split("\n")[:-1]  # exactly one row after the header
    fields = line.split("\t")
    assert len(fields) == len(header.split("\t")) == 8
    assert fields[0] == str(act_id)
    assert fields[3] == "message:a\\tb\\nc\\x1bd"
    assert fields[7] == "HTTP 400: bad\\tvalue\\r\\nC:\\\\x \\u2028end"


def test_outbox_list_tells_a_backslash_in_a_field_from_an_escape(env: Env, tmp_path: Path) -> None:
    """A printable ID or error holding a backslash (`m\\n1`, `C:\\dir`) is listed with it
    doubled, so it never reads as an escaped line break or tab."""
    url = env()["DATABASE_URL"]
    seed(url, [("m\\n1", DEAD, "HTTP 400: C:\\dir\\tmp")])
    result = run_bot("outbox", "list", env=env.process(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    fields = result.stdout.split("\n")[1].split("\t")
    assert fields[3] == "message:m\\\\n1"
    assert fields[7] == "HTTP 400: C:\\\\dir\\\\tmp"


def test_outbox_list_limit_says_how_many_more_there_are(env: Env, tmp_path: Path) -> None:
    seed(env()["DATABASE_URL"], [("a", PENDING, None), ("b", PENDING, None), ("c", DEAD, "x")])
    result = run_bot("outbox", "list", "--limit", "1", env=env.process(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3  # header, one row, and what's left
    assert lines[2] == "… and 2 more not shown: --limit 3 shows them (dead letters alone: --dead)"
    every = run_bot("outbox", "list", "--limit", "3", env=env.process(), cwd=tmp_path)
    assert len(every.stdout.splitlines()) == 4 and "more" not in every.stdout


def test_outbox_list_shows_acts_waiting_for_their_comment(env: Env, tmp_path: Path) -> None:
    """An act waiting for its comment is a signal still to be sent: listed as such, not hidden
    (and counted in what a --limit leaves out)."""
    url = env()["DATABASE_URL"]
    waiting, dead = seed(url, [("asked", AWAITING_COMMENT, None), ("broken", DEAD, "HTTP 400")])
    result = run_bot("outbox", "list", env=env.process(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    body = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()[1:]}
    assert set(body) == {str(waiting), str(dead)}
    assert body[str(waiting)][1:4] == [AWAITING_COMMENT, "T1", "message:asked"]
    first = run_bot("outbox", "list", "--limit", "1", env=env.process(), cwd=tmp_path)
    assert first.stdout.splitlines()[-1].startswith("… and 1 more not shown: --limit 2")


@pytest.mark.parametrize("database_url", database_params(), indirect=True)
@pytest.mark.parametrize("limit", ["0", "-1", "ten", "1.5"])
def test_outbox_list_limit_takes_only_positive_numbers(
    env: Env, tmp_path: Path, database_url: str, limit: str
) -> None:
    seed(database_url, [("a", PENDING, None)])
    result = run_bot(
        "outbox", "list", "--limit", limit, env=env.process(DATABASE_URL=database_url), cwd=tmp_path
    )
    assert result.returncode == 2
    assert "argument --limit: expected a positive whole number" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# -- outbox retry ----------------------------------------------------------------------


def retry(
    env: Env, tmp_path: Path, *ids: int | str, **overrides: str | None
) -> subprocess.CompletedProcess[str]:
    """`python -m bot outbox retry IDS` to completion."""
    return run_bot("outbox", "retry", *map(str, ids), env=env.process(**overrides), cwd=tmp_path)


def test_outbox_retry_sends_the_given_dead_letters_then_all_at_once(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    """No relay runs: `outbox retry` delivers by itself and says so, one line per act."""
    url = env()["DATABASE_URL"]
    ids = seed(url, [("d1", DEAD, "x"), ("d2", DEAD, "x"), ("d3", DEAD, "x"), ("p", PENDING, None)])
    one = retry(env, tmp_path, ids[1])
    assert one.returncode == 0, one.stdout + one.stderr
    assert one.stdout.splitlines() == [f"act {ids[1]}: delivered: HTTP 204"]
    assert states(url) == {"d1": DEAD, "d2": DELIVERED, "d3": DEAD, "p": PENDING}
    rest = retry(env, tmp_path)
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert rest.stdout.splitlines() == [
        f"act {ids[0]}: delivered: HTTP 204",
        f"act {ids[2]}: delivered: HTTP 204",
    ]
    assert states(url) == {"d1": DELIVERED, "d2": DELIVERED, "d3": DELIVERED, "p": PENDING}
    assert [r.id for r in brixo.accepted] == ["d2", "d1", "d3"]  # the pending one waits
    row = stored(url)["d1"]
    assert (row.attempts, row.last_error, row.lease_owner) == (1, None, None)
    nothing = retry(env, tmp_path)
    assert nothing.returncode == 0 and nothing.stdout.strip() == "no dead letters to retry"


def test_outbox_retry_reports_ids_that_are_no_dead_letters(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    url = env()["DATABASE_URL"]
    dead, done, waiting = seed(
        url, [("d", DEAD, "x"), ("ok", DELIVERED, None), ("p", PENDING, None)]
    )
    result = retry(env, tmp_path, 999, done, dead, waiting, dead)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"no dead letter with ID {done}: it is delivered",
        f"no dead letter with ID {waiting}: it is pending",
        "no dead letter with ID 999",
        f"act {dead}: delivered: HTTP 204",
    ]
    assert [r.id for r in brixo.accepted] == ["d"]
    assert states(url) == {"d": DELIVERED, "ok": DELIVERED, "p": PENDING}


def test_outbox_retry_of_an_act_a_relay_is_delivering_says_so(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    """A pending act leased to a running relay is on its way: named as such, not resent."""
    url = env()["DATABASE_URL"]
    (sending,) = seed(url, [("s", PENDING, None)])
    database = open_store(url)
    assert [a.id for a in Outbox(database).claim("relay-1", 10, 60.0, time())] == [sending]
    database.dispose()
    result = retry(env, tmp_path, sending)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"no dead letter with ID {sending}: a running relay is delivering it"
    ]
    assert brixo.requests == []


def test_outbox_retry_help_says_it_sends_now(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["outbox", "retry", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "send each once now from this process" in text
    assert "Exit 0 when every one was delivered, 1 otherwise" in text


@pytest.mark.parametrize("bad", ["0", "-3", "x"])
def test_outbox_retry_takes_only_positive_ids(env: Env, tmp_path: Path, bad: str) -> None:
    result = retry(env, tmp_path, bad)
    assert result.returncode == 2
    assert "argument ID: expected a positive whole number" in result.stderr


def test_outbox_retry_needs_the_brixo_key(env: Env, brixo: FakeBrixo, tmp_path: Path) -> None:
    url = env()["DATABASE_URL"]
    seed(url, [("d", DEAD, "x")])
    result = retry(env, tmp_path, BRIXO_API_KEY=None)
    assert result.returncode == 2
    assert result.stderr.startswith("error: BRIXO_API_KEY: required")
    assert states(url) == {"d": DEAD}


def test_outbox_retry_with_nothing_to_retry_needs_no_key(env: Env, tmp_path: Path) -> None:
    seed(env()["DATABASE_URL"], [("p", PENDING, None)])
    result = retry(env, tmp_path, BRIXO_API_KEY=None)
    assert (result.returncode, result.stdout.strip()) == (0, "no dead letters to retry")
    named = retry(env, tmp_path, 99, BRIXO_API_KEY=None)
    assert (named.returncode, named.stdout.strip()) == (1, "no dead letter with ID 99")


def test_outbox_retry_of_ids_that_are_no_dead_letters_leaves_the_others_alone(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    """Named IDs that are no dead letters, beside one that is: each named ID gets its line, and
    nothing claims there are no dead letters (there is one, not named); nothing is sent."""
    url = env()["DATABASE_URL"]
    _, done = seed(url, [("d", DEAD, "x"), ("ok", DELIVERED, None)])
    result = retry(env, tmp_path, done)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"no dead letter with ID {done}: it is delivered"]
    assert brixo.requests == []
    assert states(url) == {"d": DEAD, "ok": DELIVERED}


def test_outbox_retry_records_each_outcome_as_delivery_does(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    url = env()["DATABASE_URL"]
    names = ["throttled", "bad", "missing", "fine"]
    ids = dict(zip(names, seed(url, [(n, DEAD, "old error") for n in names]), strict=True))
    brixo.fail_next(1, 503, detail="slow down")
    brixo.fail_next(1, 400, detail="value must be one of")
    brixo.mark_missing("missing")
    before = time()
    result = retry(env, tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"act {ids['throttled']}: pending, for the relay to retry: HTTP 503: slow down",
        f"act {ids['bad']}: dead: HTTP 400: value must be one of",
        f"act {ids['missing']}: pending, for the relay to retry: "
        "HTTP 404: Message 'missing' not found",
        f"act {ids['fine']}: delivered: HTTP 204",
    ]
    rows = stored(url)
    throttled, bad, missing, fine = (rows[n] for n in names)
    assert (throttled.state, throttled.attempts, throttled.last_status) == (PENDING, 1, 503)
    assert throttled.next_attempt_at > before  # backoff, as the worker would wait
    assert throttled.created_at >= before  # a fresh delivery window
    assert (bad.state, bad.attempts, bad.last_error) == (DEAD, 1, "HTTP 400: value must be one of")
    assert bad.finished_at >= before
    assert (missing.state, missing.attempts) == (PENDING, 1)
    assert missing.not_found_since >= before and missing.next_attempt_at > missing.not_found_since
    assert (fine.state, fine.attempts, fine.last_error) == (DELIVERED, 1, None)
    assert {row.lease_owner for row in rows.values()} == {None}


def test_outbox_retry_of_many_dead_letters_renews_the_lease_only_as_it_runs_low(
    env: Env, brixo: FakeBrixo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renewal rewrites every act still taken: one before each act made retrying 100k dead
    letters quadratic (about 3 acts a second, hours in all, each renewal holding SQLite's
    write lock for a third of a second against a running relay's votes)."""
    url = env()["DATABASE_URL"]
    ids = seed(url, [(f"dead-{n}", DEAD, "old error") for n in range(40)])
    database = open_store(url)
    outbox = Outbox(database)
    renewals: list[float] = []
    renew = outbox.renew
    monkeypatch.setattr(outbox, "renew", lambda *args: renewals.append(time()) or renew(*args))
    try:
        assert retry_now(outbox, env.settings(), []) == 0
    finally:
        database.dispose()
    assert sorted(r.id for r in brixo.accepted) == sorted(f"dead-{n}" for n in range(40))
    assert len(renewals) <= 1, f"{len(renewals)} renewals for {len(ids)} acts sent in a second"


def test_a_long_outbox_retry_renews_its_lease_so_a_running_relay_claims_none_of_its_acts(
    env: Env, brixo: FakeBrixo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sends that outlast the lease together (each takes 0.6 of it, on a clock the test moves):
    `outbox retry` renews its lease as it runs low, so a relay claiming meanwhile gets none of
    the acts still waiting to be sent here, and sends none a second time."""
    import bot.commands.outbox as command

    url = env()["DATABASE_URL"]
    seed(url, [(f"slow-{n}", DEAD, "old error") for n in range(3)])
    database = open_store(url)
    outbox, relay = Outbox(database), Outbox(database)
    clock = [time()]
    leases: list[float] = []
    claims: list[list[int]] = []
    take_dead, deliver_once = outbox.take_dead, command.deliver_once

    def take(owner: str, lease: float, now: float, act_ids: Sequence[int] = ()) -> list[Claimed]:
        leases.append(lease)
        return take_dead(owner, lease, now, act_ids)

    def slow_send(*args: Any) -> Any:
        clock[0] += 0.6 * leases[0]
        claims.append([c.id for c in relay.claim("relay", 10, 60, clock[0])])
        return deliver_once(*args)

    monkeypatch.setattr(command, "time", lambda: clock[0])
    monkeypatch.setattr(command, "monotonic", lambda: clock[0])
    monkeypatch.setattr(command, "deliver_once", slow_send)
    monkeypatch.setattr(outbox, "take_dead", take)
    try:
        result = retry_now(outbox, env.settings(), [])
    finally:
        database.dispose()
    assert claims == [[], [], []]
    assert result == 0
    assert [r.id for r in brixo.accepted] == [f"slow-{n}" for n in range(3)]
    assert set(states(url).values()) == {DELIVERED}


def test_outbox_retry_holds_its_sends_and_every_relays_after_a_429(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    """A 429's Retry-After holds every request to Brixo: the rest go back in line, held, and
    the hold is stored for every relay on the database (and the next retry)."""
    url = env()["DATABASE_URL"]
    ids = seed(url, [(n, DEAD, "old error") for n in ("limited", "second", "third")])
    brixo.fail_next(1, 429, retry_after="120", detail="slow down")
    before = time()
    result = retry(env, tmp_path)
    assert result.returncode == 1
    first, held = result.stdout.splitlines()
    assert first == f"act {ids[0]}: pending, for the relay to retry: HTTP 429: slow down"
    assert re.fullmatch(
        r"sends held 1[12]\d s more \(Brixo answered 429 with Retry-After\): "
        r"2 act\(s\) back in line for the relay",
        held,
    )
    assert len(brixo.requests) == 1
    rows = stored(url)
    for name in ("second", "third"):
        assert (rows[name].state, rows[name].attempts, rows[name].lease_owner) == (
            PENDING,
            0,
            None,
        )
        assert rows[name].next_attempt_at >= before + 119
    assert Outbox(open_store(url)).held_until() >= before + 119  # for every relay
    # The next retry, still within it, sends nothing either.
    later = seed(url, [("fourth", DEAD, "old error")])
    again = retry(env, tmp_path, later[0])
    assert again.returncode == 1
    assert again.stdout.splitlines()[-1].endswith("1 act(s) back in line for the relay")
    assert len(brixo.requests) == 1


def test_outbox_retry_too_large_with_a_comment_sends_once_more_with_it_cut(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    url = env()["DATABASE_URL"]
    comment = "é" * 2000
    (act_id,) = seed(url, [("big", DEAD, "HTTP 413: too large")], comment=comment)
    brixo.max_body_bytes = 1500
    result = retry(env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"act {act_id}: delivered: HTTP 204 (comment cut to 500 characters after HTTP 413)"
    ]
    assert [r.status for r in brixo.requests] == [413, 204]
    assert brixo.accepted[0].attributes["user_message"] == comment[:500]
    row = stored(url)["big"]
    assert (row.state, row.attempts, row.comment_cut, row.comment) == (
        DELIVERED,
        2,
        True,
        comment,  # kept whole: it was cut as it was sent
    )


def test_a_dead_letters_comment_is_sent_whole_again_once_brixo_takes_it(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    """SPEC: a 413 with a comment is sent once more with it cut, then kept as a dead letter.
    The comment is kept whole: once Brixo takes larger bodies, `outbox retry` sends all of it
    (the cut one only after another 413), never a cut of the cut."""
    url = env()["DATABASE_URL"]
    comment = "word " * 400
    (act_id,) = seed(url, [("big", DEAD, "x")], comment=comment)
    brixo.fail_next(2, 413, detail="Request body too large")
    assert retry(env, tmp_path).returncode == 1  # 2,000 characters, then 500: dead
    brixo.fail_next(2, 413, detail="Request body too large")
    again = retry(env, tmp_path)
    assert again.stdout.startswith(f"act {act_id}: dead: HTTP 413"), again.stdout
    assert retry(env, tmp_path).returncode == 0  # Brixo takes it whole now
    sent = [len(r.attributes.get("user_message", "")) for r in brixo.requests]
    assert sent == [1999, 499, 1999, 499, 1999], sent  # cut to 500, then trimmed
    assert stored(url)["big"].comment == comment.strip()


# -- outbox retry beside a running relay ---------------------------------------------------


def start_stalled_retry(env: Env, brixo: FakeBrixo, tmp_path: Path, database_url: str) -> Proc:
    """`outbox retry` in the background, caught in its first send (Brixo holds the request)."""
    brixo.stall_next(1, seconds=50)
    proc = start_bot("outbox", "retry", env=env.process(DATABASE_URL=database_url), cwd=tmp_path)
    wait_until(lambda: brixo.pending_faults() == 0, timeout=20, message="no send arrived")
    return proc


@pytest.mark.parametrize("database_url", database_params(), indirect=True)
def test_outbox_retry_holds_its_acts_under_a_lease_a_relays_claim_skips(
    env: Env, brixo: FakeBrixo, tmp_path: Path, database_url: str
) -> None:
    first, second = seed(database_url, [("first", DEAD, "x"), ("second", DEAD, "x")])
    proc = start_stalled_retry(env, brixo, tmp_path, database_url)
    try:
        relay_db = open_store(database_url)
        assert Outbox(relay_db).claim("relay", 10, 15, time()) == []  # both held, not just one
        relay_db.dispose()
        rows = stored(database_url)
        assert {row.state for row in rows.values()} == {PENDING}
        assert {row.lease_owner[:4] for row in rows.values()} == {"cli-"}
        brixo.stop()  # the held request gets no answer; the next finds no server
        assert proc.wait(timeout=30) == 1, proc.describe()
    finally:
        proc.stop()
    lines = proc.stdout_lines
    assert [line.split(": ")[:2] for line in lines] == [
        [f"act {first}", "pending, for the relay to retry"],
        [f"act {second}", "pending, for the relay to retry"],
    ], proc.describe()
    assert all("no answer" in line for line in lines)
    rows = stored(database_url)
    assert {(row.state, row.attempts, row.lease_owner) for row in rows.values()} == {
        (PENDING, 1, None)
    }


@pytest.mark.parametrize("database_url", database_params(), indirect=True)
def test_outbox_retry_reports_an_act_a_running_relay_took_when_its_lease_lapsed(
    env: Env, brixo: FakeBrixo, tmp_path: Path, database_url: str
) -> None:
    (act_id,) = seed(database_url, [("contested", DEAD, "x")])
    proc = start_stalled_retry(env, brixo, tmp_path, database_url)
    try:
        relay_db = open_store(database_url)
        with relay_db.write() as conn:  # as if the send outlasted the lease
            conn.execute(update(acts).where(acts.c.id == act_id).values(lease_until=0.0))
        (taken,) = Outbox(relay_db).claim("relay", 10, 60, time())
        relay_db.dispose()
        assert taken.id == act_id
        brixo.stop()
        assert proc.wait(timeout=30) == 1, proc.describe()
    finally:
        proc.stop()
    (line,) = proc.stdout_lines
    assert line.startswith(f"act {act_id}: taken by a running relay meanwhile"), line
    row = stored(database_url)["contested"]
    assert (row.state, row.attempts, row.lease_owner) == (PENDING, 0, "relay")  # not overwritten


@pytest.mark.parametrize("database_url", database_params(), indirect=True)
def test_outbox_retry_beside_a_running_relay_sends_each_act_once(
    env: Env, brixo: FakeBrixo, tmp_path: Path, database_url: str
) -> None:
    from bot.core.relay import Relay

    targets = [f"dead-{n}" for n in range(40)]
    seed(database_url, [(t, DEAD, "x") for t in targets])
    brixo.set_latency(0.03)  # the retry takes over a second: the relay claims meanwhile
    relay = Relay(env.settings(DATABASE_URL=database_url))
    relay.start()
    try:
        result = retry(env, tmp_path, DATABASE_URL=database_url)
    finally:
        relay.stop(timeout=5)
        relay.db.dispose()
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(result.stdout.splitlines()) == len(targets)
    assert Counter(r.id for r in brixo.accepted) == Counter(targets)  # each exactly once
    assert set(states(database_url).values()) == {DELIVERED}


# -- outbox purge ----------------------------------------------------------------------


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


def test_a_reader_that_goes_away_ends_the_listing_without_a_traceback(
    env: Env, tmp_path: Path
) -> None:
    """`outbox list | head -1`: the pipe closes under a long listing; one line, no traceback."""
    seed(env()["DATABASE_URL"], [(f"m-{n:04}-{'x' * 200}", DEAD, "HTTP 400") for n in range(400)])
    result = subprocess.run(
        f"'{sys.executable}' -m bot outbox list --limit 400 | head -1",
        shell=True,
        env=env.process(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.count("\n") == 1, result.stdout
    assert result.stderr == "", result.stderr


def test_ctrl_c_during_send_says_brixo_may_have_the_signal(
    env: Env, brixo: FakeBrixo, tmp_path: Path
) -> None:
    brixo.stall_next(1, seconds=10)
    proc = start_bot("send", "--message", "m", "--value", "up", env=env.process(), cwd=tmp_path)
    try:
        wait_until(lambda: brixo.pending_faults() == 0, message="send asked nothing")
        proc.send_signal(signal.SIGINT)  # while Brixo holds the request
        assert proc.wait(timeout=10) == 130
    finally:
        proc.stop()
    assert proc.stderr.strip() == (
        "interrupted: if the request went out, Brixo may have the signal, and sending it again "
        "may count it twice"
    ), proc.describe()
