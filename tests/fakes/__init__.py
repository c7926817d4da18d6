"""Local stand-ins for the services the relay talks to, plus shared HTTP plumbing.

Every fake is a real HTTP/1.1 server bound to 127.0.0.1 on a free port, served
by daemon threads (one per connection, so keep-alive and concurrency work).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self

__all__ = [
    "FakeAgent",
    "FakeBrixo",
    "FakeSlackAPI",
    "Headers",
    "LocalHTTPFake",
    "SlackSender",
]

MAX_DRAIN_BYTES = 1 << 20


class Headers(dict[str, str]):
    """A plain dict of request headers whose lookups ignore case (keys stored lower-case)."""

    def __init__(self, items: Any = ()) -> None:
        super().__init__((str(k).lower(), str(v)) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        """Case-insensitive ``dict.get``."""
        return super().get(key.lower(), default)


class _Server(ThreadingHTTPServer):
    """Threaded server that tracks open connections so ``stop()`` can cut them."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, port: int, handler: type[BaseHTTPRequestHandler], owner: Any) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: clients hanging up mid-request are expected in tests."""

    def close_connections(self) -> None:
        """Shut down every open keep-alive connection."""
        with self.connections_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler with no logging, TCP_NODELAY and one-write responses."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def parse_request(self) -> bool:
        """Parse the request line and headers (a lean version of the stdlib's, ~4x faster).

        ``self.headers`` becomes a :class:`Headers` (lower-case keys, case-insensitive get).
        """
        self.command = ""
        self.request_version = "HTTP/0.9"
        self.close_connection = True
        requestline = str(getattr(self, "raw_requestline", b""), "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            self.send_raw(400, b"bad request line", "text/plain")
            return False
        self.command, self.path, self.request_version = words
        items: list[tuple[str, str]] = []
        while True:
            line = self.rfile.readline(65537)
            if len(line) > 65536 or len(items) > 100:
                self.send_raw(431, b"headers too large", "text/plain")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("iso-8859-1").partition(":")
            items.append((name.strip(), value.strip()))
        headers = Headers(items)
        self.headers = headers  # type: ignore[assignment]
        conntype = headers.get("connection", "").lower()
        if conntype == "close":
            self.close_connection = True
        elif conntype == "keep-alive" or self.request_version == "HTTP/1.1":
            self.close_connection = False
        if (
            headers.get("expect", "").lower() == "100-continue"
            and self.request_version == "HTTP/1.1"
        ):
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence the default stderr access log."""

    def handle_any(self) -> None:
        """Handle a request of any method (override)."""
        raise NotImplementedError

    def do_GET(self) -> None:  # noqa: N802
        self.handle_any()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def read_body(self, limit: int | None = None) -> tuple[bytes, bool]:
        """Read the request body; return ``(body, too_large)``.

        A body over ``limit`` is drained (up to 1 MiB, else the connection is
        closed) so that keep-alive stays usable, and ``b""`` is returned.
        """
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return b"", False
        if limit is not None and length > limit:
            if length <= MAX_DRAIN_BYTES:
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            else:
                self.close_connection = True
            return b"", True
        return (self.rfile.read(length) if length > 0 else b""), False

    def _read_chunked(self, limit: int | None) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            except ValueError:
                self.close_connection = True
                break
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                break
            data = self.rfile.read(size)
            self.rfile.readline(65537)
            total += len(data)
            if total > MAX_DRAIN_BYTES:
                self.close_connection = True
                return b"", True
            parts.append(data)
        body = b"".join(parts)
        if limit is not None and len(body) > limit:
            return b"", True
        return body, False

    def send_raw(
        self,
        status: int,
        body: bytes = b"",
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Write a complete response (status line, headers, body) in one write."""
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [f"HTTP/1.1 {status} {phrase}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if status != 204 and status >= 200 and status != 304:
            lines.append(f"Content-Length: {len(body)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        payload = head if self.command == "HEAD" or status == 204 else head + body
        try:
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True

    def drop(self) -> None:
        """Close the connection without answering."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class LocalHTTPFake:
    """Start/stop/url plumbing shared by the fakes; subclasses set ``handler_class``."""

    handler_class: ClassVar[type[QuietHandler]]

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._stopped.set()

    @property
    def port(self) -> int:
        """The TCP port (fixed after the first ``start()``, reused on restart)."""
        if not self._port:
            raise RuntimeError(f"{type(self).__name__} not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._server is not None

    def start(self) -> Self:
        """Bind and serve in a daemon thread; a restart reuses the same port."""
        if self._server is not None:
            return self
        self._server = _Server(self._port, self.handler_class, self)
        self._port = self._server.server_address[1]
        self._stopped.clear()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection (a later ``start()`` may follow)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopped.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def sleep(self, seconds: float) -> bool:
        """Sleep in a handler; returns False (early) if the fake was stopped."""
        if seconds <= 0:
            return not self._stopped.is_set()
        return not self._stopped.wait(seconds)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


from tests.fakes.agent import FakeAgent  # noqa: E402
from tests.fakes.brixo import FakeBrixo  # noqa: E402
from tests.fakes.slack_api import FakeSlackAPI  # noqa: E402
from tests.fakes.slack_requests import SlackSender  # noqa: E402
