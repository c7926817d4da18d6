"""The "Rate this conversation" message shortcut."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient

from bot.core.relay import UNMAPPED_CONVERSATION
from bot.slack.blocks import conversation_modal
from bot.slack.feedback import SlackFeedback, ephemeral, workspace_of
from bot.slack.listeners.common import text_field
from bot.slack.lookups import SLACK_UNAVAILABLE, lookup_client, unavailable_reason
from bot.slack.manifest import SHORTCUT_CALLBACK_ID

log = logging.getLogger("bot.slack")

UNAVAILABLE_THREAD = (
    "Slack didn't answer in time, so the rating couldn't be opened. Please try again in a moment."
)
NOT_OPENED = "Slack couldn't open the rating just now. Please try again in a moment."


def register(app: App, feedback: SlackFeedback) -> None:
    """Attach the shortcut listener: ack at once, then find the conversation and open the modal."""

    def ack_shortcut(
        ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient
    ) -> None:
        workspace = workspace_of(context)
        feedback.interactions.submit(open_rating, body, workspace, context.bot_id, client)
        ack()

    def open_rating(
        body: dict[str, Any], workspace: str | None, own_bot_id: str | None, client: WebClient
    ) -> None:
        channel = text_field(body, "channel", "id")
        ts = text_field(body, "message", "ts") or text_field(body, "message_ts")
        user = text_field(body, "user", "id")
        if not (workspace and channel and ts and user):
            log.warning("ignored a malformed conversation shortcut")
            return
        # A message outside any thread roots its own conversation; notes go beside it then:
        # Slack shows an ephemeral message in a thread only when the thread exists.
        in_thread = text_field(body, "message", "thread_ts")
        thread_ts = in_thread or ts

        def note(text: str) -> None:
            response_url = text_field(body, "response_url")
            ephemeral(client, channel, user, text, thread_ts=in_thread, response_url=response_url)

        try:
            # No retries nor waits on Retry-After: the modal's trigger_id lapses after 3 s.
            conversation_id = feedback.resolve_conversation(
                lookup_client(client), workspace, channel, ts, thread_ts, own_bot_id
            )
        except SLACK_UNAVAILABLE as error:
            log.warning(
                "can't open the rating: Slack's lookups failed (%s)", unavailable_reason(error)
            )
            note(UNAVAILABLE_THREAD)
            return
        if not conversation_id:
            log.info(
                "conversation shortcut on unmapped thread workspace=%s channel=%s ts=%s",
                workspace,
                channel,
                thread_ts,
            )
            note(UNMAPPED_CONVERSATION)
            return
        try:
            client.views_open(
                trigger_id=body.get("trigger_id"),
                view=conversation_modal(channel, thread_ts, conversation_id, ts, bool(in_thread)),
            )
        except SLACK_UNAVAILABLE as error:
            log.warning("can't open the rating modal: %s", unavailable_reason(error))
            note(NOT_OPENED)

    app.shortcut(SHORTCUT_CALLBACK_ID)(ack_shortcut)
