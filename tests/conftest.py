"""Shared fixtures: real PostgreSQL, the strict Brixo stand-in, and settings/environments.

Kept generic: chat-platform tests add their own fakes next to these.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import time

import pytest
from sqlalchemy import delete, insert

from bot.core.db import Database, schema_version
from bot.core.outbox import Outbox
from bot.core.settings import Settings, load_settings
from tests.fakes import FakeBrixo
from tests.pg import (  # noqa: F401  (fixtures)
    database_params,
    database_url,
    postgres_server,
    postgres_url,
)

REPO = Path(__file__).resolve().parent.parent
BRIXO_KEY = "brixo-test-key-4f9c2e7a1b"

# Variables a child process may inherit from the test runner's own environment.
_PASSTHROUGH = ("PATH", "HOME", "TMPDIR", "SYSTEMROOT", "VIRTUAL_ENV", "LD_LIBRARY_PATH")


@pytest.fixture
def brixo() -> Iterator[FakeBrixo]:
    """A strict FakeBrixo on a free port, accepting BRIXO_KEY."""
    with FakeBrixo(api_key=BRIXO_KEY) as fake:
        yield fake


@dataclass
class Env:
    """Relay settings as environment variables, for in-process Settings or child processes.

    `env(X="1")` gives the variables with overrides (a value of None removes one);
    `env.settings(...)` parses them (no `.env` file); `env.process(...)` is a complete,
    minimal environment for `python -m bot …` that leaks nothing from the test runner.
    """

    values: dict[str, str] = field(default_factory=dict)

    def __call__(self, **overrides: str | None) -> dict[str, str]:
        merged: dict[str, str] = dict(self.values)
        for name, value in overrides.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        return merged

    def settings(self, **overrides: str | None) -> Settings:
        return load_settings(self(**overrides), dotenv=None)

    def process(self, **overrides: str | None) -> dict[str, str]:
        base = {k: os.environ[k] for k in _PASSTHROUGH if k in os.environ}
        base.update(
            {
                "PYTHONPATH": str(REPO),
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8",
                "PYTHONIOENCODING": "utf-8",
                "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
            }
        )
        base.update(self(**overrides))
        return base


@pytest.fixture
def env(brixo: FakeBrixo, tmp_path: Path) -> Env:
    """Settings pointing at `brixo` and a SQLite file in tmp_path; extend `env.values` freely."""
    return Env(
        {
            "BRIXO_API_URL": brixo.url,
            "BRIXO_API_KEY": BRIXO_KEY,
            "DATABASE_URL": f"sqlite:///{tmp_path}/relay.db",
            # Nothing may reach the real Slack from a test.
            "SLACK_API_URL": "http://127.0.0.1:9/api/",
        }
    )


@pytest.fixture
def store(database_url: str) -> Iterator[Outbox]:  # noqa: F811
    """A migrated database (SQLite or PostgreSQL, per `database_url`) and its outbox."""
    database = Database(_sqlalchemy_url(database_url))
    database.migrate(time())
    try:
        yield Outbox(database)
    finally:
        database.dispose()


def _sqlalchemy_url(url: str) -> str:
    """`postgresql://` -> psycopg 3 driver, as the settings would do."""
    from bot.core.settings import parse_database_url

    return parse_database_url("DATABASE_URL", url)


# The Slack harness's fixtures, for every test module (imported last: it uses Env from here).
from tests.slack_harness import fake_agent, fake_slack, start_relay  # noqa: E402, F401


def make_version_1(database: Database, now: float) -> None:
    """Turn a migrated database into what a relay of schema version 1 left (no
    `brixo_acts.first_tried_at`), as an upgrade finds it."""
    with database.write() as conn:
        conn.exec_driver_sql("ALTER TABLE brixo_acts DROP COLUMN first_tried_at")
        conn.execute(delete(schema_version))
        conn.execute(insert(schema_version).values(version=1, applied_at=now))


def make_version_2(database: Database, now: float) -> None:
    """Turn a migrated database into what a relay of schema version 2 left (on SQLite,
    `brixo_acts` without AUTOINCREMENT), its acts kept."""
    with database.write() as conn:
        conn.execute(delete(schema_version))
        conn.execute(insert(schema_version).values(version=2, applied_at=now))
        if not database.is_sqlite:
            return
        (table_sql,) = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE name = 'brixo_acts'"
        ).one()
        conn.exec_driver_sql("DROP INDEX brixo_acts_due")
        conn.exec_driver_sql("ALTER TABLE brixo_acts RENAME TO acts_v3")
        conn.exec_driver_sql(table_sql.replace(" AUTOINCREMENT", ""))
        conn.exec_driver_sql("INSERT INTO brixo_acts SELECT * FROM acts_v3")
        conn.exec_driver_sql("DROP TABLE acts_v3")
        conn.exec_driver_sql("CREATE INDEX brixo_acts_due ON brixo_acts (state, next_attempt_at)")
