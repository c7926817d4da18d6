"""BrixoClient against the strict local Brixo: requests, IDs, and how answers are classified."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from time import sleep, time, tzset
from typing import Any

import pytest
import requests
import urllib3

from bot.core.acts import Signal, Target
from bot.core.brixo import (
    MAX_RETRY_AFTER,
    MEDIA_TYPE,
    BrixoClient,
    Outcome,
    classify,
    parse_retry_after,
    signal_path,
)
from bot.core.logs import setup_logging
from tests.conftest import BRIXO_KEY
from tests.fakes import FakeBrixo
from tests.waiting import wait_until

OCCURRED = datetime(2026, 2, 3, 14, 22, 10, tzinfo=UTC).timestamp()

ODD_IDS = [
    "msg/with/slashes",
    "what?x=1&y=2",
    "frag#ment",
    "100%",
    "%2F-already-encoded",
    "with spaces  and\ttab",
    "ünïcødé-✓-💬-中文",
    ".",
    "..",
    "...",
    "../etc",
    "a/../b",
    "./x",
    "+plus+;semi;,comma:colon@at=eq$dollar&amp!'()*~",
]


@pytest.fixture
def client(brixo: FakeBrixo) -> BrixoClient:
    c = BrixoClient(BRIXO_KEY, brixo.url, read_timeout=2.0)
    yield c
    c.close()


@pytest.mark.parametrize("kind", ["message", "conversation"])
@pytest.mark.parametrize(
    ("occurred_at", "user_message", "attributes"),
    [
        (
            OCCURRED,
            "Love this product!",
            {
                "name": "feedback",
                "value": "thumbs_up",
                "occurred_at": "2026-02-03T14:22:10Z",
                "user_message": "Love this product!",
            },
        ),
        (
            OCCURRED,
            None,
            {"name": "feedback", "value": "thumbs_up", "occurred_at": "2026-02-03T14:22:10Z"},
        ),
        (
            OCCURRED + 0.5,
            'Très bien 👍 "quoted"\nnewline',
            {
                "name": "feedback",
                "value": "thumbs_up",
                "occurred_at": "2026-02-03T14:22:10.500Z",
                "user_message": 'Très bien 👍 "quoted"\nnewline',
            },
        ),
    ],
)
def test_request_is_exactly_the_reference_shape(
    brixo: FakeBrixo,
    client: BrixoClient,
    kind: str,
    occurred_at: float,
    user_message: str | None,
    attributes: dict[str, str],
) -> None:
    answer = client.send(Signal(Target(kind, "id_1042"), "thumbs_up", occurred_at, user_message))  # type: ignore[arg-type]
    assert answer.outcome is Outcome.DELIVERED and answer.status == 204
    (request,) = brixo.requests
    assert request.method == "POST"
    assert request.raw_path == f"/v1/{kind}s/id_1042/signals"
    assert request.headers["Content-Type"] == "application/vnd.api+json"
    assert request.headers["Authorization"] == f"Bearer {BRIXO_KEY}"
    assert int(request.headers["Content-Length"]) == len(request.body)
    # The body is UTF-8 JSON whose document is exactly this: nothing more, nothing less.
    assert json.loads(request.body.decode("utf-8")) == {
        "data": {"type": "signals", "attributes": attributes}
    }
    assert request.status == 204


def test_thumbs_down_and_millisecond_times(brixo: FakeBrixo, client: BrixoClient) -> None:
    at = OCCURRED + 0.25
    assert client.send(Signal(Target("message", "m"), "thumbs_down", at)).status == 204
    attrs = brixo.accepted[0].attributes
    assert attrs["value"] == "thumbs_down"
    assert attrs["occurred_at"] == "2026-02-03T14:22:10.250Z"


@pytest.mark.parametrize("odd", ODD_IDS)
@pytest.mark.parametrize("kind", ["message", "conversation"])
def test_odd_ids_round_trip_exactly(
    brixo: FakeBrixo, client: BrixoClient, kind: str, odd: str
) -> None:
    answer = client.send(Signal(Target(kind, odd), "thumbs_up", OCCURRED))  # type: ignore[arg-type]
    assert answer.outcome is Outcome.DELIVERED, answer
    (request,) = brixo.requests
    assert request.kind == f"{kind}s"
    assert request.id == odd
    # One path segment, with no dot-segment a server or proxy would resolve away.
    segments = request.raw_path.split("/")
    assert len(segments) == 5, request.raw_path
    assert segments[3] not in (".", ".."), f"dot-segment on the wire: {request.raw_path}"
    assert "?" not in request.raw_path and "#" not in request.raw_path


@pytest.mark.parametrize(
    ("ident", "segment"),
    [
        ("C1-1712345678.000100", "C1-1712345678.000100"),  # a {channel}-{ts} template's IDs
        ("v1.2/x y", "v1.2%2Fx%20y"),
        ("...", "..."),
        ("..", "%2E%2E"),
        (".", "%2E"),
    ],
)
def test_ids_are_encoded_as_quote_does_but_for_dot_segments(ident: str, segment: str) -> None:
    assert signal_path(Target("message", ident)) == f"/v1/messages/{segment}/signals"


def test_one_keep_alive_connection_for_many_sends(brixo: FakeBrixo, client: BrixoClient) -> None:
    for n in range(5):
        assert client.send(Signal(Target("message", f"m{n}"), "thumbs_up", OCCURRED)).status == 204
    assert len({r.client_port for r in brixo.requests}) == 1


class _RecordingProxy(BaseHTTPRequestHandler):
    """An HTTP forward proxy that answers every POST itself with 204, keeping what it was sent."""

    seen: list[tuple[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.path, self.headers["Authorization"]))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_proxy_from_the_environment_carries_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    _RecordingProxy.seen = []
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    client = BrixoClient(BRIXO_KEY, "http://brixo.invalid", read_timeout=2.0)
    try:
        for ident in ("a/b", "c"):
            answer = client.send(Signal(Target("message", ident), "thumbs_up", OCCURRED))
            assert answer.outcome is Outcome.DELIVERED, answer
    finally:
        client.close()
        proxy.shutdown()
        proxy.server_close()
    assert _RecordingProxy.seen == [
        ("http://brixo.invalid/v1/messages/a%2Fb/signals", f"Bearer {BRIXO_KEY}"),
        ("http://brixo.invalid/v1/messages/c/signals", f"Bearer {BRIXO_KEY}"),
    ]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_transient_statuses_are_retry(brixo: FakeBrixo, client: BrixoClient, status: int) -> None:
    brixo.fail_next(1, status=status, detail="busy")
    answer = client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED))
    assert answer.outcome is Outcome.RETRY
    assert answer.status == status
    assert answer.detail == "busy"
    assert brixo.accepted == []


def test_retry_after_seconds_and_http_date(brixo: FakeBrixo, client: BrixoClient) -> None:
    brixo.fail_next(1, status=429, retry_after="7")
    assert client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED)).retry_after == 7
    later = datetime.fromtimestamp(time() + 120, UTC)
    brixo.fail_next(1, status=503, retry_after=format_datetime(later, usegmt=True))
    waited = client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED)).retry_after
    assert waited is not None and 100 <= waited <= 121
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize("raw", ["-3", "1.5", "1e9", "1_0", "Infinity", "NaN", "0x10", "٣"])
def test_retry_after_other_than_digits_or_a_date_is_ignored(raw: str) -> None:
    """RFC 9110: delay-seconds = 1*DIGIT. `Infinity` once held every send for ever."""
    assert parse_retry_after(raw) is None


def test_retry_after_dates_in_every_http_form_are_gmt_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = 1_790_000_000.0  # 2026-09-21 14:13:20 GMT
    forms = [
        "Mon, 21 Sep 2026 14:14:20 GMT",  # IMF-fixdate
        "Monday, 21-Sep-26 14:14:20 GMT",  # RFC 850
        "Mon Sep 21 14:14:20 2026",  # asctime
    ]
    for zone in ("America/New_York", "Asia/Tokyo"):
        monkeypatch.setenv("TZ", zone)
        tzset()
        assert [parse_retry_after(form, now) for form in forms] == [60.0] * 3, zone
    monkeypatch.undo()
    tzset()


def test_retry_after_is_capped_at_an_hour() -> None:
    assert parse_retry_after("999999999") == MAX_RETRY_AFTER == 3600
    assert parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT") == MAX_RETRY_AFTER


def test_client_errors_are_classified_with_brixos_detail(brixo: FakeBrixo) -> None:
    small = FakeBrixo(api_key=BRIXO_KEY, max_body_bytes=300).start()
    try:
        client = BrixoClient(BRIXO_KEY, small.url)
        small.mark_missing("gone")
        missing = client.send(Signal(Target("message", "gone"), "thumbs_up", OCCURRED))
        assert (missing.outcome, missing.status) == (Outcome.NOT_FOUND, 404)
        assert "not found" in missing.detail
        assert missing.describe() == f"HTTP 404: {missing.detail}"

        bad = client.send(Signal(Target("message", "m"), "meh", OCCURRED))  # type: ignore[arg-type]
        assert (bad.outcome, bad.status) == (Outcome.REJECTED, 400)
        assert bad.detail == 'value must be one of "thumbs_up" | "thumbs_down"'

        big = client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED, "x" * 400))
        assert (big.outcome, big.status) == (Outcome.TOO_LARGE, 413)
        assert "exceeds" in big.detail

        wrong = BrixoClient("not-the-key", small.url)
        refused = wrong.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED))
        assert (refused.outcome, refused.status) == (Outcome.UNAUTHORIZED, 401)
        assert small.accepted == []
    finally:
        small.stop()


def test_dropped_connection_is_retry(brixo: FakeBrixo, client: BrixoClient) -> None:
    brixo.drop_next(1)
    answer = client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED))
    assert (answer.outcome, answer.status) == (Outcome.RETRY, None)
    assert "connection" in answer.detail and answer.unanswered  # Brixo may have taken it
    assert client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED)).status == 204


def test_reset_connection_is_retry_and_may_have_reached_brixo() -> None:
    """A connection reset after the request went out (RST instead of an answer): retried,
    and said to be unanswered, since Brixo may have taken the signal."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def reset_after_reading() -> None:
            conn, _ = server.accept()
            request = chunk = b"?"
            while chunk and not request.endswith(b"}"):  # the whole request, the body last
                chunk = conn.recv(65536)
                request += chunk
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # SO_LINGER 0: the close sends RST

        thread = threading.Thread(target=reset_after_reading, daemon=True)
        thread.start()
        client = BrixoClient(BRIXO_KEY, f"http://127.0.0.1:{server.getsockname()[1]}")
        answer = client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED))
        thread.join(timeout=10)
    assert (answer.outcome, answer.status) == (Outcome.RETRY, None)
    assert "connection dropped" in answer.detail and answer.unanswered, answer.detail


def test_timeout_is_retry(brixo: FakeBrixo) -> None:
    client = BrixoClient(BRIXO_KEY, brixo.url, read_timeout=0.2)
    brixo.stall_next(1, seconds=3)
    answer = client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED))
    assert (answer.outcome, answer.status, answer.detail) == (Outcome.RETRY, None, "timed out")
    assert answer.unanswered  # the request went out: Brixo may have taken it


TRICKLES = {
    # The status line, then a header one byte at a time, never the blank line that ends them.
    "headers": (b"HTTP/1.1 204 No Content\r\nX-Slow: ", b"x"),
    # Headers whole, then a body that says it is long, one byte at a time.
    "body": (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 1000\r\n\r\n",
        b"x",
    ),
}


@pytest.mark.parametrize("trickle", TRICKLES)
def test_an_answer_trickled_past_the_timeout_is_cut_off(trickle: str) -> None:
    """The read timeout bounds each read; the whole request gets connect + read timeout: an
    answer that keeps coming a little at a time holds no send (nor a delivery slot) longer,
    on a kept-alive connection too. The next send, on a new connection, is answered as usual."""
    first, then = TRICKLES[trickle]
    stop = threading.Event()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def serve() -> None:
            conn, _ = server.accept()
            conn.recv(65536)  # a first send, answered at once; the connection is kept
            conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            conn.recv(65536)  # the second send on it: trickled
            conn.sendall(first)
            with contextlib.suppress(OSError):
                while not stop.wait(0.05):  # the server's pace, not a wait in the test
                    conn.sendall(then)
            conn.close()
            conn, _ = server.accept()  # the next send: answered at once
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            conn.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = BrixoClient(
            BRIXO_KEY,
            f"http://127.0.0.1:{server.getsockname()[1]}",
            connect_timeout=0.3,
            read_timeout=0.7,
        )
        assert client.send(Signal(Target("message", "m0"), "thumbs_up", OCCURRED)).status == 204
        answers: list[Any] = []
        sender = threading.Thread(
            target=lambda: answers.append(
                client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED))
            ),
            daemon=True,
        )
        sender.start()
        sender.join(timeout=20)
        waiting = sender.is_alive()
        stop.set()
        assert not waiting, "the send still waits on the trickled answer"
        assert (answers[0].outcome, answers[0].detail) == (Outcome.RETRY, "timed out")
        assert answers[0].unanswered  # the request went out: Brixo may have taken it
        again = client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED))
        assert again.outcome is Outcome.DELIVERED
        thread.join(timeout=10)
        client.close()


def test_a_connection_made_after_the_deadline_sends_nothing(
    brixo: FakeBrixo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS and TCP can't be cut: a connection they make only after the request's deadline
    carries no request (an answer to it would be thrown away, and the signal sent twice)."""
    client = BrixoClient(BRIXO_KEY, brixo.url, connect_timeout=0.2, read_timeout=0.2)
    connect = urllib3.util.connection.create_connection

    def slow_dns(*args: Any, **kwargs: Any) -> Any:
        sleep(0.5)  # the name server's pace: past the 0.4 s deadline
        return connect(*args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", slow_dns)
    answer = client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED))
    assert (answer.outcome, answer.detail, answer.unanswered) == (Outcome.RETRY, "timed out", False)
    assert brixo.requests == []
    monkeypatch.undo()
    assert client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED)).outcome is (
        Outcome.DELIVERED
    )
    client.close()


def test_the_deadline_thread_ends_once_idle(brixo: FakeBrixo) -> None:
    """One thread per client while it sends; none left behind by a client done with."""
    client = BrixoClient(BRIXO_KEY, brixo.url, connect_timeout=0.1, read_timeout=0.1)
    assert client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED)).status == 204
    named = lambda: [t for t in threading.enumerate() if t.name == "brixo-deadlines"]  # noqa: E731
    assert client._deadlines._thread in named()
    wait_until(lambda: client._deadlines._thread is None, timeout=5)
    assert client.send(Signal(Target("message", "m2"), "thumbs_up", OCCURRED)).status == 204
    client.close()


def test_refused_connection_is_retry() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = BrixoClient(BRIXO_KEY, f"http://127.0.0.1:{port}")
    answer = client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED))
    assert (answer.outcome, answer.status) == (Outcome.RETRY, None)
    assert "refused" in answer.detail and not answer.unanswered  # never sent
    assert BRIXO_KEY not in answer.describe()


def test_probe_tests_the_key_without_sending_a_signal(
    brixo: FakeBrixo, client: BrixoClient
) -> None:
    answer = client.probe()
    assert answer.status is not None and answer.outcome is not Outcome.UNAUTHORIZED
    brixo.set_key("rotated")
    assert client.probe().outcome is Outcome.UNAUTHORIZED
    assert brixo.accepted == []
    assert all(r.status != 204 for r in brixo.requests)


def test_key_never_in_repr_errors_or_logs(
    brixo: FakeBrixo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = BrixoClient(BRIXO_KEY, brixo.url, read_timeout=0.2)
    assert BRIXO_KEY not in repr(client) and BRIXO_KEY not in str(client)
    brixo.fail_next(1, 503)
    brixo.drop_next(1)
    brixo.stall_next(1, seconds=2)
    answers = [client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED)) for _ in range(3)]
    brixo.fail_next(1, 401, detail=f"invalid key Bearer:{BRIXO_KEY}")  # a server echoing it
    answers.append(client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED)))
    brixo.set_key("other")
    answers.append(client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED)))
    answers.append(client.probe())
    assert answers[3].detail == "invalid key Bearer:***"
    # Echoed across the 500-character cut of the detail: none of it shows either.
    brixo.set_key(BRIXO_KEY)
    brixo.fail_next(1, 500, detail="x" * (498 - len(BRIXO_KEY) // 2) + f" {BRIXO_KEY}")
    answers.append(client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED)))
    assert answers[-1].detail.endswith("x ***")
    for answer in answers:
        assert BRIXO_KEY not in answer.describe() and BRIXO_KEY not in repr(answer)
    assert BRIXO_KEY not in caplog.text


def test_log_redactor_masks_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("DEBUG", "plain", [BRIXO_KEY])
        logging.getLogger("bot.test").warning("header was Bearer %s", BRIXO_KEY)
        setup_logging("DEBUG", "json", [BRIXO_KEY])
        logging.getLogger("bot.test").error("key=" + BRIXO_KEY)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    assert BRIXO_KEY not in err
    assert err.count("***") == 2


def test_brixos_error_detail_is_stored_without_control_characters(
    brixo: FakeBrixo, client: BrixoClient
) -> None:
    """A NUL in Brixo's detail would make PostgreSQL refuse the outcome, and every one written
    with it, for good."""
    brixo.fail_next(1, status=400, detail="bad\x00 value\x07\x1b[31m here")
    answer = client.send(Signal(Target("message", "m"), "thumbs_up", OCCURRED))
    assert answer.detail == "bad value[31m here"


def test_retry_after_a_date_already_past_is_no_wait() -> None:
    now = 1_790_000_000.0  # 2026-09-21 14:13:20 GMT
    assert parse_retry_after("Mon, 21 Sep 2026 14:12:20 GMT", now) == 0.0


def test_occurred_at_is_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """occurred_at is RFC 3339 in UTC (`Z`) on a host set to any time zone."""
    for zone in ("America/New_York", "Asia/Tokyo"):
        monkeypatch.setenv("TZ", zone)
        tzset()
        body = Signal(Target("message", "m"), "thumbs_up", OCCURRED + 0.25).body()
        assert body["data"]["attributes"]["occurred_at"] == "2026-02-03T14:22:10.250Z", zone
    monkeypatch.undo()
    tzset()


def answer(status: int, body: bytes = b"") -> requests.Response:
    """A response as requests builds it from the wire, for `classify`."""
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers["Content-Type"] = MEDIA_TYPE
    return response


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_every_2xx_is_delivered(status: int) -> None:
    """The reference documents 204; any success status means Brixo took the signal."""
    assert classify(answer(status)).outcome is Outcome.DELIVERED


@pytest.mark.parametrize("status", [300, 301, 302, 307, 308])
def test_a_redirect_is_no_delivery(status: int) -> None:
    """Brixo's API never redirects a signal: a 3xx (a proxy's, a wrong BRIXO_API_URL) is no
    success, so the signal is kept as a dead letter, not taken for delivered."""
    assert classify(answer(status)).outcome is Outcome.REJECTED


def test_a_long_error_detail_is_cut_to_500_characters() -> None:
    """Brixo's detail is stored with the dead letter and logged: never more than 500 chars."""
    document = {"errors": [{"status": "400", "detail": "x" * 5000}]}
    rejected = classify(answer(400, json.dumps(document).encode()))
    assert (rejected.outcome, rejected.detail) == (Outcome.REJECTED, "x" * 500)


def test_ids_longer_than_1024_characters_are_refused() -> None:
    assert Target("message", "x" * 1024).id == "x" * 1024
    with pytest.raises(ValueError, match="longer than 1024"):
        Target("message", "x" * 1025)
