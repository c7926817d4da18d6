"""What the agent bridge is on every chat platform: the answer it takes and how asking fails."""

from __future__ import annotations

import json
from typing import Any

from bot.core.mapping import customer_id

# An answer is posted as one chat message: far more than a megabyte is no answer.
MAX_ANSWER_BYTES = 1_000_000

AGENT_ERROR_REPLY = "Sorry, I couldn't get an answer just now. Please try again in a moment."


def question(
    text: str, user: str, workspace: str, channel: str, root: str, conversation_id: str | None
) -> dict[str, Any]:
    """The JSON the agent gets for a person's message, the same on every chat platform:
    `root` is the conversation's root (Slack's thread_ts), `conversation_id` the one the agent
    returned last in it."""
    return {
        "text": text,
        "user_id": user,
        "team_id": workspace,
        "channel_id": channel,
        "thread_ts": root,
        "conversation_id": conversation_id,
    }


class AgentError(Exception):
    """The agent failed, timed out, or answered something unusable."""


def redirected(status: int, location: str) -> AgentError:
    """The error for a redirect, which isn't followed: followed, it would lose the question
    (a 301 or 302 turns the POST into a GET without its body)."""
    return AgentError(f"HTTP {status}, a redirect to {location!r}: set AGENT_URL to where it leads")


def parse_answer(body: bytes) -> tuple[str, str | None, str | None]:
    """(text, message_id, conversation_id) of a 200 answer's body; the IDs None where they
    aren't usable customer IDs; AgentError without text."""
    try:
        data = json.loads(body)
    except ValueError:
        raise AgentError("answer is not JSON") from None
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise AgentError("answer has no text")
    return text, customer_id(data.get("message_id")), customer_id(data.get("conversation_id"))


def first_part(text: str, room: int, near: int = 500) -> str:
    """As much of `text` as fits in `room` characters, cut at a line break or space within
    `near` of the end where there is one (not mid-word, nor mid-link)."""
    if len(text) <= room:
        return text
    part = text[:room]
    cut = max(part.rfind("\n", max(0, room - near)), part.rfind(" ", max(0, room - near)))
    return part[: cut + 1] if cut > 0 else part


def more_note(left: int, platform: str) -> str:
    """The note under an answer cut to fit one chat message."""
    return f"_(The answer goes on for {left:,} more characters than a {platform} message shows.)_"
