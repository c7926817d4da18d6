"""The Slack line of `check`: the token works and holds the manifest's scopes."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.errors import SlackApiError

from bot.core.settings import Settings
from bot.slack.manifest import BOT_SCOPES


def check_slack_token(settings: Settings, scopes: Sequence[str] = BOT_SCOPES) -> tuple[bool, str]:
    """auth.test with the bot token; compares the granted scopes with `scopes`."""
    from bot.slack.app import web_client

    if settings.oauth:
        return True, "OAuth install: each workspace's token is checked when it installs"
    if not settings.slack_bot_token:
        return False, "SLACK_BOT_TOKEN is not set (or set SLACK_CLIENT_ID for OAuth)"
    client = web_client(settings, settings.slack_bot_token)
    try:
        response = client.auth_test()
    except SlackApiError as error:
        return False, f"Slack refused the token: {error.response.get('error')}"
    except Exception as error:  # network trouble: one line, no traceback
        return False, f"Slack unreachable at {settings.slack_api_url} ({type(error).__name__})"
    granted = {s.strip() for s in (response.headers.get("x-oauth-scopes") or "").split(",")}
    missing = [scope for scope in scopes if scope not in granted]
    where = f"team {response.get('team_id')}, bot user {response.get('user_id')}"
    if missing:
        return (
            False,
            f"token works ({where}) but lacks scopes: {', '.join(missing)}; "
            "reinstall the app from the manifest",
        )
    return True, f"ok ({where}, all {len(scopes)} scopes granted)"
