"""First end-to-end path: a 👍 click on a relay reply reaches Brixo."""

from __future__ import annotations

import json
import logging

import pytest
from slack_bolt import BoltRequest, BoltResponse

from tests.fakes import slack_requests as sr
from tests.slack_harness import SIGNING_SECRET, RunningRelay, StartRelay


def test_agent_reply_then_click_reaches_brixo(start_relay: StartRelay) -> None:
    app = start_relay(ASK_COMMENT="never")
    assert app.sender.event(sr.message("D1", "U1", "hello", "1700000000.000100")).status_code == 200
    post = app.slack.wait_for_call("chat.postMessage")[0]
    assert post.args["metadata"]["event_type"] == "brixo_message"
    reply_ts = app.slack.messages("D1")[-1]["ts"]
    action = sr.feedback_button_action("up")
    resp = app.sender.interaction(
        sr.block_action("U1", "T1", "D1", reply_ts, action, thread_ts="1700000000.000100")
    )
    assert resp.status_code == 200
    app.brixo.wait_for_accepted(1)
    got = app.brixo.accepted[0]
    assert got.kind == "messages" and got.id == "msg-1"
    assert got.attributes["value"] == "thumbs_up"


def test_single_workspace_acks_the_uninstall_events_it_subscribes_to(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """The manifest subscribes to them; left unanswered (404), Slack would resend them. The
    operator is told the token no longer works."""
    app = start_relay()
    with caplog.at_level(logging.INFO):
        for event in (
            {"type": "app_uninstalled", "event_ts": "1700000000.000001"},
            {"type": "tokens_revoked", "tokens": {"bot": ["UB"]}, "event_ts": "1700000000.000002"},
        ):
            assert app.sender.event(event).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for kind in ("app_uninstalled", "tokens_revoked"):
        assert f"Slack says {kind}: SLACK_BOT_TOKEN no longer works" in warnings, warnings


def assert_votes_meet_their_listeners_first(app: RunningRelay, team: str) -> None:
    """Bolt tries listeners in order, and each try costs CPU before the ack: a click matches
    the first listener, a reaction the third (after the two click listeners)."""
    listeners = app.wsgi.bolt.app._listeners  # Bolt's own list, in the order tried
    event = sr.reaction_added("U1", "+1", "C1", "1700000000.000100")
    reaction = app.sender.envelope(event, team_id=team)
    click = sr.block_action("U1", team, "C1", "1700000000.000100", sr.feedback_button_action("up"))
    for body, position in ((reaction, 2), (click, 0)):
        request = BoltRequest(body=json.dumps(body), headers={"content-type": "application/json"})
        matching = [
            i
            for i, listener in enumerate(listeners)
            if listener.matches(req=request, resp=BoltResponse(status=200))
        ]
        assert matching[0] == position


def test_votes_meet_their_listeners_first(start_relay: StartRelay) -> None:
    assert_votes_meet_their_listeners_first(start_relay(), "T1")


def assert_app_rate_limited_is_acked_with_a_warning(
    app: RunningRelay, team: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack's notice that it drops the app's events (votes among them) has no inner event and
    no listener: acked, and the operator told, in one line."""
    notice = {
        "token": "legacy",
        "type": "app_rate_limited",
        "team_id": team,
        "minute_rate_limited": 1518467820,
        "api_app_id": "A1",
    }
    body = json.dumps(notice).encode()
    with caplog.at_level(logging.INFO):
        forged = app.sender.raw(body, sr.sign(body, "not-the-signing-secret"))
        assert forged.status_code == 401
        assert "app_rate_limited" not in caplog.text
        assert app.sender.raw(body, sr.sign(body, SIGNING_SECRET)).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"workspace {team} since 2018-02-12T20:37:00Z (app_rate_limited" in m for m in warnings
    ), warnings


def test_app_rate_limited_is_acked_with_a_warning(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    assert_app_rate_limited_is_acked_with_a_warning(start_relay(), "T1", caplog)


def test_other_requests_without_a_listener_get_one_line(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """An event the manifest doesn't subscribe to is acked (Slack would retry it); a click on
    a button the relay never posted stays Bolt's 404. One line each, not Bolt's advice."""
    app = start_relay()
    with caplog.at_level(logging.INFO):
        assert app.sender.event({"type": "channel_created", "channel": {}}).status_code == 200
        action = {"type": "button", "action_id": "someone_elses", "value": "x"}
        click = sr.block_action("U1", "T1", "C1", "1700000000.000100", action)
        assert app.sender.interaction(click).status_code == 404
    lines = [r.getMessage() for r in caplog.records if r.name.startswith(("bot", "slack_bolt"))]
    assert "ignored a Slack event the relay has no use for: channel_created" in lines
    assert "no listener for a Slack request of type block_actions: answered 404" in lines
    assert not any("Unhandled request" in line for line in lines), lines
