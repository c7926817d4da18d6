"""Drive a Bolt app over HTTP the way Slack does: signed events and interactions.

Payload builders follow the shapes Slack documents for the Events API and
interactivity payloads (trimmed to the fields apps use).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import string
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import requests

#: Unreachable local address used as the default ``response_url`` so nothing leaves the host.
RESPONSE_URL = "http://127.0.0.1:9/slack/response-url"
VERIFICATION_TOKEN = "legacy-verification-token"
APP_ID = "A1"


def now_ts() -> str:
    """The current time as a Slack ``ts`` string (``seconds.micros``)."""
    return f"{time.time():.6f}"


def random_event_id() -> str:
    """A random ``Ev…`` event ID."""
    return "Ev" + "".join(random.choices(string.ascii_uppercase + string.digits, k=10))


def sign(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack sends with a request: v0 signature, timestamp and JSON content type."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    base = b"v0:" + str(ts).encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/json",
    }


class SlackSender:
    """POSTs signed requests to ``{base_url}/slack/events``."""

    def __init__(
        self,
        base_url: str,
        signing_secret: str,
        bot_user_id: str = "UBOT",
        api_app_id: str = APP_ID,
        timeout: float = 10.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/slack/events"
        self.signing_secret = signing_secret
        self.bot_user_id = bot_user_id
        self.api_app_id = api_app_id
        self.timeout = timeout
        self.session = requests.Session()

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    def raw(self, body: bytes, headers: dict[str, str]) -> requests.Response:
        """POST ``body`` with exactly ``headers``."""
        return self.session.post(self.url, data=body, headers=headers, timeout=self.timeout)

    def envelope(
        self,
        event: dict[str, Any],
        team_id: str = "T1",
        event_id: str | None = None,
        event_time: int | None = None,
        authorizations: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The ``event_callback`` wrapper Slack puts around an event."""
        if authorizations is None:
            authorizations = [
                {
                    "enterprise_id": None,
                    "team_id": team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ]
        return {
            "token": VERIFICATION_TOKEN,
            "team_id": team_id,
            "context_team_id": team_id,
            "context_enterprise_id": None,
            "api_app_id": self.api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or random_event_id(),
            "event_time": int(time.time()) if event_time is None else event_time,
            "authorizations": authorizations,
            "is_ext_shared_channel": False,
            "event_context": "4-" + uuid.uuid4().hex,
        }

    def event(
        self,
        event: dict[str, Any],
        team_id: str = "T1",
        event_id: str | None = None,
        event_time: int | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        authorizations: list[dict[str, Any]] | None = None,
    ) -> requests.Response:
        """Deliver one Events API event (optionally marked as Slack's retry)."""
        doc = self.envelope(event, team_id, event_id, event_time, authorizations)
        body = json.dumps(doc).encode()
        headers = sign(body, self.signing_secret)
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
        return self.raw(body, headers)

    def interaction(self, payload: dict[str, Any]) -> requests.Response:
        """Deliver an interactivity payload (form-encoded ``payload=<json>``)."""
        body = urlencode({"payload": json.dumps(payload)}).encode()
        headers = sign(body, self.signing_secret)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return self.raw(body, headers)

    def url_verification(self, challenge: str) -> requests.Response:
        """Send the Events API URL verification handshake."""
        doc = {"token": VERIFICATION_TOKEN, "challenge": challenge, "type": "url_verification"}
        body = json.dumps(doc).encode()
        return self.raw(body, sign(body, self.signing_secret))


# -- Events API events ----------------------------------------------------------


def reaction_added(
    user: str,
    reaction: str,
    channel: str,
    ts: str,
    item_user: str = "UBOT",
    event_ts: str | None = None,
) -> dict[str, Any]:
    """A ``reaction_added`` event on a message."""
    return {
        "type": "reaction_added",
        "user": user,
        "reaction": reaction,
        "item_user": item_user,
        "item": {"type": "message", "channel": channel, "ts": ts},
        "event_ts": event_ts or now_ts(),
    }


def reaction_removed(
    user: str,
    reaction: str,
    channel: str,
    ts: str,
    item_user: str = "UBOT",
    event_ts: str | None = None,
) -> dict[str, Any]:
    """A ``reaction_removed`` event on a message."""
    event = reaction_added(user, reaction, channel, ts, item_user, event_ts)
    event["type"] = "reaction_removed"
    return event


def message(
    channel: str,
    user: str | None,
    text: str,
    ts: str,
    thread_ts: str | None = None,
    channel_type: str = "im",
    bot_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    subtype: str | None = None,
    team: str = "T1",
    app_id: str | None = None,
) -> dict[str, Any]:
    """A ``message`` event (a person's unless ``bot_id`` is given)."""
    event: dict[str, Any] = {
        "type": "message",
        "channel": channel,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "channel_type": channel_type,
        "team": team,
    }
    if user is not None:
        event["user"] = user
    if subtype is not None:
        event["subtype"] = subtype
    if bot_id is not None:
        event["bot_id"] = bot_id
        event["app_id"] = app_id or "A2"
        event["bot_profile"] = {"id": bot_id, "app_id": event["app_id"], "name": "assistant"}
    elif subtype is None:
        event["client_msg_id"] = str(uuid.uuid4())
        event["blocks"] = [
            {
                "type": "rich_text",
                "block_id": "b1",
                "elements": [
                    {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
                ],
            }
        ]
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    if metadata is not None:
        event["metadata"] = metadata
    return event


def app_mention(
    channel: str, user: str, text: str, ts: str, thread_ts: str | None = None, team: str = "T1"
) -> dict[str, Any]:
    """An ``app_mention`` event."""
    event: dict[str, Any] = {
        "type": "app_mention",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "team": team,
        "client_msg_id": str(uuid.uuid4()),
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event


def message_metadata_posted(
    channel: str,
    message_ts: str,
    event_type: str,
    event_payload: dict[str, Any],
    app_id: str = "A2",
    bot_id: str = "BOTHER",
    team_id: str = "T1",
    user_id: str = "UOTHER",
) -> dict[str, Any]:
    """A ``message_metadata_posted`` event."""
    return {
        "type": "message_metadata_posted",
        "app_id": app_id,
        "bot_id": bot_id,
        "user_id": user_id,
        "team_id": team_id,
        "channel_id": channel,
        "metadata": {"event_type": event_type, "event_payload": event_payload},
        "message_ts": message_ts,
        "event_ts": now_ts(),
    }


def assistant_thread_started(
    channel: str,
    thread_ts: str,
    user: str,
    team: str = "T1",
    context_channel: str | None = None,
) -> dict[str, Any]:
    """An ``assistant_thread_started`` event."""
    context: dict[str, Any] = {}
    if context_channel is not None:
        context = {"channel_id": context_channel, "team_id": team, "enterprise_id": None}
    return {
        "type": "assistant_thread_started",
        "assistant_thread": {
            "user_id": user,
            "context": context,
            "channel_id": channel,
            "thread_ts": thread_ts,
        },
        "event_ts": now_ts(),
    }


# -- interactivity payloads --------------------------------------------------------


def _user(user: str, team: str) -> dict[str, Any]:
    return {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team}


def _team(team: str) -> dict[str, Any]:
    return {"id": team, "domain": f"team-{team.lower()}"}


def feedback_button_action(
    value: str,
    action_id: str = "brixo_feedback",
    block_id: str = "brixo_feedback",
    text: str | None = None,
) -> dict[str, Any]:
    """The action Slack sends when one of a ``feedback_buttons`` element's buttons is clicked."""
    if text is None:
        negative = any(w in value.lower() for w in ("down", "neg", "bad"))
        text = "\N{THUMBS DOWN SIGN}" if negative else "\N{THUMBS UP SIGN}"
    return {
        "type": "feedback_buttons",
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": text, "emoji": True},
        "value": value,
        "action_ts": now_ts(),
    }


def button_action(
    action_id: str, value: str, block_id: str = "actions", text: str = "Button"
) -> dict[str, Any]:
    """The action of a classic ``button`` click."""
    return {
        "type": "button",
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": text, "emoji": True},
        "value": value,
        "action_ts": now_ts(),
    }


def block_action(
    user: str,
    team: str,
    channel: str,
    message_ts: str,
    action: dict[str, Any],
    trigger_id: str = "trig-1",
    container_type: str = "message",
    thread_ts: str | None = None,
    response_url: str = RESPONSE_URL,
    message_user: str = "UBOT",
    message_bot_id: str = "BRELAY",
    is_ephemeral: bool = False,
) -> dict[str, Any]:
    """A ``block_actions`` payload for ``action`` clicked on a message."""
    container: dict[str, Any] = {"type": container_type}
    if container_type == "message":
        container.update(
            {"message_ts": message_ts, "channel_id": channel, "is_ephemeral": is_ephemeral}
        )
        if thread_ts is not None:
            container["thread_ts"] = thread_ts
    msg: dict[str, Any] = {
        "type": "message",
        "ts": message_ts,
        "user": message_user,
        "bot_id": message_bot_id,
        "app_id": APP_ID,
        "team": team,
        "text": "",
        "blocks": [],
    }
    if thread_ts is not None:
        msg["thread_ts"] = thread_ts
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": _user(user, team),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": container,
        "trigger_id": trigger_id,
        "team": _team(team),
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "general"},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }
    if not is_ephemeral:
        payload["message"] = msg
    return payload


def message_shortcut(
    user: str,
    team: str,
    channel: str,
    message_ts: str,
    thread_ts: str | None = None,
    callback_id: str = "rate_conversation",
    trigger_id: str = "trig-2",
    message_user: str = "UBOT",
    response_url: str = RESPONSE_URL,
) -> dict[str, Any]:
    """A message shortcut payload (``type: message_action``)."""
    msg: dict[str, Any] = {"type": "message", "ts": message_ts, "user": message_user, "text": ""}
    if thread_ts is not None:
        msg["thread_ts"] = thread_ts
    return {
        "type": "message_action",
        "token": VERIFICATION_TOKEN,
        "action_ts": now_ts(),
        "team": _team(team),
        "user": _user(user, team),
        "channel": {"id": channel, "name": "general"},
        "is_enterprise_install": False,
        "enterprise": None,
        "callback_id": callback_id,
        "trigger_id": trigger_id,
        "response_url": response_url,
        "message_ts": message_ts,
        "message": msg,
        "api_app_id": APP_ID,
    }


def _full_view(team: str, view: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The view as Slack sends it back: each modal has an ID of its own (unless `view` has one)."""
    view_id = f"V{uuid.uuid4().hex[:10].upper()}"
    full: dict[str, Any] = {
        "id": view_id,
        "team_id": team,
        "type": "modal",
        "blocks": [],
        "private_metadata": "",
        "callback_id": "",
        "hash": "1700000000.abcdef",
        "title": {"type": "plain_text", "text": "Feedback"},
        "clear_on_close": False,
        "notify_on_close": True,
        "close": None,
        "submit": None,
        "previous_view_id": None,
        "root_view_id": view_id,
        "app_id": APP_ID,
        "external_id": "",
        "app_installed_team_id": team,
        "bot_id": "BRELAY",
    }
    full.update(view)
    full["state"] = {"values": values}
    return full


def view_submission(
    user: str, team: str, view: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    """A ``view_submission`` payload; ``values`` becomes ``view.state.values``."""
    return {
        "type": "view_submission",
        "team": _team(team),
        "user": _user(user, team),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": "trig-3",
        "view": _full_view(team, view, values),
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def view_closed(user: str, team: str, view: dict[str, Any]) -> dict[str, Any]:
    """A ``view_closed`` payload (the modal was cancelled or closed)."""
    return {
        "type": "view_closed",
        "team": _team(team),
        "user": _user(user, team),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "view": _full_view(team, view, view.get("state", {}).get("values", {})),
        "is_cleared": False,
        "is_enterprise_install": False,
        "enterprise": None,
    }
