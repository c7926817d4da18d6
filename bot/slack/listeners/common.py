"""What the listeners share: safe field access to Slack's payloads."""

from __future__ import annotations

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


def slack_time(raw: Any, fallback: float) -> float:
    """Slack's `1700000000.123456` timestamps as epoch seconds, else `fallback`."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return fallback
    return value if 0 < value < 1e11 else fallback
