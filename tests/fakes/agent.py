"""A local stand-in for the customer's AI agent (``AGENT_URL``)."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from tests.fakes import Headers, LocalHTTPFake, QuietHandler
from tests.waiting import wait_until

Reply = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class AgentRequest:
    """One request to the agent: parsed JSON body (None if not JSON), headers, path, time."""

    json: dict[str, Any] | None
    headers: Headers
    path: str
    body: bytes
    at: float


@dataclass(frozen=True)
class _Fault:
    action: str  # "fail" | "stall" | "trickle" | "redirect"
    status: int = 500
    seconds: float = 0.0


class _AgentHandler(QuietHandler):
    server: Any

    def handle_any(self) -> None:
        fake: FakeAgent = self.server.owner
        body, _ = self.read_body(None)
        try:
            loaded = json.loads(body) if body else None
        except ValueError:
            loaded = None
        doc = loaded if isinstance(loaded, dict) else None
        n = fake._record(
            AgentRequest(doc, Headers(self.headers.items()), self.path, body, time.time())
        )
        fault = fake._pop_fault()
        if fault is not None and fault.action == "stall" and not fake.sleep(fault.seconds):
            return self.drop()
        if fault is not None and fault.action == "fail":
            payload = json.dumps({"error": "injected failure"}).encode()
            self.send_raw(fault.status, payload, "application/json")
            return
        if fault is not None and fault.action == "redirect":  # to this fake, under /moved
            location = {"Location": f"{fake.base_url}/moved"}
            self.send_raw(fault.status, b"", "text/plain", location)
            return
        status, reply = fake._reply(doc or {}, n)
        payload = json.dumps(reply).encode()
        if fault is not None and fault.action == "trickle":
            self.trickle(fake, status, payload, fault.seconds)
            return
        self.send_raw(status, payload, "application/json")

    def trickle(self, fake: FakeAgent, status: int, payload: bytes, seconds: float) -> None:
        """The whole answer, status line and headers included, a byte at a time over
        `seconds`: never a pause long enough for a read timeout."""
        head = (
            f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        ).encode()
        answer = head + payload
        self.close_connection = True
        for i in range(len(answer)):
            if not fake.sleep(seconds / len(answer)):
                return self.drop()
            self.wfile.write(answer[i : i + 1])
            self.wfile.flush()


class FakeAgent(LocalHTTPFake):
    """Answers any POST with ``{"text", "message_id", "conversation_id"}``.

    The default reply to the n-th request is ``"Answer to: <text>"``,
    ``msg-<n>`` and ``conv-<thread_ts>``.
    """

    handler_class: ClassVar[type[QuietHandler]] = _AgentHandler

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self._lock = threading.Lock()
        self._requests: list[AgentRequest] = []
        self._faults: deque[_Fault] = deque()
        self._reply_with: Reply | None = None
        self._status = 200

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/`` (any path works)."""
        return f"{self.base_url}/"

    @property
    def requests(self) -> list[AgentRequest]:
        """A snapshot of every request, oldest first."""
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, count: int = 1, timeout: float = 10.0) -> list[AgentRequest]:
        """Wait until at least ``count`` requests arrived; return them."""
        return wait_until(
            lambda: (lambda rs: rs if len(rs) >= count else None)(self.requests),
            timeout=timeout,
            message=f"agent did not receive {count} request(s)",
        )

    def reply_with(self, reply: Reply, status: int = 200) -> None:
        """Answer with ``reply`` (a dict, or a callable of the request JSON) from now on."""
        with self._lock:
            self._reply_with, self._status = reply, status

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next ``n`` requests with HTTP ``status``."""
        with self._lock:
            self._faults.extend([_Fault("fail", status=status)] * n)

    def redirect_next(self, n: int = 1, status: int = 302) -> None:
        """Answer the next ``n`` requests with a redirect to this fake's ``/moved``."""
        with self._lock:
            self._faults.extend([_Fault("redirect", status=status)] * n)

    def stall_next(self, n: int = 1, seconds: float = 5.0) -> None:
        """Wait ``seconds`` before answering each of the next ``n`` requests."""
        with self._lock:
            self._faults.extend([_Fault("stall", seconds=seconds)] * n)

    def trickle_next(self, n: int = 1, seconds: float = 5.0) -> None:
        """Answer each of the next ``n`` requests a byte at a time over ``seconds``."""
        with self._lock:
            self._faults.extend([_Fault("trickle", seconds=seconds)] * n)

    def clear(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self._requests.clear()

    def _record(self, request: AgentRequest) -> int:
        with self._lock:
            self._requests.append(request)
            return len(self._requests)

    def _pop_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _reply(self, doc: dict[str, Any], n: int) -> tuple[int, dict[str, Any]]:
        with self._lock:
            reply, status = self._reply_with, self._status
        if reply is None:
            return 200, {
                "text": f"Answer to: {doc.get('text', '')}",
                "message_id": f"msg-{n}",
                "conversation_id": f"conv-{doc.get('thread_ts')}",
            }
        return status, (reply(doc) if callable(reply) else dict(reply))
