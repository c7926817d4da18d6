"""The wall clock stepping (NTP, a VM resumed) while the relay runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from time import sleep, time

import pytest

from bot.core.acts import Act, Target
from bot.core.brixo import KEY_CHECK_ID, BrixoClient
from bot.core.db import Database
from bot.core.delivery import DeliveryWorker, RetryPolicy
from bot.core.outbox import DELIVERED, Outbox
from tests.conftest import BRIXO_KEY
from tests.fakes import FakeBrixo
from tests.waiting import wait_until


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


@pytest.mark.parametrize("step", [0.0, -3600.0])
def test_a_wall_clock_stepped_back_never_sends_an_act_twice(
    outbox: Outbox, brixo: FakeBrixo, step: float
) -> None:
    """The clock steps back an hour (NTP, a VM resumed); then a send outlasts the lease."""
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
        wait_until(lambda: worker.brixo_state != "unknown", timeout=5)
        sleep(0.3)  # a few rounds of the loop: leases renewed, claims polled
        offset[0] = step
        brixo.set_latency(2.5)  # each send outlasts the 1 s lease: renewals keep it
        first = outbox.record(an_act("slow", clock()), clock())
        assert first.act_id is not None
        sleep(1.5)  # the lease would have lapsed without a renewal
        waiting = outbox.record(an_act("other", clock()), clock(), comment_until=clock() + 600)
        assert waiting.act_id is not None
        outbox.finish_comment(waiting.act_id, "T1", "U1", None, clock())  # wakes the worker
        wait_until(lambda: outbox.counts(clock())[DELIVERED] == 2, timeout=15)
        sleep(3)  # any second send of "slow" lands
        sent = [r.id for r in brixo.requests if r.id != KEY_CHECK_ID]
        assert sorted(sent) == ["other", "slow"], sent
    finally:
        worker.stop(timeout=5)


@pytest.mark.parametrize(
    "step",
    [
        0.0,
        pytest.param(
            -3600.0,
            marks=pytest.mark.xfail(
                strict=True,
                reason="the hold's end is wall-clock time, in memory and in brixo_holds: "
                "stepped back an hour, every process holds its sends an hour more",
            ),
        ),
    ],
)
def test_a_retry_after_of_a_second_holds_sends_a_second_whatever_the_clock_does(
    outbox: Outbox, brixo: FakeBrixo, step: float
) -> None:
    """Brixo answers 429 with Retry-After: 1; the wall clock then steps back an hour."""
    offset = [0.0]

    def clock() -> float:
        return time() + offset[0]

    worker = DeliveryWorker(
        outbox,
        BrixoClient(BRIXO_KEY, brixo.url),
        2,
        RetryPolicy(backoff_base=0.01, backoff_cap=0.05),
        poll_interval=0.05,
        probe_interval=0.1,
        clock=clock,
    )
    outbox.deliverer = worker
    worker.start()
    try:
        wait_until(lambda: worker.brixo_state != "unknown", timeout=5)
        brixo.fail_next(1, status=429, retry_after="1")
        outbox.record(an_act("limited", clock()), clock())
        wait_until(lambda: [r for r in brixo.requests if r.status == 429], timeout=5)
        offset[0] = step
        outbox.record(an_act("next", clock()), clock())
        brixo.wait_for_accepted(2, timeout=10)  # a second on, not an hour
    finally:
        worker.stop(timeout=5)


@pytest.mark.parametrize("step", [0.0, -3600.0])
def test_a_paused_relay_probes_the_key_again_soon_whatever_the_clock_does(
    outbox: Outbox, brixo: FakeBrixo, step: float
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
        offset[0] = step
        brixo.set_key("a-key-brixo-refuses")
        wait_until(lambda: not worker.paused, timeout=5, message="still paused")
    finally:
        worker.stop(timeout=5)
