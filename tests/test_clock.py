"""The wall clock stepping (NTP, a VM resumed) while the relay runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from time import time

import pytest

from bot.core.acts import Act, Target
from bot.core.brixo import KEY_CHECK_ID, BrixoClient
from bot.core.db import Database
from bot.core.delivery import DeliveryWorker, RetryPolicy
from bot.core.outbox import DELIVERED, Outbox
from tests.conftest import BRIXO_KEY
from tests.fakes import FakeBrixo
from tests.waiting import wait_until

STEP = -3600.0  # the wall clock steps back an hour (NTP, a VM resumed)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    database = Database(f"sqlite:///{tmp_path}/clock.db")
    database.migrate(time())
    yield Outbox(database)
    database.dispose()


def an_act(target_id: str, at: float, value: str = "thumbs_up") -> Act:
    return Act(
        platform="slack",
        workspace="T1",
        user_id="U1",
        source="button",
        target=Target("message", target_id),
        value=value,  # type: ignore[arg-type]
        occurred_at=at,
    )


def test_a_wall_clock_stepped_back_never_sends_an_act_twice(
    outbox: Outbox, brixo: FakeBrixo
) -> None:
    """The clock steps back an hour (NTP, a VM resumed); then a send outlasts the lease, which
    the worker must go on renewing, or the act would be claimed and sent again."""
    offset = [0.0]

    def clock() -> float:
        return time() + offset[0]

    worker = DeliveryWorker(
        outbox,
        BrixoClient(BRIXO_KEY, brixo.url, read_timeout=5.0),
        2,
        RetryPolicy(backoff_base=0.01, backoff_cap=0.05),
        lease=1.0,
        poll_interval=0.05,
        probe_interval=0.1,
        clock=clock,
    )
    outbox.deliverer = worker
    worker.start()
    try:
        outbox.record(an_act("before", clock()), clock())
        brixo.wait_for_accepted(1, timeout=5)  # the loop has run: its next rounds are set
        offset[0] = STEP
        brixo.set_latency(2.5)  # the send outlasts the 1 s lease: renewals keep it
        lapsed = clock() + 1.2  # the lease taken when "slow" is recorded, and then some
        outbox.record(an_act("slow", clock()), clock())
        wait_until(lambda: clock() > lapsed, timeout=3)  # unrenewed, its lease has lapsed
        outbox.record(an_act("other", clock()), clock())  # wakes a claim
        wait_until(lambda: outbox.counts(clock())[DELIVERED] == 3, timeout=10)
        worker.stop(timeout=5)  # a second send of "slow" in flight would land now
        sent = sorted(r.id for r in brixo.requests if r.id != KEY_CHECK_ID)
        assert sent == ["before", "other", "slow"], sent
    finally:
        worker.stop(timeout=5)


def test_a_paused_relay_probes_the_key_again_soon_whatever_the_clock_does(
    outbox: Outbox, brixo: FakeBrixo
) -> None:
    """Paused on a 401, the wall clock steps back an hour; the key then works again."""
    offset = [0.0]

    def clock() -> float:
        return time() + offset[0]

    worker = DeliveryWorker(
        outbox,
        BrixoClient("a-key-brixo-refuses", brixo.url),
        2,
        RetryPolicy(backoff_base=0.01, backoff_cap=0.05),
        poll_interval=0.05,
        probe_interval=0.5,
        clock=clock,
    )
    outbox.deliverer = worker
    worker.start()
    try:
        wait_until(lambda: worker.paused, timeout=5)
        offset[0] = STEP
        brixo.set_key("a-key-brixo-refuses")
        wait_until(lambda: not worker.paused, timeout=5, message="still paused")
    finally:
        worker.stop(timeout=5)
