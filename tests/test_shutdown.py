"""SIGTERM while deliveries are in flight: the process ends within 30 s and no act is lost.

Runs `python -m bot serve` (gunicorn) and `python -m bot socket` (Socket Mode, against a small
stdlib WebSocket server standing in for Slack's) as real processes, with Brixo stalled.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import sqlite3
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env
from tests.fakes import FakeBrixo, FakeSlackAPI, SlackSender
from tests.fakes import slack_requests as sr
from tests.procs import Proc, start_bot
from tests.slack_harness import SIGNING_SECRET
from tests.test_deploy import click, free_port, relay_env, seed_reply
from tests.waiting import wait_until

VOTES = 8
LATENCY = 3.0  # Brixo's answer time: deliveries are in flight when SIGTERM arrives
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --- a minimal Socket Mode server (RFC 6455 over the stdlib) ----------------------------------


class FakeSocketMode:
    """Accepts the relay's WebSocket, says hello, sends envelopes and records their acks."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self.listener.getsockname()[1]}/link/?ticket=t1"
        self.acks: list[str] = []
        self.answers: dict[str, dict[str, Any]] = {}  # envelope ID -> the whole ack message
        # Called in the reader thread with each ack, before it is recorded (a check of what was
        # stored at the moment the ack arrived).
        self.on_ack: Callable[[dict[str, Any]], None] | None = None
        self.connections = 0
        # Cleared: new connections wait before their handshake is answered (a slow reconnect).
        self.handshakes = threading.Event()
        self.handshakes.set()
        self.clients: list[socket.socket] = []
        self.silent: set[socket.socket] = set()  # connections that no longer answer pings
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            key = ""
            for line in request.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-key":
                    key = value.strip()
            self.handshakes.wait(timeout=30)
            accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            with self._lock:  # before the client can see the socket open: a drop then cuts it
                self.clients.append(conn)
                self.connections += 1
            conn.sendall(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                ).encode()
            )
            hello = {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}}
            self._send(conn, 0x1, json.dumps(hello).encode())
            self._read(conn)
        except OSError:
            pass
        finally:
            with self._lock:
                if conn in self.clients:
                    self.clients.remove(conn)
            conn.close()

    def _read(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        while True:
            head = reader.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", reader.read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", reader.read(8))[0]
            mask = reader.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(reader.read(length)))
            if opcode == 0x8:  # close
                self._send(conn, 0x8, data[:2])
                return
            if opcode == 0x9 and conn not in self.silent:  # ping
                self._send(conn, 0xA, data)
            elif opcode == 0x1:
                answer = json.loads(data)
                envelope_id = answer.get("envelope_id")
                if envelope_id:
                    if self.on_ack:
                        self.on_ack(answer)
                    with self._lock:
                        self.answers[envelope_id] = answer
                        self.acks.append(envelope_id)

    def _send(self, conn: socket.socket, opcode: int, data: bytes) -> None:
        size = len(data)
        if size < 126:
            head = struct.pack(">BB", 0x80 | opcode, size)
        elif size < 65536:
            head = struct.pack(">BBH", 0x80 | opcode, 126, size)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 127, size)
        with self._lock:
            conn.sendall(head + data)

    def connected(self) -> bool:
        with self._lock:
            return bool(self.clients)

    def interactive(self, payload: Any) -> str:
        """Send an interactivity payload as Slack does over the socket; returns its envelope ID."""
        return self.envelope("interactive", payload, accepts_response_payload=True)

    def events_api(self, body: Any, envelope_id: str | None = None, retry_attempt: int = 0) -> str:
        """Send an Events API body (event_callback); Slack's redelivery has retry_attempt > 0."""
        return self.envelope(
            "events_api",
            body,
            envelope_id,
            accepts_response_payload=False,
            retry_attempt=retry_attempt,
            retry_reason="timeout" if retry_attempt else "",
        )

    def envelope(
        self, kind: str, payload: Any, envelope_id: str | None = None, **extra: Any
    ) -> str:
        """Send an envelope of any type on the newest connection; returns its envelope ID."""
        envelope_id = envelope_id or str(uuid.uuid4())
        self.send({"envelope_id": envelope_id, "type": kind, "payload": payload, **extra})
        return envelope_id

    def send(self, message: dict[str, Any]) -> None:
        """Send one message (an envelope, or e.g. a `disconnect`) on the newest connection."""
        with self._lock:
            conn = self.clients[-1]
        self._send(conn, 0x1, json.dumps(message).encode())

    def silence(self) -> None:
        """Leave every connection open but answer nothing more on it, pings included (a NAT or
        Wi-Fi change that drops packets without a reset)."""
        with self._lock:
            self.silent.update(self.clients)

    def drop(self) -> None:
        """Cut every connection without a close frame, as a network blip does."""
        with self._lock:
            for conn in self.clients:
                conn.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for conn in self.clients:
                conn.close()


@pytest.fixture
def socket_mode(fake_slack: FakeSlackAPI) -> Iterator[FakeSocketMode]:
    """The fake Socket Mode server, handed out by the fake Slack's apps.connections.open."""
    server = FakeSocketMode()
    fake_slack.respond("apps.connections.open", {"ok": True, "url": server.url})
    yield server
    server.close()


# --- checks on the outbox after the process ended ---------------------------------------------


def rows(db: Path) -> list[tuple[int, str, str, str | None]]:
    with sqlite3.connect(db) as conn:
        found = conn.execute(
            "SELECT id, target_id, state, lease_owner FROM brixo_acts ORDER BY id"
        ).fetchall()
    conn.close()
    return [tuple(r) for r in found]  # type: ignore[misc]


def in_flight(db: Path) -> bool:
    """True once the relay leased acts to send (Brixo answers only LATENCY seconds later)."""
    return db.exists() and any(r[3] for r in rows(db))


def stop_and_check(proc: Proc, db: Path, brixo: FakeBrixo, targets: list[str]) -> None:
    """SIGTERM now: out within 30 s, every act delivered or pending, nothing leased, none lost."""
    wait_until(lambda: in_flight(db), timeout=10, message="no delivery in flight")
    started = time.monotonic()
    proc.terminate()
    assert proc.wait(timeout=30) == 0, proc.describe()
    assert time.monotonic() - started < 30
    found = rows(db)
    assert sorted(r[1] for r in found) == sorted(targets), "an act was lost"
    states = {r[1]: r[2] for r in found}
    assert set(states.values()) <= {"delivered", "pending"}, states
    assert all(r[3] is None for r in found), f"leases left behind: {found}"
    delivered = {t for t, s in states.items() if s == "delivered"}
    assert delivered, f"the deliveries in flight at SIGTERM did not finish: {states}"
    assert {r.id for r in brixo.accepted} == delivered, "Brixo's record and the outbox disagree"
    assert "Traceback" not in proc.stderr, proc.describe()


def deliver_the_rest(
    env: dict[str, str], tmp_path: Path, brixo: FakeBrixo, targets: list[str], port: int
) -> None:
    """A fresh relay on the same database delivers what was left pending, each once."""
    brixo.set_latency(0)
    proc = start_bot("serve", env={**env, "PORT": str(port)}, cwd=tmp_path)
    try:
        brixo.wait_for_accepted(len(targets), timeout=20)
        assert sorted(r.id for r in brixo.accepted) == sorted(targets), "sent twice or lost"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stop()


def test_sigterm_under_gunicorn_keeps_every_act(
    env: Env,
    brixo: FakeBrixo,
    fake_slack: FakeSlackAPI,
    tmp_path: Path,
) -> None:
    db = tmp_path / "relay.db"
    port = free_port()
    environ = relay_env(env, fake_slack, DELIVERY_CONCURRENCY="2", DATABASE_URL=f"sqlite:///{db}")
    proc = start_bot("serve", env={**environ, "PORT": str(port)}, cwd=tmp_path)
    try:
        proc.wait_healthy(f"http://127.0.0.1:{port}/healthz", timeout=30)
        brixo.set_latency(LATENCY)
        sender = SlackSender(f"http://127.0.0.1:{port}", SIGNING_SECRET)
        targets = [f"m-{i}" for i in range(VOTES)]
        for target in targets:
            assert click(sender, "C1", seed_reply(fake_slack, "C1", target)).status_code == 200
        stop_and_check(proc, db, brixo, targets)
    finally:
        proc.stop()
    deliver_the_rest(environ, tmp_path, brixo, targets, free_port())


def test_sigterm_in_socket_mode_keeps_every_act(
    env: Env,
    brixo: FakeBrixo,
    fake_slack: FakeSlackAPI,
    socket_mode: FakeSocketMode,
    tmp_path: Path,
) -> None:
    db = tmp_path / "relay.db"
    environ = relay_env(
        env,
        fake_slack,
        DELIVERY_CONCURRENCY="2",
        DATABASE_URL=f"sqlite:///{db}",
        SLACK_APP_TOKEN="xapp-1-A1-socket-token",
    )
    proc = start_bot("socket", env=environ, cwd=tmp_path)
    try:
        wait_until(socket_mode.connected, timeout=20, message=f"no socket:\n{proc.describe()}")
        opened = fake_slack.calls_to("apps.connections.open")
        assert opened and opened[0].token == "xapp-1-A1-socket-token"
        proc.wait_for_line("connected to Slack over Socket Mode", stream="stderr", timeout=20)
        brixo.set_latency(LATENCY)
        targets = [f"s-{i}" for i in range(VOTES)]
        sent = []
        for target in targets:
            ts = seed_reply(fake_slack, "C1", target)
            action = sr.feedback_button_action("up")
            payload = sr.block_action("U1", "T1", "C1", ts, action, message_bot_id="BOTHER")
            sent.append(socket_mode.interactive(payload))
        wait_until(
            lambda: set(sent) <= set(socket_mode.acks), timeout=10, message="envelopes not acked"
        )
        stop_and_check(proc, db, brixo, targets)
        assert not socket_mode.connected(), "the socket stayed open"
    finally:
        proc.stop()
    deliver_the_rest(relay_env(env, fake_slack, DATABASE_URL=f"sqlite:///{db}"), tmp_path, brixo,
                     targets, free_port())  # fmt: skip


def test_socket_mode_reconnects_soon_after_the_connection_drops(
    env: Env,
    brixo: FakeBrixo,
    fake_slack: FakeSlackAPI,
    socket_mode: FakeSocketMode,
    tmp_path: Path,
) -> None:
    environ = relay_env(env, fake_slack, SLACK_APP_TOKEN="xapp-1-A1-socket-token")
    proc = start_bot("socket", env=environ, cwd=tmp_path)
    try:
        proc.wait_for_line("connected to Slack over Socket Mode", stream="stderr", timeout=20)
        wait_until(socket_mode.connected, timeout=20, message=f"no socket:\n{proc.describe()}")
        opened = len(fake_slack.calls_to("apps.connections.open"))
        socket_mode.drop()
        wait_until(
            lambda: (
                len(fake_slack.calls_to("apps.connections.open")) > opened
                and socket_mode.connected()
            ),
            timeout=5,  # at once, not at the next 10 s check for a socket
            message=f"no new socket within 5 s:\n{proc.describe()}",
        )
        ts = seed_reply(fake_slack, "C1", "after-the-drop")
        payload = sr.block_action(
            "U1", "T1", "C1", ts, sr.feedback_button_action("up"), message_bot_id="BOTHER"
        )
        envelope = socket_mode.interactive(payload)
        wait_until(lambda: envelope in socket_mode.acks, timeout=10, message="envelope not acked")
        assert brixo.wait_for_accepted(1)[0].id == "after-the-drop"
    finally:
        proc.stop()
