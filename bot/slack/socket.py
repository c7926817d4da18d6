"""Socket Mode: no public URL; SIGTERM closes the socket and drains deliveries."""

from __future__ import annotations

import logging
import signal
import threading
from time import time
from types import FrameType

from slack_bolt import App, BoltRequest
from slack_bolt.adapter.socket_mode.base_handler import BaseSocketModeHandler
from slack_bolt.adapter.socket_mode.internals import build_headers, send_response
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.websocket_client import SocketModeClient
from websocket import WebSocketException

from bot.core.delivery import AcksFirst
from bot.core.logs import quiet
from bot.core.relay import Relay
from bot.core.settings import Settings
from bot.slack.checks import SLACK_CLIENT_LOGGER, SlackUnusable, unreachable
from bot.slack.lookups import NETWORK_ERRORS
from bot.slack.payloads import unreadable
from bot.slack.socket_client import ACK_WAIT, AckingClient

log = logging.getLogger("bot.socket")

# How long the start waits for Slack's socket to open before saying it doesn't.
OPEN_WAIT = 5.0


class RelaySocketModeHandler(BaseSocketModeHandler):
    """Bolt's Socket Mode handler on an AckingClient; like HTTP mode, it refuses an envelope
    whose payload Bolt can't read in one line (unacknowledged, as HTTP mode answers 400)."""

    app: App
    app_token: str
    client: AckingClient

    def __init__(self, app: App, app_token: str, acks_first: AcksFirst) -> None:
        self.app = app
        self.app_token = app_token
        self.acks_first = acks_first  # delivery makes way while one is answered
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


def connect(handler: BaseSocketModeHandler, settings: Settings) -> None:
    """Open the socket; SlackUnusable (one line) when Slack refuses the app token or is down."""
    try:
        with quiet(SLACK_CLIENT_LOGGER, handler.app.logger.name):  # the one line says it all
            handler.connect()
    except SlackApiError as error:
        reason = error.response.get("error")
        raise SlackUnusable(f"Slack refused the token: {reason}", "SLACK_APP_TOKEN") from None
    except NETWORK_ERRORS as error:  # one line, no traceback
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
    if settings.oauth:
        log.info(
            "multi-workspace install: Socket Mode serves no install pages; install workspaces "
            "through `serve` on the same DATABASE_URL (its /slack/install)"
        )
    if not handler.client.wait_open(OPEN_WAIT):  # the monitor keeps trying, every 10 s
        log.warning("Slack's socket isn't open after %.0f s: trying again every 10 s", OPEN_WAIT)
    stop.wait()
    relay.acks_first.wait(ACK_WAIT)  # envelopes under way get their acks before the socket goes
    handler.close()
    relay.stop(25.0)
    return 0
