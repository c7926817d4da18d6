"""Socket Mode: no public URL; SIGTERM closes the socket and drains deliveries."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from slack_bolt.adapter.socket_mode.websocket_client import SocketModeHandler
from slack_sdk.errors import SlackApiError

from bot.core.logs import quiet
from bot.core.relay import Relay
from bot.core.settings import Settings
from bot.slack.checks import SLACK_CLIENT_LOGGER, SlackTokenError, unreachable

log = logging.getLogger("bot.socket")


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
    handler = SocketModeHandler(app, settings.slack_app_token)
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
