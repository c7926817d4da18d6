"""GET /healthz: database, Brixo and outbox state; 200 while votes can be taken, else 503."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Env
from tests.fakes import slack_requests as sr
from tests.pg import PostgresServer
from tests.slack_harness import (
    RunningRelay,
    StartRelay,
)
from tests.test_deploy import click, seed_reply
from tests.waiting import wait_until


def health(app: RunningRelay) -> tuple[int, dict[str, Any]]:
    answer = requests.get(f"{app.url}/healthz", timeout=10)
    assert answer.headers["Content-Type"] == "application/json"
    return answer.status_code, answer.json()


def wait_health(app: RunningRelay, **expected: Any) -> dict[str, Any]:
    """Poll /healthz until it answers 200 with these top-level or outbox values."""

    def matches() -> dict[str, Any] | None:
        status, body = health(app)
        flat = {**body, **body.get("outbox", {})}
        if status == 200 and all(flat.get(k) == v for k, v in expected.items()):
            return body
        return None

    return wait_until(matches, timeout=15, message=f"/healthz never showed {expected}")


def test_reports_every_outbox_state_and_brixo(start_relay: StartRelay) -> None:
    app = start_relay(ASK_COMMENT="negative")
    body = wait_health(app, database="ok", brixo="ok", delivery="running")
    assert body["ok"] is True
    assert body["outbox"] == {
        "pending": 0,
        "awaiting_comment": 0,
        "dead": 0,
        "delivered": 0,
        "oldest_pending_age": None,
    }
    assert click(app.sender, "C1", seed_reply(app.slack, "C1", "m-delivered")).status_code == 200
    wait_health(app, delivered=1)

    app.brixo.fail_next(1, status=400, detail="bad signal")
    click(app.sender, "C1", seed_reply(app.slack, "C1", "m-dead"))
    wait_health(app, dead=1)

    payload = sr.block_action(
        "U1", "T1", "C1", seed_reply(app.slack, "C1", "m-wait"), sr.feedback_button_action("down"),
        message_bot_id="BOTHER",
    )  # fmt: skip
    app.sender.interaction(payload)
    wait_health(app, awaiting_comment=1)

    app.brixo.stop()
    click(app.sender, "C1", seed_reply(app.slack, "C1", "m-pending"))
    body = wait_health(app, pending=1, brixo="unreachable")
    assert body["ok"] is True and body["database"] == "ok"
    assert isinstance(body["outbox"]["oldest_pending_age"], float)
    assert body["outbox"]["oldest_pending_age"] >= 0
    assert body["outbox"] == {**body["outbox"], "delivered": 1, "dead": 1, "awaiting_comment": 1}


def test_head_answers_the_headers_alone(start_relay: StartRelay) -> None:
    app = start_relay()
    wait_health(app, database="ok")
    host, port = app.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b"".join(iter(lambda: conn.recv(4096), b""))
    headers, _, body = answer.partition(b"\r\n\r\n")
    assert headers.startswith(b"HTTP/1.") and b" 200 " in headers.split(b"\r\n")[0]
    assert b"Content-Length: " in headers and body == b""


def test_a_known_path_with_another_method_is_405_with_allow(start_relay: StartRelay) -> None:
    app = start_relay()
    wrong = [("POST", "/healthz", "GET, HEAD"), ("GET", "/slack/events", "POST")]
    for method, path, allow in wrong:
        answer = requests.request(method, app.url + path, timeout=10)
        assert (answer.status_code, answer.headers.get("Allow")) == (405, allow), path
        assert answer.json() == {"error": "method not allowed"}
    assert requests.get(app.url + "/slack/nope", timeout=10).status_code == 404


def test_a_429_hold_shows_for_as_long_as_it_lasts(start_relay: StartRelay) -> None:
    app = start_relay(ASK_COMMENT="never")
    body = wait_health(app, brixo="ok", delivery="running")
    assert "sends_held_for" not in body
    app.brixo.fail_next(1, status=429, retry_after="300")
    click(app.sender, "C1", seed_reply(app.slack, "C1", "m-held"))

    def held() -> dict[str, Any] | None:
        report = health(app)[1]
        return report if "sends_held_for" in report else None

    body = wait_until(held, message="/healthz never showed the hold")
    assert 250 < body["sends_held_for"] <= 300, body
    assert (body["brixo"], body["delivery"], body["outbox"]["pending"]) == ("ok", "running", 1)


def test_unauthorized_at_brixo_still_takes_votes(start_relay: StartRelay) -> None:
    app = start_relay(ASK_COMMENT="never")
    wait_health(app, brixo="ok")
    app.brixo.set_key("a-rotated-key")
    click(app.sender, "C1", seed_reply(app.slack, "C1", "m-1"))
    body = wait_health(app, brixo="unauthorized", delivery="paused", pending=1)
    assert body["ok"] is True and body["database"] == "ok"
    assert app.relay.settings.brixo_api_key not in str(body)
    # Votes are still taken while paused.
    assert click(app.sender, "C1", seed_reply(app.slack, "C1", "m-2")).status_code == 200
    wait_health(app, brixo="unauthorized", pending=2)


def test_brixo_down_at_start_is_unreachable_not_unhealthy(
    start_relay: StartRelay,
) -> None:
    app = start_relay(BRIXO_API_URL="http://127.0.0.1:9")  # nothing listens on port 9
    body = wait_health(app, brixo="unreachable")
    assert body["ok"] is True and body["database"] == "ok"


def assert_unhealthy(app: RunningRelay) -> dict[str, Any]:
    def down() -> dict[str, Any] | None:
        status, body = health(app)
        return body if status == 503 else None

    body = wait_until(down, timeout=15, message="/healthz kept answering 200")
    assert body["ok"] is False
    assert body["database"] == "unavailable" and body["database_error"]
    assert "outbox" not in body
    return body


def test_postgresql_dropped_is_503(
    start_relay: StartRelay,
    postgres_url: str,
    postgres_server: PostgresServer,
) -> None:
    app = start_relay(DATABASE_URL=postgres_url)
    wait_health(app, database="ok")
    postgres_server.drop_database(postgres_url.rsplit("/", 1)[1])
    assert_unhealthy(app)


@pytest.mark.parametrize("how", ["folder moved", "file deleted", "folder unreadable"])
def test_sqlite_file_gone_is_503(
    how: str,
    start_relay: StartRelay,
    env: Env,
    tmp_path: Path,
) -> None:
    if how == "folder unreadable" and os.geteuid() == 0:
        pytest.skip("root reads any folder; the other cases cover a vanished file")
    folder = tmp_path / "data"
    folder.mkdir()
    app = start_relay(DATABASE_URL=f"sqlite:///{folder}/relay.db", ASK_COMMENT="never")
    wait_health(app, database="ok")
    app.relay.mappings.record(
        "T1", "C1", "1700000000.000100", message_id="m-gone", conversation_id=None,
        thread_ts=None, source="posted", now=0.0,
    )  # fmt: skip
    if how == "folder moved":
        folder.rename(tmp_path / "elsewhere")
    elif how == "file deleted":
        for path in folder.iterdir():
            path.unlink()
    else:
        folder.chmod(0)
    try:
        assert_unhealthy(app)
        # A vote is no longer acknowledged: it would be written where nobody reads it again.
        vote = sr.reaction_added("U1", "+1", "C1", "1700000000.000100")
        assert app.sender.event(vote).status_code == 500
    finally:
        if folder.exists():
            folder.chmod(0o755)
            shutil.rmtree(folder, ignore_errors=True)
