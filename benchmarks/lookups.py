"""Mapping lookups (`Mappings.message`) with 1k, 100k and 1M mapped replies."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from sqlalchemy import insert

from benchmarks.traffic import CHANNEL, TEAM, message_id_of, percentile
from bot.core.db import Database, mappings
from bot.core.mapping import Mappings

CHUNK = 20_000


@dataclass(frozen=True)
class LookupResult:
    """Lookup times at one table size."""

    rows: int
    p50_us: float
    mean_us: float
    p99_us: float
    insert_s: float


def _rows(start: int, stop: int) -> list[dict[str, object]]:
    now = time.time()
    return [
        {
            "workspace": TEAM,
            "channel": f"C{i % 97:04d}",
            "ts": f"1600000000.{i:07d}",
            "thread_ts": None,
            "message_id": message_id_of(f"1600000000.{i:07d}"),
            "conversation_id": None,
            "source": "metadata",
            "created_at": now,
        }
        for i in range(start, stop)
    ]


def bulk_map(database: Database, start: int, stop: int) -> None:
    """Insert mappings start..stop-1 with executemany, in chunks."""
    for low in range(start, stop, CHUNK):
        with database.write() as conn:
            conn.execute(insert(mappings), _rows(low, min(stop, low + CHUNK)))


def run_lookups(url: str, sizes: list[int], lookups: int = 4000) -> list[LookupResult]:
    """Grow brixo_mappings through `sizes`, timing `lookups` random hits at each size."""
    database = Database(url)
    database.migrate(time.time())
    store = Mappings(database)
    results: list[LookupResult] = []
    have = 0
    for size in sizes:
        began = time.perf_counter()
        bulk_map(database, have, size)
        inserted = time.perf_counter() - began
        have = size
        keys = [random.randrange(size) for _ in range(lookups)]
        for i in keys[:500]:  # warm the pool and the cache
            store.message(TEAM, f"C{i % 97:04d}", f"1600000000.{i:07d}")
        times: list[float] = []
        for i in keys:
            t0 = time.perf_counter()
            found = store.message(TEAM, f"C{i % 97:04d}", f"1600000000.{i:07d}")
            times.append(time.perf_counter() - t0)
            assert found is not None
        missing = store.message(TEAM, CHANNEL, "1.0")
        assert missing is None
        results.append(
            LookupResult(
                size,
                1e6 * percentile(times, 50),
                1e6 * sum(times) / len(times),
                1e6 * percentile(times, 99),
                inserted,
            )
        )
    database.dispose()
    return results
