"""Socket Mode: no public URL; SIGTERM closes the socket and drains deliveries."""

from __future__ import annotations

import logging
import signal
import threading
from time import monotonic, time
from types import FrameType
from typing import Any

from slack_bolt import App, BoltRequest
from slack_bolt.adapter.socket_mode.internals import build_headers, send_response
from slack_bolt.adapter.socket_mode.websocket_client import SocketModeHandler
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.websocket_client import SocketModeClient
from websocket import WebSocketApp, WebSocketConnectionClosedException, WebSocketException

from bot.core.delivery import AcksFirst
from bot.core.logs import quiet
from bot.core.relay import Relay
from bot.core.settings import Settings
from bot.slack.checks import SLACK_CLIENT_LOGGER, SlackTokenError, unreachable
from bot.slack.payloads import unreadable

log = logging.getLogger("bot.socket")

# How long an ack waits for the socket to be open (Slack allows 3 s in all).
ACK_WAIT = 3.0


class AckingClient(SocketModeClient):
    """slack_sdk's client, with acks that survive the swap to a new socket.

    On Slack's `disconnect` (refresh_requested, every few hours) slack_sdk makes the new socket
    current before it is open and closes the old one at once; the new one was run only once the
    old one's thread let go of it, which took up to `ping_interval` (10 s) when that thread
    missed the close. Meanwhile no socket was open, and an envelope being handled had its ack
    dropped (an error shown to the person who clicked, and a traceback). Each socket now runs
    in a thread of its own, started at once, and an ack waits, up to ACK_WAIT, for an open one.
    """

    def __init__(self, app_token: str, app: App) -> None:
        self._opened = threading.Condition()
        self._running: set[WebSocketApp] = set()  # sessions whose thread runs (or opens) them
        super().__init__(
            app_token=app_token,
            logger=app.logger,
            web_client=app.client,
            on_open_listeners=[self._on_open],
        )

    def connect(self) -> None:
        with self._opened:  # the monitor sees the new socket as being opened, never as closed
            super().connect()
            session = self.current_session
            if session is not None:
                self._running.add(session)
                threading.Thread(
                    target=self._run_session, args=(session,), name="slack-socket", daemon=True
                ).start()

    def _run_current_session(self) -> None:
        """slack_sdk's runner, every 0.5 s: nothing to do, each socket runs in its own thread."""

    def _run_session(self, session: WebSocketApp) -> None:
        try:
            session.run_forever(ping_interval=self.ping_interval)
        except Exception as error:  # the monitor replaces the session
            log.warning("the Slack socket failed: %s", type(error).__name__)
            session.close()
        finally:
            with self._opened:
                self._running.discard(session)

    def is_connected(self) -> bool:
        """The current socket is open or being opened (not replaced again meanwhile)."""
        with self._opened:
            return self.current_session in self._running

    def _monitor_current_session(self) -> None:
        if self.current_app_monitor_started and self.auto_reconnect_enabled:
            try:
                if not self.is_connected():
                    self.logger.info("The session seems to be already closed. Reconnecting...")
                    self.connect_to_new_endpoint()
            except Exception as error:
                log.warning("can't reconnect to Slack yet: %s", type(error).__name__)

    def run_message_listeners(self, message: dict[str, Any], raw_message: str) -> None:
        if "payload" in message and not isinstance(message["payload"], dict | str):
            log.warning("refused an unreadable Slack envelope: not a JSON object")
            return  # slack_sdk would log a traceback
        super().run_message_listeners(message, raw_message)

    def _on_open(self, _session: WebSocketApp) -> None:
        with self._opened:
            self._opened.notify_all()

    def _open_session(self) -> WebSocketApp | None:
        session = self.current_session
        sock = session.sock if session is not None else None
        return session if sock is not None and sock.connected else None

    def send_message(self, message: str) -> None:
        deadline = monotonic() + ACK_WAIT
        while True:
            with self._opened:
                self._opened.wait_for(
                    lambda: self.closed or self._open_session(), max(0.0, deadline - monotonic())
                )
            session = self._open_session()
            if session is None:
                raise WebSocketConnectionClosedException("no open socket to Slack")
            try:
                session.send(message)
                return
            except WebSocketException:  # closed meanwhile: the next socket, within the time
                if self.closed or monotonic() >= deadline:
                    raise


class RelaySocketModeHandler(SocketModeHandler):
    """Bolt's Socket Mode handler on an AckingClient; like HTTP mode, it refuses an envelope
    whose payload Bolt can't read in one line (unacknowledged, as HTTP mode answers 400)."""

    def __init__(self, app: App, app_token: str, acks_first: AcksFirst | None = None) -> None:
        self.app = app
        self.app_token = app_token
        self.acks_first = acks_first or AcksFirst()  # delivery makes way while one is answered
        self.client = AckingClient(app_token, app)
        self.client.socket_mode_request_listeners.append(self.handle)  # type: ignore[arg-type]

    def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        start = time()
        why: str | None
        try:
            request = BoltRequest(mode="socket_mode", body=req.payload, headers=build_headers(req))
        except Exception as error:  # a shape Bolt's extractors trip on
            why = f"not readable by Bolt ({type(error).__name__})"
        else:
            why = unreadable(request.body)
        if why is not None:
            log.warning("refused an unreadable Slack envelope: %s", why)
            return
        self.acks_first.begin()
        try:
            response = self.app.dispatch(request)
            send_response(client, req, response, start)
        except WebSocketException as error:
            log.warning("envelope not acknowledged: %s", error)
        finally:
            self.acks_first.end()


def connect(handler: SocketModeHandler, settings: Settings) -> None:
    """Open the socket; SlackTokenError (one line) when Slack refuses the app token or is down."""
    try:
        with quiet(SLACK_CLIENT_LOGGER, handler.app.logger.name):  # the one line says it all
            handler.connect()
    except SlackApiError as error:
        reason = error.response.get("error")
        raise SlackTokenError(f"Slack refused the token: {reason}", "SLACK_APP_TOKEN") from None
    except Exception as error:  # network trouble: one line, no traceback
        raise unreachable(settings, error) from None


def run_socket_mode(settings: Settings) -> int:
    """Connect over Socket Mode and deliver until SIGTERM or SIGINT."""
    from bot.slack.app import build_app, preflight

    settings.require("slack_app_token", "brixo_api_key")
    identity = preflight(settings)
    relay = Relay(settings)
    app = build_app(relay, socket_mode=True, identity=identity)
    assert settings.slack_app_token
    handler = RelaySocketModeHandler(app, settings.slack_app_token, relay.acks_first)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: closing the socket, finishing deliveries", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    connect(handler, settings)
    relay.start()
    log.info("connected to Slack over Socket Mode")
    stop.wait()
    handler.close()
    relay.stop(25.0)
    return 0
