"""Library mode: Brixo feedback inside a team's own Bolt for Python app.

    relay = FeedbackRelay.from_env()      # BRIXO_API_KEY, DATABASE_URL, … as for the standalone app
    relay.attach(app)                     # buttons, reactions, comment modals, shortcut, metadata
    relay.say(say, text, message_id=…)    # post a reply with 👍/👎 and record its mapping
    with relay: app.start()               # delivery runs beside the app

The relay's listeners are the standalone app's own (bot/slack/listeners), run from one
global middleware instead of being registered as listeners of the app. Bolt runs only the
first listener that matches a request, so registered catch-all `message` or `reaction_added`
listeners would shadow the app's own; the middleware does the relay's work, stores the act
before Slack is acknowledged (whatever the app's `process_before_response`), and passes every
event on to the app's listeners. Requests that belong to the relay alone (its buttons, modals
and shortcut) are answered by the middleware.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from types import TracebackType
from typing import Any, Self, cast

from slack_bolt import App, BoltRequest, BoltResponse, Say
from slack_bolt.lazy_listener.thread_runner import ThreadLazyListenerRunner
from slack_bolt.listener.custom_listener import CustomListener
from slack_bolt.listener.listener import Listener
from slack_bolt.listener.thread_runner import ThreadListenerRunner
from slack_bolt.listener_matcher import builtins as matchers
from slack_bolt.listener_matcher.listener_matcher import ListenerMatcher
from slack_bolt.middleware import Middleware
from slack_bolt.middleware.request_verification import RequestVerification
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from bot.core.mapping import POSTED
from bot.core.relay import Relay
from bot.core.settings import Settings, load_settings
from bot.slack.blocks import brixo_metadata, feedback_blocks, reply_blocks
from bot.slack.feedback import SlackFeedback
from bot.slack.listeners import actions, events, shortcuts, views
from bot.slack.manifest import (
    BOT_EVENTS,
    BOT_SCOPES,
    METADATA_EVENT_TYPE,
    SHORTCUT_CALLBACK_ID,
    SHORTCUT_NAME,
)

__all__ = ["FeedbackRelay", "RelaySetupError", "manifest_fragment", "required_scopes"]

log = logging.getLogger("bot.library")

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
}
_OBSERVER_SCOPES = {"reactions:write": "seed 👍/👎 on watched bots' replies (SEED_REACTIONS)"}
_EVENTS = ("reaction_added", "reaction_removed", "message_metadata_posted")
_OBSERVER_EVENTS = ("message.channels", "message.groups", "message.im", "message.mpim")
# Event types the middleware hands to the relay's listeners (`message` only for the observer).
_EVENT_TYPES = frozenset(_EVENTS)
_OBSERVED = "brixo_observed"  # context key: the relay handled this event
_INTERACTIVE = frozenset({"block_actions", "view_submission", "view_closed", "message_action"})

assert set(_SCOPES) | set(_OBSERVER_SCOPES) <= set(BOT_SCOPES)
assert set(_EVENTS) | set(_OBSERVER_EVENTS) <= set(BOT_EVENTS)


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
    wanted = set(_EVENTS) | (set(_OBSERVER_EVENTS) if settings.assistant_bot_ids else set())
    return tuple(event for event in BOT_EVENTS if event in wanted)


def manifest_fragment(
    settings: Settings | None = None, request_url: str | None = None
) -> dict[str, Any]:
    """The parts of a Slack app manifest the relay needs, to merge into the app's own.

    `settings` (default: the defaults) add the observer's needs when ASSISTANT_BOT_IDS is set.
    `request_url` (e.g. https://host/slack/events) is set for events and interactivity;
    leave it out for Socket Mode or when the app's manifest already has it.
    """
    settings = settings or Settings()
    events_settings: dict[str, Any] = {
        "bot_events": list(required_events(settings)),
        "metadata_subscriptions": [{"app_id": "*", "event_type": METADATA_EVENT_TYPE}],
    }
    interactivity: dict[str, Any] = {"is_enabled": True}
    if request_url:
        events_settings = {"request_url": request_url, **events_settings}
        interactivity["request_url"] = request_url
    return {
        "features": {
            "shortcuts": [
                {
                    "name": SHORTCUT_NAME,
                    "type": "message",
                    "callback_id": SHORTCUT_CALLBACK_ID,
                    "description": "Rate the whole conversation 👍/👎, with an optional comment",
                }
            ]
        },
        "oauth_config": {"scopes": {"bot": list(required_scopes(settings))}},
        "settings": {"event_subscriptions": events_settings, "interactivity": interactivity},
    }


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
        if client is None and self.settings.slack_bot_token:
            from bot.slack.app import web_client

            client = web_client(self.settings, self.settings.slack_bot_token)
        self.client: WebClient | None = client
        self.core = Relay(self.settings)
        self.feedback = SlackFeedback(self.core)
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
        """The relay from the environment (default os.environ) and `.env`, keywords on top."""
        values = dict(os.environ if environ is None else environ)
        for name, raw in _overrides(options).items():
            if raw is None:
                values.pop(name, None)
            else:
                values[name] = raw
        return cls(client=client, settings=load_settings(values, dotenv=dotenv))

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
        """Stop delivering and release the database connections."""
        self.stop()
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
        app.use(_RelayMiddleware(app, self.feedback))
        _acknowledge_unclaimed(app)
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
        granted = {s.strip() for s in (response.headers.get("x-oauth-scopes") or "").split(",")}
        return [scope for scope in self.required_scopes() if scope not in granted]

    def _check_scopes(self, app: App) -> None:
        oauth = app.oauth_flow
        if oauth is not None:
            missing = [s for s in self.required_scopes() if s not in (oauth.settings.scopes or [])]
            if missing:
                raise RelaySetupError(_missing_message(missing, "OAuthSettings(scopes=…)"))
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
        except Exception as error:  # network trouble: the app may still work; say so once
            log.warning("could not check the bot token's scopes (%s)", type(error).__name__)
            return
        if missing:
            raise RelaySetupError(_missing_message(missing, "the app's manifest"))

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
        """
        _require_ids(message_id, conversation_id)
        if "metadata" not in kwargs and getattr(say, "build_metadata", None) is None:
            kwargs["metadata"] = brixo_metadata(message_id, conversation_id)
        response = say(text=text, blocks=self._blocks(text, blocks), thread_ts=thread_ts, **kwargs)
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
        """chat.postMessage with 👍/👎 and `brixo_message` metadata; records the mapping."""
        _require_ids(message_id, conversation_id)
        client = client or self.client
        if client is None:
            raise RelaySetupError("no WebClient: pass one, or give the relay client=")
        kwargs.setdefault("metadata", brixo_metadata(message_id, conversation_id))
        response = client.chat_postMessage(
            channel=channel,
            text=text,
            blocks=self._blocks(text, blocks),
            thread_ts=thread_ts,
            **kwargs,
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

    def _blocks(self, text: str, blocks: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
        if blocks is None:
            return reply_blocks(text)
        return [*blocks, *feedback_blocks()]

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
    if not (message_id or conversation_id):
        raise ValueError("a reply needs message_id or conversation_id (or both)")


def _missing_message(missing: Iterable[str], where: str) -> str:
    lines = "; ".join(f"{s} ({(_SCOPES | _OBSERVER_SCOPES)[s]})" for s in missing)
    return (
        f"the Slack token lacks scopes the feedback relay needs: {lines}. Add them to "
        f"{where} (relay.manifest_fragment() has all it needs) and reinstall the app"
    )


class _Collector:
    """Stands in for `App` while the standalone listener modules register: keeps the listeners."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.listeners: list[Listener] = []

    def action(self, constraints: Any) -> Callable[..., None]:
        return self._add(matchers.action(constraints, base_logger=self.logger), auto_ack=False)

    def view_submission(self, constraints: Any) -> Callable[..., None]:
        return self._add(matchers.view_submission(constraints, base_logger=self.logger), False)

    def view_closed(self, constraints: Any) -> Callable[..., None]:
        return self._add(matchers.view_closed(constraints, base_logger=self.logger), False)

    def shortcut(self, constraints: Any) -> Callable[..., None]:
        return self._add(matchers.shortcut(constraints, base_logger=self.logger), False)

    def event(self, constraints: Any) -> Callable[..., None]:
        return self._add(matchers.event(constraints, base_logger=self.logger), auto_ack=True)

    def _add(self, matcher: ListenerMatcher | Any, auto_ack: bool) -> Callable[..., None]:
        def add(*functions: Callable[..., Any], ack: Any = None, lazy: Sequence[Any] = ()) -> None:
            chain = [ack, *lazy] if ack is not None else list(functions)
            self.listeners.append(
                CustomListener(
                    app_name="brixo-relay",
                    ack_function=chain[0],
                    lazy_functions=chain[1:],
                    matchers=[matcher],
                    middleware=[],
                    auto_acknowledgement=auto_ack,
                    base_logger=self.logger,
                )
            )

        return add


class _RelayMiddleware(Middleware):
    """Runs the relay's listeners (with process_before_response semantics) from a middleware."""

    def __init__(self, app: App, feedback: SlackFeedback) -> None:
        collector = _Collector(app.logger)
        shim = cast(App, collector)  # the listener modules only call the methods it has
        actions.register(shim, feedback)
        views.register(shim, feedback)
        shortcuts.register(shim, feedback)
        events.register(shim, feedback, None)
        self.listeners = collector.listeners
        self.watch_messages = bool(feedback.watched)
        executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="brixo-relay")
        base = app.listener_runner
        # The relay stores each act in its ack function and leaves follow-ups (thanks, modals)
        # to lazy functions: that needs process_before_response=True, whatever the app uses.
        self.runner = ThreadListenerRunner(
            logger=app.logger,
            process_before_response=True,
            listener_error_handler=base.listener_error_handler,
            listener_start_handler=base.listener_start_handler,
            listener_completion_handler=base.listener_completion_handler,
            listener_executor=executor,
            lazy_listener_runner=ThreadLazyListenerRunner(logger=app.logger, executor=executor),
        )

    @property
    def name(self) -> str:
        return "BrixoFeedbackRelay"

    def process(
        self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse | None:
        body = req.body
        is_event = body.get("type") == "event_callback"
        if is_event:
            kind = (body.get("event") or {}).get("type")
            wanted = kind in _EVENT_TYPES or (kind == "message" and self.watch_messages)
        else:
            wanted = body.get("type") in _INTERACTIVE
        listener = _first_match(self.listeners, req, resp) if wanted else None
        if listener is None:
            return next()
        answer = self.runner.run(
            request=req,
            response=resp,
            listener_name=f"brixo:{listener.ack_function.__name__}",
            listener=listener,
        )
        if not is_event:
            return answer  # the relay's own button, modal or shortcut: answered here
        if answer is not None and answer.status >= 500:
            return answer  # not stored: Slack retries, and the app's listeners get it then
        req.context[_OBSERVED] = True  # the app's own listeners get it too
        return next()


def _first_match(
    listeners: Iterable[Listener], req: BoltRequest, resp: BoltResponse
) -> Listener | None:
    """The first of `listeners` matching the request."""
    for listener in listeners:
        if listener.matches(req=req, resp=resp):
            return listener
    return None


def _acknowledge_unclaimed(app: App) -> None:
    """A last listener for the events the relay handled that none of the app's listeners take.

    Bolt answers 404 to a request no listener matches (and Slack retries it); this one matches
    only then, wherever it stands among the app's listeners, so it never shadows them.
    """

    def acknowledge() -> None:
        """The relay handled this event in its middleware."""

    def unclaimed(request: BoltRequest, response: BoltResponse) -> bool:
        if not request.context.get(_OBSERVED):
            return False
        listeners = getattr(app, "_listeners", None)
        if listeners is None:  # a Bolt without the list: leave such events unanswered
            return False
        return not any(
            listener.matches(req=request, resp=response)
            for listener in listeners
            if listener.ack_function is not acknowledge
        )

    app.event(re.compile(".*"), matchers=[unclaimed])(acknowledge)
