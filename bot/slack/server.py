"""HTTP mode: Bolt's WSGI adapter behind a small router, served by gunicorn."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any

from gunicorn import glogging
from gunicorn.workers.gthread import ThreadWorker
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.adapter.wsgi.http_request import WsgiHttpRequest
from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web import SlackResponse

from bot.core.relay import Relay
from bot.core.settings import Settings, SettingsError
from bot.slack.manifest import EVENTS_PATH
from bot.slack.payloads import unreadable

log = logging.getLogger("bot.server")

HEALTH_PATH = "/healthz"
MAX_BODY_BYTES = 1024 * 1024  # Slack's payloads are far smaller; refuse larger before parsing
# Slack sends each request whole: a client that stops sending mid-request for this long is cut
# off, so that a few slow or stalled clients can't hold every one of gunicorn's threads.
REQUEST_READ_TIMEOUT = 5

StartResponse = Callable[..., Any]


class CheckedRequestHandler(SlackRequestHandler):
    """Bolt's WSGI handler, answering 400 (not Bolt's 500) to a body Bolt can't read, once
    its signature shows Slack sent it (else 401, as Bolt answers, and no warning).

    The check reads the body Bolt parsed, so each body is parsed once: a click's URL-encoded
    payload costs ~0.2 ms of CPU to decode.
    """

    def __init__(self, app: App, signing_secret: str) -> None:
        super().__init__(app)
        self.verifier = SignatureVerifier(signing_secret)

    def dispatch(self, request: WsgiHttpRequest) -> BoltResponse:
        why: str | None
        try:
            bolt_request = BoltRequest(
                body=request.get_body(),
                query=request.query_string,
                headers=request.get_headers(),
            )
        except Exception as error:  # not UTF-8, not JSON, or a shape Bolt's extractors trip on
            why = f"not readable by Bolt ({type(error).__name__})"
        else:
            why = unreadable(bolt_request.body)
            if why is None:
                return self.app.dispatch(bolt_request)  # Bolt checks the signature
        raw = request.environ["wsgi.input"].getvalue()
        if not _utf8(raw):  # Slack sends and signs UTF-8 text only; slack-sdk can't check this
            log.info("refused a request body that isn't UTF-8 text (Slack sends only UTF-8)")
            return _unreadable()
        stamp = request.environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "")
        signature = request.environ.get("HTTP_X_SLACK_SIGNATURE", "")
        if not (stamp and self.verifier.is_valid(raw, stamp, signature)):
            log.info("Invalid request signature detected: refused an unreadable request")
            return BoltResponse(status=401, body={"error": "invalid request"})
        log.warning("refused an unreadable Slack request: %s", why)
        return _unreadable()


def _unreadable() -> BoltResponse:
    return BoltResponse(
        status=400,
        body=json.dumps({"error": "unreadable request"}),
        headers={"Content-Type": "application/json"},
    )


def _utf8(body: bytes) -> bool:
    """True for UTF-8 text."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class RelayWSGI:
    """Routes /slack/* to Bolt and /healthz to the relay's health report."""

    def __init__(self, app: App, relay: Relay) -> None:
        self.relay = relay
        self.bolt = CheckedRequestHandler(app, relay.settings.slack_signing_secret or "")
        oauth = app.oauth_flow
        self.oauth_paths = {oauth.install_path, oauth.redirect_uri_path} if oauth else set()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            ok, report = self.relay.health()
            answer = _json(start_response, 200 if ok else 503, report)
            return [] if method == "HEAD" else answer  # HEAD: the headers alone
        if path == EVENTS_PATH and method == "POST":
            stamp = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "")
            if stamp and not (stamp.isascii() and stamp.isdigit()):  # can't be signed by Slack
                return _json(start_response, 401, {"error": "invalid request"})
            try:
                body = read_body(environ)
            except BlockingIOError:  # REQUEST_READ_TIMEOUT ran out (see RelayWorker)
                log.info("a client stopped sending its request: connection closed")
                close_after_answer()
                late = {"error": "request body not received in time"}
                return _json(start_response, 408, late)
            if body is None:  # left unread: the connection can't carry another request
                close_after_answer()
                return _json(start_response, 413, {"error": "request body too large"})
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            acks_first = self.relay.acks_first
            acks_first.begin()
            try:
                return SentThen(self.bolt(environ, start_response), acks_first.end)
            except BaseException:
                acks_first.end()
                raise
        if path in self.oauth_paths and method == "GET":
            return self.bolt(environ, start_response)
        allowed = self._methods(path)
        if allowed:
            headers = [("Allow", allowed)]
            return _json(start_response, 405, {"error": "method not allowed"}, headers)
        return _json(start_response, 404, {"error": "not found"})

    def _methods(self, path: str) -> str:
        """The methods `path` answers to (`Allow`), empty when there is no such path."""
        if path == HEALTH_PATH:
            return "GET, HEAD"
        if path == EVENTS_PATH:
            return "POST"
        return "GET" if path in self.oauth_paths else ""


def read_body(environ: dict[str, Any]) -> bytes | None:
    """The request body; None beyond MAX_BODY_BYTES or with a malformed Content-Length.

    Without Content-Length (a chunked request) it is read to its end, up to the limit, where
    the server ends the input there (`wsgi.input_terminated`, as gunicorn does); else, as WSGI
    says, there is none.
    """
    stream, declared = environ["wsgi.input"], environ.get("CONTENT_LENGTH")
    if not declared:
        if not environ.get("wsgi.input_terminated"):
            return b""
        body = stream.read(MAX_BODY_BYTES + 1)
        return body if len(body) <= MAX_BODY_BYTES else None
    try:
        length = int(declared)
    except ValueError:
        return None
    return stream.read(length) if 0 <= length <= MAX_BODY_BYTES else None


class SentThen:
    """A response body that calls `then` once the server has sent it.

    WSGI servers call `close()` after the last byte (gunicorn after its access log line too),
    so delivery keeps out of the way until the ack has reached the socket, not just until Bolt
    has returned it.
    """

    def __init__(self, body: Iterable[bytes], then: Callable[[], None]) -> None:
        self.body = body
        self.then: Callable[[], None] | None = then

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        """Called by the server once the body is sent (a second call does nothing)."""
        then, self.then = self.then, None
        if then:
            then()


def _json(
    start_response: StartResponse,
    status: int,
    body: dict[str, Any],
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            *(headers or []),
        ],
    )
    return [data]


def build_wsgi(
    settings: Settings, identity: SlackResponse | None = None
) -> tuple[RelayWSGI, Relay]:
    """The relay and its WSGI app, delivery started (`identity`: see `build_app`)."""
    from bot.slack.app import build_app

    relay = Relay(settings)
    app = build_app(relay, identity=identity)
    relay.start()
    return RelayWSGI(app, relay), relay


class RelayWorker(ThreadWorker):
    """gunicorn's gthread worker, where each read of a request waits REQUEST_READ_TIMEOUT at
    most (the socket's SO_RCVTIMEO): a client that stalls mid-request frees its thread."""

    def enqueue_req(self, conn: Any) -> None:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _READ_TIMEVAL)
        super().enqueue_req(conn)

    def handle_request(self, req: Any, conn: Any) -> Any:
        _answering.request = req  # for close_after_answer, in this thread
        try:
            return super().handle_request(req, conn)
        finally:
            _answering.request = None


# The gunicorn request this thread is answering, under RelayWorker.
_answering = threading.local()


def close_after_answer() -> None:
    """The connection closes after this answer, which says so (`Connection: close`); gunicorn
    drops a Connection header the app sets. A no-op outside RelayWorker."""
    request = getattr(_answering, "request", None)
    if request is not None:
        request.force_close()


_READ_TIMEVAL = struct.pack("ll", REQUEST_READ_TIMEOUT, 0)  # struct timeval


class RelayGunicornLogger(glogging.Logger):
    """Gunicorn's own lines go through the relay's handler: same format (plain or JSON)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """A request whose headers stopped coming (REQUEST_READ_TIMEOUT) is one quiet line,
        not an error with a traceback."""
        if isinstance(sys.exc_info()[1], BlockingIOError):
            self.info("a client stopped sending its request: connection closed")
            return
        super().exception(msg, *args, **kwargs)


def stop_all(relays: list[Relay]) -> None:
    """Gunicorn's worker_exit: finish deliveries in flight, leave the rest pending."""
    for relay in relays:
        relay.stop(25.0)


def check_port(port: int) -> None:
    """SettingsError (one line) when PORT can't be listened on: gunicorn would retry for 5 s
    with a dozen log lines, then exit."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as error:
            why = {errno.EADDRINUSE: "in use by another process", errno.EACCES: "not allowed"}
            reason = why.get(error.errno or 0, error.strerror or type(error).__name__)
            raise SettingsError(
                f"PORT: expected a port to listen on, got {port} ({reason})"
            ) from None


def serve(settings: Settings) -> int:
    """Run HTTP mode under gunicorn on $PORT; SIGTERM drains requests and deliveries."""
    # gunicorn reads WEB_CONCURRENCY with int() as it is imported: an empty value, unset to
    # the relay (compose's `${WEB_CONCURRENCY}`, say), would stop it with a traceback.
    os.environ["WEB_CONCURRENCY"] = str(settings.web_concurrency)
    from gunicorn.app.base import BaseApplication

    from bot.slack.app import preflight

    settings.require("brixo_api_key", "slack_signing_secret")
    check_port(settings.port)
    identity = preflight(settings)  # handed to every worker: no auth.test while a vote waits
    relays: list[Relay] = []

    class Server(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"0.0.0.0:{settings.port}",
                "workers": settings.web_concurrency,
                "worker_class": RelayWorker,
                "threads": settings.gunicorn_threads,
                "timeout": 30,
                "graceful_timeout": 28,
                "keepalive": 5,
                "worker_exit": lambda _server, _worker: stop_all(relays),
                "accesslog": None,
                "logger_class": RelayGunicornLogger,
                "loglevel": settings.log_level.lower(),
            }
            if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25.1
                options["control_socket_disable"] = True  # no shared socket in $HOME
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> RelayWSGI:
            wsgi, relay = build_wsgi(settings, identity)
            relays.append(relay)
            log.info(
                "serving Slack at %s and health at %s on port %s",
                EVENTS_PATH,
                HEALTH_PATH,
                settings.port,
            )
            return wsgi

    Server().run()
    return 0
