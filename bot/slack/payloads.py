"""A look at parsed Slack request bodies, for those Bolt can't read or route (its 500s, 404s)."""

from __future__ import annotations

from typing import Any

# What Slack sends without a `type`: Bolt answers its SSL checks itself (slash commands too,
# though the relay has none).
_UNTYPED = {"ssl_check", "command"}


def unreadable(document: Any) -> str | None:
    """Why Bolt's listeners could not read this parsed body, or None when they can."""
    if not isinstance(document, dict):
        return "not a JSON object"
    kind, actions, event = document.get("type"), document.get("actions"), document.get("event")
    if not isinstance(kind, str) and not _UNTYPED.intersection(document):
        return "no request type"  # an empty body, a form without `payload`, …
    if kind == "block_actions" and not (
        isinstance(actions, list)
        and actions
        and all(isinstance(a, dict) and isinstance(a.get("action_id"), str) for a in actions)
    ):
        return "block_actions without readable actions"
    if kind == "event_callback" and not (
        isinstance(event, dict) and isinstance(event.get("type"), str)
    ):
        return "event_callback without a readable event"
    if kind in ("view_submission", "view_closed") and not isinstance(document.get("view"), dict):
        return f"{kind} without a view"
    if kind == "view_submission" and not isinstance(document["view"].get("type"), str):
        return "view_submission without a view type"  # Bolt's workflow-step matcher reads it
    return None
