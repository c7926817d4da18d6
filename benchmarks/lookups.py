"""Mapping lookups (`Mappings.message`) with 1k, 100k and 1M mapped replies."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
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


def run_lookups(
    url_for: Callable[[str], str], sizes: list[int], lookups: int = 4000, rounds: int = 8
) -> list[LookupResult]:
    """Time `lookups` random hits on a brixo_mappings of each size, in interleaved rounds.

    Each size gets a database of its own (`url_for(name)`), filled first; then the sizes take
    turns, `rounds` rounds of `lookups / rounds` hits each, so a slower spell of the machine
    hits every size alike instead of whichever was measured then.
    """
    databases: list[Database] = []
    stores: list[Mappings] = []
    inserted: list[float] = []
    for size in sizes:
        database = Database(url_for(f"lookups_{size}"))
        database.migrate(time.time())
        began = time.perf_counter()
        bulk_map(database, 0, size)
        inserted.append(time.perf_counter() - began)
        databases.append(database)
        stores.append(Mappings(database))
    times: list[list[float]] = [[] for _ in sizes]
    for round_ in range(rounds + 1):  # round 0 warms the pools and the caches
        for n in range(len(sizes)):
            k = (n + round_) % len(sizes)  # a different size goes first each round
            times[k].extend(_hits(stores[k], sizes[k], lookups // rounds))
        if round_ == 0:
            times = [[] for _ in sizes]
    for store in stores:
        assert store.message(TEAM, CHANNEL, "1.0") is None
    for database in databases:
        database.dispose()
    return [
        LookupResult(
            size,
            1e6 * percentile(took, 50),
            1e6 * sum(took) / len(took),
            1e6 * percentile(took, 99),
            seconds,
        )
        for size, took, seconds in zip(sizes, times, inserted, strict=True)
    ]


def _hits(store: Mappings, size: int, count: int) -> list[float]:
    """Seconds taken by each of `count` lookups of random existing replies."""
    took: list[float] = []
    for i in (random.randrange(size) for _ in range(count)):
        channel, ts = f"C{i % 97:04d}", f"1600000000.{i:07d}"
        t0 = time.perf_counter()
        found = store.message(TEAM, channel, ts)
        took.append(time.perf_counter() - t0)
        assert found is not None
    return took
