"""The multi-workspace install: Bolt's OAuth flow, state and installations in the database."""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import UTC, datetime
from typing import Any

from slack_bolt import App, BoltContext
from slack_bolt.oauth.oauth_settings import OAuthSettings
from slack_sdk.oauth.installation_store import InstallationStore
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.sqlalchemy_utils import normalize_datetime_for_db
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from bot.core.relay import Relay
from bot.slack.manifest import BOT_SCOPES, OAUTH_REDIRECT_PATH

log = logging.getLogger("bot.slack")

INSTALL_PATH = "/slack/install"
STATE_LIFETIME = 600  # seconds from the install page to Slack's redirect


class SignedStateStore(SQLAlchemyOAuthStateStore):
    """OAuth states signed with SLACK_STATE_SECRET, each kept until used or expired.

    A state is `nonce.signature`: one this app didn't sign (or signed under a secret changed
    since) is refused without asking the database. Issuing a state deletes the expired ones,
    so loading the install page again and again can't grow the table for good.
    """

    def __init__(self, secret: str, engine: Engine) -> None:
        super().__init__(expiration_seconds=STATE_LIFETIME, engine=engine, logger=log)
        self._key = secret.encode()

    def issue(self, *args: Any, **kwargs: Any) -> str:
        now = normalize_datetime_for_db(datetime.now(tz=UTC))
        with self.engine.begin() as conn:
            conn.execute(self.oauth_states.delete().where(self.oauth_states.c.expire_at <= now))
        nonce = super().issue(*args, **kwargs)
        return f"{nonce}.{self._sign(nonce)}"

    def consume(self, state: str) -> bool:
        nonce, _, signature = state.rpartition(".")
        if not nonce or not hmac.compare_digest(signature, self._sign(nonce)):
            log.warning("refused an OAuth state not signed with SLACK_STATE_SECRET")
            return False
        return bool(super().consume(nonce))

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()


def create_tables(*stores: SQLAlchemyInstallationStore | SQLAlchemyOAuthStateStore) -> None:
    """Create the stores' tables where missing. A process starting beside this one may create
    them between the check and the create: then they are there, and checking again says so.
    Any other failure (a database refusing the relay, say) stops the start."""
    for store in stores:
        try:
            store.create_tables()
        except DBAPIError:
            store.create_tables()


def oauth_settings(relay: Relay) -> OAuthSettings:
    """Bolt's OAuth flow with installations and state kept in the relay's database."""
    settings = relay.settings
    assert settings.slack_client_id and settings.slack_client_secret
    assert settings.slack_state_secret
    installations = SQLAlchemyInstallationStore(
        client_id=settings.slack_client_id, engine=relay.db.engine, logger=log
    )
    states = SignedStateStore(settings.slack_state_secret, relay.db.engine)
    create_tables(installations, states)
    return OAuthSettings(
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret,
        scopes=list(BOT_SCOPES),
        installation_store=installations,
        # Bot tokens only: the relay installs no user token, and authorizes with the bot's.
        installation_store_bot_only=True,
        state_store=states,
        install_path=INSTALL_PATH,
        redirect_uri_path=OAUTH_REDIRECT_PATH,
    )


def forget_on_uninstall(app: App, installations: InstallationStore) -> None:
    """app_uninstalled and tokens_revoked delete the workspace's stored tokens, unless the
    workspace installed the app again after the event (Slack redelivered it late).

    The relay installs a bot token only: its installation is that token, so a revoked bot
    token deletes the whole installation, as an uninstall does (no copy of it is kept).
    """

    def reinstalled_since(body: dict[str, Any], context: BoltContext) -> bool:
        bot = installations.find_bot(
            enterprise_id=context.enterprise_id,
            team_id=context.team_id,
            is_enterprise_install=context.is_enterprise_install,
        )
        happened = body.get("event_time")
        if bot is None or not isinstance(happened, int | float):
            return False
        if bot.installed_at >= happened + 1:  # event_time is in whole seconds
            log.info(
                "kept the installation of %s: installed again after this %s",
                context.team_id or context.enterprise_id,
                body.get("event", {}).get("type"),
            )
            return True
        return False

    def app_uninstalled(body: dict[str, Any], context: BoltContext) -> None:
        if not reinstalled_since(body, context):
            installations.delete_all(enterprise_id=context.enterprise_id, team_id=context.team_id)

    def tokens_revoked(event: dict[str, Any], body: dict[str, Any], context: BoltContext) -> None:
        tokens = event.get("tokens") or {}  # user tokens: the relay installs none
        if tokens.get("bot"):
            app_uninstalled(body, context)

    app.event("app_uninstalled")(app_uninstalled)
    app.event("tokens_revoked")(tokens_revoked)
