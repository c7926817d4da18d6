"""A throwaway PostgreSQL server for tests, and the pytest fixtures that use it.

Import the fixtures into ``tests/conftest.py``::

    from tests.pg import database_url, postgres_server, postgres_url  # noqa: F401

``initdb``/``pg_ctl`` must be on PATH. As root the server runs as the
``postgres`` user (via ``runuser``), since PostgreSQL refuses to run as root.
Each pytest-xdist worker gets its own server in its own temp directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest

PG_USER = "postgres"


def database_params() -> list[str]:
    """The backends a storage test should run against."""
    return ["sqlite", "postgresql"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Crash safety off: a test cluster's data is thrown away anyway.
_UNSAFE_FAST = ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]


class PostgresError(RuntimeError):
    """PostgreSQL could not be started."""


class PostgresServer:
    """One PostgreSQL cluster in a temp dir, on 127.0.0.1 and a free port, trust auth.

    Tests run it without fsync; `durable=True` keeps PostgreSQL's defaults (fsync and
    synchronous commits on), as the benchmark needs.
    """

    def __init__(self, label: str = "", durable: bool = False) -> None:
        self.label = label or os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.durable = durable
        self.port = 0
        self.dir: Path | None = None
        self._run_as: list[str] = []
        self._uid: int | None = None
        self._gid: int | None = None

    @property
    def url(self) -> str:
        """Base URL without a database name."""
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}"

    def database_url(self, name: str = "postgres") -> str:
        """URL of database ``name``."""
        return f"{self.url}/{name}"

    def _run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        assert self.dir is not None
        result = subprocess.run(
            [*self._run_as, *cmd],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )
        if result.returncode != 0:
            raise PostgresError(
                f"{' '.join(cmd[:2])} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )
        return result

    def start(self) -> None:
        """initdb + pg_ctl start; raises ``PostgresError`` with the reason on failure."""
        for tool in ("initdb", "pg_ctl"):
            if shutil.which(tool) is None:
                raise PostgresError(f"{tool} not found on PATH")
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(PG_USER)
            except KeyError as exc:
                raise PostgresError(f"running as root and no {PG_USER!r} user") from exc
            self._uid, self._gid = entry.pw_uid, entry.pw_gid
            runner = shutil.which("runuser")
            if runner:
                self._run_as = [runner, "-u", PG_USER, "--"]
            else:
                setpriv = shutil.which("setpriv")
                if not setpriv:
                    raise PostgresError("running as root and neither runuser nor setpriv found")
                self._run_as = [
                    setpriv,
                    f"--reuid={self._uid}",
                    f"--regid={self._gid}",
                    "--init-groups",
                ]
        self.dir = Path(tempfile.mkdtemp(prefix=f"relay-pg-{self.label}-", dir="/tmp"))
        if self._uid is not None:
            os.chown(self.dir, self._uid, self._gid or -1)
        data = self.dir / "data"
        self._run(
            "initdb",
            "-D",
            str(data),
            "-U",
            PG_USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        last: PostgresError | None = None
        for _ in range(3):  # a free port may be taken between probing and binding
            self.port = _free_port()
            options = " ".join(
                [
                    "-c listen_addresses=127.0.0.1",
                    f"-c port={self.port}",
                    f"-c unix_socket_directories={self.dir}",
                    "-c max_connections=200",
                    "-c shared_buffers=32MB",
                ]
                + ([] if self.durable else _UNSAFE_FAST)
            )
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(data),
                    "-l",
                    str(self.dir / "server.log"),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                    timeout=90,
                )
                return
            except PostgresError as exc:
                last = PostgresError(f"{exc}; log: {self._log_tail()}")
        self._cleanup()
        raise last or PostgresError("pg_ctl start failed")

    def _log_tail(self) -> str:
        if self.dir is None:
            return ""
        try:
            return (self.dir / "server.log").read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (immediately) and delete its directory."""
        if self.dir is None:
            return
        with contextlib.suppress(PostgresError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        self._cleanup()

    def _cleanup(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` and return its URL."""
        with psycopg.connect(self.database_url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # noqa: S608
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE ``name``, disconnecting its users."""
        with psycopg.connect(self.database_url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # noqa: S608


def _unavailable(reason: str) -> NoReturn:
    message = f"PostgreSQL unavailable: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server per test session (per xdist worker)."""
    server = PostgresServer()
    try:
        server.start()
    except (PostgresError, OSError, subprocess.TimeoutExpired) as exc:
        _unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, empty database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    try:
        url = postgres_server.create_database(name)
    except psycopg.Error as exc:
        _unavailable(f"CREATE DATABASE failed: {exc}")
    yield url
    with contextlib.suppress(psycopg.Error):
        postgres_server.drop_database(name)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """``sqlite:///…`` or a fresh PostgreSQL URL, by ``request.param`` (default sqlite).

    Use with ``@pytest.mark.parametrize("database_url", database_params(), indirect=True)``;
    the ``postgres_url`` fixture must be importable from the same conftest.
    """
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/relay.db"
    if kind in ("postgresql", "postgres"):
        return str(request.getfixturevalue("postgres_url"))
    raise ValueError(f"unknown database kind {kind!r}")
