"""A strict local stand-in for Brixo's Signals API (see shared/brixo-signals-api.md).

Validation order: route (404) -> method (405) -> API key (401) -> media type (415)
-> body size (413) -> body (400) -> unknown ID (404) -> 204.
Injected faults apply before all of that, in the order they were queued.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Any, ClassVar
from urllib.parse import unquote

from tests.fakes import Headers, LocalHTTPFake, QuietHandler
from tests.waiting import wait_until

MEDIA_TYPE = "application/vnd.api+json"
VALUES = frozenset({"thumbs_up", "thumbs_down"})
KINDS = frozenset({"messages", "conversations"})
ATTRIBUTES = frozenset({"name", "value", "occurred_at", "user_message"})
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class Received:
    """One request as the fake saw it; ``status`` 0 means the connection was dropped."""

    kind: str
    id: str
    raw_path: str
    headers: Headers
    body: bytes
    json: dict[str, Any] | None
    status: int
    at: float
    method: str = "POST"
    client_port: int = 0

    @property
    def attributes(self) -> dict[str, Any]:
        """``data.attributes`` of the body, or ``{}``."""
        try:
            attrs = self.json["data"]["attributes"]  # type: ignore[index]
        except (KeyError, TypeError):
            return {}
        return attrs if isinstance(attrs, dict) else {}


@dataclass(frozen=True)
class _Fault:
    action: str  # "fail" | "drop" | "stall"
    status: int = 503
    retry_after: str | None = None
    detail: str = ""
    seconds: float = 0.0


def is_rfc3339(value: str) -> bool:
    """True for an RFC 3339 date-time with a time zone (``Z`` or ``±hh:mm``)."""
    if not RFC3339.match(value):
        return False
    text = value.upper().replace("Z", "+00:00")
    date_part, _, rest = text.partition("T")
    if "." in rest:  # fromisoformat wants at most 6 fractional digits
        clock, _, tail = rest.partition(".")
        digits = re.match(r"\d+", tail)
        assert digits is not None
        frac = digits.group(0)
        rest = f"{clock}.{(frac + '000000')[:6]}{tail[len(frac) :]}"
    try:
        parsed = datetime.fromisoformat(f"{date_part}T{rest}")
    except ValueError:
        return False
    return parsed.tzinfo is not None


def validate_body(body: bytes) -> str | None:
    """Return why ``body`` is not a valid feedback signal document, or None."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "Request body is not valid JSON"
    if not isinstance(doc, dict):
        return "Request body must be a JSON object"
    extra = set(doc) - {"data"}
    if extra:
        return f"Unknown top-level member(s): {', '.join(sorted(extra))}"
    data = doc.get("data")
    if data is None:
        return "Missing data"
    if not isinstance(data, dict):
        return "data must be an object"
    extra = set(data) - {"type", "attributes"}
    if extra:
        return f"Unknown member(s) in data: {', '.join(sorted(extra))}"
    if "type" not in data:
        return "Missing data.type"
    if data["type"] != "signals":
        return 'data.type must be "signals"'
    attrs = data.get("attributes")
    if attrs is None:
        return "Missing data.attributes"
    if not isinstance(attrs, dict):
        return "data.attributes must be an object"
    extra = set(attrs) - ATTRIBUTES
    if extra:
        return f"Unknown attribute(s): {', '.join(sorted(extra))}"
    if "name" not in attrs:
        return "Missing name"
    if attrs["name"] != "feedback":
        return 'name must be "feedback"'
    if "value" not in attrs:
        return "Missing value"
    if not isinstance(attrs["value"], str) or attrs["value"] not in VALUES:
        return 'value must be one of "thumbs_up" | "thumbs_down"'
    if "occurred_at" in attrs:
        occurred = attrs["occurred_at"]
        if not isinstance(occurred, str) or not is_rfc3339(occurred):
            return "occurred_at is not a valid RFC3339 timestamp"
    if "user_message" in attrs and not isinstance(attrs["user_message"], str):
        return "user_message must be a string"
    return None


def parse_route(raw_path: str) -> tuple[str, str] | None:
    """``(kind, decoded id)`` for ``/v1/{kind}/{id}/signals``, else None."""
    if "?" in raw_path or "#" in raw_path:
        return None
    parts = raw_path.split("/")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "v1" or parts[4] != "signals":
        return None
    kind, raw_id = parts[2], parts[3]
    if kind not in KINDS or not raw_id:
        return None
    return kind, unquote(raw_id)


def error_body(status: int, detail: str) -> bytes:
    """A JSON:API error document."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    doc = {"errors": [{"status": str(status), "title": title, "detail": detail}]}
    return json.dumps(doc).encode()


class _BrixoHandler(QuietHandler):
    server: Any

    def handle_any(self) -> None:
        fake: FakeBrixo = self.server.owner
        at = time.time()
        body, too_large = self.read_body(fake.max_body_bytes)
        fault = fake._pop_fault()
        if fake.latency > 0 and not fake.sleep(fake.latency):
            return self.drop()
        route = parse_route(self.path)
        kind, ident = route or ("", "")
        headers = Headers(self.headers.items())
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            doc = None
        parsed = doc if isinstance(doc, dict) else None

        extra: dict[str, str] = {}
        port = int(self.client_address[1])
        if fault is not None and fault.action == "stall" and not fake.sleep(fault.seconds):
            return self.drop()
        if fault is not None and fault.action == "drop":
            fake._record(
                Received(kind, ident, self.path, headers, body, parsed, 0, at, self.command, port)
            )
            return self.drop()
        if fault is not None and fault.action == "fail":
            status, detail = fault.status, fault.detail
            if fault.retry_after is not None:
                extra["Retry-After"] = fault.retry_after
        else:
            status, detail = fake._judge(self.command, route, headers, body, too_large)
            if status == 405:
                extra["Allow"] = "POST"
        fake._record(
            Received(kind, ident, self.path, headers, body, parsed, status, at, self.command, port)
        )
        if status == 204:
            self.send_raw(204)
        else:
            self.send_raw(status, error_body(status, detail), MEDIA_TYPE, extra)


class FakeBrixo(LocalHTTPFake):
    """Strict fake of ``POST /v1/{messages|conversations}/{id}/signals``.

    ``url`` is the API base (no trailing slash); every request is recorded in
    ``requests``; faults queued with ``fail_next``/``drop_next``/``stall_next``
    are consumed in order by the next requests.
    """

    handler_class: ClassVar[type[QuietHandler]] = _BrixoHandler

    def __init__(
        self, api_key: str = "brixo-test-key", max_body_bytes: int = 16384, port: int = 0
    ) -> None:
        super().__init__(port)
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.missing_ids: set[str] = set()
        self.latency = 0.0
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._faults: deque[_Fault] = deque()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self.base_url

    # -- recording -----------------------------------------------------------

    @property
    def requests(self) -> list[Received]:
        """A snapshot of every request received, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def accepted(self) -> list[Received]:
        """The requests answered 204."""
        return [r for r in self.requests if r.status == 204]

    def accepted_for(self, id: str) -> list[Received]:  # noqa: A002
        """Accepted requests whose decoded path ID is ``id``."""
        return [r for r in self.accepted if r.id == id]

    def wait_for_accepted(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until at least ``count`` requests were accepted; return them."""
        return wait_until(
            lambda: (lambda acc: acc if len(acc) >= count else None)(self.accepted),
            timeout=timeout,
            message=f"Brixo did not accept {count} signal(s): {self._summary()}",
        )

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until at least ``count`` requests arrived (any status); return them."""
        return wait_until(
            lambda: (lambda rs: rs if len(rs) >= count else None)(self.requests),
            timeout=timeout,
            message=f"Brixo did not receive {count} request(s): {self._summary()}",
        )

    def clear(self) -> None:
        """Forget recorded requests (faults and settings stay)."""
        with self._lock:
            self._requests.clear()

    def _summary(self) -> str:
        return ", ".join(f"{r.status} {r.raw_path}" for r in self.requests[-10:]) or "none"

    def _record(self, received: Received) -> None:
        with self._lock:
            self._requests.append(received)

    # -- behaviour -----------------------------------------------------------

    def mark_missing(self, id: str) -> None:  # noqa: A002
        """Make ``id`` answer 404 from now on."""
        with self._lock:
            self.missing_ids.add(id)

    def mark_present(self, id: str) -> None:  # noqa: A002
        """Make ``id`` known again."""
        with self._lock:
            self.missing_ids.discard(id)

    def set_key(self, new_key: str) -> None:
        """Change the accepted API key (simulates a rotated key)."""
        self.api_key = new_key

    def set_latency(self, seconds: float) -> None:
        """Delay every answer by ``seconds`` (concurrent requests wait concurrently)."""
        self.latency = max(0.0, seconds)

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        retry_after: str | None = None,
        detail: str = "Injected failure",
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (and ``Retry-After`` if given)."""
        self._queue(n, _Fault("fail", status=status, retry_after=retry_after, detail=detail))

    def drop_next(self, n: int = 1) -> None:
        """Close the connection of the next ``n`` requests without answering."""
        self._queue(n, _Fault("drop"))

    def stall_next(self, n: int = 1, seconds: float = 5.0) -> None:
        """Sleep ``seconds`` before handling each of the next ``n`` requests normally."""
        self._queue(n, _Fault("stall", seconds=seconds))

    def pending_faults(self) -> int:
        """How many queued faults are not consumed yet."""
        with self._lock:
            return len(self._faults)

    def reset(self) -> None:
        """Back to defaults: no records, faults, latency or missing IDs."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self.missing_ids.clear()
        self.latency = 0.0

    def _queue(self, n: int, fault: _Fault) -> None:
        with self._lock:
            self._faults.extend([fault] * n)

    def _pop_fault(self) -> _Fault | None:
        if not self._faults:
            return None
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _judge(
        self,
        method: str,
        route: tuple[str, str] | None,
        headers: Headers,
        body: bytes,
        too_large: bool,
    ) -> tuple[int, str]:
        if route is None:
            return 404, "No route matches this path"
        if method != "POST":
            return 405, f"Method {method} not allowed"
        if headers.get("authorization") != f"Bearer {self.api_key}":
            if "authorization" not in headers:
                return 401, "Missing API key"
            return 401, "Invalid API key"
        if headers.get("content-type") != MEDIA_TYPE:
            return 415, f"Content-Type must be {MEDIA_TYPE}"
        if too_large:
            return 413, f"Request body exceeds {self.max_body_bytes} bytes"
        problem = validate_body(body)
        if problem is not None:
            return 400, problem
        kind, ident = route
        if ident in self.missing_ids:
            return 404, f"{kind[:-1].capitalize()} {ident!r} not found"
        return 204, ""
