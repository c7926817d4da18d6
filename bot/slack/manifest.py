"""The Slack app manifest (schema 1.0.0) for the Brixo feedback relay.

`build_manifest` gives the manifest as a dict, `render` as the JSON text that
`python -m bot manifest` prints and that `manifests/*.json` hold.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bot.core.settings import url_problem

if TYPE_CHECKING:
    from slack_sdk.web import SlackResponse

APP_NAME = "Brixo Feedback"
METADATA_EVENT_TYPE = "brixo_message"
SHORTCUT_CALLBACK_ID = "rate_conversation"
SHORTCUT_NAME = "Rate this conversation"
PLACEHOLDER_URL = "https://YOUR-HOST"
EVENTS_PATH = "/slack/events"
OAUTH_REDIRECT_PATH = "/slack/oauth_redirect"

# Bot token scopes: each one is needed by an event below, an API method the app
# calls, or a feature of the manifest. Nothing else.
BOT_SCOPES: tuple[str, ...] = (
    "app_mentions:read",  # event app_mention
    "assistant:write",  # assistant_view: the app's AI assistant threads
    "channels:history",  # event message.channels; conversations.history/replies (public)
    "groups:history",  # event message.groups; conversations.history/replies (private)
    "im:history",  # event message.im (DMs, assistant threads); conversations.replies in DMs
    "mpim:history",  # event message.mpim; conversations.history/replies (group DMs)
    "chat:write",  # chat.postMessage (replies), chat.postEphemeral (thanks, notes)
    "reactions:read",  # events reaction_added, reaction_removed
    "reactions:write",  # reactions.add (SEED_REACTIONS on watched bots' replies)
    "users:read",  # users.info: a reaction by another app's bot is no vote
    "metadata.message:read",  # event message_metadata_posted (brixo_message metadata)
    "commands",  # the "Rate this conversation" message shortcut
)

# Bot events. assistant_thread_*, app_uninstalled and tokens_revoked need no scope.
BOT_EVENTS: tuple[str, ...] = (
    "app_mention",
    "message.im",
    "message.channels",
    "message.groups",
    "message.mpim",
    "reaction_added",
    "reaction_removed",
    "message_metadata_posted",
    "message_metadata_updated",
    "assistant_thread_started",
    "assistant_thread_context_changed",
    "app_uninstalled",
    "tokens_revoked",
)

# The message shortcut, and the metadata events from any app: the same in every manifest.
SHORTCUT: dict[str, str] = {
    "name": SHORTCUT_NAME,
    "type": "message",
    "callback_id": SHORTCUT_CALLBACK_ID,
    "description": "Rate the whole conversation 👍/👎, with an optional comment",
}
METADATA_SUBSCRIPTIONS = ({"app_id": "*", "event_type": METADATA_EVENT_TYPE},)


def missing_scopes(response: SlackResponse, wanted: Iterable[str]) -> list[str]:
    """The scopes of `wanted` that an auth.test `response` (its x-oauth-scopes) lacks."""
    granted = {s.strip() for s in (response.headers.get("x-oauth-scopes") or "").split(",")}
    return [scope for scope in wanted if scope not in granted]


DESCRIPTION = "Rate an AI assistant's replies with 👍/👎; every rating goes to Brixo."
ASSISTANT_DESCRIPTION = "Ask me anything, then rate each answer with 👍 or 👎."


def _base_url(url: str | None) -> str:
    """Return the public base URL without a trailing slash (placeholder when None); the events
    URL itself (`…/slack/events`) is taken for its base."""
    base = (PLACEHOLDER_URL if url is None else url).strip().rstrip("/")
    base = base.removesuffix(EVENTS_PATH)
    parts = urlsplit(base)
    extra = parts.query or parts.fragment or " " in base
    if parts.scheme != "https" or not parts.hostname or extra:
        raise ValueError(
            f"expected the relay's public https:// base URL, like https://relay.example.com "
            f"(Slack sends events only to https), got {url!r}"
        )
    problem = url_problem(base) or (None if base.isascii() else "not ASCII: use the xn-- form")
    if problem:
        raise ValueError(f"expected the relay's public https:// base URL, got {url!r} ({problem})")
    return "https" + base[len("https") :]  # Slack's manifest schema wants it in lower case


def build_manifest(url: str | None = None, socket: bool = False, name: str = APP_NAME) -> dict:
    """Build the app manifest.

    HTTP mode points events, interactivity and the OAuth redirect at `url`
    (a placeholder when None); Socket Mode (`socket=True`) has no URLs and
    ignores `url`.
    """
    if not 1 <= len(name) <= 35:
        raise ValueError("name must be 1 to 35 characters long")
    base = None if socket else _base_url(url)

    event_subscriptions: dict[str, Any] = {}
    interactivity: dict[str, Any] = {"is_enabled": True}
    oauth_config: dict[str, Any] = {}
    if base is not None:
        event_subscriptions["request_url"] = base + EVENTS_PATH
        interactivity["request_url"] = base + EVENTS_PATH
        oauth_config["redirect_urls"] = [base + OAUTH_REDIRECT_PATH]
    event_subscriptions["bot_events"] = list(BOT_EVENTS)
    event_subscriptions["metadata_subscriptions"] = list(METADATA_SUBSCRIPTIONS)
    oauth_config["scopes"] = {"bot": list(BOT_SCOPES)}

    return {
        "display_information": {"name": name, "description": DESCRIPTION},
        "features": {
            "app_home": {
                "home_tab_enabled": False,
                "messages_tab_enabled": True,
                "messages_tab_read_only_enabled": False,
            },
            "bot_user": {"display_name": name, "always_online": True},
            "assistant_view": {"assistant_description": ASSISTANT_DESCRIPTION},
            "shortcuts": [SHORTCUT],
        },
        "oauth_config": oauth_config,
        "settings": {
            "event_subscriptions": event_subscriptions,
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket,
            "token_rotation_enabled": False,
        },
    }


def render(manifest: dict) -> str:
    """Render a manifest as JSON (indent 2, keys in built order, trailing newline)."""
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def generated_files() -> dict[str, str]:
    """Return the checked-in files of `manifests/`, by file name, as they must read."""
    return {
        "manifest.http.json": render(build_manifest()),
        "manifest.socket.json": render(build_manifest(socket=True)),
    }


def write_files(directory: Path) -> list[Path]:
    """Write `generated_files()` into `directory`; return the paths written."""
    written = []
    for file_name, text in generated_files().items():
        path = directory / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
