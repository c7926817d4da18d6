"""First end-to-end path: a 👍 click on a relay reply reaches Brixo."""

from __future__ import annotations

from tests.fakes import slack_requests as sr
from tests.slack_harness import StartRelay


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
    start_relay: StartRelay,
) -> None:
    """The manifest subscribes to them; left unanswered (404), Slack would resend them."""
    app = start_relay()
    for event in (
        {"type": "app_uninstalled", "event_ts": "1700000000.000001"},
        {"type": "tokens_revoked", "tokens": {"bot": ["UBOT"]}, "event_ts": "1700000000.000002"},
    ):
        assert app.sender.event(event).status_code == 200


def test_votes_meet_their_listeners_first(start_relay: StartRelay) -> None:
    """Bolt tries listeners in order, and each try costs CPU before the ack: a click matches
    the first listener, a reaction the third (after the two click listeners)."""
    import json

    from slack_bolt import BoltRequest, BoltResponse

    app = start_relay()
    listeners = app.wsgi.bolt.app._listeners  # Bolt's own list, in the order tried
    reaction = app.sender.envelope(sr.reaction_added("U1", "+1", "C1", "1700000000.000100"))
    click = sr.block_action("U1", "T1", "C1", "1700000000.000100", sr.feedback_button_action("up"))
    for body, position in ((reaction, 2), (click, 0)):
        request = BoltRequest(body=json.dumps(body), headers={"content-type": "application/json"})
        matching = [
            i
            for i, listener in enumerate(listeners)
            if listener.matches(req=request, resp=BoltResponse(status=200))
        ]
        assert matching[0] == position
