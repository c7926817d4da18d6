"""The Bolt app: single-workspace or OAuth, its Web API client, and the relay's listeners."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from time import time
from typing import Any

from slack_bolt import App, BoltContext, BoltResponse
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.authorize import Authorize
from slack_bolt.error import BoltUnhandledRequestError
from slack_sdk.oauth.installation_store import InstallationStore
from slack_sdk.web import SlackResponse
from sqlalchemy.exc import DataError

from bot.core.acts import rfc3339
from bot.core.relay import Relay
from bot.core.settings import Settings
from bot.slack.agent import AgentBridge
from bot.slack.checks import REINSTALL, auth_test
from bot.slack.feedback import SlackFeedback, check_reaction_names
from bot.slack.listeners import register
from bot.slack.listeners.common import slack_time
from bot.slack.lookups import SLACK_UNAVAILABLE, unavailable_reason, web_client
from bot.slack.manifest import BOT_SCOPES, missing_scopes

log = logging.getLogger("bot.slack")


# What Bolt reads from the environment by itself when an App is built. The relay's settings
# (`.env` included, an empty value meaning unset) decide instead: an empty `SLACK_CLIENT_ID=`
# line would turn on Bolt's own install pages and file stores.
BOLT_READS = ("SLACK_BOT_TOKEN", "SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET")


@contextmanager
def hidden_from_bolt() -> Iterator[None]:
    """While an App is built, the variables of BOLT_READS are out of Bolt's sight."""
    saved = {name: os.environ.pop(name) for name in BOLT_READS if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def build_app(
    relay: Relay, *, socket_mode: bool = False, identity: SlackResponse | None = None
) -> App:
    """The standalone relay's Bolt app with every listener attached.

    A single-workspace app is authorized by the bot's `identity` (auth.test's answer, asked
    now unless `preflight` already did), never by a Web API call while a vote waits.
    """
    settings = relay.settings
    if not socket_mode:
        settings.require("slack_signing_secret")
    with hidden_from_bolt():
        app = _bolt_app(relay, settings, identity)
    app.error(answer_error)
    feedback = SlackFeedback(relay, agent_bridge=bool(settings.agent_url))
    register(app, feedback, AgentBridge(feedback) if settings.agent_url else None)
    on_removal(app, settings)  # after the votes: Bolt tries listeners in order
    return app


def _bolt_app(relay: Relay, settings: Settings, identity: SlackResponse | None) -> App:
    """The App for OAuth (installations in the database) or for the one workspace's token."""
    if settings.oauth:
        # Imported only here: slack-sdk's OAuth stores cost a single workspace's process 6 MB.
        from bot.slack.oauth import oauth_settings

        oauth = oauth_settings(relay)
        app = App(
            signing_secret=settings.slack_signing_secret or "",
            client=web_client(settings),
            oauth_settings=oauth,
            authorize=StoredBotAuthorize(oauth.installation_store),  # type: ignore[arg-type]
            process_before_response=True,
            raise_error_for_unhandled_request=True,  # to answer_error: see answer_unhandled
        )
    else:
        settings.require("slack_bot_token")
        assert settings.slack_bot_token
        app = App(
            signing_secret=settings.slack_signing_secret or "",
            client=web_client(settings),
            authorize=SingleBotAuthorize(  # type: ignore[arg-type]
                identity or auth_test(settings), settings.slack_bot_token
            ),
            process_before_response=True,
            raise_error_for_unhandled_request=True,  # to answer_error: see answer_unhandled
        )
    return app


def on_removal(app: App, settings: Settings) -> None:
    """app_uninstalled and tokens_revoked (the manifest subscribes to them): OAuth forgets the
    workspace's tokens; a single workspace's token is void, which is logged."""
    if settings.oauth:
        from bot.slack.oauth import forget_on_uninstall

        assert app.installation_store is not None
        forget_on_uninstall(app, app.installation_store)
    else:
        app.event("app_uninstalled")(log_removal)
        app.event("tokens_revoked")(log_removal)


def log_removal(event: dict[str, Any]) -> None:
    """Single-workspace: the app was uninstalled or its token revoked; SLACK_BOT_TOKEN is void."""
    log.warning("Slack says %s: SLACK_BOT_TOKEN no longer works", event.get("type"))


# Errors that mean the request had an unexpected shape, not that the relay is unwell.
MALFORMED = (AttributeError, TypeError, KeyError, IndexError, ValueError, DataError)


def answer_error(error: Exception) -> BoltResponse | None:
    """A request no listener takes: see answer_unhandled. A 400 for a request of an unexpected
    shape; any other error stays a 500 (Slack retries)."""
    if isinstance(error, BoltUnhandledRequestError):
        return answer_unhandled(error.body)
    if isinstance(error, MALFORMED):
        log.warning("refused a malformed Slack request: %s", type(error).__name__)
        return BoltResponse(status=400, body="")
    if isinstance(error, SLACK_UNAVAILABLE):  # a lookup before the ack: Slack sends it again
        log.warning(
            "Slack failed a lookup before the ack (%s); Slack will retry", unavailable_reason(error)
        )
        return None
    log.error("error while handling a Slack request", exc_info=error)
    return None


def answer_unhandled(body: dict[str, Any]) -> BoltResponse | None:
    """Slack's app_rate_limited notice is acked with a warning: Slack is dropping the app's
    events, votes among them. Another event is acked and logged (the manifest doesn't
    subscribe to it; unanswered, Slack would retry it and count the failures). Anything else
    stays Bolt's 404, in one line."""
    kind = body.get("type")
    if kind == "app_rate_limited":
        log.warning(
            "Slack is dropping this app's events for workspace %s since %s (app_rate_limited: "
            "over 30,000 events an hour from one workspace): reactions meanwhile are lost "
            "(messages in busy channels count too: remove the app from channels it needn't watch)",
            body.get("team_id"),
            rfc3339(slack_time(body.get("minute_rate_limited"), time())),
        )
        return BoltResponse(status=200, body="")
    event = body.get("event")
    if kind == "event_callback" and isinstance(event, dict):
        log.info("ignored a Slack event the relay has no use for: %s", event.get("type"))
        return BoltResponse(status=200, body="")
    log.warning("no listener for a Slack request of type %s: answered 404", kind)
    return None


def preflight(settings: Settings) -> SlackResponse | None:
    """Before serving, each failing with one line: the reaction sets hold Slack's names
    (SettingsError), the database opens (its schema created or migrated), and a
    single-workspace token works (SlackUnusable): its auth.test answer."""
    from bot.core.db import Database

    check_reaction_names(settings)
    database = Database(settings.database_url, pool_size=1)
    try:
        database.migrate(time())
    finally:
        database.dispose()
    if settings.oauth:
        return None
    settings.require("slack_bot_token")
    identity = auth_test(settings)
    missing = missing_scopes(identity, BOT_SCOPES)
    if missing:  # it serves what it can: a missing scope fails only the calls that need it
        log.warning(
            "the Slack token lacks scopes: %s; %s (`python -m bot check` says the same)",
            ", ".join(missing),
            REINSTALL,
        )
    return identity


class BotAuthorize(Authorize):
    """Authorizes a request as a bot known without asking Slack; subclasses say which bot.

    Bolt's own authorization calls auth.test while the request waits for its ack, and answers
    200 with "please reinstall" when Slack falters there, so that vote would be dropped.
    """

    def bot(self, context: BoltContext, enterprise_id: str | None, team_id: str | None) -> Any:
        """The bot's fields as AuthorizeResult takes them, or None for no installation."""
        raise NotImplementedError

    def __call__(
        self,
        *,
        context: BoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        **_actor: Any,
    ) -> AuthorizeResult | None:
        bot = self.bot(context, enterprise_id, team_id)
        return None if bot is None else AuthorizeResult(**bot, user_id=user_id)


class SingleBotAuthorize(BotAuthorize):
    """The single workspace's bot, as the auth.test made before serving described it."""

    def __init__(self, identity: SlackResponse, token: str) -> None:
        self.fields = {
            "enterprise_id": identity.get("enterprise_id"),
            "team_id": identity.get("team_id"),
            "bot_user_id": identity.get("user_id"),
            "bot_id": identity.get("bot_id"),
            "bot_token": token,
        }

    def bot(self, context: BoltContext, enterprise_id: str | None, team_id: str | None) -> Any:
        return self.fields


class StoredBotAuthorize(BotAuthorize):
    """The workspace's bot installation kept in the database (deleted on app_uninstalled and
    tokens_revoked); a database error fails the request, so Slack sends it again."""

    def __init__(self, installations: InstallationStore) -> None:
        self.installations = installations

    def bot(self, context: BoltContext, enterprise_id: str | None, team_id: str | None) -> Any:
        bot = self.installations.find_bot(
            enterprise_id=enterprise_id,
            team_id=team_id,
            is_enterprise_install=context.is_enterprise_install,
        )
        if bot is None:
            return None
        return {
            "enterprise_id": bot.enterprise_id,
            "team_id": bot.team_id,
            "bot_user_id": bot.bot_user_id,
            "bot_id": bot.bot_id,
            "bot_token": bot.bot_token,
            "bot_scopes": bot.bot_scopes,
        }
