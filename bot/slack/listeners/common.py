"""What the listeners share: safe field access to Slack's payloads."""

from __future__ import annotations

from time import time
from typing import Any


def dig(data: Any, *path: str) -> Any:
    """`data[a][b]…`, or None where any step is missing or of the wrong type."""
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def text_field(data: Any, *path: str) -> str | None:
    """A non-empty string at `path`, else None."""
    value = dig(data, *path)
    return value if isinstance(value, str) and value else None


# How far ahead of this machine's clock Slack's may be: a signed request's own timestamp may
# be 5 minutes off either way.
MAX_CLOCK_SKEW = 300.0


def slack_time(raw: Any, fallback: float) -> float:
    """Slack's `1700000000.123456` timestamps as epoch seconds, else `fallback`; a time later
    than now (beyond clock skew) is no time a person acted, so `fallback` too."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return fallback
    return value if 0 < value <= time() + MAX_CLOCK_SKEW else fallback


MAX_ACT_ID = 2**63 - 1  # the database's largest integer


def act_id(value: Any) -> int | None:
    """An act ID from a modal's metadata or a button's value (int or digits), else None:
    anything else, a number beyond 64 bits included, is a foreign or stale submission."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ACT_ID:
        return value
    return None
