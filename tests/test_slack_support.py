"""Helpers shared by the Slack end-to-end tests (no tests here).

Every helper drives the running relay through its real boundaries: signed HTTP
requests in, the fake Slack Web API, agent and Brixo out. Outbox and mapping
reads are only used to show that nothing was recorded.
"""

from __future__ import annotations

from time import time
from typing import Any

import requests

from bot.core.brixo import KEY_CHECK_ID
from tests.fakes import slack_requests as sr
from tests.fakes.brixo import Received
from tests.fakes.slack_api import Call
from tests.slack_harness import RunningRelay
from tests.waiting import wait_until


def outbox(app: RunningRelay) -> dict[str, Any]:
    """Acts per state (awaiting_comment, pending, delivered, dead)."""
    return app.relay.outbox.counts(time())


def settled(app: RunningRelay, delivered: int, awaiting: int = 0) -> dict[str, Any]:
    """Wait until nothing is pending; then the outbox must hold exactly these counts.

    Acts are recorded before Slack's ack, so once the requests have been answered
    this shows what was recorded in all, and that all of it reached Brixo.
    """
    counts = wait_until(
        lambda: (lambda c: c if c["pending"] == 0 else None)(outbox(app)),
        message="outbox never drained",
    )
    assert counts["dead"] == 0, counts
    assert counts["delivered"] == delivered, counts
    assert counts["awaiting_comment"] == awaiting, counts
    wait_until(lambda: len(app.brixo.accepted) >= delivered, message="Brixo missed a signal")
    assert len(app.brixo.accepted) == delivered, [r.raw_path for r in app.brixo.accepted]
    return counts


def signals(app: RunningRelay) -> list[Received]:
    """Requests Brixo received other than the worker's key probe."""
    return [r for r in app.brixo.requests if r.id != KEY_CHECK_ID]


def ok(response: requests.Response) -> requests.Response:
    """Assert Slack would see a success (200) and return the response."""
    assert response.status_code == 200, (response.status_code, response.text)
    return response


def ask_agent(
    app: RunningRelay,
    text: str = "hello",
    channel: str = "D1",
    user: str = "U1",
    ts: str | None = None,
    thread_ts: str | None = None,
    team: str = "T1",
) -> str:
    """DM the relay; wait until the agent's reply is posted and mapped; return the reply's ts.

    The person's message is stored in the fake Slack too, as Slack would hold it.
    """
    before = len(app.slack.calls_to("chat.postMessage"))
    ts = ts or sr.now_ts()
    app.slack.add_message(channel, ts, text, user=user, thread_ts=thread_ts, team=team)
    event = sr.message(channel, user, text, ts, thread_ts=thread_ts, team=team)
    ok(app.sender.event(event, team_id=team))
    post = app.slack.wait_for_call("chat.postMessage", before + 1)[before]
    root = thread_ts or ts
    assert post.args["thread_ts"] == root
    reply = reply_ts(app, channel, post)
    wait_until(
        lambda: app.relay.mappings.message(team, channel, reply),
        message="the agent's reply was never mapped",
    )
    return reply


def reply_ts(app: RunningRelay, channel: str, post: Call) -> str:
    """The ts the fake Slack gave the message `post` created (or, when Slack refused that
    call, the relay's next try at it), once it is stored."""

    def stored() -> str | None:
        for message in reversed(app.slack.messages(channel)):
            if message.get("text") == post.args.get("text") and message.get("user") == "UBOT":
                return str(message["ts"])
        return None

    return wait_until(stored, message=f"no stored message for {post.args}")


def map_by_metadata(
    app: RunningRelay,
    message_id: str | None,
    conversation_id: str | None = None,
    channel: str = "C1",
    ts: str | None = None,
    team: str = "T1",
) -> str:
    """Map a reply through a `message_metadata_posted` event; return its ts."""
    ts = ts or sr.now_ts()
    payload = {"message_id": message_id}
    if conversation_id:
        payload["conversation_id"] = conversation_id
    event = sr.message_metadata_posted(channel, ts, "brixo_message", payload, team_id=team)
    ok(app.sender.event(event, team_id=team))
    return ts


def click(
    app: RunningRelay,
    ts: str,
    value: str = "up",
    user: str = "U1",
    channel: str = "D1",
    team: str = "T1",
    thread_ts: str | None = None,
    action: dict[str, Any] | None = None,
    trigger_id: str = "trig-1",
) -> requests.Response:
    """Click 👍/👎 (feedback_buttons) under message `ts`."""
    action = action or sr.feedback_button_action(value)
    payload = sr.block_action(
        user, team, channel, ts, action, thread_ts=thread_ts, trigger_id=trigger_id
    )
    return ok(app.sender.interaction(payload))


def react(
    app: RunningRelay,
    ts: str,
    reaction: str = "+1",
    user: str = "U1",
    channel: str = "D1",
    team: str = "T1",
    event_ts: str | None = None,
    event_id: str | None = None,
    retry_num: int | None = None,
) -> requests.Response:
    """Add a reaction to message `ts`."""
    event = sr.reaction_added(user, reaction, channel, ts, event_ts=event_ts)
    return ok(app.sender.event(event, team_id=team, event_id=event_id, retry_num=retry_num))


def values_of(app: RunningRelay) -> list[tuple[str, str, str]]:
    """(kind, id, value) of each accepted signal, in arrival order."""
    return [(r.kind, r.id, r.attributes["value"]) for r in app.brixo.accepted]


def opened_view(app: RunningRelay, count: int = 1) -> dict[str, Any]:
    """The view of the `count`-th views.open call (waits for it)."""
    view = app.slack.wait_for_call("views.open", count)[count - 1].args["view"]
    assert isinstance(view, dict)
    return view


def rating_values(value: str) -> dict[str, Any]:
    """view.state.values of the "Rate this conversation" modal with 👍 ("up") or 👎 ("down")."""
    return {"vote": {"vote_input": {"type": "radio_buttons", "selected_option": {"value": value}}}}


def comment_values(comment: str | None) -> dict[str, Any]:
    """view.state.values of the comment modal."""
    return {"comment": {"comment_input": {"type": "plain_text_input", "value": comment}}}


def ephemerals(app: RunningRelay, text: str | None = None) -> list[Call]:
    """chat.postEphemeral calls (with this text, when given)."""
    calls = app.slack.calls_to("chat.postEphemeral")
    return [c for c in calls if text is None or c.args.get("text") == text]
