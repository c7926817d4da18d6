"""The database's bad days while the relay serves: votes are answered 200 only once stored,
else 500 so Slack sends them again, within Slack's 3 s; /healthz says so; all recover alone."""

from __future__ import annotations

import os
import resource
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, func, insert, select
from sqlalchemy.exc import OperationalError

from bot.core.db import Database, acts, seen
from tests.pg import PostgresServer
from tests.slack_harness import StartRelay
from tests.test_deploy import click, seed_reply
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

SLACK_PATIENCE = 3.0  # Slack's wait for an ack


def stored_acts(url: str) -> int:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(acts)) or 0)
    finally:
        engine.dispose()


def test_postgresql_not_accepting_connections(
    postgres_url: str, postgres_server: PostgresServer, start_relay: StartRelay
) -> None:
    """A paused postmaster (overloaded, or stopped by the OS): votes that need a new connection
    are answered in Slack's 3 s too, not after the 10 s a connection attempt could take."""
    app = start_relay(DATABASE_URL=postgres_url, ASK_COMMENT="never")
    assert postgres_server.dir is not None
    postmaster = int((postgres_server.dir / "data" / "postmaster.pid").read_text().split()[0])
    replies = [seed_reply(app.slack, "C1", f"m-paused-{n}") for n in range(12)]
    assert click(app.sender, "C1", seed_reply(app.slack, "C1", "m-warm")).status_code == 200
    app.sender.timeout = 60
    answers: dict[int, tuple[int | str, float]] = {}

    def send(n: int) -> None:
        started = time.monotonic()
        try:
            status: int | str = click(app.sender, "C1", replies[n], user=f"U{n}").status_code
        except requests.RequestException as error:
            status = type(error).__name__
        answers[n] = (status, time.monotonic() - started)

    threads = [threading.Thread(target=send, args=(n,), daemon=True) for n in range(12)]
    os.kill(postmaster, signal.SIGSTOP)
    try:
        for thread in threads:  # more at once than the pool holds: new connections are needed
            thread.start()
        wait_until(
            lambda: len(answers) == len(threads),
            timeout=SLACK_PATIENCE + 2,
            message=f"votes held while PostgreSQL took no connections: {answers}",
        )
    finally:
        os.kill(postmaster, signal.SIGCONT)
    for thread in threads:
        thread.join(70)
    assert all(seconds < SLACK_PATIENCE for _, seconds in answers.values()), answers
    acked = sum(1 for status, _ in answers.values() if status == 200)
    assert stored_acts(postgres_url) - 1 == acked  # a 200 only for a stored vote


def test_healthz_says_when_sqlite_writes_fail(start_relay: StartRelay, tmp_path: Path) -> None:
    """A disk that takes no more writes (here the file size limit): votes are answered 500, and
    /healthz says 503 meanwhile, as README promises ("200 while votes can be stored"); both
    recover by themselves once writes work again."""
    path = tmp_path / "relay.db"
    app = start_relay(DATABASE_URL=f"sqlite:///{path}", ASK_COMMENT="never")
    assert click(app.sender, "C1", seed_reply(app.slack, "C1", "m-warm")).status_code == 200
    ts = seed_reply(app.slack, "C1", "m-full")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, limit[1]))
    try:
        assert click(app.sender, "C1", ts, user="U-full").status_code == 500
        status = requests.get(f"{app.url}/healthz", timeout=10).status_code
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)
    assert status == 503
    wait_until(
        lambda: requests.get(f"{app.url}/healthz", timeout=10).status_code == 200,
        timeout=10,
        message="/healthz stayed 503 once writes worked again",
    )
    assert click(app.sender, "C1", ts, user="U-full").status_code == 200


def test_a_connect_timeout_in_the_url_replaces_the_2_s_default() -> None:
    """A PostgreSQL server that doesn't answer fails a connection after 2 s, within Slack's
    3 s; `?connect_timeout=N` in DATABASE_URL changes that (README, DATABASE_URL)."""
    with socket.socket() as silent:  # connections queue, nobody answers them
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql+psycopg://u@127.0.0.1:{silent.getsockname()[1]}/relay"
        waits = []
        for query in ("", "?connect_timeout=5"):
            database = Database(url + query)
            started = time.monotonic()
            with pytest.raises(OperationalError):
                database.ping()
            waits.append(time.monotonic() - started)
            database.dispose()
    default, asked = waits
    assert 1.5 < default < SLACK_PATIENCE, waits
    assert 4.5 < asked < 8, waits


def test_a_write_failing_mid_transaction_makes_the_database_a_problem(tmp_path: Path) -> None:
    """A write refused by the disk inside the transaction, not at its commit (PostgreSQL's
    full disk fails the statement that extends a table; here SQLite spills a big write): reads
    still work, but problem() (/healthz) says so until a write succeeds again."""
    database = Database(f"sqlite:///{tmp_path}/relay.db")
    database.migrate(time.time())
    big = insert(seen).values(key="k" * 8_000_000, expires_at=0.0)  # beyond SQLite's cache
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, limit[1]))
    try:
        with pytest.raises(OperationalError), database.write() as conn:
            conn.execute(big)
        problem = database.problem()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)
    try:
        assert problem == "OperationalError"
        assert database.problem() is None  # writes work again
    finally:
        database.dispose()


def test_a_sqlite_writer_waits_30_s_for_another_process_lock(tmp_path: Path) -> None:
    """Processes sharing a SQLite file take turns: a writer waits for another's lock (SQLite's
    busy timeout) instead of failing at once with "database is locked"."""
    db = Database(f"sqlite:///{tmp_path}/relay.db", pool_size=1)
    try:
        with db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        db.dispose()
