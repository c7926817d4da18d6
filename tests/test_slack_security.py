"""Request signatures and malformed payloads: refused or ignored, never a 5xx, nothing recorded."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.chaos import free_port
from tests.conftest import Env
from tests.fakes import FakeBrixo, FakeSlackAPI, SlackSender
from tests.fakes import slack_requests as sr
from tests.procs import Proc, start_bot
from tests.slack_harness import (
    BOT_TOKEN,
    SIGNING_SECRET,
    RunningRelay,
    StartRelay,
)
from tests.test_slack_support import (
    comment_values,
    map_by_metadata,
    ok,
    outbox,
    react,
    settled,
    signals,
    values_of,
)

NEVER = {"ASK_COMMENT": "never"}


def _bodies(app: RunningRelay, ts: str) -> list[tuple[bytes, str]]:
    """A vote by reaction and by click on `ts`, as raw bodies with their content types."""
    event = app.sender.envelope(sr.reaction_added("U1", "+1", "C1", ts))
    click = sr.block_action("U1", "T1", "C1", ts, sr.feedback_button_action("up"))
    return [
        (json.dumps(event).encode(), "application/json"),
        (urlencode({"payload": json.dumps(click)}).encode(), "application/x-www-form-urlencoded"),
    ]


def _headers(body: bytes, content_type: str, how: str) -> dict[str, str]:
    if how == "forged":
        headers = sr.sign(body, "not-the-signing-secret")
    elif how == "stale":
        headers = sr.sign(body, SIGNING_SECRET, timestamp=int(time.time()) - 6 * 60)
    elif how == "future":
        headers = sr.sign(body, SIGNING_SECRET, timestamp=int(time.time()) + 6 * 60)
    elif how == "tampered":
        headers = sr.sign(body + b" ", SIGNING_SECRET)
    elif how == "no number":
        headers = {**sr.sign(body, SIGNING_SECRET), "X-Slack-Request-Timestamp": "17e8"}
    else:  # missing
        headers = {}
    headers["Content-Type"] = content_type
    return headers


@pytest.mark.parametrize("how", ["forged", "stale", "future", "tampered", "no number", "missing"])
def test_bad_signatures_are_refused_and_record_nothing(start_relay: StartRelay, how: str) -> None:
    app = start_relay(**NEVER)
    ts = map_by_metadata(app, "m-1")
    for body, content_type in _bodies(app, ts):
        answer = app.sender.raw(body, _headers(body, content_type, how))
        assert answer.status_code == 401, (how, answer.status_code, answer.text)
    # Only the signature check ran: no act, no Slack call, nothing for Brixo.
    assert outbox(app)["pending"] == 0
    settled(app, 0)
    assert signals(app) == []
    assert [c.method for c in app.slack.calls] in ([], ["auth.test"])
    # The same bodies, signed, are votes (one act: the click repeats the reaction's vote).
    for body, content_type in _bodies(app, ts):
        headers = sr.sign(body, SIGNING_SECRET)
        headers["Content-Type"] = content_type
        assert app.sender.raw(body, headers).status_code == 200
    settled(app, 1)


def _interaction(payload: Any) -> tuple[bytes, str]:
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    return urlencode({"payload": raw}).encode(), "application/x-www-form-urlencoded"


def _event(event: Any, app: RunningRelay) -> tuple[bytes, str]:
    return json.dumps(app.sender.envelope(event)).encode(), "application/json"


def _action(ts: str, **changes: Any) -> dict[str, Any]:
    """A vote click with fields changed (`...` removes one)."""
    payload = sr.block_action("U1", "T1", "C1", ts, sr.feedback_button_action("up"))
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not ...}


def _unreadable(app: RunningRelay, ts: str) -> list[tuple[bytes, str]]:
    """Signed bodies that Bolt itself can't parse or match (its own code raises, or answers
    404 as to a request no listener wants)."""
    view = {"callback_id": "brixo_comment", "private_metadata": json.dumps({"act": 1})}
    reaction = app.sender.envelope(sr.reaction_added("U1", "+1", "C1", ts))
    return [
        (b"{not json", "application/json"),
        (b"payload=%7Bnot+json", "application/x-www-form-urlencoded"),
        _interaction("[1, 2, 3]"),
        _interaction(_action(ts, actions=...)),
        _interaction(_action(ts, actions=[])),
        _interaction(_action(ts, actions="brixo_feedback")),
        _interaction(_action(ts, actions=[None])),
        _interaction(_action(ts, actions=[{"value": "up"}])),
        _interaction(_action(ts, actions={"action_id": "brixo_feedback"})),
        _interaction({**sr.view_submission("U1", "T1", view, {}), "view": "V1"}),
        _interaction({**sr.view_closed("U1", "T1", view), "view": None}),
        _interaction(_untyped_view_submission(view)),
        (json.dumps({**reaction, "event": "reaction_added"}).encode(), "application/json"),
        (json.dumps({**reaction, "event": None}).encode(), "application/json"),
        (b"", "application/json"),  # no request type, whatever the body says it is
        (b"{}", "application/json"),
        (b'{"type": 5}', "application/json"),
        (b"foo=bar", "application/x-www-form-urlencoded"),  # a form without `payload`
        (b"<event type='reaction_added'/>", "text/xml"),
    ]


def _untyped_view_submission(view: dict[str, Any]) -> dict[str, Any]:
    """A view_submission whose view has no `type` (Bolt's workflow-step matcher reads it)."""
    payload = sr.view_submission("U1", "T1", view, comment_values("x"))
    del payload["view"]["type"]
    return payload


def _malformed(app: RunningRelay, ts: str) -> list[tuple[bytes, str]]:
    """Signed bodies Bolt reads, with what the relay's listeners need missing or mistyped."""
    view = {"callback_id": "brixo_comment", "private_metadata": json.dumps({"act": 1})}
    rating = {"callback_id": "brixo_rate_conversation", "private_metadata": "{not json"}
    huge_act = json.dumps({"act": 2**64, "thank": True})
    reaction = sr.reaction_added("U1", "+1", "C1", ts)
    return [
        (b"", "application/json"),
        (b"garbage", "application/x-www-form-urlencoded"),
        _interaction(_action(ts, user=...)),
        _interaction(_action(ts, user="U1")),
        _interaction(_action(ts, channel=..., container=...)),
        _interaction(_action(ts, channel=None, container=5)),
        _interaction(_action(ts, message=..., container={"type": "message"})),
        _interaction(_action(ts, actions=[{"action_id": "brixo_feedback"}])),
        _interaction(_action(ts, actions=[{"action_id": "brixo_feedback", "value": ["up"]}])),
        _interaction(_action(ts, actions=[{"action_id": "brixo_feedback", "value": "sideways"}])),
        _interaction(_action(ts, actions=[{"action_id": "brixo_add_comment", "value": "x:y"}])),
        _interaction(_action(ts, actions=[{"action_id": "brixo_add_comment", "value": 7}])),
        _interaction(_action(ts, team=None, user={"id": "U1"})),  # no workspace anywhere
        _interaction({"type": "view_submission", "view": {"state": 1}}),
        _interaction(sr.view_submission("U1", "T1", view, {"comment": "wrong"})),
        _interaction(sr.view_submission("U1", "T1", view, comment_values("x" * 5000))),
        _interaction(sr.view_submission("U1", "T1", {"callback_id": "brixo_comment"}, {})),
        _interaction(sr.view_closed("U1", "T1", {**view, "private_metadata": "[]"})),
        # Act IDs beyond 64 bits: not the relay's (no database integer holds them).
        _interaction(sr.view_closed("U1", "T1", {**view, "private_metadata": huge_act})),
        _interaction(sr.view_submission("U1", "T1", {**view, "private_metadata": huge_act}, {})),
        _interaction(_action(ts, actions=[sr.button_action("brixo_add_comment", f"{2**64}:x")])),
        _interaction(sr.view_submission("U1", "T1", rating, {"vote": {"vote_input": 1}})),
        _interaction(
            sr.view_submission(
                "U1", "T1", rating, {"vote": {"vote_input": {"selected_option": {"value": "up"}}}}
            )
        ),
        # Metadata of the relay's own shape with a field mistyped (Slack echoes what it was
        # given, so only a forged or stale view has these).
        *(
            _interaction(
                sr.view_submission(
                    "U1",
                    "T1",
                    {**rating, "private_metadata": json.dumps(rated | mistyped)},
                    {"vote": {"vote_input": {"selected_option": {"value": "up"}}}},
                )
            )
            for rated in [{"conversation_id": "c-1", "channel": "C1", "thread_ts": ts}]
            for mistyped in [{"channel": {"x": 1}}, {"thread_ts": ["1.1"]}, {"conversation_id": 7}]
        ),
        _interaction({**sr.message_shortcut("U1", "T1", "C1", ts), "message": None}),
        _interaction({**sr.message_shortcut("U1", "T1", "C1", ts), "channel": "C1"}),
        _event({**reaction, "item": None}, app),
        _event({**reaction, "item": "C1"}, app),
        _event({**reaction, "reaction": 5}, app),
        _event({**reaction, "user": ["U1"]}, app),
        _event({**reaction, "item": {"type": "file", "file": "F1"}}, app),
        _event(sr.message("C1", "U1", "x", 17.5), app),  # type: ignore[arg-type]
        _event({"type": "message", "channel": "D1", "user": "U1", "text": None}, app),
        _event({"type": "message_metadata_posted", "metadata": "x"}, app),
        _event(sr.message_metadata_posted("C1", "1.5", "brixo_message", {"message_id": 42}), app),
        _event({"type": "app_mention", "user": {"id": "U1"}}, app),
        _event(sr.reaction_removed("U1", "+1", "C1", ts) | {"item": []}, app),
    ]


def _send_all(app: RunningRelay, bodies: list[tuple[bytes, str]]) -> set[int]:
    """Send each body validly signed; none may get a 5xx, and none may record an act.

    Returns the statuses answered.
    """
    failures, statuses = [], set()
    for body, content_type in bodies:
        headers = sr.sign(body, SIGNING_SECRET)
        headers["Content-Type"] = content_type
        answer = app.sender.raw(body, headers)
        statuses.add(answer.status_code)
        if answer.status_code >= 500:
            failures.append((body[:120], answer.status_code))
    assert failures == [], "\n".join(map(repr, failures))
    assert app.relay.outbox.entries() == []
    settled(app, 0)
    return statuses


def test_malformed_signed_requests_never_give_5xx_nor_an_act(start_relay: StartRelay) -> None:
    app = start_relay(**NEVER, ASSISTANT_BOT_IDS="BASSIST")
    ts = map_by_metadata(app, "m-1")
    _send_all(app, _malformed(app, ts))
    # The relay still works: a proper vote is recorded and delivered.
    react(app, ts, "+1", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", "m-1", "thumbs_up")]


def test_slacks_ssl_check_still_gets_its_200(start_relay: StartRelay) -> None:
    """The one request Slack sends without a `type` (a form with `ssl_check=1`): Bolt's."""
    app = start_relay(**NEVER)
    body = b"ssl_check=1&token=legacy-verification-token"
    headers = {**sr.sign(body, SIGNING_SECRET), "Content-Type": "application/x-www-form-urlencoded"}
    assert app.sender.raw(body, headers).status_code == 200


def test_unparseable_signed_requests_never_give_5xx(start_relay: StartRelay) -> None:
    """Bolt raises on these before any relay code runs: server.py must refuse them (400)."""
    app = start_relay(**NEVER)
    ts = map_by_metadata(app, "m-1")
    assert _send_all(app, _unreadable(app, ts)) == {400}
    react(app, ts, "+1", channel="C1")
    settled(app, 1)


@pytest.mark.parametrize("how", ["forged", "stale", "missing"])
def test_unreadable_requests_without_slacks_signature_get_401_and_no_warning(
    start_relay: StartRelay, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The signature is checked before a body is called unreadable: a caller without the
    signing secret gets Bolt's 401 and can't write warnings into the log."""
    app = start_relay(**NEVER)
    ts = map_by_metadata(app, "m-1")
    caplog.set_level(logging.INFO)
    caplog.clear()
    for body, content_type in _unreadable(app, ts):
        answer = app.sender.raw(body, _headers(body, content_type, how))
        assert answer.status_code == 401, (how, body[:60], answer.status_code)
    # The relay's and Bolt's records (a thread another test left, failing to reach its stopped
    # fake Slack, may log through slack_sdk meanwhile).
    mine = [r for r in caplog.records if r.name.startswith(("bot", "slack_bolt", "gunicorn"))]
    assert [r for r in mine if r.levelno >= logging.WARNING] == []
    assert "Invalid request signature detected" in caplog.text


def test_a_thumbs_up_on_no_message_leaves_a_debug_line(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """A 👍 on a file, or a reaction event missing its item: acked, no act, and a DEBUG line
    says why (a reaction that isn't 👍/👎 says nothing: most aren't)."""
    app = start_relay(**NEVER)
    caplog.set_level(logging.DEBUG, logger="bot")
    reaction = sr.reaction_added("U1", "+1", "C1", "1700000000.000100")
    for event in ({**reaction, "item": {"type": "file", "file": "F1"}}, {**reaction, "item": None}):
        assert app.sender.event(event).status_code == 200
    ok_heart = app.sender.event({**reaction, "reaction": "heart", "item": None})
    assert ok_heart.status_code == 200
    lines = [m for m in caplog.messages if m.startswith("reaction without a person, or not on")]
    assert lines == [
        "reaction without a person, or not on a message (item type file): no vote",
        "reaction without a person, or not on a message (item type None): no vote",
    ]
    assert app.relay.outbox.entries() == []


@pytest.mark.parametrize("how", ["signed", "forged"])
def test_a_body_that_isnt_utf8_gets_400_never_5xx(
    start_relay: StartRelay, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack signs UTF-8 text: bytes that aren't can't be its request, whatever their
    signature. They are refused as unreadable (not as a bad signature, which would send the
    operator to SLACK_SIGNING_SECRET), at INFO, without a traceback."""
    app = start_relay(**NEVER)
    ts = map_by_metadata(app, "m-1")
    caplog.set_level(logging.INFO)
    caplog.clear()
    for body, content_type in [
        (b"\xff", "application/json"),
        (b'{"type": "event_callback", "x": "\xc3\x28"}', "application/json"),
        (b"payload=\xc3\x28", "application/x-www-form-urlencoded"),
    ]:
        headers = sr.sign(body, SIGNING_SECRET) if how == "signed" else {}
        headers = _headers(body, content_type, how) if how != "signed" else headers
        headers["Content-Type"] = content_type
        answer = app.sender.raw(body, headers)
        assert answer.status_code == 400, (how, body, answer.status_code)
        assert answer.json() == {"error": "unreadable request"}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert "signature" not in caplog.text
    assert caplog.text.count("refused a request body that isn't UTF-8 text") == 3
    react(app, ts, "+1", channel="C1")
    settled(app, 1)


def _serve(env: Env, fake_slack: FakeSlackAPI, tmp_path: Path, **settings: str) -> tuple[Proc, int]:
    """`python -m bot serve` (gunicorn) on a free port, healthy; and that port."""
    port = free_port()
    environ = env.process(
        SLACK_API_URL=fake_slack.url,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        PORT=str(port),
        **NEVER,
        **settings,
    )
    proc = start_bot("serve", env=environ, cwd=tmp_path)
    proc.wait_healthy(f"http://127.0.0.1:{port}/healthz", timeout=60)
    return proc, port


def test_chunked_requests_are_read_by_the_real_server(
    env: Env, fake_slack: FakeSlackAPI, brixo: FakeBrixo, tmp_path: Path
) -> None:
    """`python -m bot serve` (gunicorn) reads a body sent without Content-Length to its end,
    up to the size limit."""
    proc, port = _serve(env, fake_slack, tmp_path)
    try:
        sender = SlackSender(f"http://127.0.0.1:{port}", SIGNING_SECRET)
        ts = "1700000000.000100"
        mapped = sr.message_metadata_posted("C1", ts, "brixo_message", {"message_id": "m-chunk"})
        for event in (mapped, sr.reaction_added("U1", "+1", "C1", ts)):
            body = json.dumps(sender.envelope(event)).encode()
            chunks = iter([body[:100], body[100:]])  # requests sends an iterator chunked
            ok(sender.session.post(sender.url, data=chunks, headers=sr.sign(body, SIGNING_SECRET)))
        assert [r.id for r in brixo.wait_for_accepted(1)] == ["m-chunk"]
        huge = iter([b"x" * 65536] * 17)  # over MAX_BODY_BYTES (1 MiB)
        answer = sender.session.post(sender.url, data=huge, headers=sr.sign(b"", SIGNING_SECRET))
        assert answer.status_code == 413
        assert answer.headers["Connection"] == "close"  # the rest of it is never read
        declared = b"x" * (1024 * 1024 + 1)  # with its Content-Length: refused unread
        answer = sender.session.post(
            sender.url, data=declared, headers=sr.sign(b"", SIGNING_SECRET)
        )
        assert answer.status_code == 413
        assert answer.headers["Connection"] == "close"
        ok(sender.event(sr.reaction_added("U2", "-1", "C1", ts)))  # the session goes on
        assert len(brixo.wait_for_accepted(2)) == 2
    finally:
        proc.stop()


def test_clients_that_stall_mid_request_never_hold_every_thread(
    env: Env, fake_slack: FakeSlackAPI, brixo: FakeBrixo, tmp_path: Path
) -> None:
    """With every one of gunicorn's threads taken by a client that stopped sending (half its
    headers, or half its body), Slack's next request is still answered: each stalled read is
    cut off after REQUEST_READ_TIMEOUT, the stalled body with a 408."""
    proc, port = _serve(env, fake_slack, tmp_path, GUNICORN_THREADS="2")
    stalled: list[socket.socket] = []
    try:
        for partial in (
            b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"a":',
            b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Le",
        ):
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(partial)
            stalled.append(client)
        sender = SlackSender(f"http://127.0.0.1:{port}", SIGNING_SECRET)
        ts = "1700000000.000200"
        event = sr.message_metadata_posted("C1", ts, "brixo_message", {"message_id": "m-stall"})
        ok(sender.event(event))  # requests' own timeout: 10 s
        ok(sender.event(sr.reaction_added("U1", "+1", "C1", ts)))
        assert [r.id for r in brixo.wait_for_accepted(1)] == ["m-stall"]
        body_stalled, headers_stalled = stalled
        body_stalled.settimeout(10)
        answer = chunk = b"?"
        while chunk:  # the answer, then the close
            chunk = body_stalled.recv(1000)
            answer += chunk
        assert answer[1:].startswith(b"HTTP/1.1 408 "), answer
        assert b"connection: close" in answer.lower(), answer
        headers_stalled.settimeout(10)
        assert headers_stalled.recv(100) == b""  # closed without an answer
        proc.wait_for_line("a client stopped sending its request", stream="stderr")
        assert "Traceback" not in proc.stderr
    finally:
        for client in stalled:
            client.close()
        proc.stop()
