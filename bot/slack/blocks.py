"""Block Kit for the relay: feedback buttons, the comment modal, the conversation modal."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextActionsBlock,
    ContextBlock,
    FeedbackButtonObject,
    FeedbackButtonsElement,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    RadioButtonsElement,
    SectionBlock,
)
from slack_sdk.models.views import View
from slack_sdk.web import SlackResponse

from bot.core.acts import MAX_COMMENT_CHARS
from bot.core.agent import first_part, more_note
from bot.slack.manifest import METADATA_EVENT_TYPE

log = logging.getLogger("bot.slack")

FEEDBACK_ACTION = "brixo_feedback"  # native feedback_buttons
VOTE_UP_ACTION = "brixo_vote_up"  # classic buttons
VOTE_DOWN_ACTION = "brixo_vote_down"
ADD_COMMENT_ACTION = "brixo_add_comment"
COMMENT_VIEW = "brixo_comment"
CONVERSATION_VIEW = "brixo_rate_conversation"
COMMENT_BLOCK, COMMENT_INPUT = "comment", "comment_input"
VOTE_BLOCK, VOTE_INPUT = "vote", "vote_input"


def feedback_blocks(classic: bool = False) -> list[dict[str, Any]]:
    """👍/👎 under a reply: Slack's feedback_buttons, or classic buttons where those can't go."""
    if classic:
        return [
            ActionsBlock(
                block_id="brixo_feedback",
                elements=[
                    ButtonElement(text="👍", action_id=VOTE_UP_ACTION, value="up"),
                    ButtonElement(text="👎", action_id=VOTE_DOWN_ACTION, value="down"),
                ],
            ).to_dict()
        ]
    return [
        ContextActionsBlock(
            block_id="brixo_feedback",
            elements=[
                FeedbackButtonsElement(
                    action_id=FEEDBACK_ACTION,
                    positive_button=FeedbackButtonObject(
                        text="👍", value="up", accessibility_label="Good answer"
                    ),
                    negative_button=FeedbackButtonObject(
                        text="👎", value="down", accessibility_label="Bad answer"
                    ),
                )
            ],
        ).to_dict()
    ]


# Slack's limits on a message's blocks: 3,000 characters of text per section, and about
# 12,000 in all (msg_blocks_too_long; undocumented), with room left for the note and buttons.
SECTION_CHARS = 3000
BLOCKS_TEXT_CHARS = 11_000


def reply_blocks(text: str, classic: bool = False) -> list[dict[str, Any]]:
    """A reply's text in sections (cut at a line break or space where one is near) and its
    feedback buttons; what Slack can't show in one message is cut, and a note says so."""
    chunks: list[str] = []
    rest, shown = text, 0
    while rest and shown < BLOCKS_TEXT_CHARS:
        chunk = first_part(rest, min(SECTION_CHARS, BLOCKS_TEXT_CHARS - shown))
        chunks.append(chunk)
        shown += len(chunk)
        rest = rest[len(chunk) :]
    blocks = [SectionBlock(text=MarkdownTextObject(text=c)).to_dict() for c in chunks or [" "]]
    if rest:
        note = more_note(len(rest), "Slack")
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=note)]).to_dict())
    return [*blocks, *feedback_blocks(classic)]


def post_with_feedback(
    send: Callable[..., SlackResponse],
    text: str,
    blocks: Sequence[dict[str, Any]] | None = None,
    **message: Any,
) -> SlackResponse:
    """Post a reply with 👍/👎 under it (under `blocks`, else under the text) through `send`,
    `chat_postMessage` or Bolt's `say`. Where Slack refuses the native feedback block
    (invalid_blocks), once more with classic buttons; SlackApiError if that fails too."""

    def with_buttons(classic: bool) -> list[dict[str, Any]]:
        if blocks is None:
            return reply_blocks(text, classic)
        return [*blocks, *feedback_blocks(classic)]

    try:
        return send(text=text, blocks=with_buttons(classic=False), **message)
    except SlackApiError as error:
        if error.response.get("error") != "invalid_blocks":
            raise
        log.info("Slack refused the feedback_buttons block: posting with classic buttons")
        return send(text=text, blocks=with_buttons(classic=True), **message)


def brixo_metadata(message_id: str | None, conversation_id: str | None) -> dict[str, Any]:
    """The `brixo_message` metadata that maps a reply to the customer's IDs."""
    ids = {"message_id": message_id, "conversation_id": conversation_id}
    payload = {key: value for key, value in ids.items() if value}  # Slack's values: no null
    return {"event_type": METADATA_EVENT_TYPE, "event_payload": payload}


def _comment_input(optional_label: str) -> InputBlock:
    return InputBlock(
        block_id=COMMENT_BLOCK,
        label=optional_label,
        optional=True,
        element=PlainTextInputElement(
            action_id=COMMENT_INPUT,
            multiline=True,
            max_length=MAX_COMMENT_CHARS,
            placeholder="What was good or bad about it?",
        ),
    )


def comment_modal(
    act_id: int,
    value: str,
    channel: str | None = None,
    thread_ts: str | None = None,
    thank: bool = False,
) -> dict[str, Any]:
    """Asks for an optional comment on a vote already recorded (the act waits for it).

    With `thank`, the person is thanked in `channel` (and `thread_ts`) once it is answered.
    """
    face = "👍" if value == "thumbs_up" else "👎"
    where = {"act": act_id, "channel": channel, "thread": thread_ts, "thank": thank}
    return View(
        type="modal",
        callback_id=COMMENT_VIEW,
        private_metadata=json.dumps(where, ensure_ascii=False),
        notify_on_close=True,
        title=PlainTextObject(text="Your feedback"),
        submit=PlainTextObject(text="Send"),
        close=PlainTextObject(text="Skip"),
        blocks=[
            SectionBlock(text=f"{face} Your vote is recorded. Anything to add? (optional)"),
            _comment_input("Comment"),
        ],
    ).to_dict()


# Slack's limit on a view's private_metadata.
PRIVATE_METADATA_CHARS = 3000


def conversation_modal(
    channel: str, thread_ts: str, conversation_id: str, ts: str, in_thread: bool
) -> dict[str, Any]:
    """Rates a whole conversation: 👍/👎 and an optional comment.

    The conversation ID rides in private_metadata where it fits (as text: 1024 non-ASCII
    characters do); one JSON writes longer (control characters take six characters each) is
    looked up again from the message `ts` when the modal is submitted. `in_thread`: whether
    the thread exists in Slack (the thanks go there), not just a message rooting it.
    """
    where = {"channel": channel, "thread_ts": thread_ts, "in_thread": in_thread}
    metadata = json.dumps({**where, "conversation_id": conversation_id}, ensure_ascii=False)
    if len(metadata) > PRIVATE_METADATA_CHARS:
        metadata = json.dumps({**where, "ts": ts})
    return View(
        type="modal",
        callback_id=CONVERSATION_VIEW,
        private_metadata=metadata,
        title=PlainTextObject(text="Rate this conversation"),
        submit=PlainTextObject(text="Send"),
        blocks=[
            InputBlock(
                block_id=VOTE_BLOCK,
                label="How was this conversation?",
                element=RadioButtonsElement(
                    action_id=VOTE_INPUT,
                    options=[
                        Option(value="up", label="👍 Good"),
                        Option(value="down", label="👎 Bad"),
                    ],
                ),
            ),
            _comment_input("Comment (optional)"),
        ],
    ).to_dict()


def add_comment_blocks(text: str, act_id: int, value: str) -> list[dict[str, Any]]:
    """The ephemeral note after a reaction: thanks, and a button that opens the comment modal."""
    return [
        SectionBlock(text=MarkdownTextObject(text=text or "Your vote is recorded.")).to_dict(),
        ActionsBlock(
            elements=[
                ButtonElement(
                    text="Add a comment", action_id=ADD_COMMENT_ACTION, value=f"{act_id}:{value}"
                )
            ]
        ).to_dict(),
    ]
