"""Modal submissions and closes: the comment modal and the conversation rating."""

from __future__ import annotations

import json
import logging
from time import time
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient

from bot.core.acts import VALUES, clean_comment
from bot.core.mapping import POSTED, Mapping
from bot.core.relay import TOO_LATE
from bot.slack.blocks import (
    COMMENT_BLOCK,
    COMMENT_INPUT,
    COMMENT_VIEW,
    CONVERSATION_VIEW,
    VOTE_BLOCK,
    VOTE_INPUT,
)
from bot.slack.feedback import SlackFeedback, Vote, ephemeral, workspace_of
from bot.slack.listeners.common import act_id, dig, text_field

log = logging.getLogger("bot.slack")


def private_metadata(view: dict[str, Any]) -> dict[str, Any]:
    """The view's private_metadata as a dict ({} when absent or not ours)."""
    try:
        data = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def register(app: App, feedback: SlackFeedback) -> None:
    """Attach the modal listeners."""

    def submit_comment(
        ack: Ack,
        body: dict[str, Any],
        view: dict[str, Any],
        context: BoltContext,
        client: WebClient,
    ) -> None:
        """The act stops waiting, with the comment, in the same request that Slack acks."""
        meta = private_metadata(view)
        comment = clean_comment(dig(view, "state", "values", COMMENT_BLOCK, COMMENT_INPUT, "value"))
        done = finish_comment(feedback, meta, body, context, comment)
        if not done and comment:
            ack(response_action="errors", errors={COMMENT_BLOCK: TOO_LATE})
            return
        if done:
            thank_voter(feedback, meta, body, client)
        ack()

    def close_comment(
        ack: Ack,
        body: dict[str, Any],
        view: dict[str, Any],
        context: BoltContext,
        client: WebClient,
    ) -> None:
        """Skip or close: the act goes now, without a comment."""
        meta = private_metadata(view)
        if finish_comment(feedback, meta, body, context, None):
            thank_voter(feedback, meta, body, client)
        ack()

    def submit_rating(
        ack: Ack,
        body: dict[str, Any],
        view: dict[str, Any],
        context: BoltContext,
        client: WebClient,
    ) -> None:
        """A conversation-level vote with its optional comment, stored before the ack."""
        meta = private_metadata(view)
        values = dig(view, "state", "values") or {}
        value = VALUES.get(str(dig(values, VOTE_BLOCK, VOTE_INPUT, "selected_option", "value")))
        if not value:
            ack(response_action="errors", errors={VOTE_BLOCK: "Pick 👍 or 👎."})
            return
        channel, thread_ts = text_field(meta, "channel"), text_field(meta, "thread_ts")
        user, workspace = text_field(body, "user", "id"), workspace_of(context)
        conversation_id = text_field(meta, "conversation_id")
        ts = text_field(meta, "ts")  # an ID too long for private_metadata: as recorded
        if not conversation_id and ts and channel and thread_ts and workspace:
            conversation_id = feedback.relay.conversation_of(
                workspace, channel, ts, thread_ts, templates=False
            )
        if not (conversation_id and channel and thread_ts and user and workspace):
            log.warning("ignored a malformed conversation rating")
            ack()
            return
        vote = Vote(workspace, user, channel, thread_ts, value, time(), "shortcut")
        # A replayed submission (one modal is submitted once) must not flip a changed vote.
        view_id = text_field(view, "id")
        recorded = feedback.record_vote(
            vote,
            Mapping(None, conversation_id, thread_ts, POSTED),
            ask_comment=False,
            comment=clean_comment(dig(values, COMMENT_BLOCK, COMMENT_INPUT, "value")),
            seen_key=f"view:{workspace}:{view_id}" if view_id else None,
        )
        if recorded.stands:
            in_thread = meta.get("in_thread", True) is True  # absent: a modal of an older relay
            handoff = {
                "channel": channel,
                "user": user,
                "thread_ts": thread_ts if in_thread else None,
            }
            feedback.follow_ups.submit(thank, feedback, handoff, client)
        ack()

    app.view_submission(COMMENT_VIEW)(submit_comment)
    app.view_closed(COMMENT_VIEW)(close_comment)
    app.view_submission(CONVERSATION_VIEW)(submit_rating)


def finish_comment(
    feedback: SlackFeedback,
    meta: dict[str, Any],
    body: dict[str, Any],
    context: BoltContext,
    comment: str | None,
) -> bool:
    """Release the modal's act (only its voter can); False when it no longer waits."""
    act = act_id(meta.get("act"))
    user = text_field(body, "user", "id") or ""
    return act is not None and feedback.relay.outbox.finish_comment(
        act, workspace_of(context), user, comment, time()
    )


def thank_voter(
    feedback: SlackFeedback, meta: dict[str, Any], body: dict[str, Any], client: WebClient
) -> None:
    """After the ack: the thanks where the vote was made, if the modal says to thank."""
    if meta.get("thank"):
        where = {"channel": meta.get("channel"), "thread_ts": meta.get("thread")}
        handoff = {**where, "user": text_field(body, "user", "id")}
        feedback.follow_ups.submit(thank, feedback, handoff, client)


def thank(feedback: SlackFeedback, handoff: dict[str, Any], client: WebClient) -> None:
    """The ephemeral thanks (ACK_MESSAGE) once a modal's vote is on its way."""
    if handoff.get("channel") and feedback.settings.ack_message:
        ephemeral(
            client,
            handoff["channel"],
            handoff["user"],
            feedback.settings.ack_message,
            thread_ts=handoff.get("thread_ts"),
        )
