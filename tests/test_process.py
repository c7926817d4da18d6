"""Real processes: SIGKILL loses nothing; two processes on one PostgreSQL deliver exactly once."""

from __future__ import annotations

import re
import signal
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from time import time

import pytest

from bot.core.acts import Act, Target
from bot.core.db import Database
from bot.core.outbox import DELIVERED, PENDING, Outbox
from bot.core.settings import parse_database_url
from tests.conftest import Env
from tests.fakes import FakeBrixo
from tests.pg import database_params
from tests.procs import Proc, start_python
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

# Records N acts while Brixo is down, with a worker busy failing to deliver them; then hangs.
RECORD_AND_HANG = """
import sys, threading, time
from bot.core.acts import Act, Target
from bot.core.brixo import BrixoClient
from bot.core.db import Database
from bot.core.delivery import DeliveryWorker, RetryPolicy
from bot.core.outbox import Outbox
from bot.core.settings import load_settings

settings = load_settings(dotenv=None)
count = int(sys.argv[1])
database = Database(settings.database_url)
database.migrate(time.time())
outbox = Outbox(database)
client = BrixoClient(settings.brixo_api_key, settings.brixo_api_url, read_timeout=1)
worker = DeliveryWorker(outbox, client, 4, RetryPolicy(backoff_base=0.05, backoff_cap=0.2),
                        lease=1.0, poll_interval=0.05)
worker.start()
for n in range(count):
    act = Act("slack", "T1", "U1", "button", Target("message", f"kill-{n}"), "thumbs_up",
              time.time())
    assert outbox.record(act, time.time()).created
    print(f"recorded kill-{n}", flush=True)
print("ALL RECORDED", flush=True)
threading.Event().wait()
"""

# A delivery worker from the environment's settings; logs each outcome; stops on SIGTERM.
DELIVER = """
import logging, signal, sys, threading, time
from bot.core.brixo import BrixoClient
from bot.core.db import Database
from bot.core.delivery import DeliveryWorker, RetryPolicy
from bot.core.outbox import Outbox
from bot.core.settings import load_settings

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
settings = load_settings(dotenv=None)
database = Database(settings.database_url)
database.migrate(time.time())
client = BrixoClient(settings.brixo_api_key, settings.brixo_api_url, read_timeout=5)
worker = DeliveryWorker(Outbox(database), client, int(sys.argv[1]),
                        RetryPolicy(backoff_base=0.05, backoff_cap=0.2),
                        lease=float(sys.argv[2]), poll_interval=0.05)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
worker.start()
print("STARTED", flush=True)
done.wait()
worker.stop(timeout=5)
print("STOPPED", flush=True)
"""


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


@pytest.fixture
def down_url() -> Iterator[str]:
    """Brixo is down: a port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def counts(url: str) -> dict[str, object]:
    database = Database(parse_database_url("DATABASE_URL", url))
    try:
        return Outbox(database).counts(time())
    finally:
        database.dispose()


def delivered_lines(proc: Proc) -> list[str]:
    return [line for line in proc.stderr_lines if re.search(r"outcome=delivered\b", line)]


@pytest.mark.parametrize("database_url", database_params(), indirect=True)
def test_sigkill_with_30_pending_loses_none(
    env: Env,
    brixo: FakeBrixo,
    tmp_path: Path,
    database_url: str,
    down_url: str,
    procs: list[Proc],
) -> None:
    recorder = start_python(
        RECORD_AND_HANG,
        "30",
        env=env.process(DATABASE_URL=database_url, BRIXO_API_URL=down_url),
        cwd=tmp_path,
    )
    procs.append(recorder)
    recorder.wait_for_line(r"^ALL RECORDED$", timeout=30)
    # The worker is busy failing against the dead Brixo, leases held, when the kill lands.
    wait_until(lambda: counts(database_url)[PENDING] == 30, timeout=5)
    recorder.kill()
    assert recorder.wait(timeout=10) == -signal.SIGKILL
    assert counts(database_url)[PENDING] == 30
    assert brixo.requests == []

    deliverer = start_python(
        DELIVER, "4", "2", env=env.process(DATABASE_URL=database_url), cwd=tmp_path
    )
    procs.append(deliverer)
    deliverer.wait_for_line("^STARTED$", timeout=30)
    brixo.wait_for_accepted(30, timeout=30)
    wait_until(lambda: counts(database_url)[DELIVERED] == 30, timeout=15)
    ids = Counter(r.id for r in brixo.accepted)
    assert ids == Counter({f"kill-{n}": 1 for n in range(30)})
    assert len(brixo.accepted) == 30

    deliverer.terminate()
    assert deliverer.wait(timeout=15) == 0
    assert "STOPPED" in deliverer.stdout
    assert len(brixo.accepted) == 30


def test_two_processes_on_one_postgresql_deliver_each_act_once(
    env: Env, brixo: FakeBrixo, tmp_path: Path, postgres_url: str, procs: list[Proc]
) -> None:
    brixo.set_latency(0.02)
    url = postgres_url
    database = Database(parse_database_url("DATABASE_URL", url))
    database.migrate(time())
    workers = [
        start_python(DELIVER, "4", "2", env=env.process(DATABASE_URL=url), cwd=tmp_path)
        for _ in range(2)
    ]
    procs.extend(workers)
    for worker in workers:
        worker.wait_for_line("^STARTED$", timeout=30)

    outbox = Outbox(database)
    for n in range(200):
        act = Act(
            "slack", "T1", f"U{n}", "button", Target("message", f"pair-{n}"), "thumbs_down", time()
        )
        assert outbox.record(act, time()).created
    try:
        brixo.wait_for_accepted(200, timeout=60)
        wait_until(lambda: outbox.counts(time())[DELIVERED] == 200, timeout=20)
    finally:
        database.dispose()

    ids = Counter(r.id for r in brixo.accepted)
    assert ids == Counter({f"pair-{n}": 1 for n in range(200)})
    per_worker = wait_until(
        lambda: (lambda c: c if sum(c) == 200 else None)(
            [len(delivered_lines(w)) for w in workers]
        ),
        timeout=10,
    )
    assert all(count > 0 for count in per_worker), per_worker  # both really took part
    for worker in workers:
        worker.terminate()
    for worker in workers:
        assert worker.wait(timeout=15) == 0, worker.describe()
    assert len(brixo.accepted) == 200
