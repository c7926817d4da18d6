"""Storage behaviours of one backend: PostgreSQL's connections, SQLite's journal and file."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from pathlib import Path
from time import time

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bot.core.db import Database, acts
from bot.core.outbox import Outbox
from bot.core.settings import parse_database_url
from tests.test_store import T0, act


def migrated(url: str) -> Iterator[Outbox]:
    database = Database(parse_database_url("DATABASE_URL", url))
    database.migrate(time())
    try:
        yield Outbox(database)
    finally:
        database.dispose()


@pytest.fixture
def postgres_store(postgres_url: str) -> Iterator[Outbox]:
    """A migrated PostgreSQL database and its outbox."""
    yield from migrated(postgres_url)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Outbox]:
    """A migrated SQLite file and its outbox."""
    yield from migrated(f"sqlite:///{tmp_path}/relay.db")


def test_a_postgresql_process_keeps_at_most_10_connections(postgres_store: Outbox) -> None:
    """README (Scaling): each process keeps at most 10 connections, so dynos × workers × 10
    fits the plan's limit; an 11th at once waits for one of them instead of opening more."""
    database = Database(postgres_store.db.url)  # the relay's default pool size
    database.engine.pool._timeout = 0.5  # type: ignore[attr-defined]  # the 11th's wait
    try:
        with ExitStack() as held:
            for _ in range(10):
                held.enter_context(database.read()).execute(text("SELECT 1"))
            with pytest.raises(PoolTimeout), database.read():
                pass
    finally:
        database.dispose()


def test_a_vote_after_postgresql_dropped_the_pooled_connections_is_stored(
    postgres_store: Outbox,
) -> None:
    """A server restart or a cut connection costs no vote: the next one reconnects instead of
    failing on the dead pooled connection (Slack never sends a click again)."""
    database = Database(postgres_store.db.url)
    outbox = Outbox(database)
    try:
        assert outbox.record(act("m-before"), T0).created  # a connection is now pooled
        others = text(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        with postgres_store.db.read() as conn:
            ended = conn.execute(others).scalars().all()
        assert ended and all(ended)
        assert outbox.record(act("m-after"), T0).created
        assert outbox.counts(T0)["pending"] == 2
    finally:
        database.dispose()


def test_a_read_left_open_never_holds_up_a_vote(sqlite_store: Outbox) -> None:
    """SQLite runs in WAL mode: a read transaction open elsewhere (another process's `outbox
    list`, say) doesn't make a vote's commit wait for it."""
    store = sqlite_store
    other = Database(store.db.url)
    try:
        with ThreadPoolExecutor(1) as pool, other.read() as conn:
            assert conn.execute(select(acts.c.id)).all() == []  # its snapshot is held
            vote = pool.submit(store.record, act("m-while-read"), T0)
            assert vote.result(timeout=10).created
    finally:
        other.dispose()


def test_a_sqlite_file_replaced_under_the_relay_is_a_problem(sqlite_store: Outbox) -> None:
    """A relay database restored over the file while the relay runs is not the one it
    migrated: problem() (/healthz) names it, as writes refuse it, though it opens fine."""
    store = sqlite_store
    path = store.db.sqlite_path
    assert path is not None and store.db.problem() is None
    with closing(sqlite3.connect(path)) as live, closing(sqlite3.connect(path + ".bak")) as copy:
        live.backup(copy)
    os.replace(path + ".bak", path)
    assert store.db.problem() == "DatabaseGone"
