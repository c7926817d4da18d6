"""Library mode's needs: scopes, events and a manifest fragment to merge."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bot.core.settings import Settings, load_settings
from bot.slack.manifest import (
    BOT_EVENTS,
    BOT_SCOPES,
    METADATA_SUBSCRIPTIONS,
    SHORTCUT,
)

# What the relay needs from the app in library mode (a subset of the standalone manifest:
# the agent bridge's app_mention, assistant and DM events are the app's own business).
_SCOPES = {
    "chat:write": "post replies, thanks and notes",
    "reactions:read": "👍/👎 reaction events",
    "channels:history": "read a rated reply and its thread (public channels)",
    "groups:history": "read a rated reply and its thread (private channels)",
    "im:history": "read a rated reply and its thread (DMs, assistant threads)",
    "mpim:history": "read a rated reply and its thread (group DMs)",
    "metadata.message:read": "brixo_message metadata events",
    "commands": "the 'Rate this conversation' shortcut",
    "users:read": "users.info: a reaction by another app's bot is no vote",
}
_OBSERVER_SCOPES = {"reactions:write": "seed 👍/👎 on watched bots' replies (SEED_REACTIONS)"}
LIBRARY_EVENTS = (
    "reaction_added",
    "reaction_removed",
    "message_metadata_posted",
    "message_metadata_updated",
)
_OBSERVER_EVENTS = ("message.channels", "message.groups", "message.im", "message.mpim")

assert set(_SCOPES) | set(_OBSERVER_SCOPES) <= set(BOT_SCOPES)
assert set(LIBRARY_EVENTS) | set(_OBSERVER_EVENTS) <= set(BOT_EVENTS)


class RelaySetupError(Exception):
    """The app lacks something the relay needs (a scope, a setting); the message says what."""


def required_scopes(settings: Settings) -> tuple[str, ...]:
    """Bot token scopes the relay needs in library mode, in the manifest's order."""
    wanted = set(_SCOPES)
    if settings.assistant_bot_ids and settings.seed_reactions:
        wanted |= set(_OBSERVER_SCOPES)
    return tuple(scope for scope in BOT_SCOPES if scope in wanted)


def required_events(settings: Settings) -> tuple[str, ...]:
    """Bot events the relay needs in library mode (message events only to watch other bots)."""
    wanted = set(LIBRARY_EVENTS) | (set(_OBSERVER_EVENTS) if settings.assistant_bot_ids else set())
    return tuple(event for event in BOT_EVENTS if event in wanted)


def manifest_fragment(
    settings: Settings | None = None, request_url: str | None = None
) -> dict[str, Any]:
    """The parts of a Slack app manifest the relay needs, to merge into the app's own.

    `settings` (default: read from the environment over `.env`, as `FeedbackRelay.from_env`)
    add the observer's needs when ASSISTANT_BOT_IDS is set.
    `request_url` (e.g. https://host/slack/events) is set for events and interactivity;
    leave it out for Socket Mode or when the app's manifest already has it.
    """
    settings = settings or load_settings()
    events_settings: dict[str, Any] = {
        "bot_events": list(required_events(settings)),
        "metadata_subscriptions": list(METADATA_SUBSCRIPTIONS),
    }
    interactivity: dict[str, Any] = {"is_enabled": True}
    if request_url:
        events_settings = {"request_url": request_url, **events_settings}
        interactivity["request_url"] = request_url
    return {
        "features": {"shortcuts": [SHORTCUT]},
        "oauth_config": {"scopes": {"bot": list(required_scopes(settings))}},
        "settings": {"event_subscriptions": events_settings, "interactivity": interactivity},
    }


def missing_scopes_message(missing: Iterable[str], where: str) -> str:
    lines = "; ".join(f"{s} ({(_SCOPES | _OBSERVER_SCOPES)[s]})" for s in missing)
    return (
        f"the Slack token lacks scopes the feedback relay needs: {lines}. Add them to "
        f"{where} (relay.manifest_fragment() has all it needs) and reinstall the app"
    )
