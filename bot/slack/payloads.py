"""A first look at Slack request bodies, for those Bolt can't read (it would answer 500)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs


def unreadable(body: bytes, content_type: str) -> str | None:
    """Why Bolt could not read this body, or None when it can."""
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = parse_qs(body.decode("utf-8"))
            if "payload" not in form:
                return None  # slash commands and other forms: Bolt reads them
            document = json.loads(form["payload"][0])
        else:
            document = json.loads(body.decode("utf-8") or "null")
    except (ValueError, UnicodeDecodeError):
        return "not JSON"
    if not isinstance(document, dict):
        return "not a JSON object"
    kind, actions, event = document.get("type"), document.get("actions"), document.get("event")
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
    return None
