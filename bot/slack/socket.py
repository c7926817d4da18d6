"""Socket Mode: no public URL; SIGTERM closes the socket and drains deliveries."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from slack_bolt.adapter.socket_mode import SocketModeHandler

from bot.core.relay import Relay
from bot.core.settings import Settings

log = logging.getLogger("bot.socket")


def run_socket_mode(settings: Settings) -> int:
    """Connect over Socket Mode and deliver until SIGTERM or SIGINT."""
    from bot.slack.app import build_app, preflight

    settings.require("slack_app_token", "brixo_api_key")
    preflight(settings)
    relay = Relay(settings)
    app = build_app(relay, socket_mode=True)
    handler = SocketModeHandler(app, settings.slack_app_token)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: closing the socket, finishing deliveries", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    relay.start()
    handler.connect()
    log.info("connected to Slack over Socket Mode")
    stop.wait()
    handler.close()
    relay.stop(25.0)
    return 0
