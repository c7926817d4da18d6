"""Button clicks: 👍/👎 under a reply, and "Add a comment" after a reaction."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from time import time
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient

from bot.core.acts import VALUES
from bot.core.relay import TOO_LATE, UNMAPPED_NOTE
from bot.slack.blocks import (
    ADD_COMMENT_ACTION,
    FEEDBACK_ACTION,
    VOTE_DOWN_ACTION,
    VOTE_UP_ACTION,
    comment_modal,
)
from bot.slack.feedback import (
    UNAVAILABLE_NOTE,
    SlackFeedback,
    Vote,
    ephemeral,
    workspace_of,
)
from bot.slack.listeners.common import act_id, dig, slack_time, text_field
from bot.slack.lookups import SLACK_UNAVAILABLE, unavailable_reason

log = logging.getLogger("bot.slack")

VOTE_ACTIONS = re.compile(f"^({FEEDBACK_ACTION}|{VOTE_UP_ACTION}|{VOTE_DOWN_ACTION})$")


@dataclass(frozen=True)
class Click:
    """What a click's follow-up needs: where and by whom, and what the ack path recorded."""

    workspace: str
    channel: str | None = None
    user: str | None = None
    thread_ts: str | None = None
    act_id: int | None = None
    value: str = ""
    ask: bool = False  # the act waits for the comment modal
    thank: bool = False  # a vote click (thanked), not "Add a comment" after a reaction
    stands: bool = False  # the vote is on record: new, or the same again (thanked again)
    unmapped: bool = False
    error: str | None = None  # why Slack couldn't be asked about the reply
    before_ack: bool = True
    own_bot_id: str | None = None


def register(app: App, feedback: SlackFeedback) -> None:
    """Attach the click listeners."""

    def record_click(
        ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient
    ) -> None:
        """Ack path: map the reply and store the act before Slack hears back."""
        click = click_act(feedback, body, workspace_of(context), context.bot_id, client)
        if click_follow_up(click, feedback.settings.ack_message):
            feedback.interactions.submit(follow_up_click, body, click, client)
        ack()

    def follow_up_click(body: dict[str, Any], click: Click, client: WebClient) -> None:
        """After the ack: the note that nothing was recorded, the comment modal, or the thanks.

        A click whose reply Slack couldn't look up before the ack is tried again here, with the
        client's retries: Slack never sends a click twice.
        """
        follow_up = click_follow_up(click, feedback.settings.ack_message)
        if follow_up == LOOK_AGAIN:
            click = click_act(
                feedback, body, click.workspace, click.own_bot_id, client, before_ack=False
            )
            follow_up = click_follow_up(click, feedback.settings.ack_message)
        if not follow_up or not click.channel or not click.user:
            return
        if follow_up == UNAVAILABLE:
            log.warning("vote click not recorded: Slack's lookups failed (%s)", click.error)
            text = UNAVAILABLE_NOTE
        elif follow_up == UNMAPPED:
            text = UNMAPPED_NOTE
        elif follow_up == MODAL:
            open_comment_modal(feedback, client, body, click)
            return
        else:
            text = feedback.settings.ack_message
        response_url = text_field(body, "response_url")
        ephemeral(
            client,
            click.channel,
            click.user,
            text,
            thread_ts=click.thread_ts,
            response_url=response_url,
        )

    def add_comment(
        ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient
    ) -> None:
        """The ephemeral "Add a comment" button: after the ack, the modal for the waiting act."""
        action = (dig(body, "actions") or [{}])[0]
        raw_id, _, value = str(dig(action, "value") or "").partition(":")
        act = act_id(raw_id)
        if act is not None:
            click = Click(workspace_of(context), act_id=act, value=value)
            feedback.interactions.submit(offer_comment_modal, body, click, client)
        ack()

    def offer_comment_modal(body: dict[str, Any], click: Click, client: WebClient) -> None:
        """The modal while the act still waits for its comment, else a note that it went."""
        if click.act_id is not None and feedback.relay.awaits_comment(click.act_id):
            open_comment_modal(feedback, client, body, click)
            return
        channel, user = text_field(body, "channel", "id"), text_field(body, "user", "id")
        if channel and user:
            response_url = text_field(body, "response_url")
            ephemeral(client, channel, user, TOO_LATE, response_url=response_url)

    app.action(VOTE_ACTIONS)(record_click)
    app.action(ADD_COMMENT_ACTION)(add_comment)


# What a click leads to after the ack (click_follow_up).
UNMAPPED, MODAL, THANKS = "unmapped", "modal", "thanks"
LOOK_AGAIN, UNAVAILABLE = "look_again", "unavailable"


def click_follow_up(click: Click, ack_message: str) -> str | None:
    """What follows a click's ack (LOOK_AGAIN, UNAVAILABLE, UNMAPPED, MODAL or THANKS), or None."""
    known = bool(click.channel and click.user)
    if click.error:
        return (LOOK_AGAIN if click.before_ack else UNAVAILABLE) if known else None
    if click.unmapped:
        return UNMAPPED if known else None
    if click.ask:
        return MODAL
    return THANKS if click.stands and ack_message and known else None


def click_act(
    feedback: SlackFeedback,
    body: dict[str, Any],
    workspace: str,
    own_bot_id: str | None,
    client: WebClient,
    *,
    before_ack: bool = True,
) -> Click:
    """Record the act a vote click stands for; returns what the follow-up needs.

    When Slack can't be asked about an unseen reply, the click holds the error instead.
    """
    action = (dig(body, "actions") or [{}])[0]
    if not isinstance(action, dict):
        return Click(workspace)
    raw_value = {VOTE_UP_ACTION: "up", VOTE_DOWN_ACTION: "down"}.get(
        action.get("action_id", ""), action.get("value")
    )
    value = VALUES.get(str(raw_value))
    user = text_field(body, "user", "id")
    channel = text_field(body, "channel", "id") or text_field(body, "container", "channel_id")
    ts = text_field(body, "message", "ts") or text_field(body, "container", "message_ts")
    if not (value and user and channel and ts and workspace):
        log.warning("ignored a malformed vote click (missing user, channel, message or value)")
        return Click(workspace)
    click = Click(
        workspace,
        channel,
        user,
        thread_ts=text_field(body, "message", "thread_ts")
        or text_field(body, "container", "thread_ts"),
    )
    try:
        mapping = feedback.resolve(
            client, workspace, channel, ts, own_bot_id, before_ack=before_ack
        )
    except SLACK_UNAVAILABLE as error:
        reason = unavailable_reason(error)
        if before_ack:
            log.info("can't look the clicked message up yet (%s): again after the ack", reason)
        return replace(click, own_bot_id=own_bot_id, before_ack=before_ack, error=reason)
    if not mapping:
        log.info(
            "vote on unmapped message workspace=%s channel=%s ts=%s: no signal",
            workspace,
            channel,
            ts,
        )
        return replace(click, unmapped=True)
    vote = Vote(
        workspace, user, channel, ts, value, slack_time(action.get("action_ts"), time()), "button"
    )
    ask = feedback.relay.wants_comment(value) and bool(body.get("trigger_id"))
    action_ts = action.get("action_ts")
    # A replayed click (same action_ts) must not flip a vote the person has since changed.
    seen = f"click:{workspace}:{user}:{action_ts}" if isinstance(action_ts, str) else None
    recorded = feedback.record_vote(vote, mapping, ask_comment=ask, seen_key=seen)
    return replace(
        click,
        act_id=recorded.act_id,
        ask=ask and recorded.created,
        value=value,
        thank=True,
        stands=recorded.stands,
    )


def open_comment_modal(
    feedback: SlackFeedback, client: WebClient, body: dict[str, Any], click: Click
) -> None:
    """Open the comment modal; if Slack refuses, release the act so it goes without one."""
    act_id = click.act_id
    assert act_id is not None
    trigger_id = body.get("trigger_id")
    view = comment_modal(act_id, click.value, click.channel, click.thread_ts, thank=click.thank)
    try:
        client.views_open(trigger_id=trigger_id, view=view)
        return
    except SLACK_UNAVAILABLE as error:
        log.warning(
            "can't open the comment modal for act=%s: %s; sending without comment",
            act_id,
            unavailable_reason(error),
        )
    user = text_field(body, "user", "id") or ""
    released = feedback.relay.outbox.finish_comment(act_id, click.workspace, user, None, time())
    channel, thanks = click.channel, feedback.settings.ack_message
    if released and click.thank and channel and thanks:  # the thanks the modal would give
        response_url = text_field(body, "response_url")
        ephemeral(
            client, channel, user, thanks, thread_ts=click.thread_ts, response_url=response_url
        )
