"""The relay's database: one SQLAlchemy Core schema for SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from time import monotonic, sleep
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    column,
    create_engine,
    event,
    insert,
    inspect,
    select,
    table,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from bot.core.forks import at_fork
from bot.core.settings import SettingsError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
metadata = MetaData()

schema_version = Table(
    "brixo_schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)
_LATEST_VERSION = (
    select(schema_version.c.version).order_by(schema_version.c.version.desc()).limit(1)
)

# A reply's message (team, channel, ts) -> the customer's message ID.
mappings = Table(
    "brixo_mappings",
    metadata,
    Column("workspace", String(64), primary_key=True),
    Column("channel", String(64), primary_key=True),
    Column("ts", String(64), primary_key=True),
    Column("thread_ts", String(64)),
    Column("message_id", Text),
    Column("conversation_id", Text),
    Column("source", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
)

# A thread (team, channel, root ts) -> the customer's conversation ID.
threads = Table(
    "brixo_threads",
    metadata,
    Column("workspace", String(64), primary_key=True),
    Column("channel", String(64), primary_key=True),
    Column("thread_ts", String(64), primary_key=True),
    Column("conversation_id", Text, nullable=False),
    Column("source", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
)

# One feedback act is one signal: the act row is also its outbox entry.
acts = Table(
    "brixo_acts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("platform", String(16), nullable=False),
    Column("workspace", String(64), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("source", String(16), nullable=False),
    Column("target_kind", String(16), nullable=False),
    Column("target_id", Text, nullable=False),
    Column("value", String(16), nullable=False),
    Column("comment", Text),
    Column("comment_cut", Boolean, nullable=False, default=False),
    Column("occurred_at", Float, nullable=False),
    Column("channel", String(64)),
    Column("ts", String(64)),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("not_found_since", Float),
    Column("first_tried_at", Float),  # DELIVERY_MAX_AGE counts from here (schema version 2)
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("lease_owner", String(64)),
    Column("lease_until", Float),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
    # An act ID names one act for good (logs, buttons, `outbox retry`): SQLite would otherwise
    # give a deleted newest row's ID again (schema version 3). PostgreSQL's sequence never does.
    sqlite_autoincrement=True,
)
Index("brixo_acts_due", acts.c.state, acts.c.next_attempt_at)

# The latest vote of a person on a target, for "the same vote within 24 h sends nothing".
votes = Table(
    "brixo_votes",
    metadata,
    Column("workspace", String(64), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("target_kind", String(16), primary_key=True),
    Column("target_id", Text, primary_key=True),
    Column("value", String(16), nullable=False),
    Column("voted_at", Float, nullable=False),
)

# Keys of Slack events and messages already handled, until they expire.
seen = Table(
    "brixo_seen",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("expires_at", Float, nullable=False),
)
Index("brixo_seen_expiry", seen.c.expires_at)

# User IDs of watched bots listed by bot ID (B…), learnt from their messages: every process,
# and the next start, takes their reactions for a bot's, not a person's votes.
bot_users = Table(
    "brixo_bot_users",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("bot_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

# Until when Brixo asked (a 429's Retry-After) that nothing be sent: one row, "brixo", which
# every process delivering from this database honours.
holds = Table(
    "brixo_holds",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("until", Float, nullable=False),
)


T = TypeVar("T")


class DatabaseUnavailable(SettingsError):
    """DATABASE_URL can't be opened, or holds a newer schema; the message is one line."""


class DatabaseGone(RuntimeError):
    """The SQLite file was deleted or replaced under the running relay; writes are refused."""


class Database:
    """An engine plus the dialect-specific details the rest of the relay needs."""

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine = _make_engine(url, pool_size)
        # One-statement reads on PostgreSQL run outside a transaction: no BEGIN, no ROLLBACK.
        self._single_reads = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        path = self.engine.url.database if self.is_sqlite else None
        self.sqlite_path = os.path.abspath(path) if path else None
        self._sqlite_identity: tuple[int, int] | None = None
        # SQLite takes one writer at a time and makes the others sleep-poll (1 ms, 2, 5, … up to
        # 100 ms a try), so under load a write waits far longer than the lock is held: this
        # process's writers queue on a lock instead, and only other processes ever poll.
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._queue_lock = threading.Lock()
        self._queued: list[_QueuedWrite[Any]] = []
        self._held_for_fork = False
        # Whether the last write failed in the database (until one succeeds): problem() then
        # tries a write of its own, an already expired key of a seen event.
        self._write_failed = False
        # What a failing write raises: through SQLAlchemy, or from the driver (DriverStatement).
        self._write_errors = (OperationalError, self.engine.dialect.loaded_dbapi.OperationalError)
        self._health_write = (
            upsert(self, seen)
            .values(key="relay:healthz", expires_at=0.0)
            .on_conflict_do_update(index_elements=[seen.c.key], set_={"expires_at": 0.0})
        )
        at_fork(
            before=self._hold_for_fork, in_parent=self._release_after_fork, in_child=self._renew
        )

    def _hold_for_fork(self) -> None:
        """Before a fork, let a write of this process's threads end (a child would inherit
        SQLite's own mutexes as a thread inside it held them); at most 2 s."""
        if self._write_lock is not None:
            self._held_for_fork = self._write_lock.acquire(timeout=2.0)

    def _release_after_fork(self) -> None:
        if self._write_lock is not None and self._held_for_fork:
            self._write_lock.release()
        self._held_for_fork = False

    def _renew(self) -> None:
        """In a forked child: its own connections (the parent's stay open for the parent)
        and its own locks, free (a thread of the parent may have held one)."""
        self.engine.dispose(close=False)
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._queue_lock = threading.Lock()
        self._queued = []
        self._held_for_fork = False

    def migrate(self, now: float, create: bool = True) -> int:
        """Create or upgrade the schema; returns the version in force. With `create=False` a
        database no relay has used is left as it is, and 0 returned.

        DatabaseUnavailable when the database can't be opened or its schema is newer.
        """
        try:
            return self._migrate(now, create)
        except DBAPIError as error:
            reason = str(error.orig or error).strip().splitlines()[0]
            raise DatabaseUnavailable(
                f"DATABASE_URL: can't open the database ({type(error).__name__}: {reason})"
            ) from None

    def _migrate(self, now: float, create: bool) -> int:
        with self.write() as conn:
            if not self.is_sqlite:  # processes starting together on a fresh database take turns
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            if not create and not inspect(conn).has_table(schema_version.name):
                return 0
            metadata.create_all(conn, checkfirst=True)
            current = conn.scalar(_LATEST_VERSION)
            if current is None:
                conn.execute(insert(schema_version).values(version=SCHEMA_VERSION, applied_at=now))
                current = SCHEMA_VERSION
            if current > SCHEMA_VERSION:
                raise DatabaseUnavailable(
                    f"DATABASE_URL: its schema version {current} is newer than this relay's "
                    f"({SCHEMA_VERSION}); upgrade the relay"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version](conn)
                conn.execute(insert(schema_version).values(version=version, applied_at=now))
                log.info("database schema migrated to version %s", version)
        if self.sqlite_path:
            self._sqlite_identity = _identity(self.sqlite_path)
        return SCHEMA_VERSION

    def problem(self) -> str | None:
        """Why votes can't be stored right now, or None.

        For SQLite the file must be the one migrated at start, and a fresh connection is tried
        too: pooled connections keep writing to a file that was deleted or moved.
        """
        try:
            self.ping()
            if self.sqlite_path:
                self._check_file()
                uri = f"file:{self.sqlite_path}?mode=rw"
                with sqlite3.connect(uri, uri=True, timeout=2) as conn:
                    conn.execute("SELECT 1 FROM brixo_schema_version LIMIT 1").fetchall()
                conn.close()
            if self._write_failed:  # reads work, writes failed (a full disk, say): try one
                with self.write() as written:
                    written.execute(self._health_write)
        except Exception as error:  # any driver or file error means: unavailable
            return type(error).__name__
        return None

    def schema_state(self) -> str:
        """'ok', 'missing', 'outdated' or 'newer' (than this relay's), without changing
        anything."""
        with self.read() as conn:
            if not inspect(conn).has_table(schema_version.name):
                return "missing"
            current = conn.scalar(_LATEST_VERSION)
        if current is None or current < SCHEMA_VERSION:
            return "outdated"
        return "ok" if current == SCHEMA_VERSION else "newer"

    def write_together(self, job: Callable[[Connection], T]) -> T:
        """Run `job` in a durable write transaction and return what it returns.

        On SQLite, the jobs other threads queue while a transaction is being written share the
        next one, and its one wait for the disk (group commit): under load a vote doesn't wait
        for every vote before it to reach the disk in turn. Each job runs under a
        savepoint of its own, so one that raises undoes only its own writes and raises in its
        own thread; when the commit fails, every job of the batch raises.
        """
        if self._write_lock is None:  # PostgreSQL groups its commits itself
            with self.write() as conn:
                return job(conn)
        queued = _QueuedWrite(job)
        with self._queue_lock:
            self._queued.append(queued)
        with self._write_lock:
            if not queued.done:  # no other thread took it into its batch: write what waits
                with self._queue_lock:
                    batch, self._queued = self._queued, []
                self._write_batch(batch)
        if queued.error is not None:
            raise queued.error
        return cast(T, queued.value)

    def _write_batch(self, batch: list[_QueuedWrite[Any]]) -> None:
        try:
            with self._transaction(wait_for_disk=True) as conn:
                if len(batch) == 1:  # its error rolls the whole transaction back
                    batch[0].value = batch[0].job(conn)
                else:
                    driver = conn.connection.driver_connection
                    assert driver is not None
                    for queued in batch:
                        driver.execute("SAVEPOINT job")
                        try:
                            queued.value = queued.job(conn)
                        except Exception as error:
                            driver.execute("ROLLBACK TO job")
                            queued.error = error
                        driver.execute("RELEASE job")
        except BaseException as error:  # nothing of the batch was stored
            for queued in batch:
                queued.error = error
        finally:
            for queued in batch:
                queued.done = True

    @contextmanager
    def write(self, wait_for_disk: bool = True) -> Iterator[Connection]:
        """A transaction that takes SQLite's write lock at once (no upgrade deadlocks).

        `wait_for_disk=False` (delivery bookkeeping) commits without waiting for the disk: on
        SQLite without an fsync (`synchronous=NORMAL`, which WAL keeps consistent), on
        PostgreSQL without waiting for the WAL flush. Only a crash of the machine or database
        server can lose such a commit, and the worst that follows is a signal sent again,
        never a vote lost. Every other write sets `synchronous=FULL` again first.
        """
        with self._write_lock or nullcontext(), self._transaction(wait_for_disk) as conn:
            yield conn

    @contextmanager
    def _transaction(self, wait_for_disk: bool) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            if self.is_sqlite:
                # On the driver: SQLAlchemy's `exec_driver_sql` costs ten times as much.
                driver = conn.connection.driver_connection
                assert driver is not None
                driver.execute(_SQLITE_SYNC[wait_for_disk])
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                self._check_file()
            else:
                conn.begin()
                if not wait_for_disk:
                    conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            try:
                yield conn
            except BaseException as error:
                conn.rollback()
                if isinstance(error, self._write_errors):  # a full disk, say: see problem()
                    self._write_failed = True
                raise
            try:
                conn.commit()
            except self._write_errors:
                self._write_failed = True
                raise
            self._write_failed = False

    def _check_file(self) -> None:
        """DatabaseGone when the SQLite file migrated at start was deleted, moved or replaced:
        pooled connections would write to a file nobody will read again (one stat call)."""
        if not (self.sqlite_path and self._sqlite_identity):
            return
        try:
            same = _identity(self.sqlite_path) == self._sqlite_identity
        except OSError:
            same = False
        if not same:
            raise DatabaseGone(
                f"the SQLite file {self.sqlite_path} was deleted, moved or replaced while the "
                "relay ran; nothing more is written to it: restart the relay"
            )

    @contextmanager
    def read(self, single: bool = False) -> Iterator[Connection]:
        """A short read-only transaction.

        `single`: for one statement, which runs as a transaction of its own (an explicit one
        would add two round trips to each vote's lookup).
        """
        with (self._single_reads if single else self.engine).connect() as conn:
            if self.is_sqlite and not single:
                conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            finally:
                conn.rollback()

    def ping(self) -> None:
        """Raise when the database can't be reached."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


@dataclass
class _QueuedWrite(Generic[T]):
    """A job waiting for `Database.write_together`, then its result."""

    job: Callable[[Connection], T]
    done: bool = False
    value: T | None = None
    error: BaseException | None = None


def _identity(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _add_first_tried_at(conn: Connection) -> None:
    """Version 2: when each act was first tried, from which DELIVERY_MAX_AGE counts. Acts
    already being retried keep counting from when they were stored, as version 1 did. Taken
    again after a downgrade that only removed the version row, the column stays as it is."""
    if "first_tried_at" not in {c["name"] for c in inspect(conn).get_columns("brixo_acts")}:
        conn.exec_driver_sql("ALTER TABLE brixo_acts ADD COLUMN first_tried_at FLOAT")
    conn.execute(
        update(acts)
        .where(acts.c.attempts > 0, acts.c.first_tried_at.is_(None), acts.c.finished_at.is_(None))
        .values(first_tried_at=acts.c.created_at)
    )


def _never_reuse_act_ids(conn: Connection) -> None:
    """SQLite's `brixo_acts` is rebuilt with AUTOINCREMENT (SQLite can't add it to
    a table), its rows and their IDs kept. Nothing to do on PostgreSQL, or where it has it."""
    if conn.dialect.name != "sqlite":
        return
    table_sql = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'brixo_acts'"
    ).scalar_one()
    if "AUTOINCREMENT" in table_sql.upper():
        return
    conn.exec_driver_sql("DROP INDEX brixo_acts_due")
    conn.exec_driver_sql("ALTER TABLE brixo_acts RENAME TO brixo_acts_before_v3")
    acts.create(conn)
    names = [c.name for c in acts.columns]
    before = table("brixo_acts_before_v3", *(column(name) for name in names))
    conn.execute(insert(acts).from_select(names, select(*before.columns)))
    conn.exec_driver_sql("DROP TABLE brixo_acts_before_v3")


def _version_3(conn: Connection) -> None:
    """Version 3: act IDs never given twice (above), and a comment kept whole after a 413, cut
    as it is sent: one stored already cut by an older relay is sent as it is stored."""
    _never_reuse_act_ids(conn)
    conn.execute(update(acts).where(acts.c.comment_cut).values(comment_cut=False))


# What brings a database of the version before each up to it: a schema created afresh has it
# all already.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {2: _add_first_tried_at, 3: _version_3}

# PostgreSQL advisory lock key held while the schema is created or migrated ("brixo" in ASCII).
_MIGRATION_LOCK = 0x627269786F

# Small pools: Heroku's smallest Postgres plans allow 20 connections for every dyno together.
POSTGRES_POOL_SIZE = 5
POSTGRES_MAX_OVERFLOW = 5
# How long a SQLite connection waits for another's lock (seconds).
BUSY_TIMEOUT = 30.0

_SQLITE_SYNC = {True: "PRAGMA synchronous=FULL", False: "PRAGMA synchronous=NORMAL"}


def _make_engine(url: str, pool_size: int) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={
                "check_same_thread": False,
                "timeout": BUSY_TIMEOUT,  # sqlite3 sets it as the busy timeout
                "isolation_level": None,
            },
            pool_size=pool_size,
            max_overflow=2 * pool_size,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        return engine
    # A server that doesn't answer fails a connection in 2 s (libpq's least), not the OS's
    # minutes: a vote waiting for one is still answered, 500, within Slack's 3 s.
    timeout = {} if "connect_timeout" in make_url(url).query else {"connect_timeout": 2}
    return create_engine(
        url,
        connect_args=timeout,
        pool_size=min(pool_size, POSTGRES_POOL_SIZE),
        max_overflow=POSTGRES_MAX_OVERFLOW,
        pool_pre_ping=True,
        pool_recycle=300,
    )


def _use_wal(cursor: Any) -> None:
    """Put the SQLite file in WAL mode, which the file keeps.

    Switching needs the file to itself and SQLite doesn't wait for that, so connections that
    open a new file at the same moment (processes starting together) try again, for as long
    as any lock is waited for (busy_timeout).
    """
    deadline = monotonic() + BUSY_TIMEOUT
    while cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if monotonic() > deadline:
                raise
            sleep(0.01)


class DriverStatement:
    """A hot statement, compiled once by SQLAlchemy and run on the driver's own cursor.

    `Connection.execute` costs 35–100 µs per statement (cache key, parameter and result
    objects) where the driver takes 1–20 µs; a vote runs four statements before its ack and
    each delivery outcome is written with one (README.md, Performance). SQLAlchemy still writes
    the SQL for each dialect, owns the connection and its transaction, and names the errors: a
    driver error is raised as SQLAlchemy's (`IntegrityError`, `DataError`, ...).
    """

    def __init__(
        self, database: Database, statement: ClauseElement, keys: Sequence[str] = ()
    ) -> None:
        dialect = database.engine.dialect
        compiled = cast(
            SQLCompiler, statement.compile(dialect=dialect, column_keys=list(keys) or None)
        )
        self.sql = str(compiled)
        if "POSTCOMPILE" in self.sql:  # an expanding IN: only `execute` can expand it
            raise ValueError("a statement with an expanding IN can't run on the driver's cursor")
        self._defaults = dict(compiled.params)  # literals bound as parameters, e.g. a window
        self._order = compiled.positiontup  # SQLite's "?" parameters; None for named ones
        self._dialect = dialect

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first row the statement returns (a tuple), or None."""
        with self._cursor(conn) as cursor:
            cursor.execute(self.sql, self._args(params))
            return cursor.fetchone()

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Every row the statement returns (tuples)."""
        with self._cursor(conn) as cursor:
            cursor.execute(self.sql, self._args(params))
            return list(cursor.fetchall())

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once for each row of parameters."""
        with self._cursor(conn) as cursor:
            cursor.executemany(self.sql, [self._args(row) for row in rows])

    def _args(self, params: Mapping[str, Any]) -> Any:
        values = {**self._defaults, **params}
        return tuple(values[name] for name in self._order) if self._order else values

    @contextmanager
    def _cursor(self, conn: Connection) -> Iterator[Any]:
        driver = self._dialect.loaded_dbapi
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            yield cursor
        except driver.Error as error:
            raise DBAPIError.instance(
                self.sql, None, error, driver.Error, dialect=self._dialect
            ) from error
        finally:
            cursor.close()


def upsert(database: Database, table: Table) -> Any:
    """The dialect's INSERT that supports ON CONFLICT (SQLite and PostgreSQL alike)."""
    if database.is_sqlite:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert(table)
