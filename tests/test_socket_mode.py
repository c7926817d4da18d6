"""Socket Mode as a real process: `python -m bot socket` against the fake Socket Mode server.

The same acts as in HTTP mode, each stored before its envelope is acknowledged; the modal's
answers (`response_action: errors`) travel in the ack's payload; Slack's redeliveries and
`disconnect` messages lose nothing and add nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from time import monotonic
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import Env
from tests.fakes import FakeBrixo, FakeSlackAPI
from tests.fakes import slack_requests as sr
from tests.procs import Proc, start_bot
from tests.slack_harness import BOT_TOKEN
from tests.test_deploy import seed_reply
from tests.test_shutdown import FakeSocketMode, socket_mode  # noqa: F401  (fixture)
from tests.test_slack_support import comment_values, rating_values
from tests.waiting import wait_until

APP_TOKEN = "xapp-1-A1-socket-token"


def relay_env(env: Env, slack: FakeSlackAPI, **overrides: str | None) -> dict[str, str]:
    values = {"ASK_COMMENT": "never", "SLACK_BOT_TOKEN": BOT_TOKEN, **overrides}
    return env.process(SLACK_API_URL=slack.url, **values)


def stored_acts(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        count = conn.execute("SELECT count(*) FROM brixo_acts").fetchone()[0]
    conn.close()
    return int(count)


class Running:
    """The relay process in Socket Mode and what it talks to."""

    def __init__(
        self, proc: Proc, server: FakeSocketMode, slack: FakeSlackAPI, brixo: FakeBrixo, db: Path
    ) -> None:
        self.proc, self.server, self.slack, self.brixo, self.db = proc, server, slack, brixo, db
        self.acts_at_ack: dict[str, int] = {}
        server.on_ack = lambda answer: self.acts_at_ack.__setitem__(
            answer["envelope_id"], stored_acts(db)
        )

    def answer(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The ack of one envelope (waits for it)."""
        return wait_until(
            lambda: self.server.answers.get(envelope_id),
            timeout=timeout,
            message=f"envelope {envelope_id} not acked:\n{self.proc.describe()}",
        )


@pytest.fixture
def run_socket(
    env: Env,
    brixo: FakeBrixo,
    fake_slack: FakeSlackAPI,
    socket_mode: FakeSocketMode,  # noqa: F811
    tmp_path: Path,
) -> Iterator[Any]:
    procs: list[Proc] = []

    def start(**overrides: str | None) -> Running:
        db = tmp_path / "relay.db"
        settings = {"DATABASE_URL": f"sqlite:///{db}", "SLACK_APP_TOKEN": APP_TOKEN}
        environ = relay_env(env, fake_slack, **{**settings, **overrides})
        proc = start_bot("socket", env=environ, cwd=tmp_path)
        procs.append(proc)
        proc.wait_for_line("connected to Slack over Socket Mode", stream="stderr", timeout=20)
        wait_until(socket_mode.connected, timeout=20, message=f"no socket:\n{proc.describe()}")
        return Running(proc, socket_mode, fake_slack, brixo, db)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        finally:
            proc.stop()


def reaction(_slack: FakeSlackAPI, channel: str, ts: str, name: str, event_id: str) -> Any:
    sender = sr.SlackSender("http://unused", "unused")
    return sender.envelope(sr.reaction_added("U1", name, channel, ts), event_id=event_id)


def test_reaction_is_stored_before_the_ack_and_sent_once(run_socket: Any) -> None:
    app = run_socket()
    ts = seed_reply(app.slack, "C1", "m-react")
    body = reaction(app.slack, "C1", ts, "+1", "Ev1")
    first = app.server.events_api(body)
    assert app.answer(first) == {"envelope_id": first}
    assert app.acts_at_ack[first] == 1
    again = app.server.events_api(body, retry_attempt=1)  # Slack's redelivery: same event_id
    app.answer(again)
    accepted = app.brixo.wait_for_accepted(1)
    assert [(r.id, r.attributes["value"]) for r in accepted] == [("m-react", "thumbs_up")]
    assert stored_acts(app.db) == 1
    assert "Traceback" not in app.proc.stderr, app.proc.describe()


def test_slacks_last_retry_of_a_reaction_is_acked_and_looked_up_after_the_ack(
    run_socket: Any,
) -> None:
    """As over HTTP: an envelope Slack retries for the last time (retry_attempt 3) whose lookup
    fails is acknowledged, and the reply is looked up again after the ack."""
    app = run_socket()
    ts = seed_reply(app.slack, "C1", "m-last")
    app.slack.fail_next("conversations.replies", 1, status=429, retry_after="0")
    last = app.server.events_api(reaction(app.slack, "C1", ts, "+1", "EvLast"), retry_attempt=3)
    assert app.answer(last) == {"envelope_id": last}
    accepted = app.brixo.wait_for_accepted(1)
    assert [(r.id, r.attributes["value"]) for r in accepted] == [("m-last", "thumbs_up")]
    assert len(app.slack.calls_to("conversations.replies")) >= 2


def test_click_opens_the_modal_and_its_submission_sends_the_comment(run_socket: Any) -> None:
    app = run_socket(ASK_COMMENT="negative")
    ts = seed_reply(app.slack, "C1", "m-click")
    payload = sr.block_action(
        "U1", "T1", "C1", ts, sr.feedback_button_action("down"), message_bot_id="BOTHER",
        trigger_id="trig-socket",
    )  # fmt: skip
    click = app.server.interactive(payload)
    app.answer(click)
    assert app.acts_at_ack[click] == 1
    opened = app.slack.wait_for_call("views.open")[0]
    assert opened.args["trigger_id"] == "trig-socket"
    view = opened.args["view"]
    submit = app.server.interactive(sr.view_submission("U1", "T1", view, comment_values("vague")))
    assert "payload" not in app.answer(submit) or not app.answer(submit)["payload"].get("errors")
    got = app.brixo.wait_for_accepted(1)
    assert got[0].id == "m-click" and got[0].attributes["user_message"] == "vague"
    # The same modal submitted again after its act went: refused in the modal, in the ack.
    late = app.server.interactive(sr.view_submission("U1", "T1", view, comment_values("more")))
    assert app.answer(late)["payload"]["response_action"] == "errors"
    assert len(app.brixo.accepted) == 1
    assert "Traceback" not in app.proc.stderr, app.proc.describe()


def test_rate_this_conversation(run_socket: Any) -> None:
    app = run_socket()
    ts = app.slack.next_ts()
    ids = {"message_id": "m-conv", "conversation_id": "c-conv"}
    metadata = {"event_type": "brixo_message", "event_payload": ids}
    app.slack.add_message("C1", ts, "an assistant reply", bot_id="BOTHER", metadata=metadata)
    shortcut = app.server.interactive(sr.message_shortcut("U1", "T1", "C1", ts))
    app.answer(shortcut)
    opened = app.slack.wait_for_call("views.open")[0]
    assert opened.args["trigger_id"] == "trig-2"
    view = opened.args["view"]
    empty = app.server.interactive(sr.view_submission("U1", "T1", view, {}))
    assert app.answer(empty)["payload"]["response_action"] == "errors"
    rate = app.server.interactive(sr.view_submission("U1", "T1", view, rating_values("down")))
    app.answer(rate)
    assert app.acts_at_ack[rate] == 1
    got = app.brixo.wait_for_accepted(1)
    assert (got[0].kind, got[0].id) == ("conversations", "c-conv")
    assert got[0].attributes["value"] == "thumbs_down"
    assert "Traceback" not in app.proc.stderr, app.proc.describe()


def test_disconnect_refresh_requested_loses_nothing(run_socket: Any) -> None:
    app = run_socket()
    opened = len(app.slack.calls_to("apps.connections.open"))
    ts = seed_reply(app.slack, "C1", "m-before")
    before = app.server.events_api(reaction(app.slack, "C1", ts, "+1", "Ev-before"))
    app.server.send({"type": "disconnect", "reason": "refresh_requested"})
    wait_until(
        lambda: (
            len(app.slack.calls_to("apps.connections.open")) > opened
            and app.server.connections > 1
            and app.server.connected()
        ),
        timeout=15,
        message=f"no new socket:\n{app.proc.describe()}",
    )
    app.answer(before)
    ts2 = seed_reply(app.slack, "C1", "m-after")
    after = app.server.events_api(reaction(app.slack, "C1", ts2, "+1", "Ev-after"))
    app.answer(after)
    got = app.brixo.wait_for_accepted(2)
    assert sorted(r.id for r in got) == ["m-after", "m-before"]
    assert "Traceback" not in app.proc.stderr, app.proc.describe()


def test_an_envelope_in_flight_across_a_refresh_is_still_acknowledged(run_socket: Any) -> None:
    """Slack's `disconnect` (refresh_requested) arrives while a click is being recorded: the
    client swaps to a new socket that is not open yet when the click's ack is ready. The ack
    waits for the new socket instead of being dropped (the person would see an error)."""
    app = run_socket()
    ts = seed_reply(app.slack, "C1", "m-in-flight")
    app.slack.delay_next("conversations.replies", 0.2)  # the click is looked up before its ack
    payload = sr.block_action(
        "U1", "T1", "C1", ts, sr.feedback_button_action("up"), message_bot_id="BOTHER"
    )
    app.server.handshakes.clear()  # the new socket opens only once the act is stored
    click = app.server.interactive(payload)
    app.server.send({"type": "disconnect", "reason": "refresh_requested"})
    wait_until(lambda: stored_acts(app.db) == 1, message=f"no act:\n{app.proc.describe()}")
    app.server.handshakes.set()
    assert app.answer(click) == {"envelope_id": click}
    assert app.acts_at_ack[click] == 1
    assert [r.id for r in app.brixo.wait_for_accepted(1)] == ["m-in-flight"]
    assert "Traceback" not in app.proc.stderr, app.proc.describe()


def unreadable_payloads(ts: str) -> list[tuple[str, Any]]:
    """Envelope payloads Bolt itself can't read (HTTP mode answers these 400 in one line)."""
    click = sr.block_action("U1", "T1", "C1", ts, sr.feedback_button_action("up"))
    view = {"callback_id": "brixo_comment", "private_metadata": json.dumps({"act": 1})}
    untyped = sr.view_submission("U1", "T1", view, comment_values("x"))
    del untyped["view"]["type"]
    reaction_body = sr.SlackSender("http://unused", "unused").envelope(
        sr.reaction_added("U1", "+1", "C1", ts)
    )
    return [
        ("interactive", [1, 2, 3]),
        ("interactive", {**click, "actions": []}),
        ("interactive", {**click, "actions": {"action_id": "brixo_feedback"}}),
        ("interactive", {**sr.view_closed("U1", "T1", view), "view": None}),
        ("interactive", untyped),
        ("events_api", {**reaction_body, "event": None}),
        ("events_api", {**reaction_body, "authorizations": "x"}),  # BoltRequest itself raises
    ]


def test_unreadable_envelopes_are_refused_in_one_line(run_socket: Any) -> None:
    app = run_socket()
    ts = seed_reply(app.slack, "C1", "m-after-bad")
    bad = [app.server.envelope(kind, payload) for kind, payload in unreadable_payloads(ts)]
    good = app.server.events_api(reaction(app.slack, "C1", ts, "+1", "Ev-good"))
    app.answer(good)
    assert [r.id for r in app.brixo.wait_for_accepted(1)] == ["m-after-bad"]
    refused = wait_until(
        lambda: (lambda lines: lines if len(lines) >= len(bad) else None)(
            [line for line in app.proc.stderr_lines if "refused an unreadable Slack" in line]
        ),
        message=f"not refused one by one:\n{app.proc.describe()}",
    )
    assert len(refused) == len(bad)
    assert "Traceback" not in app.proc.stderr, app.proc.describe()
    assert stored_acts(app.db) == 1


def test_delivery_makes_way_while_an_envelope_is_answered(fake_slack: FakeSlackAPI) -> None:
    """As in HTTP mode (AcksFirst): an envelope counts as a request being answered from
    before its listener runs until its ack is sent, so delivery keeps out of the ack's way."""
    from slack_bolt import App
    from slack_sdk import WebClient
    from slack_sdk.socket_mode.request import SocketModeRequest

    from bot.core.delivery import AcksFirst
    from bot.slack.socket import RelaySocketModeHandler

    acks_first = AcksFirst()
    seen: list[tuple[str, int]] = []
    app = App(
        client=WebClient(token="xoxb-test", base_url=fake_slack.url),
        token_verification_enabled=False,
        process_before_response=True,
    )
    app.event("app_mention")(lambda: seen.append(("listener", acks_first._answering)))
    handler = RelaySocketModeHandler(app, APP_TOKEN, acks_first)
    client = SimpleNamespace(
        logger=app.logger,
        send_socket_mode_response=lambda _ack: seen.append(("ack", acks_first._answering)),
    )
    body = {"type": "event_callback", "team_id": "T1", "event": {"type": "app_mention"}}
    try:
        handler.handle(client, SocketModeRequest("events_api", "e1", body))  # type: ignore[arg-type]
    finally:
        handler.close()
    assert seen == [("listener", 1), ("ack", 1)]
    assert acks_first._answering == 0


def test_a_socket_slack_cannot_open_is_said_then_tried_again(
    env: Env,
    fake_slack: FakeSlackAPI,
    socket_mode: FakeSocketMode,  # noqa: F811
    tmp_path: Path,
) -> None:
    """No "connected" line before a socket is open: a warning, then the line once it opens."""
    fake_slack.respond("apps.connections.open", {"ok": True, "url": "ws://127.0.0.1:9/link"})
    settings = {"DATABASE_URL": f"sqlite:///{tmp_path / 'relay.db'}", "SLACK_APP_TOKEN": APP_TOKEN}
    proc = start_bot("socket", env=relay_env(env, fake_slack, **settings), cwd=tmp_path)
    try:
        # Deadlines with room for a loaded machine: the start, then 5 s; a redial every 10 s.
        warning = "socket isn't open after 5 s: trying again"
        proc.wait_for_line(warning, stream="stderr", timeout=30)
        assert "connected to Slack" not in proc.stderr, proc.describe()
        fake_slack.respond("apps.connections.open", {"ok": True, "url": socket_mode.url})
        proc.wait_for_line("connected to Slack over Socket Mode", stream="stderr", timeout=30)
        wait_until(socket_mode.connected, timeout=5, message=proc.describe())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        finally:
            proc.stop()


def test_sigterm_lets_an_envelope_under_way_get_its_ack(run_socket: Any) -> None:
    """A click being answered when SIGTERM comes (a dyno restart) still gets its ack before
    the socket closes: Slack would show the person an error, and never send it again."""
    app = run_socket()
    ts = app.slack.next_ts()
    metadata = {"event_type": "brixo_message", "event_payload": {"message_id": "m-late"}}
    app.slack.add_message("C1", ts, "an assistant reply", bot_id="BOTHER", metadata=metadata)
    lookup = app.slack.hold_next("conversations.replies")  # the unseen reply, before the ack
    payload = sr.block_action(
        "U1", "T1", "C1", ts, sr.feedback_button_action("up"), message_bot_id="BOTHER"
    )
    click = app.server.interactive(payload)
    assert lookup.arrived.wait(10), app.proc.describe()
    app.proc.terminate()
    app.proc.wait_for_line("signal 15: closing the socket", stream="stderr")
    lookup.released.set()
    app.answer(click)
    assert app.acts_at_ack[click] == 1
    assert app.proc.wait(timeout=30) == 0, app.proc.describe()
    assert [r.id for r in app.brixo.accepted] == ["m-late"]


@pytest.fixture
def acking_client(fake_slack: FakeSlackAPI) -> Iterator[Any]:
    """The relay's Socket Mode client in this process, its monitor every 0.05 s (not 10 s)."""
    from slack_bolt import App
    from slack_sdk import WebClient

    from bot.slack.socket_client import AckingClient

    app = App(
        client=WebClient(token="xoxb-test", base_url=fake_slack.url),
        token_verification_enabled=False,
    )
    client = AckingClient(APP_TOKEN, app)
    client.current_app_monitor.interval_seconds = 0.05
    yield client
    client.close()


def test_a_socket_being_opened_is_not_opened_again(
    acking_client: Any,
    fake_slack: FakeSlackAPI,
    socket_mode: FakeSocketMode,  # noqa: F811
) -> None:
    """The monitor (at start, then every 10 s) counts a socket being opened as connected: no
    second apps.connections.open while Slack is slow to answer the first socket's handshake;
    nor does slack_sdk's runner touch the socket its own thread runs."""
    socket_mode.handshakes.clear()
    acking_client.connect()
    acking_client._monitor_current_session()  # what the monitor does at start and each round
    wait_until(lambda: acking_client.current_session.sock, timeout=5, message="not dialling")
    assert not acking_client.wait_open(0)  # dialled, its handshake unanswered: not open yet
    assert len(fake_slack.calls_to("apps.connections.open")) == 1
    socket_mode.handshakes.set()
    started = monotonic()
    assert acking_client.wait_open(5)
    assert monotonic() - started < 1.5  # woken by the open (an ack waits this way too)
    session = acking_client.current_session
    acking_client._monitor_current_session()
    acking_client._run_current_session()  # slack_sdk's runner (every 0.5 s): leaves it alone
    assert acking_client._open_session() is session
    assert len(fake_slack.calls_to("apps.connections.open")) == 1
    # The fake counts a connection once its hello is sent, which may be after the client opened.
    assert wait_until(lambda: socket_mode.connections, timeout=5) == 1


def assert_replaced_after(
    client: Any, fake_slack: FakeSlackAPI, socket_mode: FakeSocketMode, fault: Callable[[], None]
) -> None:
    """Open a socket, do `fault` to it, and see a second one opened in its place within 8 s
    (before the monitor's next round, 10 s on; room for a loaded machine)."""
    client.connect()
    assert client.wait_open(5)
    first = client.current_session
    fault()
    wait_until(
        lambda: socket_mode.connections == 2 and client.current_session is not first,
        timeout=8,
        message="the socket was not replaced in time",
    )
    assert client.wait_open(5)
    assert len(fake_slack.calls_to("apps.connections.open")) == 2


def test_a_socket_that_goes_silent_is_replaced_once_a_ping_goes_unanswered(
    acking_client: Any,
    fake_slack: FakeSlackAPI,
    socket_mode: FakeSocketMode,  # noqa: F811
) -> None:
    """No close frame, no reset: the connection just stops answering. The client pings every
    `ping_interval` (10 s; 0.4 here) and replaces a socket whose pong is late."""
    acking_client.ping_interval = 0.4
    assert_replaced_after(acking_client, fake_slack, socket_mode, socket_mode.silence)


def test_a_cut_socket_is_replaced_at_once_not_at_the_monitors_next_round(
    acking_client: Any,
    fake_slack: FakeSlackAPI,
    socket_mode: FakeSocketMode,  # noqa: F811
) -> None:
    """An open socket cut by a network blip is replaced at once: the monitor's next round (every
    10 s, as in production here) is too late for the clicks meanwhile."""
    acking_client.current_app_monitor.interval_seconds = 10.0
    assert_replaced_after(acking_client, fake_slack, socket_mode, socket_mode.drop)


def test_the_monitor_keeps_trying_while_slack_refuses_a_new_socket(
    acking_client: Any,
    fake_slack: FakeSlackAPI,
    socket_mode: FakeSocketMode,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The connection drops and apps.connections.open fails for a while: each try is a
    warning, and the monitor tries again until Slack opens a socket."""
    acking_client.connect()
    assert acking_client.wait_open(5)
    fake_slack.respond("apps.connections.open", {"ok": False, "error": "internal_error"})
    opened = len(fake_slack.calls_to("apps.connections.open"))
    socket_mode.drop()
    fake_slack.wait_for_call("apps.connections.open", count=opened + 2, timeout=5)
    assert "can't reconnect to Slack yet: HTTP 200: internal_error" in caplog.text
    fake_slack.respond("apps.connections.open", {"ok": True, "url": socket_mode.url})
    wait_until(socket_mode.connected, timeout=5, message="no new socket")
    assert acking_client.wait_open(5)


def test_an_ack_with_no_socket_to_send_it_on_is_one_line(
    fake_slack: FakeSlackAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """No socket opened within the ack's 3 s: a warning line, not an exception out of the
    handler (slack_sdk would log its traceback), and delivery isn't left making way."""
    from slack_bolt import App
    from slack_sdk import WebClient
    from slack_sdk.socket_mode.request import SocketModeRequest
    from websocket import WebSocketConnectionClosedException

    from bot.core.delivery import AcksFirst
    from bot.slack.socket import RelaySocketModeHandler

    def no_socket(_ack: Any) -> None:
        raise WebSocketConnectionClosedException("no open socket to Slack")

    acks_first = AcksFirst()
    app = App(
        client=WebClient(token="xoxb-test", base_url=fake_slack.url),
        token_verification_enabled=False,
        process_before_response=True,
    )
    app.event("app_mention")(lambda: None)
    handler = RelaySocketModeHandler(app, APP_TOKEN, acks_first)
    client = SimpleNamespace(logger=app.logger, send_socket_mode_response=no_socket)
    body = {"type": "event_callback", "team_id": "T1", "event": {"type": "app_mention"}}
    try:
        handler.handle(client, SocketModeRequest("events_api", "e1", body))  # type: ignore[arg-type]
    finally:
        handler.close()
    assert "envelope not acknowledged: no open socket to Slack" in caplog.text
    assert acks_first._answering == 0


def test_an_ack_whose_send_fails_is_sent_again_within_its_time(
    acking_client: Any,
    socket_mode: FakeSocketMode,  # noqa: F811
) -> None:
    """A send that fails because the socket closed meanwhile is tried again on the socket
    open next (within the ack's 3 s); once the client is closed, it fails at once."""
    from websocket import WebSocketConnectionClosedException

    acking_client.connect()
    assert acking_client.wait_open(5)
    session = acking_client.current_session
    failed: list[str] = []
    send = session.send

    def closed_once(message: str) -> Any:
        if not failed:
            failed.append(message)
            raise WebSocketConnectionClosedException("Connection is already closed.")
        return send(message)

    session.send = closed_once
    acking_client.send_message(json.dumps({"envelope_id": "e-again"}))
    assert failed
    wait_until(lambda: socket_mode.answers.get("e-again"), timeout=5, message="ack not resent")
    acking_client.close()
    started = monotonic()
    with pytest.raises(WebSocketConnectionClosedException):
        acking_client.send_message(json.dumps({"envelope_id": "e-closed"}))
    assert monotonic() - started < 1.5


def test_an_oauth_relay_takes_votes_with_each_installed_workspaces_token(
    run_socket: Any, tmp_path: Path
) -> None:
    """Socket Mode with the OAuth settings uses the installations a `serve` process stored,
    and says at start where workspaces are installed."""
    from slack_sdk.oauth.installation_store.models.installation import Installation
    from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
    from sqlalchemy import create_engine

    from bot.slack.oauth import create_tables

    engine = create_engine(f"sqlite:///{tmp_path / 'relay.db'}")
    store = SQLAlchemyInstallationStore(client_id="1111.2222", engine=engine)
    create_tables(store)
    store.save(
        Installation(
            app_id="A1",
            team_id="T9",
            user_id="U1",
            bot_token="xoxb-installed-T9",
            bot_id="B0",
            bot_user_id="UBOT",
        )
    )
    engine.dispose()
    app = run_socket(
        SLACK_BOT_TOKEN=None,
        SLACK_CLIENT_ID="1111.2222",
        SLACK_CLIENT_SECRET="client-secret",
        SLACK_STATE_SECRET="state-secret",
    )
    app.proc.wait_for_line("install workspaces through `serve`", stream="stderr", timeout=10)
    ts = seed_reply(app.slack, "C9", "m-oauth", team="T9")
    sender = sr.SlackSender("http://unused", "unused")
    body = sender.envelope(sr.reaction_added("U2", "+1", "C9", ts), team_id="T9", event_id="EvO")
    app.answer(app.server.events_api(body))
    accepted = app.brixo.wait_for_accepted(1)
    assert [(r.id, r.attributes["value"]) for r in accepted] == [("m-oauth", "thumbs_up")]
    assert {c.token for c in app.slack.calls if c.method == "conversations.replies"} == {
        "xoxb-installed-T9"
    }
