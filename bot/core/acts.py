"""Feedback acts and the signals they become: plain data, no platform in sight."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

TargetKind = Literal["message", "conversation"]
Value = Literal["thumbs_up", "thumbs_down"]

# Brixo's signal value for a vote, and back.
UP: Value = "thumbs_up"
DOWN: Value = "thumbs_down"
VALUES: dict[str, Value] = {"up": UP, "down": DOWN, UP: UP, DOWN: DOWN}

# Comments longer than this are cut before they are stored; Slack's own input limit is 3000.
MAX_COMMENT_CHARS = 3000


class ReactionVotes:
    """Which reactions vote 👍 and which 👎, by names a platform's `key` makes comparable
    (Slack's aliases and skin tones, Discord's emoji variants)."""

    def __init__(
        self, positive: Iterable[str], negative: Iterable[str], key: Callable[[str], str]
    ) -> None:
        self.key = key
        self.positive = frozenset(map(key, positive))
        self.negative = frozenset(map(key, negative))

    def value(self, reaction: str) -> Value | None:
        """thumbs_up / thumbs_down for a reaction, else None."""
        name = self.key(reaction)
        if name in self.positive:
            return UP
        if name in self.negative:
            return DOWN
        return None


@dataclass(frozen=True)
class Target:
    """What a signal tags: one of the customer's message or conversation IDs."""

    kind: TargetKind
    id: str

    def __post_init__(self) -> None:
        if self.kind not in ("message", "conversation"):
            raise ValueError(f"target kind must be message or conversation, not {self.kind!r}")
        if not isinstance(self.id, str) or not self.id.strip():
            raise ValueError("target ID is empty or blank")
        if len(self.id) > 1024:
            raise ValueError("target ID is longer than 1024 characters")


@dataclass(frozen=True)
class Act:
    """One person's one vote on one target, as a chat platform reported it."""

    platform: str
    workspace: str
    user_id: str
    source: str  # button, reaction, shortcut, command
    target: Target
    value: Value
    occurred_at: float  # epoch seconds, when the person acted
    comment: str | None = None
    channel: str | None = None
    ts: str | None = None


@dataclass(frozen=True)
class Signal:
    """The body and address of one request to Brixo."""

    target: Target
    value: Value
    occurred_at: float  # epoch seconds: always sent, whatever the delivery delay
    user_message: str | None = None

    def body(self) -> dict[str, Any]:
        """The JSON:API document, exactly as the reference shows it."""
        attributes: dict[str, Any] = {
            "name": "feedback",
            "value": self.value,
            "occurred_at": rfc3339(self.occurred_at),
        }
        if self.user_message:
            attributes["user_message"] = self.user_message
        return {"data": {"type": "signals", "attributes": attributes}}


def rfc3339(epoch: float) -> str:
    """`2026-02-03T14:22:10Z` (UTC, whole seconds as the reference shows; ms when present)."""
    moment = datetime.fromtimestamp(epoch, UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# Zero-width characters (space, non-joiner, joiner, word joiner, BOM): blanks around a comment.
_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"


def clean_comment(text: str | None, limit: int | None = MAX_COMMENT_CHARS) -> str | None:
    """A comment without control characters (line breaks and tabs stay) or surrounding blanks
    (zero-width ones too), cut to `limit` characters; None when nothing in it would show."""
    if text is None:
        return None
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")
    start, end = 0, len(text)
    while start < end and (text[start].isspace() or text[start] in _ZERO_WIDTH):
        start += 1
    while end > start and (text[end - 1].isspace() or text[end - 1] in _ZERO_WIDTH):
        end -= 1
    text = text[start:end]
    visible = any(unicodedata.category(c)[0] in "LMNPS" for c in text)
    return text[:limit] if visible else None
