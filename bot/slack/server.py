"""HTTP mode: Bolt's WSGI adapter behind a small router, served by gunicorn."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn import glogging
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.core.relay import Relay
from bot.core.settings import Settings

log = logging.getLogger("bot.server")

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
MAX_BODY_BYTES = 1024 * 1024  # Slack's payloads are far smaller; refuse larger before parsing

StartResponse = Callable[..., Any]


class RelayWSGI:
    """Routes /slack/* to Bolt and /healthz to the relay's health report."""

    def __init__(self, app: App, relay: Relay) -> None:
        self.relay = relay
        self.bolt = SlackRequestHandler(app)
        oauth = app.oauth_flow
        self.oauth_paths = {oauth.install_path, oauth.redirect_uri_path} if oauth else set()
        self.sqlite = SqliteFile.of(relay)

    def health(self) -> tuple[int, dict[str, Any]]:
        """/healthz: 200 while votes can be stored, else 503; Brixo's state never makes it 503."""
        ok, report = self.relay.health()
        problem = self.sqlite.problem() if ok and self.sqlite else None
        if problem:
            ok, report["database"] = False, f"unavailable: {problem}"
            report.pop("outbox", None)
        state, _, detail = str(report.get("database", "")).partition(": ")
        body: dict[str, Any] = {
            "ok": ok,
            "database": state or "unavailable",
            "brixo": report.get("brixo", "unknown"),
            "delivery": report.get("delivery", "running"),
        }
        if detail:
            body["database_error"] = detail
        counts = report.get("outbox")
        if counts is not None:
            body["outbox"] = {
                "pending": counts.get("pending", 0),
                "awaiting_comment": counts.get("awaiting_comment", 0),
                "dead": counts.get("dead", 0),
                "delivered": counts.get("delivered", 0),
                "oldest_pending_age": counts.get("oldest_pending_age"),
            }
        return (200 if ok else 503), body

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            status, body = self.health()
            return _json(start_response, status, body)
        if path == EVENTS_PATH and method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY_BYTES:
                return _json(start_response, 413, {"error": "request body too large"})
            return self.bolt(environ, start_response)
        if path in self.oauth_paths and method == "GET":
            return self.bolt(environ, start_response)
        return _json(start_response, 404, {"error": "not found"})


class SqliteFile:
    """The SQLite file the relay opened: still there, still the same file, still openable?

    Pooled connections keep writing to a file that was deleted, moved or made unreadable,
    and those votes would be gone at the next start; a fresh connection notices.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.identity = self._identity()

    @classmethod
    def of(cls, relay: Relay) -> SqliteFile | None:
        """The file of a SQLite relay (None for PostgreSQL or an in-memory database)."""
        url = relay.db.engine.url
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return cls(os.path.abspath(url.database))

    def _identity(self) -> tuple[int, int]:
        stat = os.stat(self.path)
        return stat.st_dev, stat.st_ino

    def problem(self) -> str | None:
        """Why votes can't be stored in the file, or None."""
        try:
            if self._identity() != self.identity:
                return "database file replaced"
            with sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=2) as conn:
                conn.execute("SELECT 1 FROM brixo_schema_version LIMIT 1").fetchall()
            conn.close()
        except (OSError, sqlite3.Error) as error:
            return type(error).__name__
        return None


def _json(start_response: StartResponse, status: int, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    reason = {200: "OK", 404: "Not Found", 413: "Payload Too Large", 503: "Service Unavailable"}
    start_response(
        f"{status} {reason[status]}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


def build_wsgi(settings: Settings) -> tuple[RelayWSGI, Relay]:
    """The relay and its WSGI app, delivery started."""
    from bot.slack.app import build_app

    settings.require("brixo_api_key")
    relay = Relay(settings)
    app = build_app(relay)
    relay.start()
    return RelayWSGI(app, relay), relay


class RelayGunicornLogger(glogging.Logger):
    """Gunicorn's own lines go through the relay's handler: same format (plain or JSON)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True


def stop_all(relays: list[Relay]) -> None:
    """Gunicorn's worker_exit: finish deliveries in flight, leave the rest pending."""
    for relay in relays:
        relay.stop(25.0)


def serve(settings: Settings) -> int:
    """Run HTTP mode under gunicorn on $PORT; SIGTERM drains requests and deliveries."""
    from gunicorn.app.base import BaseApplication

    settings.require("brixo_api_key", "slack_signing_secret")
    if not settings.oauth:
        settings.require("slack_bot_token")
    relays: list[Relay] = []

    class Server(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"0.0.0.0:{settings.port}",
                "workers": int(os.environ.get("WEB_CONCURRENCY", "1")),
                "worker_class": "gthread",
                "threads": int(os.environ.get("GUNICORN_THREADS", "16")),
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
            wsgi, relay = build_wsgi(settings)
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
