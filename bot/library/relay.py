"""FeedbackRelay: the relay for a team's own Bolt app."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from types import TracebackType
from typing import Any, Self

from slack_bolt import App, Say
from slack_bolt.middleware.request_verification import RequestVerification
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from bot.core.mapping import POSTED, USABLE_ID, customer_id
from bot.core.relay import Relay
from bot.core.settings import OAUTH_SETTINGS, Settings, load_settings
from bot.library.middleware import RelayMiddleware, acknowledge_unclaimed
from bot.library.setup import (
    RelaySetupError,
    manifest_fragment,
    missing_scopes_message,
    required_scopes,
)
from bot.slack.blocks import brixo_metadata, feedback_blocks, post_with_feedback
from bot.slack.feedback import SlackFeedback, check_reaction_names
from bot.slack.lookups import NETWORK_ERRORS, web_client
from bot.slack.manifest import SHORTCUT_CALLBACK_ID, missing_scopes

log = logging.getLogger("bot.library")


def _env_value(name: str, value: object) -> str | None:
    """A keyword argument as the environment would spell it (None: leave the default)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(str(item) for item in value)
    raise TypeError(
        f"{name}: expected a string, number, boolean or list, got {type(value).__name__}"
    )


_FIELDS = tuple(f.name for f in fields(Settings))


def _overrides(options: Mapping[str, object]) -> dict[str, str | None]:
    """Keyword settings as environment variables (None: the default)."""
    unknown = sorted(set(options) - set(_FIELDS))
    if unknown:
        raise TypeError(
            f"unknown setting(s) {', '.join(unknown)}; settings are: {', '.join(_FIELDS)}"
        )
    return {name.upper(): _env_value(name, value) for name, value in options.items()}


class FeedbackRelay:
    """The relay for a team's own Bolt app: attach it, post replies through it, start it.

    `FeedbackRelay(brixo_api_key=…, database_url=…, client=…, ask_comment="never")` takes any
    setting of `bot.core.settings.Settings` as a keyword (values as the environment would give
    them, or typed: `comment_wait=600`, `positive_reactions=["+1"]`), or `settings=` whole.
    `client` is a WebClient for `post()` and the scope check; it defaults to one on
    SLACK_API_URL with SLACK_BOT_TOKEN when that is set, else to the attached app's client.
    """

    def __init__(
        self,
        *,
        client: WebClient | None = None,
        settings: Settings | None = None,
        **options: object,
    ) -> None:
        if settings is not None and options:
            raise TypeError("pass either settings= or keyword settings, not both")
        if settings is None:
            env = {k: v for k, v in _overrides(options).items() if v is not None}
            settings = load_settings(env, dotenv=None)
        self.settings: Settings = settings
        self.settings.require("brixo_api_key")
        check_reaction_names(self.settings)  # before the database opens
        if client is None and self.settings.slack_bot_token:
            client = web_client(self.settings, self.settings.slack_bot_token)
        self.client: WebClient | None = client
        self.core = Relay(self.settings)
        self.feedback = SlackFeedback(self.core, agent_bridge=False)
        self._teams: dict[str, str] = {}
        self._attached: list[App] = []

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        dotenv: str | None = ".env",
        client: WebClient | None = None,
        **options: object,
    ) -> Self:
        """The relay from the environment (default os.environ) and `.env`, keywords on top.

        SLACK_CLIENT_ID, SLACK_CLIENT_SECRET and SLACK_STATE_SECRET are the app's own install
        settings (Bolt reads them), not the relay's: they are left alone.
        """
        values = dict(os.environ if environ is None else environ)
        for name, raw in _overrides(options).items():
            if raw is None:
                values.pop(name, None)
            else:
                values[name] = raw
        return cls(client=client, settings=load_settings(values, dotenv, ignore=OAUTH_SETTINGS))

    def __repr__(self) -> str:
        return f"FeedbackRelay({self.core!r}, attached={len(self._attached)})"

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start delivering signals to Brixo in the background."""
        self.core.start()

    def stop(self, timeout: float = 25.0) -> None:
        """Stop delivering: requests in flight finish within `timeout`, the rest stays stored."""
        self.core.stop(timeout)

    def close(self) -> None:
        """Stop delivering, end the follow-up threads and release the database connections."""
        self.stop()
        self.feedback.follow_ups.shutdown()
        self.feedback.interactions.shutdown()
        self.core.db.dispose()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(votes can be stored, details): the standalone app's /healthz report."""
        return self.core.health()

    # --- the app ---------------------------------------------------------------------------

    def attach(self, app: App, *, check_scopes: bool = True) -> Self:
        """Handle the relay's Slack requests in `app`, beside the app's own listeners.

        Buttons, reactions, comment modals, the conversation shortcut and metadata events (and
        other bots' replies with ASSISTANT_BOT_IDS) go to the relay; every event still reaches
        the app's listeners. With a bot token at hand, its scopes are checked now
        (`RelaySetupError` lists any missing); `check_scopes=False` skips that.
        """
        if not isinstance(app, App):
            raise RelaySetupError(
                f"relay.attach() takes a slack_bolt.App, not {type(app).__name__} "
                "(AsyncApp is not supported)"
            )
        if any(existing is app for existing in self._attached):
            raise RelaySetupError("this relay is already attached to this app")
        if self.settings.agent_url:
            log.info("AGENT_URL is not used in library mode: the app answers its own messages")
        self._warn_unverified(app)
        if check_scopes:
            self._check_scopes(app)
        self._attached.append(app)
        if self.client is None and app.client.token:
            self.client = app.client  # a single-workspace app's client, for post()
        app.use(RelayMiddleware(app, self.feedback))
        acknowledge_unclaimed(app)
        log.info(
            "Brixo feedback attached: buttons, reactions, comment modals, shortcut %r, metadata%s",
            SHORTCUT_CALLBACK_ID,
            ", watched bots' replies" if self.feedback.watched else "",
        )
        return self

    def manifest_fragment(self, request_url: str | None = None) -> dict[str, Any]:
        """Scopes, events, metadata subscription, shortcut and interactivity the relay needs."""
        return manifest_fragment(self.settings, request_url)

    def required_scopes(self) -> tuple[str, ...]:
        """Bot token scopes the relay needs with these settings."""
        return required_scopes(self.settings)

    def missing_scopes(self, client: WebClient | None = None) -> list[str]:
        """Needed scopes the token of `client` (default: the relay's) lacks, from auth.test."""
        client = client or self.client
        if client is None or not client.token:
            raise RelaySetupError("no bot token to check: pass client= or set SLACK_BOT_TOKEN")
        response = client.auth_test()
        return missing_scopes(response, self.required_scopes())

    def _check_scopes(self, app: App) -> None:
        oauth = app.oauth_flow
        if oauth is not None:
            missing = [s for s in self.required_scopes() if s not in (oauth.settings.scopes or [])]
            if missing:
                raise RelaySetupError(missing_scopes_message(missing, "OAuthSettings(scopes=…)"))
            return
        client = self.client if self.client and self.client.token else app.client
        if not client.token:
            log.info("no bot token at attach time: scopes not checked (relay.missing_scopes())")
            return
        try:
            missing = self.missing_scopes(client)
        except SlackApiError as error:
            raise RelaySetupError(
                f"Slack refused the bot token at auth.test: {error.response.get('error')}"
            ) from None
        except NETWORK_ERRORS as error:  # the app may still work; say so once
            log.warning("could not check the bot token's scopes (%s)", type(error).__name__)
            return
        if missing:
            raise RelaySetupError(missing_scopes_message(missing, "the app's manifest"))

    def _warn_unverified(self, app: App) -> None:
        chain = getattr(app, "_middleware_list", None)
        if chain is not None and not any(isinstance(m, RequestVerification) for m in chain):
            log.warning(
                "this app does not verify Slack's request signatures: over HTTP anyone could "
                "send votes; set the Signing Secret (fine in Socket Mode)"
            )

    # --- posting replies ---------------------------------------------------------------------

    def feedback_blocks(self, classic: bool = False) -> list[dict[str, Any]]:
        """The 👍/👎 block to put under a reply the app posts itself (then `record()` it)."""
        return feedback_blocks(classic)

    def metadata(
        self, message_id: str | None, conversation_id: str | None = None
    ) -> dict[str, Any]:
        """The `brixo_message` metadata for a reply's chat.postMessage (or stopStream)."""
        _require_ids(message_id, conversation_id)
        return brixo_metadata(message_id, conversation_id)

    def record(
        self,
        team: str,
        channel: str,
        ts: str,
        thread_ts: str | None = None,
        message_id: str | None = None,
        conversation_id: str | None = None,
    ) -> None:
        """Remember that reply `ts` is the customer's `message_id` (in `conversation_id`)."""
        for name, value in (("team", team), ("channel", channel), ("ts", ts)):
            if not (isinstance(value, str) and value.strip()):
                raise ValueError(f"{name}: expected Slack's {name} ID, got {value!r}")
        _require_ids(message_id, conversation_id)
        self.feedback.record_reply(
            team, channel, ts, thread_ts, message_id, conversation_id, source=POSTED
        )

    def say(
        self,
        say: Say,
        text: str,
        *,
        message_id: str | None = None,
        conversation_id: str | None = None,
        blocks: Sequence[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        team: str | None = None,
        **kwargs: Any,
    ) -> SlackResponse:
        """Post `text` with Bolt's `say` (a listener's, or an Assistant's), 👍/👎 under it.

        In an Assistant thread the reply keeps the thread-context metadata that Bolt's `say`
        adds; elsewhere it carries `brixo_message` metadata. The mapping is recorded either way.
        Where Slack refuses its native feedback block, the buttons are classic ones.
        """
        _require_ids(message_id, conversation_id)
        if not isinstance(say, Say):
            raise TypeError(
                f"say: expected a listener's or an Assistant's say, got {type(say).__name__}"
            )
        if "metadata" not in kwargs and getattr(say, "build_metadata", None) is None:
            kwargs["metadata"] = brixo_metadata(message_id, conversation_id)
        response = post_with_feedback(say, text, blocks, thread_ts=thread_ts, **kwargs)
        self.record_response(
            response,
            message_id=message_id,
            conversation_id=conversation_id,
            thread_ts=thread_ts,
            team=team,
            client=say.client,
        )
        return response

    def post(
        self,
        client: WebClient | None = None,
        *,
        channel: str,
        text: str,
        message_id: str | None = None,
        conversation_id: str | None = None,
        thread_ts: str | None = None,
        blocks: Sequence[dict[str, Any]] | None = None,
        team: str | None = None,
        **kwargs: Any,
    ) -> SlackResponse:
        """chat.postMessage with 👍/👎 (classic buttons where Slack refuses its native block) and
        `brixo_message` metadata; records the mapping."""
        _require_ids(message_id, conversation_id)
        client = client or self.client
        if client is None:
            raise RelaySetupError("no WebClient: pass one, or give the relay client=")
        kwargs.setdefault("metadata", brixo_metadata(message_id, conversation_id))
        response = post_with_feedback(
            client.chat_postMessage, text, blocks, channel=channel, thread_ts=thread_ts, **kwargs
        )
        self.record_response(
            response,
            message_id=message_id,
            conversation_id=conversation_id,
            thread_ts=thread_ts,
            team=team,
            client=client,
        )
        return response

    def record_response(
        self,
        response: SlackResponse,
        *,
        message_id: str | None = None,
        conversation_id: str | None = None,
        thread_ts: str | None = None,
        team: str | None = None,
        client: WebClient | None = None,
    ) -> None:
        """`record()` a reply from Slack's answer to chat.postMessage or chat.stopStream.

        The workspace is `team`, else the posted message's, else the token's (auth.test with
        `client`, default the relay's).
        """
        message = response.get("message") or {}
        channel, ts = response.get("channel"), response.get("ts")
        if not (isinstance(channel, str) and isinstance(ts, str)):
            raise RelaySetupError("chat.postMessage answered without channel and ts")
        workspace = team or message.get("team") or self._team_of(client or self.client)
        root = message.get("thread_ts") or thread_ts
        self.record(workspace, channel, ts, root, message_id, conversation_id)

    def _team_of(self, client: WebClient | None) -> str:
        """The workspace of a token, from auth.test (once per token)."""
        if client is None or not client.token:
            raise RelaySetupError("can't tell the reply's workspace: pass team=")
        team = self._teams.get(client.token)
        if team is None:
            team = str(client.auth_test()["team_id"])
            self._teams[client.token] = team
        return team


def _require_ids(message_id: str | None, conversation_id: str | None) -> None:
    """ValueError unless at least one ID is given and each given one is usable: a reply
    mapped to an ID Brixo can't take would fail every vote on it."""
    if message_id is None and conversation_id is None:
        raise ValueError("a reply needs message_id or conversation_id (or both)")
    for name, value in (("message_id", message_id), ("conversation_id", conversation_id)):
        if value is not None and customer_id(value) is None:
            raise ValueError(f"{name}: expected {USABLE_ID}, got {value!r:.60}")
