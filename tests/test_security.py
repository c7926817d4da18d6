"""Security pass: each test is one property an attacker or a careless operator could break.

- forged, stale and replayed requests are refused (replay: the same signed body twice gives
  no second act; Slack's own protection is the 5-minute window plus event_id dedupe);
- a workspace can't vote on another's replies; the outbox is reachable only through the
  operator's command line, which takes no workspace input (no Slack request reaches it);
- SQL is built only with bound parameters; IDs like `'; DROP TABLE brixo_acts; --` round-trip;
- IDs can't escape their path segment at Brixo;
- bodies over 1 MiB are refused with 413 before they are parsed;
- the Brixo key, Slack tokens and signing secret never appear in logs, errors, /healthz,
  `check` output or tracebacks; comments are never logged.
"""

from __future__ import annotations

import io
import json
import re
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from bot.cli import build_parser
from bot.core.brixo import KEY_CHECK_ID
from bot.slack.server import read_body
from tests.conftest import BRIXO_KEY, REPO, Env
from tests.fakes import FakeBrixo, FakeSlackAPI
from tests.fakes import slack_requests as sr
from tests.fakes.brixo import validate_body
from tests.procs import run_bot, start_bot
from tests.slack_harness import (
    BOT_TOKEN,
    SIGNING_SECRET,
    RunningRelay,
    StartRelay,
)
from tests.waiting import wait_until

NEVER = {"ASK_COMMENT": "never"}


def counts(app: RunningRelay) -> dict[str, Any]:
    return app.relay.outbox.counts(time.time())


def acts_total(app: RunningRelay) -> int:
    c = counts(app)
    return int(c["pending"] + c["awaiting_comment"] + c["delivered"] + c["dead"])


def signals(app: RunningRelay) -> list[Any]:
    return [r for r in app.brixo.requests if r.id != KEY_CHECK_ID]


def map_reply(app: RunningRelay, message_id: str, team: str = "T1", channel: str = "C1",
              conversation_id: str | None = None) -> str:  # fmt: skip
    ts = sr.now_ts()
    payload = {"message_id": message_id}
    if conversation_id:
        payload["conversation_id"] = conversation_id
    event = sr.message_metadata_posted(channel, ts, "brixo_message", payload, team_id=team)
    assert app.sender.event(event, team_id=team).status_code == 200
    return ts


def signed(body: bytes, content_type: str, secret: str = SIGNING_SECRET,
           timestamp: int | None = None) -> dict[str, str]:  # fmt: skip
    headers = sr.sign(body, secret, timestamp)
    headers["Content-Type"] = content_type
    return headers


def form(payload: dict[str, Any]) -> tuple[bytes, str]:
    return urlencode({"payload": json.dumps(payload)}).encode(), "application/x-www-form-urlencoded"


def settle(app: RunningRelay, delivered: int) -> None:
    wait_until(lambda: counts(app)["pending"] == 0 and len(app.brixo.accepted) >= delivered)
    assert len([r for r in app.brixo.accepted if r.id != KEY_CHECK_ID]) == delivered


# --- forged, stale, replayed ---------------------------------------------------------------


def test_forged_and_stale_requests_are_refused(start_relay: StartRelay) -> None:
    app = start_relay(**NEVER)
    ts = map_reply(app, "m-1")
    click = sr.block_action("U1", "T1", "C1", ts, sr.feedback_button_action("up"))
    body, content_type = form(click)
    old = int(time.time()) - 5 * 60 - 30
    for headers in (
        signed(body, content_type, secret="guessed-secret"),
        signed(body, content_type, timestamp=old),
        {"Content-Type": content_type},
    ):
        assert app.sender.raw(body, headers).status_code == 401
    assert acts_total(app) == 0
    # The very same body, properly signed now, is a vote: the refusals were the signature's.
    assert app.sender.raw(body, signed(body, content_type)).status_code == 200
    settle(app, 1)


def test_replayed_requests_give_no_second_act(start_relay: StartRelay) -> None:
    app = start_relay(ASK_COMMENT="always", COMMENT_WAIT="1h")
    ts_r, ts_c, ts_conv = (
        map_reply(app, "m-r"),
        map_reply(app, "m-c"),
        map_reply(app, "m-x", conversation_id="conv-1"),
    )
    reaction = json.dumps(app.sender.envelope(sr.reaction_added("U1", "+1", "C1", ts_r))).encode()
    click, click_type = form(
        sr.block_action("U2", "T1", "C1", ts_c, sr.feedback_button_action("down"), trigger_id="tr")
    )
    for body, content_type in ((reaction, "application/json"), (click, click_type)):
        headers = signed(body, content_type)
        assert app.sender.raw(body, headers).status_code == 200
        before = acts_total(app)
        assert app.sender.raw(body, headers).status_code == 200  # the replay: same bytes, same ts
        assert acts_total(app) == before
    assert acts_total(app) == 2
    # The comment modal's submission, replayed with another comment's bytes: no change.
    view = wait_until(lambda: app.slack.calls_to("views.open"))[0].args["view"]
    shown = {k: view[k] for k in ("callback_id", "private_metadata")}
    values = {"comment": {"comment_input": {"value": "first comment"}}}
    body, content_type = form(sr.view_submission("U2", "T1", shown, values))
    headers = signed(body, content_type)
    assert app.sender.raw(body, headers).status_code == 200
    assert app.sender.raw(body, headers).status_code == 200
    # A conversation rating, replayed.
    rating_view = {
        "callback_id": "brixo_rate_conversation",
        "private_metadata": json.dumps(
            {"channel": "C1", "thread_ts": ts_conv, "conversation_id": "conv-1"}
        ),
    }
    rating = {"vote": {"vote_input": {"selected_option": {"value": "up"}}}}
    body, content_type = form(sr.view_submission("U3", "T1", rating_view, rating))
    headers = signed(body, content_type)
    for _ in range(2):
        assert app.sender.raw(body, headers).status_code == 200
    wait_until(lambda: counts(app)["awaiting_comment"] == 1)  # only the reaction still waits
    app.relay.outbox.finish_comment(1, "T1", "U1", None, time.time())
    settle(app, 3)
    sent = {(r.kind, r.id): r.attributes.get("user_message") for r in signals(app)}
    assert sent == {
        ("messages", "m-r"): None,
        ("messages", "m-c"): "first comment",
        ("conversations", "conv-1"): None,
    }


def test_replayed_click_after_a_vote_change_gives_no_act(start_relay: StartRelay) -> None:
    app = start_relay(**NEVER)
    ts = map_reply(app, "m-flip")
    up, content_type = form(sr.block_action("U1", "T1", "C1", ts, sr.feedback_button_action("up")))
    captured = signed(up, content_type)
    assert app.sender.raw(up, captured).status_code == 200
    down, _ = form(sr.block_action("U1", "T1", "C1", ts, sr.feedback_button_action("down")))
    assert app.sender.raw(down, signed(down, content_type)).status_code == 200
    assert acts_total(app) == 2
    assert app.sender.raw(up, captured).status_code == 200  # the attacker's replay
    assert acts_total(app) == 2, "the replayed click gave a new act"


# --- workspaces ------------------------------------------------------------------------------


def test_a_workspace_cannot_vote_on_another_workspaces_replies(start_relay: StartRelay) -> None:
    app = start_relay(**NEVER)
    ts = map_reply(app, "m-t1", team="T1")
    # A T1 reply Slack would also return when asked (so a lookup can't map it for T2 either).
    fetched = app.slack.next_ts()
    app.slack.add_message("C1", fetched, "a reply", bot_id="BOTHER", team="T1",
                          metadata={"event_type": "brixo_message",
                                    "event_payload": {"message_id": "m-t1-fetched"}})  # fmt: skip
    for reply in (ts, fetched):
        click = sr.block_action("U9", "T2", "C1", reply, sr.feedback_button_action("up"))
        assert app.sender.interaction(click).status_code == 200
        event = sr.reaction_added("U9", "+1", "C1", reply)
        assert app.sender.event(event, team_id="T2").status_code == 200
        shortcut = sr.message_shortcut("U9", "T2", "C1", reply)
        assert app.sender.interaction(shortcut).status_code == 200
    assert acts_total(app) == 0
    assert app.relay.mappings.message("T2", "C1", ts) is None
    assert app.relay.mappings.message("T2", "C1", fetched) is None
    assert not app.slack.calls_to("views.open")  # no rating modal for T2 on a T1 thread
    # The same votes from T1 count.
    click = sr.block_action("U9", "T1", "C1", ts, sr.feedback_button_action("up"))
    assert app.sender.interaction(click).status_code == 200
    settle(app, 1)
    assert [r.id for r in signals(app)] == ["m-t1"]


def test_the_outbox_is_reachable_only_from_the_operators_command_line() -> None:
    """No Slack request can list, retry or purge; the CLI takes no workspace input at all.

    The outbox commands are for whoever runs the process (environment, database); a workspace
    (a Slack user) has no command: the manifest has no slash command and no listener calls them.
    """
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[union-attr]
    outbox = commands["outbox"]
    actions = next(a for a in outbox._actions if a.dest == "action").choices  # type: ignore[union-attr]
    options = {
        opt
        for sub in (outbox, *actions.values())
        for action in sub._actions
        for opt in action.option_strings
    }
    assert not {o for o in options if re.search(r"team|workspace|enterprise|user", o)}, options
    chat_code = [
        p for d in ("slack", "discord", "library") for p in (REPO / "bot" / d).rglob("*.py")
    ]
    for path in chat_code:
        source = path.read_text(encoding="utf-8")
        for forbidden in ("take_dead", ".purge(", ".entries(", "_outbox("):
            assert forbidden not in source, f"{path.name} reaches the outbox through {forbidden}"
    manifest = json.loads(run_bot("manifest", env=Env({}).process(), cwd=REPO).stdout)
    assert "slash_commands" not in manifest.get("features", {}), manifest.get("features")


# --- SQL ---------------------------------------------------------------------------------------

# Every raw SQL string in bot/, each a constant with no input in it.
SAFE_RAW_SQL = {
    ('conn.exec_driver_sql("BEGIN IMMEDIATE")', "db.py"),
    ('conn.exec_driver_sql("ALTER TABLE brixo_acts ADD COLUMN first_tried_at FLOAT")', "db.py"),
    ('conn.exec_driver_sql("BEGIN")', "db.py"),
    ('conn.exec_driver_sql("DROP INDEX brixo_acts_due")', "db.py"),
    ('conn.exec_driver_sql("ALTER TABLE brixo_acts RENAME TO brixo_acts_before_v3")', "db.py"),
    ('conn.exec_driver_sql("DROP TABLE brixo_acts_before_v3")', "db.py"),
    ('conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")', "db.py"),
    ('conn.execute(text("SELECT 1"))', "db.py"),
    ('conn.execute("SELECT 1 FROM brixo_schema_version LIMIT 1").fetchall()', "db.py"),
    ('cursor.execute("PRAGMA journal_mode=WAL")', "db.py"),
    ('while cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":', "db.py"),
    ('conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})', "db.py"),
    ('cursor.execute("PRAGMA synchronous=FULL")', "db.py"),
    ('driver.execute("SAVEPOINT job")', "db.py"),
    ('driver.execute("ROLLBACK TO job")', "db.py"),
    ('driver.execute("RELEASE job")', "db.py"),
}
RAW = re.compile(
    r"[\w.]*(?:exec_driver_sql|execute|executemany|executescript)\(\s*(?:text\()?\s*[frbu]*[\"']"
)
SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|DROP|CREATE|ALTER|PRAGMA|BEGIN)\b")


def test_sql_is_built_only_with_bound_parameters() -> None:
    found: set[tuple[str, str]] = set()
    for path in sorted((REPO / "bot").rglob("*.py")):
        for line in path.read_text(encoding="utf-8").splitlines():
            code = line.split("#", 1)[0].strip()
            if RAW.search(code) or re.search(r"\btext\(\s*[frbu]*[\"']", code):
                found.add((code, path.name))
            # An f-string or %/format with SQL words: SQL built from values.
            if SQL_WORDS.search(code) and re.search(r"\bf[\"']|%\s*\(|\.format\(", code):
                found.add((code, path.name))
    assert found == SAFE_RAW_SQL, sorted(found ^ SAFE_RAW_SQL)


INJECTIONS = [
    "'; DROP TABLE brixo_acts; --",
    '"); DELETE FROM brixo_votes; --',
    "1 OR 1=1",
    "Robert'); DROP TABLE brixo_mappings;--",
    "%' OR '%'='",
    "\\'; SELECT pg_sleep(5); --",
]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sql_injection_ids_round_trip(
    start_relay: StartRelay, backend: str, request: pytest.FixtureRequest
) -> None:
    overrides = dict(NEVER)
    if backend == "postgresql":
        overrides["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    app = start_relay(**overrides)
    sorted_ts = []
    for n, ident in enumerate(INJECTIONS):
        ts = map_reply(app, ident, channel=f"C{n}", conversation_id=ident + "-conv")
        sorted_ts.append(ts)
        event = sr.reaction_added(ident[:20], "+1", f"C{n}", ts)  # an odd user ID too
        assert app.sender.event(event).status_code == 200
    settle(app, len(INJECTIONS))
    assert sorted(r.id for r in signals(app)) == sorted(INJECTIONS)
    assert counts(app)["delivered"] == len(INJECTIONS)  # every table still there
    for n, ident in enumerate(INJECTIONS):
        mapping = app.relay.mappings.message("T1", f"C{n}", sorted_ts[n])
        assert mapping is not None and mapping.message_id == ident
    assert app.relay.db.schema_state() == "ok"


# --- paths ----------------------------------------------------------------------------------

PATH_IDS = ["../", "..", ".", "%2e%2e", "%2e%2e%2f", "/", "a/b", "?x", "#", "../../v1/x",
            "..%2f..%2f", "a?b=c#d", "%", "\\..\\"]  # fmt: skip


def test_ids_cannot_escape_their_path_segment(start_relay: StartRelay) -> None:
    app = start_relay(**NEVER)
    for n, ident in enumerate(PATH_IDS):
        ts = map_reply(app, ident, channel=f"C{n}")
        assert app.sender.event(sr.reaction_added("U1", "+1", f"C{n}", ts)).status_code == 200
    settle(app, len(PATH_IDS))
    got = signals(app)
    assert sorted(r.id for r in got) == sorted(PATH_IDS)
    for r in got:
        segment = r.raw_path.split("/")
        assert len(segment) == 5 and segment[:3] == ["", "v1", "messages"], r.raw_path
        assert segment[4] == "signals"
        assert not re.search(r"[/?#]", segment[3]), r.raw_path  # nothing raw that ends it
        assert segment[3] not in (".", ".."), r.raw_path  # nor a dot-segment, resolved away
        assert validate_body(r.body) is None


# --- oversized bodies -----------------------------------------------------------------------

MIB = 1024 * 1024


def _big(app_url: str, size: int, sign: bool, chunked: bool = False) -> requests.Response:
    body = b"payload=" + b"x" * (size - 8)
    headers = signed(body, "application/x-www-form-urlencoded") if sign else {}
    url = app_url.rstrip("/") + "/slack/events"
    if chunked:
        return requests.post(url, data=iter([body[i : i + 65536] for i in range(0, size, 65536)]),
                             headers=headers, timeout=30)  # fmt: skip
    return requests.post(url, data=body, headers=headers, timeout=30)


def test_oversized_bodies_are_refused_before_parsing(
    start_relay: StartRelay, env: Env, fake_slack: FakeSlackAPI, tmp_path: Path
) -> None:
    app = start_relay(**NEVER)
    for sign in (True, False):
        answer = _big(app.url, MIB + 1, sign)
        assert answer.status_code == 413, answer.status_code
    # Exactly 1 MiB still reaches Bolt (refused there: unsigned).
    assert _big(app.url, MIB, sign=False).status_code in (400, 401)
    assert acts_total(app) == 0
    # The production server (gunicorn), Content-Length and chunked alike.
    port = _free_port()
    proc = start_bot("serve", env=env.process(
        SLACK_API_URL=fake_slack.url, SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET, PORT=str(port)), cwd=tmp_path)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        proc.wait_healthy(base + "/healthz", timeout=30)
        assert _big(base, MIB + 1, sign=True).status_code == 413
        assert _big(base, 4 * MIB, sign=False).status_code == 413
        chunked = _big(base, MIB + 1, sign=True, chunked=True)
        assert chunked.status_code in (401, 411, 413), chunked.status_code  # never parsed
        assert requests.get(base + "/healthz", timeout=5).status_code == 200
    finally:
        proc.stop()


@pytest.mark.parametrize("declared", ["-1", "12x", str(MIB + 1)])
def test_a_negative_or_malformed_content_length_is_refused_unread(declared: str) -> None:
    """gunicorn refuses these itself, but another WSGI server may pass them on: a negative
    length must not read the stream to its end (a client keeping it open holds the thread)."""
    stream = io.BytesIO(b"payload=x")
    assert read_body({"wsgi.input": stream, "CONTENT_LENGTH": declared}) is None
    assert stream.tell() == 0


def test_no_content_length_from_a_server_that_does_not_end_the_input_is_an_empty_body() -> None:
    """WSGI: without Content-Length (and no `wsgi.input_terminated`) there is no body, and the
    stream is left unread: reading it would wait for a client that may never close it."""
    stream = io.BytesIO(b"payload=x")
    assert read_body({"wsgi.input": stream}) == b""
    assert read_body({"wsgi.input": stream, "CONTENT_LENGTH": ""}) == b""
    assert stream.tell() == 0
    ended = io.BytesIO(b"payload=x")
    assert read_body({"wsgi.input": ended, "wsgi.input_terminated": True}) == b"payload=x"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- secrets and comments never shown -------------------------------------------------------

COMMENT_MARKER = "my-private-comment-7c3f"


def test_secrets_and_comments_never_appear_in_output(
    env: Env, brixo: FakeBrixo, fake_slack: FakeSlackAPI, tmp_path: Path
) -> None:
    secrets = [BRIXO_KEY, BOT_TOKEN, SIGNING_SECRET]
    environ = env.process(
        SLACK_API_URL=fake_slack.url,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        LOG_LEVEL="debug",
        ASK_COMMENT="always",
        COMMENT_WAIT="1h",
    )
    port = _free_port()
    outputs: list[str] = []
    brixo.fail_next(1, status=401)  # the start-up probe: "unauthorized" in logs and /healthz
    brixo.stall_next(1, seconds=0)  # the next probe gets past auth: delivery resumes
    brixo.fail_next(3, status=500, detail=f"echo {BRIXO_KEY}")  # Brixo echoing the key back
    fake_slack.fail_next("views.open", 1, status=500)
    proc = start_bot("serve", env={**environ, "PORT": str(port)}, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        proc.wait_healthy(base + "/healthz", timeout=30)
        sender = sr.SlackSender(base, SIGNING_SECRET)
        for n in range(3):
            ts = sr.now_ts()
            event = sr.message_metadata_posted("C1", ts, "brixo_message", {"message_id": f"m-{n}"})
            assert sender.event(event).status_code == 200
            trigger = f"trig-{n}"
            click = sr.block_action("U1", "T1", "C1", ts, sr.feedback_button_action("down"),
                                    trigger_id=trigger)  # fmt: skip
            assert sender.interaction(click).status_code == 200
            if n:
                view = wait_until(lambda t=trigger: next(
                    (c.args["view"] for c in fake_slack.calls_to("views.open")
                     if c.args.get("trigger_id") == t), None))  # fmt: skip
                shown = {k: view[k] for k in ("callback_id", "private_metadata")}
                values = {"comment": {"comment_input": {"value": f"{COMMENT_MARKER} {n}"}}}
                assert sender.interaction(sr.view_submission("U1", "T1", shown, values)).ok
        # Refused and malformed requests, which log warnings and tracebacks.
        sr.SlackSender(base, "wrong-secret").event(sr.reaction_added("U1", "+1", "C1", "1.2"))
        bad_view = {**sr.view_submission("U1", "T1", {"callback_id": "x"}, {}), "view": "V"}
        sender.interaction(bad_view)
        wait_until(lambda: len(brixo.accepted) >= 2, timeout=30, message=proc.describe())
        outputs.append(requests.get(base + "/healthz", timeout=5).text)
    finally:
        proc.terminate()
        proc.wait(timeout=40)
        proc.stop()
    outputs += [proc.stdout, proc.stderr]
    brixo.fail_next(1, status=401)
    for command in (("check",), ("outbox", "list"), ("send", "--message", "m-x", "--value", "up",
                                                         "--comment", COMMENT_MARKER)):  # fmt: skip
        done = run_bot(*command, env=environ, cwd=tmp_path)
        outputs += [done.stdout, done.stderr]
    assert "Traceback" in proc.stderr or "error" in proc.stderr.lower()  # errors were logged
    everything = "\n".join(outputs)
    for secret in secrets:
        assert secret not in everything, f"a secret leaked: {secret[:6]}…"
    assert COMMENT_MARKER not in everything, "a comment was logged"
    # The comments did reach Brixo (so the test saw them pass through the relay).
    assert any(COMMENT_MARKER in (r.attributes.get("user_message") or "") for r in brixo.accepted)
