"""The Slack app manifest: valid per Slack's schema, in sync with manifests/, minimal scopes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from bot.slack.manifest import (
    APP_NAME,
    BOT_EVENTS,
    BOT_SCOPES,
    METADATA_EVENT_TYPE,
    SHORTCUT_CALLBACK_ID,
    build_manifest,
    generated_files,
    render,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFESTS_DIR = REPO_ROOT / "manifests"
SCHEMA_PATH = REPO_ROOT.parent / "shared/slack-manifest-schema/manifest.schema.1.0.0.json"

# Scopes each subscribed event requires, from Slack's event reference
# (docs.slack.dev/reference/events). An empty set: "No scopes required".
EVENT_SCOPES: dict[str, set[str]] = {
    "app_mention": {"app_mentions:read"},
    "message.im": {"im:history"},
    "message.channels": {"channels:history"},
    "message.groups": {"groups:history"},
    "message.mpim": {"mpim:history"},
    "reaction_added": {"reactions:read"},
    "reaction_removed": {"reactions:read"},
    "message_metadata_posted": {"metadata.message:read"},
    "message_metadata_updated": {"metadata.message:read"},
    "assistant_thread_started": set(),
    "assistant_thread_context_changed": set(),
    "app_uninstalled": set(),
    "tokens_revoked": set(),
}

# Web API methods the app calls, and the bot scopes that allow each (any one of
# them is enough; the conversation-history ones per conversation type).
METHOD_SCOPES: dict[str, set[str]] = {
    "chat.postMessage": {"chat:write"},
    "chat.postEphemeral": {"chat:write"},
    "reactions.add": {"reactions:write"},
    "views.open": set(),
    "conversations.history": {
        "channels:history",
        "groups:history",
        "im:history",
        "mpim:history",
    },
    "conversations.replies": {
        "channels:history",
        "groups:history",
        "im:history",
        "mpim:history",
    },
    # assistant:write, or chat:write since Slack's 2026-03 change.
    "assistant.threads.setStatus": {"assistant:write", "chat:write"},
    "auth.test": set(),
    "users.info": {"users:read"},
}

# Manifest features and the scope each needs.
FEATURE_SCOPES: dict[str, str] = {
    "shortcuts": "commands",
    "assistant_view": "assistant:write",
}


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    if not SCHEMA_PATH.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"Slack manifest schema missing: {SCHEMA_PATH}")
        pytest.skip(f"Slack manifest schema not found at {SCHEMA_PATH}")
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.parametrize(
    "manifest",
    [
        build_manifest(),
        build_manifest(socket=True),
        build_manifest(url="https://relay.example.com/"),
    ],
    ids=["http-placeholder", "socket", "http-url"],
)
def test_validates_against_slack_schema(validator, manifest: dict) -> None:
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_checked_in_files_match_builder() -> None:
    for file_name, expected in generated_files().items():
        path = MANIFESTS_DIR / file_name
        assert path.read_text(encoding="utf-8") == expected, (
            f'{path} is stale; regenerate with: python -c "from pathlib import Path; '
            f"from bot.slack.manifest import write_files; write_files(Path('manifests'))\""
        )
    assert generated_files()["manifest.http.json"] == render(build_manifest())
    assert generated_files()["manifest.socket.json"] == render(build_manifest(socket=True))


def test_render_is_json_in_built_order_with_trailing_newline() -> None:
    manifest = build_manifest()
    text = render(manifest)
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert json.loads(text) == manifest
    assert list(json.loads(text)) == [
        "display_information",
        "features",
        "oauth_config",
        "settings",
    ]
    assert text.startswith('{\n  "display_information"')


@pytest.mark.parametrize(
    "url",
    [
        "https://relay.example.com",
        "https://relay.example.com/",
        "https://relay.example.com/slack/events",  # the events URL itself: its base is taken
        "HTTPS://relay.example.com",  # Slack's schema takes the scheme only in lower case
    ],
)
def test_http_urls_built_from_given_url(url: str) -> None:
    manifest = build_manifest(url=url)
    settings = manifest["settings"]
    assert (
        settings["event_subscriptions"]["request_url"] == "https://relay.example.com/slack/events"
    )
    assert settings["interactivity"]["request_url"] == "https://relay.example.com/slack/events"
    assert manifest["oauth_config"]["redirect_urls"] == [
        "https://relay.example.com/slack/oauth_redirect"
    ]
    assert settings["socket_mode_enabled"] is False


def test_http_placeholder_when_no_url() -> None:
    manifest = build_manifest()
    assert manifest["settings"]["event_subscriptions"]["request_url"] == (
        "https://YOUR-HOST/slack/events"
    )


@pytest.mark.parametrize(
    "url",
    [
        "relay.example.com",
        "http://relay.example.com",
        "https://a b",
        "https://h?x=1",
        "https://",
        "",
        "https://relay.example.com:99999",
        "https://relay..example.com",
        "https://ü.example",  # Slack's schema takes ASCII URLs: the xn-- form
    ],
)
def test_rejects_what_slack_cannot_send_events_to(url: str) -> None:
    with pytest.raises(ValueError, match="expected the relay's public https:// base URL"):
        build_manifest(url=url)


def test_a_base_url_may_have_a_path() -> None:
    manifest = build_manifest(url="https://example.com/relay/")
    assert manifest["settings"]["interactivity"]["request_url"] == (
        "https://example.com/relay/slack/events"
    )


def test_socket_mode_has_no_urls() -> None:
    manifest = build_manifest(url="https://ignored.example.com", socket=True)
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is True
    assert "request_url" not in settings["event_subscriptions"]
    assert "request_url" not in settings["interactivity"]
    assert settings["interactivity"]["is_enabled"] is True
    assert "redirect_urls" not in manifest["oauth_config"]
    assert "https://" not in render(manifest)


@pytest.mark.parametrize("socket", [False, True])
def test_settings_and_features(socket: bool) -> None:
    manifest = build_manifest(socket=socket, name="Acme Feedback")
    features, settings = manifest["features"], manifest["settings"]
    assert manifest["display_information"]["name"] == "Acme Feedback"
    assert features["bot_user"] == {"display_name": "Acme Feedback", "always_online": True}
    assert features["app_home"]["messages_tab_enabled"] is True
    assert features["app_home"]["messages_tab_read_only_enabled"] is False
    assert features["assistant_view"]["assistant_description"]
    assert features["shortcuts"] == [
        {
            "name": "Rate this conversation",
            "type": "message",
            "callback_id": SHORTCUT_CALLBACK_ID,
            "description": features["shortcuts"][0]["description"],
        }
    ]
    assert settings["org_deploy_enabled"] is False
    assert settings["token_rotation_enabled"] is False
    assert settings["event_subscriptions"]["bot_events"] == list(BOT_EVENTS)
    assert manifest["oauth_config"]["scopes"] == {"bot": list(BOT_SCOPES)}


def test_constants() -> None:
    assert APP_NAME == "Brixo Feedback"
    assert METADATA_EVENT_TYPE == "brixo_message"
    assert SHORTCUT_CALLBACK_ID == "rate_conversation"
    assert len(set(BOT_SCOPES)) == len(BOT_SCOPES)
    assert len(set(BOT_EVENTS)) == len(BOT_EVENTS)


def test_metadata_subscription_is_brixo_message_from_any_app() -> None:
    subs = build_manifest()["settings"]["event_subscriptions"]["metadata_subscriptions"]
    assert subs == [{"app_id": "*", "event_type": METADATA_EVENT_TYPE}]


def test_every_event_is_known_and_its_scopes_granted() -> None:
    assert set(BOT_EVENTS) == set(EVENT_SCOPES)
    for event in BOT_EVENTS:
        missing = EVENT_SCOPES[event] - set(BOT_SCOPES)
        assert not missing, f"{event} needs {missing}"


def test_every_method_is_allowed() -> None:
    for method, scopes in METHOD_SCOPES.items():
        assert not scopes or scopes & set(BOT_SCOPES), f"{method} needs one of {scopes}"


def test_no_unused_scopes() -> None:
    manifest = build_manifest()
    used: set[str] = set().union(*EVENT_SCOPES.values(), *METHOD_SCOPES.values())
    used |= {scope for feature, scope in FEATURE_SCOPES.items() if feature in manifest["features"]}
    unused = set(BOT_SCOPES) - used
    assert not unused, f"scopes with no event, method or feature needing them: {unused}"


def test_feature_scopes_granted() -> None:
    features = build_manifest()["features"]
    for feature, scope in FEATURE_SCOPES.items():
        assert feature in features
        assert scope in BOT_SCOPES


def test_name_length_checked() -> None:
    with pytest.raises(ValueError):
        build_manifest(name="")
    with pytest.raises(ValueError):
        build_manifest(name="x" * 36)
