"""slack_sdk's websocket-client Socket Mode client, with acks that survive a new socket."""

from __future__ import annotations

import logging
import threading
from time import monotonic
from typing import Any

from slack_bolt import App
from slack_sdk.socket_mode.websocket_client import SocketModeClient
from websocket import WebSocketApp, WebSocketConnectionClosedException, WebSocketException

from bot.slack.lookups import unavailable_reason

log = logging.getLogger("bot.socket")

# How long an ack waits for the socket to be open (Slack allows 3 s in all).
ACK_WAIT = 3.0
# How long Slack may take to answer a ping: a socket that goes silent (a NAT or Wi-Fi change
# that leaves no reset) is replaced then, not when TCP gives up minutes later.
PONG_WAIT = 5.0


class AckingClient(SocketModeClient):
    """slack_sdk's client, with acks that survive the swap to a new socket.

    On Slack's `disconnect` (refresh_requested, every few hours) slack_sdk makes the new socket
    current before it is open and closes the old one at once; its own client runs the new one
    only once the old one's thread lets go of it, up to `ping_interval` (10 s) later, and an
    ack sent meanwhile is dropped (an error shown to the person who clicked). Here each socket
    runs in a thread of its own, started at once, and an ack waits, up to ACK_WAIT, for an
    open one.
    An open socket that is cut, or whose pong is PONG_WAIT late, is replaced at once; one that
    never opened, at the monitor's next round (every 10 s), so a Slack that can't be reached
    isn't asked twice a second.
    """

    def __init__(self, app_token: str, app: App) -> None:
        self._opened = threading.Condition()
        self._running: set[WebSocketApp] = set()  # sessions whose thread runs (or opens) them
        self._was_open: set[WebSocketApp] = set()  # of those, the ones that opened
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
            pong_wait = min(PONG_WAIT, self.ping_interval / 2)  # websocket-client wants less
            session.run_forever(ping_interval=self.ping_interval, ping_timeout=pong_wait)
        except Exception as error:  # the monitor replaces the session
            log.warning("the Slack socket failed: %s", type(error).__name__)
            session.close()
        finally:
            with self._opened:
                self._running.discard(session)
                dropped = session in self._was_open and session is self.current_session
                self._was_open.discard(session)
        if dropped and not self.closed:  # an open socket cut (not replaced): a new one now
            self._reconnect()

    def is_connected(self) -> bool:
        """The current socket is open or being opened (not replaced again meanwhile)."""
        with self._opened:
            return self.current_session in self._running

    def _monitor_current_session(self) -> None:
        """Every 10 s: a new socket when none is open or opening (one that never opened)."""
        if self.current_app_monitor_started:
            self._reconnect()

    def _reconnect(self) -> None:
        if not self.auto_reconnect_enabled:
            return
        try:
            if not self.is_connected():
                self.logger.info("The session seems to be already closed. Reconnecting...")
                self.connect_to_new_endpoint()
        except Exception as error:  # the monitor tries again
            log.warning("can't reconnect to Slack yet: %s", unavailable_reason(error))

    def run_message_listeners(self, message: dict[str, Any], raw_message: str) -> None:
        if "payload" in message and not isinstance(message["payload"], dict | str):
            log.warning("refused an unreadable Slack envelope: not a JSON object")
            return  # slack_sdk would log a traceback
        super().run_message_listeners(message, raw_message)

    def _on_open(self, session: WebSocketApp) -> None:
        log.info("connected to Slack over Socket Mode")
        with self._opened:
            self._was_open.add(session)
            self._opened.notify_all()

    def wait_open(self, timeout: float) -> bool:
        """Whether a socket is open within `timeout` seconds."""
        with self._opened:
            return self._opened.wait_for(lambda: self._open_session() is not None, timeout)

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
