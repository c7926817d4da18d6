"""The delivery worker against the strict local Brixo: every fault class of SPEC.md's Delivery."""

from __future__ import annotations

import io
import json
import logging
import os
import random
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from time import monotonic, time
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from bot.core import delivery
from bot.core.acts import Act, Target
from bot.core.brixo import KEY_CHECK_ID, Answer, BrixoClient, Outcome
from bot.core.db import Database
from bot.core.delivery import (
    CUT_COMMENT_CHARS,
    AcksFirst,
    DeliveryWorker,
    RetryPolicy,
)
from bot.core.outbox import DEAD, DELIVERED, PENDING, STATES, Claimed, Entry, Outbox
from bot.core.relay import Relay
from tests.conftest import BRIXO_KEY, Env
from tests.fakes import FakeBrixo
from tests.fakes.brixo import Received
from tests.waiting import wait_until


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    database = Database(f"sqlite:///{tmp_path}/delivery.db")
    database.migrate(time())
    yield Outbox(database)
    database.dispose()


WorkerFactory = Callable[..., DeliveryWorker]


@pytest.fixture
def make_worker(outbox: Outbox, brixo: FakeBrixo) -> Iterator[WorkerFactory]:
    """Fast workers: tiny backoff, short lease, poll and probe intervals; stopped at teardown."""
    workers: list[DeliveryWorker] = []

    def make(
        url: str | None = None,
        key: str = BRIXO_KEY,
        concurrency: int = 4,
        read_timeout: float = 2.0,
        max_age: float = 60.0,
        not_found_grace: float = 60.0,
        lease: float = 3.0,
        start: bool = True,
        clock: Callable[[], float] = time,
    ) -> DeliveryWorker:
        client = BrixoClient(key, url or brixo.url, read_timeout=read_timeout)
        policy = RetryPolicy(
            max_age=max_age, not_found_grace=not_found_grace, backoff_base=0.01, backoff_cap=0.05
        )
        worker = DeliveryWorker(
            outbox,
            client,
            concurrency,
            policy,
            lease=lease,
            poll_interval=0.05,
            probe_interval=0.1,
            clock=clock,
        )
        outbox.deliverer = worker  # as Relay wires them: new acts are handed over at once
        workers.append(worker)
        if start:
            worker.start()
            # The key probe at start is a request too: inject faults only after it.
            wait_until(lambda: worker.brixo_state != "unknown", timeout=5)
        return worker

    yield make
    for worker in workers:
        worker.stop(timeout=2)


def record(
    outbox: Outbox,
    target_id: str,
    value: str = "thumbs_up",
    comment: str | None = None,
    kind: str = "message",
    user: str = "U1",
    at: float | None = None,
    now: float | None = None,
) -> int:
    act = Act(
        platform="slack",
        workspace="T1",
        user_id=user,
        source="button",
        target=Target(kind, target_id),  # type: ignore[arg-type]
        value=value,  # type: ignore[arg-type]
        occurred_at=at if at is not None else time(),
        comment=comment,
    )
    recorded = outbox.record(act, time() if now is None else now)
    assert recorded.act_id is not None, recorded
    return recorded.act_id


def entry(outbox: Outbox, act_id: int) -> Entry:
    (found,) = [e for e in outbox.entries(STATES, limit=10_000) if e.id == act_id]
    return found


def wait_state(outbox: Outbox, act_id: int, state: str, timeout: float = 10.0) -> Entry:
    return wait_until(
        lambda: (lambda e: e if e.state == state else None)(entry(outbox, act_id)),
        timeout=timeout,
        message=f"act {act_id} never became {state}",
    )


def signals(brixo: FakeBrixo, target_id: str | None = None) -> list[Received]:
    """Requests that carried a signal (not the worker's key probes)."""
    return [
        r
        for r in brixo.requests
        if r.id != KEY_CHECK_ID and (target_id is None or r.id == target_id)
    ]


def test_every_act_delivered_exactly_once(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    brixo.set_latency(0.01)
    ids = {
        record(outbox, f"m-{n}", "thumbs_up" if n % 2 else "thumbs_down"): f"m-{n}"
        for n in range(40)
    }
    record(outbox, "conv/1", kind="conversation", comment="Very frustrating!", at=1770128530.0)
    make_worker(concurrency=8)
    brixo.wait_for_accepted(41)
    for act_id in ids:
        wait_state(outbox, act_id, DELIVERED)
    assert sorted(r.id for r in brixo.accepted) == sorted([*ids.values(), "conv/1"])
    (conv,) = brixo.accepted_for("conv/1")
    assert conv.kind == "conversations"
    assert conv.attributes == {
        "name": "feedback",
        "value": "thumbs_up",
        "occurred_at": "2026-02-03T14:22:10Z",
        "user_message": "Very frustrating!",
    }
    assert brixo.accepted_for("m-0")[0].attributes["value"] == "thumbs_down"
    assert outbox.counts(time())[PENDING] == 0


def test_worker_does_not_overlap_leases_with_itself_under_latency(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    """Each send outlasts the lease: leases are renewed meanwhile, nothing is sent twice."""
    brixo.set_latency(0.8)
    for n in range(6):
        record(outbox, f"slow-{n}")
    make_worker(concurrency=2, lease=0.6)
    brixo.wait_for_accepted(6, timeout=20)
    wait_until(lambda: outbox.counts(time())[DELIVERED] == 6, timeout=10)
    assert sorted(r.id for r in signals(brixo)) == sorted(f"slow-{n}" for n in range(6))


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_transient_failures_are_retried_until_delivered(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory, status: int
) -> None:
    make_worker()
    brixo.fail_next(3, status=status)
    act_id = record(outbox, "m1")
    done = wait_state(outbox, act_id, DELIVERED)
    assert done.attempts == 4
    assert [r.status for r in signals(brixo)] == [status, status, status, 204]


def test_retry_after_holds_back_every_request(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    make_worker(concurrency=1)
    brixo.fail_next(1, status=429, retry_after="1")
    for n in range(4):
        record(outbox, f"m{n}")
    brixo.wait_for_accepted(4, timeout=10)
    sent = signals(brixo)
    (limited,) = [r for r in sent if r.status == 429]
    after = [r for r in sent if r.at > limited.at]
    assert len(after) == 4
    early = [(r.id, round(r.at - limited.at, 3)) for r in after if r.at < limited.at + 0.95]
    assert early == [], f"sent within Retry-After: 1 of the 429: {early}"
    assert sorted(r.id for r in brixo.accepted) == ["m0", "m1", "m2", "m3"]


def test_retry_after_holds_back_acts_recorded_later(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    worker = make_worker(concurrency=2)
    brixo.fail_next(1, status=503, retry_after="1")
    record(outbox, "first")
    limited = wait_until(lambda: [r for r in signals(brixo) if r.status == 503], timeout=5)[0]
    wait_until(lambda: entry(outbox, 1).attempts == 1, timeout=5)
    record(outbox, "second")
    worker.wake()
    brixo.wait_for_accepted(2, timeout=10)
    second = brixo.accepted_for("second")[0]
    assert second.at >= limited.at + 0.95, round(second.at - limited.at, 3)


def test_dropped_connection_is_retried(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    make_worker()
    brixo.drop_next(2)
    act_id = record(outbox, "m1")
    assert wait_state(outbox, act_id, DELIVERED).attempts == 3
    assert [r.status for r in signals(brixo)] == [0, 0, 204]


def test_timeout_is_retried(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.delivery")
    make_worker(read_timeout=0.3)
    brixo.stall_next(1, seconds=30)
    act_id = record(outbox, "m1")
    done = wait_state(outbox, act_id, DELIVERED)
    assert done.attempts == 2
    assert "timed out" in caplog.text
    assert len(brixo.accepted_for("m1")) == 1  # the stalled one never answered


def test_not_found_then_found_within_grace(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    brixo.mark_missing("late-trace")
    act_id = record(outbox, "late-trace")
    make_worker(not_found_grace=30)
    wait_until(lambda: len(signals(brixo, "late-trace")) >= 3, timeout=10)
    assert entry(outbox, act_id).state == PENDING
    brixo.mark_present("late-trace")
    wait_state(outbox, act_id, DELIVERED)
    assert len(brixo.accepted_for("late-trace")) == 1
    assert all(r.status == 404 for r in signals(brixo, "late-trace")[:-1])


def test_not_found_past_grace_is_a_dead_letter(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    brixo.mark_missing("never")
    act_id = record(outbox, "never")
    make_worker(not_found_grace=0.4)
    dead = wait_state(outbox, act_id, DEAD)
    assert dead.last_error and "not found" in dead.last_error and "404" in dead.last_error
    assert "'never' not found" in dead.last_error  # Brixo's own detail is kept
    tries = signals(brixo, "never")
    assert len(tries) >= 3 and all(r.status == 404 for r in tries)
    assert tries[-1].at - tries[0].at >= 0.2  # retried through the grace, not dead at once


def test_unauthorized_pauses_keeps_everything_and_resumes_after_a_probe(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first = record(outbox, "before")
    worker = make_worker(concurrency=2)
    wait_state(outbox, first, DELIVERED)
    assert worker.brixo_state == "ok"

    brixo.set_key("rotated-by-brixo")  # our key stops working
    ids = [record(outbox, f"during-{n}") for n in range(6)]
    wait_until(lambda: worker.paused, timeout=5)
    assert worker.brixo_state == "unauthorized"

    def probes() -> int:
        return len([r for r in brixo.requests if r.id == KEY_CHECK_ID and r.status == 401])

    wait_until(lambda: probes() >= 1, timeout=5)  # probing starts once nothing is in flight
    refused = len([r for r in signals(brixo) if r.status == 401])
    assert 1 <= refused <= 4  # only what was already claimed when the first 401 came
    # Paused: probes only, no more signals, nothing dropped or dead.
    seen = probes()
    wait_until(lambda: probes() >= seen + 3, timeout=5)
    assert len([r for r in signals(brixo) if r.status == 401]) == refused
    counts = outbox.counts(time())
    assert (counts[PENDING], counts[DEAD], counts[DELIVERED]) == (6, 0, 1)

    # Brixo failing (503) says nothing of the key: still paused, no signal sent.
    brixo.fail_next(1, status=503)
    wait_until(lambda: any(r.status == 503 for r in brixo.requests), timeout=5)
    seen = probes()
    wait_until(lambda: probes() >= seen + 1, timeout=5)
    assert worker.paused and len([r for r in signals(brixo) if r.status == 401]) == refused

    brixo.set_key(BRIXO_KEY)  # the key works again
    brixo.wait_for_accepted(7)
    for act_id in ids:
        wait_state(outbox, act_id, DELIVERED)
    assert not worker.paused and worker.brixo_state == "ok"
    assert sorted(r.id for r in brixo.accepted) == sorted(
        ["before", *[f"during-{n}" for n in range(6)]]
    )
    assert BRIXO_KEY not in caplog.text


def test_bad_request_is_a_dead_letter_with_brixos_detail(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A dead letter is kept with Brixo's detail and logged as a WARNING (a signal that won't
    reach Brixo by itself), so LOG_LEVEL=warning still shows it; deliveries log at INFO."""
    caplog.set_level(logging.INFO, logger="bot.delivery")
    make_worker()
    brixo.fail_next(1, status=400, detail="occurred_at is not a valid RFC3339 timestamp")
    act_id = record(outbox, "m1")
    dead = wait_state(outbox, act_id, DEAD)
    assert dead.last_error == "HTTP 400: occurred_at is not a valid RFC3339 timestamp"
    assert dead.attempts == 1
    assert len(signals(brixo)) == 1
    delivered = record(outbox, "m2")
    wait_state(outbox, delivered, DELIVERED)
    levels = {
        outcome: r.levelname
        for r in caplog.records
        for outcome in ("dead", "delivered")
        if f"outcome={outcome} " in r.getMessage()
    }
    assert levels == {"dead": "WARNING", "delivered": "INFO"}


def test_too_large_with_comment_is_sent_once_more_cut(
    outbox: Outbox, make_worker: WorkerFactory
) -> None:
    comment = "é" * 700 + "x" * 1300  # 2000 characters, 2700 bytes
    with FakeBrixo(api_key=BRIXO_KEY, max_body_bytes=1500) as small:
        act_id = record(outbox, "m1", "thumbs_down", comment=comment)
        make_worker(url=small.url)
        wait_state(outbox, act_id, DELIVERED)
        sent = signals(small)
        assert [r.status for r in sent] == [413, 204]
        assert sent[1].attributes["user_message"] == comment[:CUT_COMMENT_CHARS]
        assert sent[1].attributes["value"] == "thumbs_down"


def test_too_large_again_after_the_cut_is_a_dead_letter(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    make_worker()
    brixo.fail_next(2, status=413, detail="Request body too large")
    act_id = record(outbox, "m1", comment="c" * 1000)
    dead = wait_state(outbox, act_id, DEAD)
    assert dead.last_error == "HTTP 413: Request body too large"
    sent = signals(brixo)
    assert len(sent) == 2
    assert sent[1].attributes["user_message"] == "c" * CUT_COMMENT_CHARS


@pytest.mark.parametrize("comment", ["short comment", "c" * CUT_COMMENT_CHARS])
def test_too_large_with_a_short_comment_is_sent_once_more_with_half(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory, comment: str
) -> None:
    make_worker()
    brixo.fail_next(1, status=413, detail="Request body too large")
    act_id = record(outbox, "m1", comment=comment)
    wait_state(outbox, act_id, DELIVERED)
    sent = signals(brixo)
    assert [r.status for r in sent] == [413, 204]
    assert sent[1].attributes["user_message"] == comment[: len(comment) // 2].rstrip()


def test_too_large_without_a_comment_is_dead_at_once(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    """Without a comment to cut, the same body would be sent again."""
    make_worker()
    brixo.fail_next(1, status=413, detail="Request body too large")
    act_id = record(outbox, "m1")
    assert wait_state(outbox, act_id, DEAD).attempts == 1
    assert len(signals(brixo)) == 1


def test_gives_up_after_max_age(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    make_worker(max_age=1.5)
    brixo.fail_next(10_000, status=503, detail="down for maintenance")
    act_id = record(outbox, "m1")
    recorded_at = entry(outbox, act_id).created_at
    dead = wait_state(outbox, act_id, DEAD)
    assert dead.last_error and dead.last_error.startswith("gave up after")
    assert "down for maintenance" in dead.last_error
    tries = signals(brixo)
    assert all(r.status == 503 for r in tries)
    assert len(tries) >= 2  # retried meanwhile, not given up at once
    # and given up only once the max age was reached (the last answer settles it)
    assert dead.next_attempt_at - recorded_at >= 1.5
    assert brixo.accepted == []


def test_brixo_unreachable_at_start_is_a_warning_at_once(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """No vote has to fail first: the key check at start says Brixo can't be reached."""
    caplog.set_level(logging.INFO, logger="bot.delivery")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"  # nobody listens there
    worker = DeliveryWorker(outbox, BrixoClient(BRIXO_KEY, url), 1, RetryPolicy())
    worker.start()
    try:
        wait_until(lambda: worker.brixo_state == "unreachable", timeout=5)
    finally:
        worker.stop(timeout=2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("Brixo unreachable at start ("), warnings
    assert warnings[0].endswith("): votes are kept, and sent once it answers")


def test_while_brixo_gives_no_answer_sends_are_held_not_one_per_new_vote(
    outbox: Outbox, brixo: FakeBrixo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.delivery")
    policy = RetryPolicy(backoff_base=0.2, backoff_cap=1.0)
    client = BrixoClient(BRIXO_KEY, brixo.url)
    worker = DeliveryWorker(outbox, client, 4, policy, poll_interval=0.05, probe_interval=0.1)
    worker.start()
    try:
        wait_until(lambda: worker.brixo_state != "unknown", timeout=5)
        brixo.drop_next(10_000)  # down: every connection closed unanswered
        paced = threading.Event()
        for n in range(40):  # votes keep coming for two seconds
            record(outbox, f"m{n}")
            worker.wake()
            paced.wait(0.05)
        assert worker.brixo_state == "unreachable"
        tries = len(signals(brixo))
        assert 0 < tries < 40, f"{tries} requests for 40 votes while Brixo was down"
        brixo.reset()  # back up
        brixo.wait_for_accepted(40, timeout=15)
        wait_until(lambda: outbox.counts(time())[DELIVERED] == 40, timeout=5)
        assert sorted(r.id for r in brixo.accepted) == sorted(f"m{n}" for n in range(40))
        assert worker.brixo_state == "ok"
    finally:
        worker.stop(timeout=2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(" (")[0] for r in warnings] == ["Brixo unreachable"]
    assert "Brixo answers again: delivery resumed" in caplog.messages


def test_stop_leaves_the_rest_pending_and_a_new_worker_finishes(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    brixo.set_latency(0.2)
    for n in range(10):
        record(outbox, f"m{n}")
    worker = make_worker(concurrency=1)
    brixo.wait_for_accepted(1)
    worker.stop(timeout=5)
    counts = outbox.counts(time())
    assert counts[DELIVERED] + counts[PENDING] == 10 and counts[PENDING] > 0
    assert counts[DELIVERED] == len(brixo.accepted)
    brixo.set_latency(0)
    make_worker(concurrency=4)
    brixo.wait_for_accepted(10)
    wait_until(lambda: outbox.counts(time())[DELIVERED] == 10)
    assert sorted(r.id for r in brixo.accepted) == sorted(f"m{n}" for n in range(10))


NOW = 1_800_000_000.0


def claimed(**fields: Any) -> Claimed:
    """An act as a claim returns it, sent now for the first time unless `fields` say else."""
    act: dict[str, Any] = {
        "id": 1,
        "workspace": "T1",
        "target": Target("message", "m"),
        "value": "thumbs_up",
        "occurred_at": NOW,
        "comment": None,
        "comment_cut": False,
        "attempts": 0,
        "not_found_since": None,
        "created_at": NOW,
    }
    return Claimed(**{**act, **fields})


def test_max_age_counts_from_the_first_try_whenever_the_act_was_stored() -> None:
    """DELIVERY_MAX_AGE is time spent trying: an act kept untried (a 401 pause, the relay down)
    starts it at its first try, whenever the person voted; a refused key doesn't start it."""
    policy = RetryPolicy()
    untried = claimed(occurred_at=NOW - 2 * 86400, created_at=NOW - 2 * 86400)
    row = policy.settle(untried, Answer(Outcome.RETRY, 503), NOW)
    assert (row["state"], row["first_tried_at"]) == (PENDING, NOW)
    failing = claimed(created_at=NOW - 2 * 86400, first_tried_at=NOW - 86400, attempts=9)
    row = policy.settle(failing, Answer(Outcome.RETRY, 503), NOW)
    assert (row["state"], row["first_tried_at"]) == (DEAD, NOW - 86400)
    assert row["last_error"].startswith("gave up after 86400 s")
    row = policy.settle(untried, Answer(Outcome.UNAUTHORIZED, 401), NOW)
    assert row["first_tried_at"] is None
    assert policy.settle(untried, Answer(Outcome.DELIVERED, 204), NOW)["first_tried_at"] == NOW


def test_not_found_grace_counts_from_the_first_404() -> None:
    """A vote that waited for its comment, or met 5xx first, still gets its NOT_FOUND_GRACE."""
    policy = RetryPolicy(not_found_grace=600)
    row = policy.settle(claimed(created_at=NOW - 900), Answer(Outcome.NOT_FOUND, 404), NOW)
    assert row["state"] == PENDING and row["not_found_since"] == NOW
    later = claimed(created_at=NOW - 900, not_found_since=NOW - 600)
    assert policy.settle(later, Answer(Outcome.NOT_FOUND, 404), NOW)["state"] == DEAD
    first = RetryPolicy(not_found_grace=0).settle(claimed(), Answer(Outcome.NOT_FOUND, 404), NOW)
    assert first["state"] == DEAD  # no grace: the first 404 is final


def test_the_last_retry_comes_when_max_age_or_the_404_grace_ends_not_a_backoff_later() -> None:
    policy = RetryPolicy(max_age=600, not_found_grace=600, backoff_base=300, backoff_cap=300)
    failing = claimed(created_at=NOW - 600, first_tried_at=NOW - 500, attempts=5)
    row = policy.settle(failing, Answer(Outcome.RETRY, 503), NOW)
    assert row["next_attempt_at"] == NOW + 100
    # Brixo's Retry-After is still honoured past it (then the next failure is final).
    row = policy.settle(failing, Answer(Outcome.RETRY, 429, retry_after=200.0), NOW)
    assert row["next_attempt_at"] == NOW + 200
    missing = claimed(created_at=NOW - 550, not_found_since=NOW - 550, attempts=5)
    row = policy.settle(missing, Answer(Outcome.NOT_FOUND, 404), NOW)
    assert row["next_attempt_at"] == NOW + 50 and row["state"] == PENDING


def test_votes_kept_through_a_pause_longer_than_max_age_still_get_their_retries(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    """A 401 pause outlasting DELIVERY_MAX_AGE: once the key works, a passing 503 is retried
    (it made every vote kept through the pause a dead letter at its first try)."""
    later = [0.0]
    brixo.set_key("rotated-by-brixo")
    worker = make_worker(max_age=60.0, clock=lambda: time() + later[0])
    ids = [record(outbox, f"kept-{n}") for n in range(3)]
    wait_until(lambda: worker.paused, timeout=5)
    checks = len([r for r in brixo.requests if r.id == KEY_CHECK_ID])
    wait_until(lambda: len([r for r in brixo.requests if r.id == KEY_CHECK_ID]) > checks)
    later[0] = 3600.0  # an hour on: far past DELIVERY_MAX_AGE
    brixo.fail_next(1, status=400)  # the next request is a key check: the key works again
    brixo.fail_next(2, status=503)  # and the first sends after it meet a busy Brixo
    brixo.set_key(BRIXO_KEY)
    for act_id in ids:
        wait_state(outbox, act_id, DELIVERED)
    assert [r.status for r in signals(brixo) if r.status == 503] == [503, 503]
    assert sorted(r.id for r in brixo.accepted) == [f"kept-{n}" for n in range(3)]


def test_a_refused_key_keeps_the_act_as_it_is_even_past_max_age() -> None:
    act = claimed(created_at=NOW - 2 * 86400, attempts=3)
    row = RetryPolicy().settle(act, Answer(Outcome.UNAUTHORIZED, 401), NOW)
    assert row["state"] == PENDING and row["attempts"] == 3


def test_sends_under_way_when_brixo_went_down_grow_the_hold_once(outbox: Outbox) -> None:
    """The unreachable hold is a backoff that grows while Brixo stays down, not one step per
    send that was already in flight when it went."""
    worker = DeliveryWorker(
        outbox, BrixoClient(BRIXO_KEY, "http://127.0.0.1:9"), 32, RetryPolicy(backoff_base=1.0)
    )
    for _ in range(32):
        worker._observe(Answer(Outcome.RETRY, None, "connection refused"), NOW)
    assert worker._hold_until - NOW <= 1.0


def test_backoff_grows_with_jitter_and_cap() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_cap=300.0)
    for attempts, full in [(1, 1), (2, 2), (3, 4), (6, 32), (20, 300)]:
        delays = {policy.backoff(attempts) for _ in range(50)}
        assert all(full / 2 <= d <= full for d in delays)
        assert len(delays) > 1  # jitter


def test_retries_reach_brixo_spread_by_their_jitter_not_in_step_with_the_poll(
    outbox: Outbox, brixo: FakeBrixo
) -> None:
    """20 sends failing together are retried each after its own backoff (half to all of 1 s):
    spread over that half second, none early, none much later, not in one burst at the next
    poll (1 s, as in the relay)."""
    policy = RetryPolicy(backoff_base=1.0, backoff_cap=300.0)
    worker = DeliveryWorker(outbox, BrixoClient(BRIXO_KEY, brixo.url), 32, policy)
    outbox.deliverer = worker
    worker.start()
    try:
        wait_until(lambda: worker.brixo_state != "unknown", timeout=5)
        brixo.fail_next(20, status=503)
        ids = [f"m{i}" for i in range(20)]
        for target in ids:
            record(outbox, target)
        brixo.wait_for_accepted(20, timeout=10)
    finally:
        worker.stop(timeout=2)
    waits = []
    for target in ids:
        first, retry = signals(brixo, target)
        assert (first.status, retry.status) == (503, 204)
        waits.append(retry.at - first.at)
    assert min(waits) >= 0.5 and max(waits) <= 1.0 + 0.3, sorted(waits)
    assert max(waits) - min(waits) > 0.2, sorted(waits)  # all together: within a few ms


def test_jitter_leaves_the_global_random_stream_alone() -> None:
    """In library mode the host app may seed `random` for its own use: retries don't draw
    from it."""
    random.seed(7)
    expected = [random.random() for _ in range(3)]
    random.seed(7)
    for attempts in range(1, 20):
        RetryPolicy().backoff(attempts)
    assert [random.random() for _ in range(3)] == expected


def test_forked_workers_draw_different_jitter() -> None:
    """gunicorn's workers are forks of one process: their retries must not fall in step."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its delays down the pipe, then out without pytest's teardown
        delays = [RetryPolicy().backoff(10) for _ in range(5)]
        os.write(write_end, json.dumps(delays).encode())
        os._exit(0)
    os.close(write_end)
    mine = [RetryPolicy().backoff(10) for _ in range(5)]
    with os.fdopen(read_end) as pipe:
        theirs = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert len(theirs) == 5 and theirs != mine


def test_relay_built_from_settings_delivers_and_reports_health(env: Env, brixo: FakeBrixo) -> None:
    relay = Relay(env.settings(DELIVERY_CONCURRENCY="2"))
    relay.start()
    try:
        ok, report = relay.health()
        assert ok and report["database"] == "ok"
        record(relay.outbox, "via-relay")
        brixo.wait_for_accepted(1, timeout=5)  # woken by the record, no poll wait
        wait_until(lambda: relay.outbox.counts(time())[DELIVERED] == 1)
        ok, report = relay.health()
        assert ok and report["brixo"] == "ok" and report["outbox"][DELIVERED] == 1
        assert BRIXO_KEY not in repr(relay)
        # SPEC: a paused relay tries again at least every 15 s (tests use shorter intervals).
        assert relay.worker is not None and relay.worker.probe_interval <= 15
    finally:
        relay.stop(timeout=2)
        relay.db.dispose()


def test_the_retry_windows_come_from_the_settings(env: Env) -> None:
    """DELIVERY_MAX_AGE and NOT_FOUND_GRACE are the relay's own delivery windows."""
    relay = Relay(env.settings(DELIVERY_MAX_AGE="2h", NOT_FOUND_GRACE="5m"))
    try:
        assert relay.worker is not None
        policy = relay.worker.policy
        assert (policy.max_age, policy.not_found_grace) == (7200, 300)
    finally:
        relay.db.dispose()


def test_relay_health_when_key_is_refused(env: Env, brixo: FakeBrixo) -> None:
    relay = Relay(env.settings(BRIXO_API_KEY="wrong-key-123"))
    relay.start()
    try:
        record(relay.outbox, "m1")
        assert relay.worker is not None
        wait_until(lambda: relay.worker.paused, timeout=5)
        ok, report = relay.health()
        assert ok  # votes are still taken
        assert report["brixo"] == "unauthorized" and report["delivery"] == "paused"
        assert report["outbox"][PENDING] == 1
        assert brixo.accepted == []
    finally:
        relay.stop(timeout=2)
        relay.db.dispose()


def test_an_idle_worker_claims_only_when_woken_or_polled(
    make_worker: WorkerFactory, outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a claim that found everything due, no empty claim until a wake-up or the poll."""
    worker = make_worker(start=False)
    now = [time()]
    worker.clock = lambda: now[0]
    worker.poll_interval = 60.0
    claims: list[int] = []
    real_claim = outbox.claim
    monkeypatch.setattr(outbox, "claim", lambda *a: claims.append(a[1]) or real_claim(*a))
    worker._claim_more()
    worker._claim_more()
    assert len(claims) == 1  # nothing was due: the loop's next turn writes nothing
    worker.wake()
    worker._collect(0)
    worker._claim_more()
    assert len(claims) == 2  # a recorded act wakes it
    worker._claim_more()
    assert len(claims) == 2
    now[0] += 60.0  # a poll interval later: retries may have come due
    worker._claim_more()
    assert len(claims) == 3


def test_an_act_recorded_while_the_worker_runs_is_sent_without_a_claim(
    make_worker: WorkerFactory, outbox: Outbox, brixo: FakeBrixo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded already leased to the worker and handed over in memory: no claim to write."""
    worker = make_worker(start=False)
    worker.poll_interval = 60.0
    claims: list[int] = []
    real_claim = outbox.claim
    monkeypatch.setattr(outbox, "claim", lambda *a: claims.append(a[1]) or real_claim(*a))
    worker.start()
    wait_until(lambda: claims, timeout=5)  # the claim at start, of acts left from before
    act_ids = [record(outbox, f"m{i}") for i in range(5)]
    for act_id in act_ids:
        wait_state(outbox, act_id, DELIVERED)
    assert len(claims) == 1
    assert sorted(r.id for r in signals(brixo)) == [f"m{i}" for i in range(5)]


def test_an_act_handed_to_a_worker_that_stopped_meanwhile_is_claimed_once_its_lease_lapses(
    make_worker: WorkerFactory, outbox: Outbox, brixo: FakeBrixo
) -> None:
    """The race of a shutdown between a vote's lease and its hand-over loses nothing."""
    stopped = make_worker(lease=0.5)
    lease = stopped.lease_new(time())
    assert lease is not None
    stopped.stop(timeout=2)
    taken: list[list[Claimed]] = []
    recorder = Outbox(outbox.db, SimpleNamespace(lease_new=lambda now: lease, take=taken.append))
    act_id = record(recorder, "m1")
    stopped.take(taken[0])  # no error, no send
    assert signals(brixo) == [] and entry(outbox, act_id).state == PENDING
    make_worker()  # the next process claims it once the lease has lapsed
    wait_state(outbox, act_id, DELIVERED)
    assert [r.id for r in signals(brixo)] == ["m1"]


def test_acts_recorded_while_sends_are_held_wait_for_a_claim(
    make_worker: WorkerFactory, outbox: Outbox, brixo: FakeBrixo
) -> None:
    """No hand-over while Brixo asked to wait: the act is recorded unleased and claimed later."""
    worker = make_worker()
    worker._hold_until = time() + 60.0
    act_id = record(outbox, "m1")
    assert worker.lease_new(time()) is None
    assert outbox.claim("someone-else", limit=10, lease=30, now=time()) != []
    assert signals(brixo) == [] and entry(outbox, act_id).state == PENDING


def test_sends_make_way_for_a_request_being_answered() -> None:
    """AcksFirst.wait() holds while a chat request is answered, and goes on once it is."""
    acks_first = AcksFirst(max_wait=30.0)
    waiting, done = threading.Event(), threading.Event()

    def send() -> None:
        waiting.set()
        acks_first.wait()
        done.set()

    acks_first.begin()
    threading.Thread(target=send, daemon=True).start()
    assert waiting.wait(5)
    assert not done.wait(0.2)  # held while the request is answered
    acks_first.end()
    assert done.wait(5)  # released as soon as it is


def test_a_send_waits_no_longer_than_max_wait() -> None:
    """Under a constant stream of requests delivery still moves: each wait is bounded."""
    acks_first = AcksFirst(max_wait=0.05)
    acks_first.begin()
    started = monotonic()
    acks_first.wait()
    waited = monotonic() - started
    acks_first.end()
    assert 0.04 <= waited < 5


def test_the_http_server_marks_slack_requests_as_being_answered() -> None:
    """A Slack request counts as being answered from before Bolt's listeners run until the
    server has sent the answer (it closes the body), so delivery keeps out of the ack's way."""

    from slack_bolt import App
    from slack_sdk import WebClient

    from bot.slack.server import RelayWSGI
    from tests.fakes import FakeSlackAPI
    from tests.fakes.slack_requests import sign

    acks_first = AcksFirst()
    seen: list[int] = []
    body = json.dumps(
        {"type": "event_callback", "team_id": "T1", "event": {"type": "app_mention"}}
    ).encode()
    environ = {
        "PATH_INFO": "/slack/events",
        "REQUEST_METHOD": "POST",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    for name, value in sign(body, "secret").items():
        key = name.upper().replace("-", "_")
        environ[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = value
    statuses: list[str] = []
    with FakeSlackAPI() as slack:
        app = App(
            signing_secret="secret",
            client=WebClient(token="xoxb-test", base_url=slack.url),
            token_verification_enabled=False,
            process_before_response=True,
        )
        app.event("app_mention")(lambda: seen.append(acks_first._answering))
        relay = SimpleNamespace(
            acks_first=acks_first, settings=SimpleNamespace(slack_signing_secret="secret")
        )
        wsgi = RelayWSGI(app, relay)  # type: ignore[arg-type]
        body_sent = wsgi(environ, lambda status, headers: statuses.append(status))
    assert statuses == ["200 OK"]
    assert seen == [1]  # answered as one request in flight
    assert b"".join(body_sent) == b"" and acks_first._answering == 1  # not sent yet
    body_sent.close()  # type: ignore[attr-defined]
    body_sent.close()  # type: ignore[attr-defined]
    assert acks_first._answering == 0  # counted down once


def test_sends_queued_past_their_lease_are_left_to_the_process_holding_them_now(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process frozen past its leases (a VM paused, heavy swapping): the sends still waiting
    their turn don't go when it wakes, since another process may have claimed and sent those
    acts meanwhile; only the send already under way may (the README's in-flight case)."""
    asleep = [0.0]
    real_monotonic = delivery.monotonic
    monkeypatch.setattr(delivery, "monotonic", lambda: real_monotonic() + asleep[0])
    brixo.set_latency(0.5)
    worker = make_worker(concurrency=1)  # one send at a time: the others wait their turn
    for n in range(3):
        record(outbox, f"queued-{n}")
    brixo.wait_for_requests(1)  # the first is under way
    asleep[0] = 10.0  # the process slept 10 s, past its 3 s leases...
    later = time() + 10.0
    other = outbox.claim("other-process", limit=10, lease=30.0, now=later)  # ...taken meanwhile
    assert len(other) == 3
    wait_until(lambda: worker._in_flight == 0, message="the waiting sends were never released")
    assert [r.id for r in brixo.requests if r.id.startswith("queued-")] == ["queued-0"]
    assert {c.id for c in outbox.claim("third", limit=10, lease=30.0, now=later)} == set()


def test_sends_queued_before_a_late_lease_renewal_are_not_trusted_after_it(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease renewal that came too late (the process was frozen past its leases) renews them
    again, yet a send that was waiting its turn since before it still doesn't go: another
    process may have claimed and sent that act in between."""
    asleep = [0.0]
    real_monotonic = delivery.monotonic
    monkeypatch.setattr(delivery, "monotonic", lambda: real_monotonic() + asleep[0])
    worker = make_worker(concurrency=1)  # one send at a time: the other waits its turn
    client = worker.sender
    under_way, answered = threading.Event(), threading.Event()

    class AnswersWhenTold:
        def send(self, signal: Any) -> Answer:
            if signal.target.id == "under-way":
                under_way.set()
                answered.wait(10)
            return client.send(signal)

        def probe(self) -> Answer:
            return client.probe()

    worker.sender = AnswersWhenTold()
    record(outbox, "under-way")
    record(outbox, "queued")
    assert under_way.wait(5), "the first send never started"
    asleep[0] = 10.0  # the process slept 10 s, past its 3 s leases...
    wait_until(
        lambda: worker._leases_doubtful_before > 0, message="no lease renewal after the sleep"
    )
    later = time() + 10.0
    assert len(outbox.claim("other-process", limit=10, lease=30.0, now=later)) == 2  # taken
    answered.set()  # the renewal done, the send under way gets its answer
    wait_until(lambda: worker._in_flight == 0, message="the waiting send was never released")
    assert [r.id for r in signals(brixo)] == ["under-way"]


def test_a_429_on_the_key_check_holds_every_send_too(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    """The key check at start is a request to Brixo like any other: its 429's Retry-After
    holds the signals recorded meanwhile."""
    brixo.fail_next(1, status=429, retry_after="1")
    worker = make_worker(start=False)
    worker.start()
    probe = brixo.wait_for_requests(1)[0]
    assert (probe.id, probe.status) == (KEY_CHECK_ID, 429)
    record(outbox, "m-held")
    accepted = brixo.wait_for_accepted(1)
    assert accepted[0].at - probe.at >= 0.9, "sent within the Retry-After of the key check"


def test_a_429_on_the_key_check_while_paused_keeps_the_pause(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    worker = make_worker()
    brixo.set_key("rotated-by-brixo")
    record(outbox, "m-paused")
    wait_until(lambda: worker.paused, timeout=5)
    brixo.fail_next(1, status=429, retry_after="1")
    limited = wait_until(
        lambda: [r for r in brixo.requests if r.id == KEY_CHECK_ID and r.status == 429],
        timeout=5,
    )
    assert worker.paused and worker.brixo_state == "unauthorized"
    brixo.set_key(BRIXO_KEY)
    accepted = brixo.wait_for_accepted(1, timeout=10)
    assert accepted[0].at - limited[0].at >= 0.9, "sent within the Retry-After of the key check"


def test_a_key_check_answered_404_ends_the_pause(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    """Brixo finding no such message for the key check (404) means the key got past auth, as a
    400 does: the pause ends and the kept signal is the next request, no other key check first."""
    worker = make_worker(key="a-key-brixo-refuses")
    wait_until(lambda: worker.paused, timeout=5)
    act_id = record(outbox, "kept")
    brixo.fail_next(1, status=404, detail=f"Message '{KEY_CHECK_ID}' not found")
    wait_until(lambda: any(r.status == 404 for r in brixo.requests), timeout=5)
    brixo.set_key("a-key-brixo-refuses")  # later key checks would pass too
    wait_state(outbox, act_id, DELIVERED)
    requests = brixo.requests
    (found,) = [n for n, r in enumerate(requests) if r.status == 404]
    assert requests[found].id == KEY_CHECK_ID
    assert requests[found + 1].id == "kept", [(r.id, r.status) for r in requests[found:]]


def test_an_answer_to_a_send_from_before_the_pause_keeps_the_pause_in_health(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    """A 204 for a send already under way when another got the 401 leaves Brixo reported as
    unauthorized, not ok, until a key check passes."""
    worker = make_worker()
    worker.probe_interval = 60.0  # no key check passes during the test
    brixo.stall_next(1, seconds=1.0)  # the first send in: answered (204) a second later
    brixo.fail_next(1, status=401)  # the second: the key is refused
    first, second = record(outbox, "m-before-1"), record(outbox, "m-before-2")
    wait_until(lambda: worker.paused, timeout=5)
    delivered = wait_until(
        lambda: [a for a in (first, second) if entry(outbox, a).state == DELIVERED], timeout=5
    )
    assert len(delivered) == 1
    assert worker.paused and worker.brixo_state == "unauthorized"


@pytest.mark.parametrize("started", ["before the 429", "after it (a restart)"])
def test_a_429_holds_the_sends_of_every_process_on_the_database(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory, started: str
) -> None:
    """Another process (its own Database and worker on the same file) honours the hold too."""
    other = Outbox(Database(outbox.db.url))
    second = DeliveryWorker(
        other,
        BrixoClient(BRIXO_KEY, brixo.url),
        2,
        RetryPolicy(backoff_base=0.01, backoff_cap=0.05),
        poll_interval=0.05,
        probe_interval=0.1,
        hold_check_interval=0.0,
    )
    other.deliverer = second
    try:
        if started == "before the 429":
            second.start()
            wait_until(lambda: second.brixo_state != "unknown", timeout=5)
        make_worker()
        brixo.fail_next(1, status=429, retry_after="2")
        record(outbox, "m-limited")  # the first process's act gets the 429
        wait_until(lambda: other.held_until() > time(), timeout=5)
        limited = [r for r in brixo.requests if r.status == 429]
        if started != "before the 429":
            second.start()
        record(other, "m-other")  # the second process's own act, due at once
        accepted = {r.id: r.at for r in brixo.wait_for_accepted(2, timeout=10)}
        assert accepted["m-other"] - limited[0].at >= 1.8, "sent within the other's Retry-After"
        # Nothing at all within it: a process started meanwhile doesn't check the key either.
        later = [r for r in brixo.requests if r.at > limited[0].at]
        assert all(r.at - limited[0].at >= 1.8 for r in later), "a request within Retry-After"
    finally:
        second.stop(timeout=2)
        other.db.dispose()


def test_a_database_outage_longer_than_the_lease_sends_nothing_twice(
    make_worker: WorkerFactory, outbox: Outbox, brixo: FakeBrixo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Brixo accepted the signals, then the database went away for longer than their leases:
    their outcomes wait in memory, and no claim may take (and send) them again before the
    outcomes are written. The worker's clock stands still but where the test moves it."""
    worker = make_worker(lease=3.0)
    clock = [time()]
    worker.clock = lambda: clock[0]
    down = threading.Event()
    renewals = [0]

    def unless_down(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            if name == "renew":
                renewals[0] += 1
            if down.is_set():
                raise OperationalError("database", {}, ConnectionError("server closed"))
            return method(*args)

        return call

    for name in ("settle", "renew", "claim", "release"):
        monkeypatch.setattr(outbox, name, unless_down(name, getattr(outbox, name)))
    down.set()  # recording still works (its own transaction); handed over, the acts are sent
    ids = [record(outbox, f"outage-{n}") for n in range(4)]
    brixo.wait_for_accepted(4)
    wait_until(lambda: worker._unsettled, message="outcomes were written despite the outage")
    clock[0] += 10.0  # the outage outlasts the leases
    tried = renewals[0]
    wait_until(lambda: renewals[0] > tried, message="no lease renewal tried")
    assert not any(leased for _, leased in outbox.states_of(ids, clock[0]).values())
    down.clear()
    for act_id in ids:
        wait_state(outbox, act_id, DELIVERED)
    wait_until(lambda: worker._in_flight == 0, message="sends still in flight")  # any resend
    assert sorted(r.id for r in brixo.accepted) == [f"outage-{n}" for n in range(4)]


def test_no_claim_while_outcomes_wait_to_be_written(
    make_worker: WorkerFactory, outbox: Outbox, brixo: FakeBrixo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outcomes the database wouldn't take wait in memory, and until they are written the
    worker claims nothing (it goes on renewing its leases): a claim could take and send again
    acts whose leases lapsed meanwhile."""
    worker = make_worker()
    down = threading.Event()
    renewals = [0]
    claims: list[bool] = []  # for each claim: were outcomes waiting to be written?
    real_settle, real_renew, real_claim = outbox.settle, outbox.renew, outbox.claim

    def settle(*args: Any) -> None:
        if down.is_set():
            raise OperationalError("database", {}, ConnectionError("server closed"))
        real_settle(*args)

    def renew(*args: Any) -> None:
        renewals[0] += 1
        real_renew(*args)

    def claim(*args: Any) -> list[Claimed]:
        claims.append(bool(worker._unsettled))
        return real_claim(*args)

    monkeypatch.setattr(outbox, "settle", settle)
    monkeypatch.setattr(outbox, "renew", renew)
    monkeypatch.setattr(outbox, "claim", claim)
    down.set()
    ids = [record(outbox, f"unwritten-{n}") for n in range(2)]
    brixo.wait_for_accepted(2)
    wait_until(lambda: worker._unsettled, message="outcomes were written despite the outage")
    tried = renewals[0]
    wait_until(lambda: renewals[0] >= tried + 5, message="the loop stopped going round")
    assert not any(claims), "claimed while outcomes waited to be written"
    down.clear()
    for act_id in ids:
        wait_state(outbox, act_id, DELIVERED)
    claimed_before = len(claims)
    wait_until(lambda: len(claims) > claimed_before, message="no claim once they were written")
    assert not any(claims)
    assert sorted(r.id for r in signals(brixo)) == ["unwritten-0", "unwritten-1"]


# -- the wall clock stepping back (NTP, a VM resumed) -------------------------------------


class SteppingClock:
    """The wall clock, stepped by `offset` seconds once `step()` is called."""

    def __init__(self, offset: float = -3600.0) -> None:
        self.offset, self.stepped = offset, False

    def __call__(self) -> float:
        return time() + (self.offset if self.stepped else 0.0)

    def step(self) -> None:
        self.stepped = True


def test_a_wall_clock_stepped_back_never_sends_an_act_twice(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    """The clock steps back an hour; then a send outlasts the lease, which the worker must go
    on renewing, or the act would be claimed and sent again."""
    clock = SteppingClock()
    worker = make_worker(lease=1.0, read_timeout=5.0, concurrency=2, clock=clock)
    record(outbox, "before", now=clock())
    brixo.wait_for_accepted(1, timeout=5)  # the loop has run: its next rounds are set
    clock.step()
    brixo.set_latency(2.5)  # the send outlasts the 1 s lease: renewals keep it
    lapsed = clock() + 1.2  # the lease taken when "slow" is recorded, and then some
    record(outbox, "slow", at=clock(), now=clock())
    wait_until(lambda: clock() > lapsed, timeout=3)  # unrenewed, its lease has lapsed
    record(outbox, "other", at=clock(), now=clock())  # wakes a claim
    wait_until(lambda: outbox.counts(clock())[DELIVERED] == 3, timeout=10)
    worker.stop(timeout=5)  # a second send of "slow" in flight would land now
    sent = sorted(r.id for r in brixo.requests if r.id != KEY_CHECK_ID)
    assert sent == ["before", "other", "slow"], sent


def test_a_paused_relay_probes_the_key_again_soon_after_the_clock_stepped_back(
    brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    clock = SteppingClock()
    worker = make_worker(key="a-key-brixo-refuses", concurrency=2, clock=clock)
    wait_until(lambda: worker.paused, timeout=5)
    clock.step()
    brixo.set_key("a-key-brixo-refuses")
    wait_until(lambda: not worker.paused, timeout=5, message="still paused")


def test_upkeep_forgets_expired_event_keys_now_and_then(
    outbox: Outbox, make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """About one upkeep round in a hundred forgets the seen-event keys that expired; here
    every round's draw falls in that hundredth."""
    from sqlalchemy import select

    from bot.core.db import seen
    from bot.core.outbox import mark_seen

    class Lucky(random.SystemRandom):
        def random(self) -> float:
            return 0.0

    monkeypatch.setattr("bot.core.delivery._RANDOM", Lucky())
    with outbox.db.write() as conn:
        assert mark_seen(outbox.db, conn, "expired-event", time() - 100, ttl=10)

    def keys() -> list[str]:
        with outbox.db.read() as conn:
            return list(conn.scalars(select(seen.c.key)).all())

    assert keys()
    make_worker(lease=0.3)  # an upkeep round every 0.1 s
    wait_until(lambda: not keys(), timeout=5, message="expired keys kept")


@pytest.mark.parametrize("ahead", [2.0, -60.0])
def test_a_hold_from_an_earlier_run_is_said_only_while_it_lasts(
    outbox: Outbox,
    brixo: FakeBrixo,
    make_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
    ahead: float,
) -> None:
    """A 429's hold left in the database: one line while it lasts (it may come from an earlier
    run, not only another process), and none once it is over."""
    caplog.set_level(logging.INFO, logger="bot.delivery")
    outbox.hold(time() + ahead)
    make_worker(start=False).start()  # not waiting for the key check: it may be held
    record(outbox, "m-after")
    brixo.wait_for_accepted(1, timeout=10)
    held = [r.getMessage() for r in caplog.records if "sends held" in r.getMessage()]
    if ahead < 0:
        assert held == []
    else:
        assert len(held) == 1, held
        assert held[0].endswith("in another process or an earlier run"), held


def test_a_paused_relay_checks_the_key_only_after_a_stored_retry_after(
    outbox: Outbox, brixo: FakeBrixo, make_worker: WorkerFactory
) -> None:
    """Paused after a 401, the key checks are requests to Brixo too: a 429's hold another
    process stored in the database holds them as it holds every send."""
    worker = make_worker(key="a-key-brixo-refuses")
    wait_until(lambda: worker.paused, timeout=5)
    worker.hold_check_interval = 0.0
    until = time() + 1.5
    outbox.hold(until)  # another process on this database got a 429 with Retry-After
    wait_until(lambda: worker._hold_until >= until, timeout=5, message="hold not learned")
    learned = time()
    later = wait_until(
        lambda: [r for r in brixo.requests if r.at > learned], timeout=5, message="no key check"
    )
    assert later[0].id == KEY_CHECK_ID
    assert later[0].at >= until, f"key checked {until - later[0].at:.2f} s within Retry-After"
    assert worker.paused


def test_a_send_in_flight_has_its_lease_renewed_well_before_it_lapses(
    make_worker: WorkerFactory, outbox: Outbox, brixo: FakeBrixo
) -> None:
    """Leases are renewed a third of a lease apart: one that ran out before its renewal would
    let another process claim the act and send it a second time. The worker's clock stands
    still but where the test moves it."""
    clock = [time()]
    worker = make_worker(lease=3.0, read_timeout=10.0, clock=lambda: clock[0])
    brixo.stall_next(1, seconds=2.0)  # the send is under way while the clock moves on
    start = clock[0]
    act_id = record(outbox, "slow", now=start)  # handed over, leased until start + 3
    assert worker._in_flight == 1
    clock[0] = start + 2.5  # two thirds of the lease and more have passed
    lapse = start + 3.5  # past the lease taken at the start
    wait_until(
        lambda: outbox.states_of([act_id], lapse)[act_id][1],
        timeout=1.5,
        message="the lease was not renewed before it lapsed",
    )
    assert outbox.claim("other-process", limit=10, lease=30, now=lapse) == []
    wait_state(outbox, act_id, DELIVERED)
    assert [r.id for r in signals(brixo)] == ["slow"]


def test_a_send_that_raises_is_retried_not_lost(
    make_worker: WorkerFactory, outbox: Outbox, brixo: FakeBrixo, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected error in the Brixo client is logged with its traceback and the act is
    retried; it isn't taken for Brixo being down (no hold, no "unreachable" in /healthz)."""
    caplog.set_level(logging.DEBUG, logger="bot.delivery")
    worker = make_worker()
    client = worker.sender
    calls = [0]

    class RaisesOnce:
        def send(self, signal: Any) -> Answer:
            calls[0] += 1
            if calls[0] == 1:
                raise RuntimeError("a bug in the client")
            return client.send(signal)

        def probe(self) -> Answer:
            return client.probe()

    worker.sender = RaisesOnce()
    act_id = record(outbox, "m1")
    assert wait_state(outbox, act_id, DELIVERED).attempts == 2
    assert [r.id for r in signals(brixo)] == ["m1"]
    failures = [r for r in caplog.records if r.exc_info and "act" in r.getMessage()]
    assert failures and "a bug in the client" in caplog.text
    assert "unreachable" not in caplog.text and worker.brixo_state == "ok"


def test_the_hold_while_brixo_gives_no_answer_grows_to_a_cap(outbox: Outbox) -> None:
    """An outage holds sends for a backoff that grows, but never past 15 s (README, Delivery):
    Brixo back up gets the votes within seconds, whatever RetryPolicy's own cap."""
    worker = DeliveryWorker(
        outbox, BrixoClient(BRIXO_KEY, "http://127.0.0.1:9"), 4, RetryPolicy(backoff_cap=300.0)
    )
    now, holds = NOW, list[float]()
    for _ in range(12):  # each send after the last hold ended gets no answer either
        worker._observe(Answer(Outcome.RETRY, None, "connection refused"), now)
        holds.append(worker._hold_until - now)
        now = worker._hold_until
    assert max(holds) <= 15.0  # the README's promise: "held … at most 15 s"
    assert holds[-1] >= 15.0 / 2  # it did grow (jitter takes up to half)


def test_brixo_answering_again_starts_the_next_outage_afresh(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Once Brixo answers again, the unreachable backoff starts over: the next outage's first
    hold is as short as the first outage's, and its first "unreachable" is a WARNING again."""
    caplog.set_level(logging.DEBUG, logger="bot.delivery")
    policy = RetryPolicy(backoff_base=1.0, backoff_cap=300.0)
    worker = DeliveryWorker(outbox, BrixoClient(BRIXO_KEY, "http://127.0.0.1:9"), 4, policy)
    down = Answer(Outcome.RETRY, None, "connection refused")
    now = NOW
    for _ in range(6):  # a long outage: the hold grew
        worker._observe(down, now)
        now = worker._hold_until
    worker._observe(Answer(Outcome.DELIVERED, 204), now)
    worker._observe(down, now)
    assert worker._hold_until - now <= policy.backoff_base  # backoff(1): at most the base
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith("Brixo unreachable")
    ]
    assert len(warnings) == 2, warnings


def test_a_paused_worker_checks_the_key_only_once_no_send_is_under_way(outbox: Outbox) -> None:
    """Paused after a 401, the key check waits until the sends under way have answered."""
    probes = [0]

    class RefusesTheKey:
        def send(self, signal: Any) -> Answer:
            raise AssertionError("a signal sent while paused")

        def probe(self) -> Answer:
            probes[0] += 1
            return Answer(Outcome.UNAUTHORIZED, 401, "Invalid API key")

    worker = DeliveryWorker(outbox, RefusesTheKey(), 4, clock=lambda: NOW)
    worker._observe(Answer(Outcome.UNAUTHORIZED, 401, "Invalid API key"), NOW - 60.0)
    assert worker.paused  # and its next key check is due
    worker._count_in_flight(1)  # a send from before the 401 has no answer yet
    worker._claim_more()
    assert probes == [0]
    worker._count_in_flight(-1)  # it answered
    worker._claim_more()
    assert probes == [1] and worker.paused
