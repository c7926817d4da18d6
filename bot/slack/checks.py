"""The Slack line of `check`: the token works and holds the manifest's scopes."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from bot.core.logs import quiet
from bot.core.settings import Settings
from bot.slack.lookups import NETWORK_ERRORS, not_json, unavailable_reason, web_client
from bot.slack.manifest import BOT_SCOPES, missing_scopes

# The logger of slack-sdk's Web API client (it logs each failed try as an ERROR).
SLACK_CLIENT_LOGGER = "slack_sdk.web.base_client"


class SlackUnusable(Exception):
    """Slack can't be used: it refused a token, couldn't be reached, or SLACK_API_URL isn't
    Slack's Web API. One line; `setting` names the setting to look at."""

    def __init__(self, message: str, setting: str = "SLACK_BOT_TOKEN") -> None:
        super().__init__(message)
        self.setting = setting


def auth_test(settings: Settings) -> SlackResponse:
    """auth.test with SLACK_BOT_TOKEN; SlackUnusable with one line when it fails."""
    client = web_client(settings, settings.slack_bot_token)
    try:
        with quiet(SLACK_CLIENT_LOGGER):  # its retries' errors: the one line says it all
            return client.auth_test()
    except SlackApiError as error:
        status = error.response.status_code
        if status == 429 or status >= 500:  # after the client's retries: not the token's fault
            raise SlackUnusable(
                f"Slack at {settings.slack_api_url} is busy or down ({unavailable_reason(error)}); "
                "try again shortly",
                "SLACK_API_URL",
            ) from None
        reason = error.response.get("error") if isinstance(error.response.data, dict) else None
        page = not_json(error)
        if status == 404 or page or reason in (None, "unknown_method"):  # the URL's fault
            detail = "not JSON" if page else reason
            got = f"HTTP {status}" + (f": {detail}" if detail else "")
            raise SlackUnusable(
                f"{settings.slack_api_url} doesn't answer as Slack's Web API does ({got}); "
                "is SLACK_API_URL Slack's API base (https://slack.com/api/)?",
                "SLACK_API_URL",
            ) from None
        raise SlackUnusable(f"Slack refused the token: {reason}") from None
    except NETWORK_ERRORS as error:  # one line, no traceback
        raise unreachable(settings, error) from None


def unreachable(settings: Settings, error: BaseException) -> SlackUnusable:
    """The one line for a Slack that couldn't be reached (naming SLACK_API_URL)."""
    where = f"Slack unreachable at {settings.slack_api_url} ({type(error).__name__})"
    return SlackUnusable(where, "SLACK_API_URL")


REINSTALL = "reinstall the app from the manifest"


def check_slack_token(
    settings: Settings, scopes: Sequence[str] = BOT_SCOPES, fix: str = REINSTALL
) -> tuple[bool, str]:
    """auth.test with the bot token; compares the granted scopes with `scopes` (`fix`: what
    to do when some are missing)."""
    if settings.oauth:
        return True, "OAuth install: each workspace's token is checked when it installs"
    if not settings.slack_bot_token:
        return False, "SLACK_BOT_TOKEN is not set (or set SLACK_CLIENT_ID for OAuth)"
    try:
        response = auth_test(settings)
    except SlackUnusable as error:
        return False, str(error)
    missing = missing_scopes(response, scopes)
    where = f"team {response.get('team_id')}, bot user {response.get('user_id')}"
    if missing:
        return (
            False,
            f"token works ({where}) but lacks scopes: {', '.join(missing)}; {fix}",
        )
    return True, f"ok ({where}, all {len(scopes)} scopes granted)"
