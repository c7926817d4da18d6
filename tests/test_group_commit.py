"""Votes written together: SQLite's group commit (`Database.write_together`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Connection, event, insert, select

from bot.core.acts import Act, Target
from bot.core.db import Database, DatabaseGone, seen
from bot.core.outbox import Outbox
from tests.pg import database_params
from tests.waiting import wait_until

T0 = 1_770_000_000.0


def remember(key: str) -> Callable[[Connection], str]:
    """A job that stores `key` in the seen-events table and returns it."""

    def job(conn: Connection) -> str:
        conn.execute(insert(seen).values(key=key, expires_at=T0))
        return key

    return job


def stored_keys(db: Database) -> set[str]:
    with db.read() as conn:
        return set(conn.scalars(select(seen.c.key)))


class Held:
    """A first job that holds the write transaction open until `release()`, so that the
    jobs submitted meanwhile queue up behind it."""

    def __init__(self, db: Database, pool: ThreadPoolExecutor) -> None:
        self.db = db
        self.running = threading.Event()
        self.go = threading.Event()
        self.future = pool.submit(db.write_together, self._job)
        wait_until(self.running.is_set, message="the first write never started")

    def _job(self, conn: Connection) -> str:
        conn.execute(insert(seen).values(key="first", expires_at=T0))
        self.running.set()
        self.go.wait(10)
        return "first"

    def queue_behind(
        self, pool: ThreadPoolExecutor, jobs: list[Callable[[Connection], str]]
    ) -> list[Future[str]]:
        """Submit `jobs` from other threads; return once all of them wait their turn."""
        futures: list[Future[str]] = [pool.submit(self.db.write_together, job) for job in jobs]
        wait_until(lambda: len(self.db._queued) == len(jobs), message="writes not queued")
        return futures

    def release(self) -> None:
        self.go.set()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path}/relay.db")
    db.migrate(T0)
    yield db
    db.dispose()


@pytest.fixture
def commits(sqlite_db: Database) -> list[int]:
    """One entry per transaction committed on `sqlite_db`."""
    seen_commits: list[int] = []
    event.listen(sqlite_db.engine, "commit", lambda _conn: seen_commits.append(1))
    return seen_commits


@pytest.mark.parametrize("database_url", database_params(), indirect=True)
def test_a_job_is_stored_and_its_value_returned_and_a_failing_job_stores_nothing(
    store: Outbox,
) -> None:
    db = store.db
    assert db.write_together(remember("k1")) == "k1"

    def fails(conn: Connection) -> str:
        remember("k2")(conn)
        raise ValueError("half-way")

    with pytest.raises(ValueError, match="half-way"):
        db.write_together(fails)
    assert stored_keys(db) == {"k1"}


def test_writes_queued_behind_a_transaction_share_the_next_one(
    sqlite_db: Database, commits: list[int]
) -> None:
    with ThreadPoolExecutor(8) as pool:
        held = Held(sqlite_db, pool)
        futures = held.queue_behind(pool, [remember(f"k{i}") for i in range(5)])
        held.release()
        assert held.future.result(10) == "first"
        assert sorted(f.result(10) for f in futures) == [f"k{i}" for i in range(5)]
    assert stored_keys(sqlite_db) == {"first", *(f"k{i}" for i in range(5))}
    assert len(commits) == 2  # the held one, then one for the five behind it


def test_a_failing_job_in_a_group_undoes_only_its_own_writes(sqlite_db: Database) -> None:
    def fails(conn: Connection) -> str:
        remember("bad")(conn)
        raise ValueError("this one only")

    with ThreadPoolExecutor(8) as pool:
        held = Held(sqlite_db, pool)
        futures = held.queue_behind(pool, [remember("a"), fails, remember("b")])
        held.release()
        assert futures[0].result(10) == "a"
        with pytest.raises(ValueError, match="this one only"):
            futures[1].result(10)
        assert futures[2].result(10) == "b"
    assert stored_keys(sqlite_db) == {"first", "a", "b"}


def test_when_a_group_cannot_be_written_every_job_in_it_raises(
    sqlite_db: Database, tmp_path: Path
) -> None:
    with ThreadPoolExecutor(8) as pool:
        held = Held(sqlite_db, pool)
        futures = held.queue_behind(pool, [remember("a"), remember("b")])
        os.replace(tmp_path / "relay.db", tmp_path / "moved.db")  # the file goes away
        held.release()
        assert held.future.result(10) == "first"  # begun before: it lands in the moved file
        for future in futures:
            with pytest.raises(DatabaseGone):
                future.result(10)


def test_concurrent_votes_are_each_recorded_once(sqlite_db: Database) -> None:
    """Votes from many threads, each event twice (Slack's redelivery): one act per event."""
    outbox = Outbox(sqlite_db)

    def vote(i: int) -> int | None:
        act = Act(
            platform="slack",
            workspace="T1",
            user_id=f"U{i}",
            source="reaction",
            target=Target("message", f"msg-{i}"),
            value="thumbs_up",
            occurred_at=T0,
            channel="C1",
            ts="1.000100",
        )
        return outbox.record(act, T0, seen_key=f"event-{i}").act_id

    with ThreadPoolExecutor(16) as pool:
        created = [a for a in pool.map(vote, [i % 40 for i in range(80)]) if a is not None]
    assert len(created) == len(set(created)) == 40
    assert outbox.counts(T0)["pending"] == 40
