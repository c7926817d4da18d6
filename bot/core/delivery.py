"""The delivery worker: claims due acts, sends them to Brixo, records each outcome."""

from __future__ import annotations

import heapq
import logging
import queue
import random
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from time import monotonic, time
from typing import Any, Protocol

from bot.core.acts import Signal
from bot.core.brixo import Answer, Outcome
from bot.core.forks import at_fork
from bot.core.outbox import DEAD, DELIVERED, PENDING, Claimed, Outbox, forget_expired
from bot.core.settings import Settings

log = logging.getLogger("bot.delivery")
# Jitter and upkeep draws: fork-safe (no state a gunicorn worker would share with its
# siblings) and leaving the global `random` stream, which a host app may seed, untouched.
_RANDOM = random.SystemRandom()

# A comment is cut to this many characters (or to half, if shorter) for the one retry after
# a 413.
CUT_COMMENT_CHARS = 500
# The longest that sends are held after Brixo gave no answer (it was down, refused, timed out).
UNREACHABLE_HOLD_CAP = 15.0
# A retry is claimed when it falls due, not at the next poll, so its jitter survives (a poll a
# second would send the retries of that second together); claims for retries come at most
# this often, so a burst of failures costs a few claims a second. The retry times of at most
# RETRY_TIMES_KEPT acts are kept; the others are claimed at the poll after they fall due.
RETRY_CLAIM_GAP = 0.05
RETRY_TIMES_KEPT = 10_000
# Outcomes that come within this many seconds of each other are written together.
BATCH_WINDOW = 0.01


class Sender(Protocol):
    """What the worker needs of a Brixo client."""

    def send(self, signal: Signal) -> Answer: ...

    def probe(self) -> Answer: ...


@dataclass(frozen=True)
class RetryPolicy:
    """SPEC.md's retry rules, as numbers."""

    max_age: float = 86400.0
    not_found_grace: float = 600.0
    backoff_base: float = 1.0
    backoff_cap: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy DELIVERY_MAX_AGE and NOT_FOUND_GRACE set."""
        return cls(settings.delivery_max_age, settings.not_found_grace)

    def backoff(self, attempts: int) -> float:
        """Exponential backoff with jitter: half to all of base·2^(attempts-1), capped."""
        delay = min(self.backoff_cap, self.backoff_base * 2 ** max(0, attempts - 1))
        return delay * _RANDOM.uniform(0.5, 1.0)

    def settle(self, act: Claimed, answer: Answer, now: float) -> dict[str, Any]:
        """The act's columns after this answer (see Outbox.settle)."""
        attempts = act.attempts + 1
        row: dict[str, Any] = {
            "act_id": act.id,
            "state": PENDING,
            "attempts": attempts,
            "next_attempt_at": now,
            "not_found_since": act.not_found_since,
            "first_tried_at": act.first_tried_at or now,
            "last_status": answer.status,
            "last_error": answer.describe(),
            "finished_at": None,
            "comment_cut": act.comment_cut,
        }
        outcome = answer.outcome
        if outcome is Outcome.DELIVERED:
            row.update(state=DELIVERED, last_error=None, finished_at=now)
        elif outcome is Outcome.TOO_LARGE and act.comment and not act.comment_cut:
            row["comment_cut"] = True  # the comment stays whole: `outbox retry` sends it so
        elif outcome in (Outcome.TOO_LARGE, Outcome.REJECTED):
            row.update(state=DEAD, finished_at=now)
        elif outcome is Outcome.UNAUTHORIZED:  # kept as it is until the key works
            row.update(attempts=act.attempts, first_tried_at=act.first_tried_at)
        elif outcome is Outcome.NOT_FOUND:
            since = act.not_found_since or now
            row["not_found_since"] = since
            grace = self.not_found_grace
            if now - since >= grace:
                row.update(
                    state=DEAD,
                    finished_at=now,
                    last_error=f"not found for {int(now - since)} s: {answer.describe()}",
                )
            else:  # the last try comes when the grace ends, not a backoff after it
                row["next_attempt_at"] = now + min(self.backoff(attempts), since + grace - now)
        elif now - (tried := row["first_tried_at"]) >= self.max_age:
            row.update(
                state=DEAD,
                finished_at=now,
                last_error=f"gave up after {int(now - tried)} s: {answer.describe()}",
            )
        else:  # likewise when DELIVERY_MAX_AGE ends (unless Brixo asked to wait longer)
            wait = min(self.backoff(attempts), tried + self.max_age - now)
            row["next_attempt_at"] = now + max(wait, answer.retry_after or 0)
        return row


def cut_comment(comment: str) -> str:
    """A comment cut down after a 413: to CUT_COMMENT_CHARS, and at least by half; trimmed
    as every comment is."""
    return comment[: min(CUT_COMMENT_CHARS, len(comment) // 2)].rstrip()


def not_yet(now: float, at: float, interval: float) -> bool:
    """True while `now` is before `at`, which was set at most `interval` ahead: after the wall
    clock stepped back, `at` lies further ahead than that and its time has come (a lease
    renewal waiting for an hour would let the lease lapse and the act be sent twice)."""
    return now < at <= now + interval


# The share of a lease after which a send waiting its turn no longer trusts it (see _send).
LEASE_TRUST = 0.8


def signal_of(act: Claimed) -> Signal:
    """The signal an act becomes: its comment cut down after a 413."""
    comment = cut_comment(act.comment) if act.comment and act.comment_cut else act.comment
    return Signal(act.target, act.value, act.occurred_at, comment)


class AcksFirst:
    """Counts chat requests being answered, so that delivery waits for a quiet spell.

    Delivery and acks share one process and its GIL: a send, claim or outcome write that runs
    while an ack is being computed slows the ack. Each waits until no request is being
    answered, at most `max_wait`: a vote is already safe on disk, Slack's ack is not. Under
    saturation the 32 senders still make at least 160 attempts a second (README.md,
    Performance: at full speed intake rose by about half against a 5 ms wait).
    """

    def __init__(self, max_wait: float = 0.2) -> None:
        self.max_wait = max_wait
        self._renew()
        at_fork(in_child=self._renew)

    def _renew(self) -> None:
        """None answered yet; in a forked child, the parent's requests aren't its own."""
        self._answering = 0
        self._quiet = threading.Condition()

    def begin(self) -> None:
        """A chat request is being answered (call `end` once its answer is sent)."""
        with self._quiet:
            self._answering += 1

    def end(self) -> None:
        """A request's answer was sent."""
        with self._quiet:
            self._answering -= 1
            if not self._answering:
                self._quiet.notify_all()

    def wait(self, timeout: float | None = None) -> None:
        """Until no request is being answered, or `timeout` (default `max_wait`) has passed."""
        with self._quiet:
            limit = self.max_wait if timeout is None else timeout
            self._quiet.wait_for(lambda: not self._answering, limit)


class DeliveryWorker:
    """Delivers the outbox with bounded concurrency, in a thread of the serving process.

    One loop thread claims and records; a pool of `concurrency` threads sends. A 429's
    Retry-After holds every send; so does no answer at all, for a backoff that grows while Brixo
    stays unreachable (at most UNREACHABLE_HOLD_CAP), so an outage costs a few requests a
    second instead of every act's retries. A 401 pauses delivery until a probe gets past auth.
    """

    def __init__(
        self,
        outbox: Outbox,
        sender: Sender,
        concurrency: int = 32,
        policy: RetryPolicy | None = None,
        lease: float = 15.0,
        poll_interval: float = 1.0,
        probe_interval: float = 10.0,
        clock: Callable[[], float] = time,
        acks_first: AcksFirst | None = None,
        hold_check_interval: float = 0.5,
    ) -> None:
        self.outbox = outbox
        self.sender = sender
        self.concurrency = concurrency
        self.policy = policy or RetryPolicy()
        self.lease = lease
        self.poll_interval = poll_interval
        self.probe_interval = probe_interval
        self.hold_check_interval = hold_check_interval
        self._next_hold_check = 0.0
        self.clock = clock
        self.owner = f"{uuid.uuid4().hex[:12]}"
        self._answered: bool | None = None  # did Brixo answer the last request (None: none yet)
        self._results: queue.Queue[tuple[Claimed, Answer | None]] = queue.Queue()
        self._stopping = threading.Event()
        self._hold_until = 0.0
        self._unanswered = 0  # holds in a row for no answer from Brixo
        self._paused = False
        self._next_probe = 0.0
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._stop_timeout = 25.0
        self._unsettled: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._next_upkeep = 0.0
        # When the leases in flight were last renewed (monotonic), and before when a renewal
        # came too late for the acts leased then to be surely still this process's.
        self._leases_renewed = monotonic()
        self._leases_doubtful_before = 0.0
        self.acks_first = acks_first or AcksFirst()
        # When to claim next: at once after a wake-up or a full claim, else a poll interval on,
        # or when a retry this worker scheduled falls due (a heap of their times).
        self._claim_at = 0.0
        self._claimed_at = 0.0
        self._retry_times: list[float] = []

    @property
    def paused(self) -> bool:
        """True while Brixo refuses the key."""
        return self._paused

    @property
    def brixo_state(self) -> str:
        """What /healthz says of Brixo: unknown (nothing asked yet), ok, unauthorized (delivery
        paused) or unreachable (the last request got no answer)."""
        if self._answered is False:
            return "unreachable"
        if self._paused:
            return "unauthorized"
        return "unknown" if self._answered is None else "ok"

    def held_for(self) -> float:
        """Seconds before sends may go again (a 429's Retry-After, or Brixo unreachable)."""
        return max(0.0, self._hold_until - self.clock())

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return self._thread is not None

    def wake(self) -> None:
        """Look for due acts now (a new act was recorded)."""
        self._results.put_nowait((None, None))  # type: ignore[arg-type]

    def lease_new(self, now: float) -> tuple[str, float] | None:
        """(owner, lease end) for an act being recorded, when it can be sent at once."""
        if (
            self._pool is None
            or self._stopping.is_set()
            or self._paused
            or self._hold_until > now
            or self._in_flight >= 2 * self.concurrency
        ):
            return None
        return self.owner, now + self.lease

    def take(self, acts: Sequence[Claimed]) -> None:
        """Send acts recorded under a lease from `lease_new` (no claim needed), each once the
        one before has its answer: a person's earlier vote reaches Brixo before their new one."""
        pool = self._pool
        if pool is None:  # stopped meanwhile: the leases lapse and the next claim takes them
            return
        self._count_in_flight(len(acts))
        try:
            pool.submit(self._send_in_order, acts, monotonic())
        except RuntimeError:  # the pool shut down meanwhile: likewise
            self._count_in_flight(-len(acts))

    def _send_in_order(self, acts: Sequence[Claimed], leased: float) -> None:
        for act in acts:
            self._send(act, leased)

    def _count_in_flight(self, change: int) -> None:
        with self._lock:
            self._in_flight += change

    def start(self) -> None:
        """Start delivering in the background."""
        if self._thread:
            return
        self._stopping.clear()
        self._leases_renewed = monotonic()  # none held yet: built long before, it wasn't frozen
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="brixo-send")
        self._thread = threading.Thread(target=self._run, name="brixo-delivery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 25.0) -> None:
        """Stop claiming; let requests in flight finish within `timeout`; leave the rest."""
        if not self._thread:
            return
        self._stop_timeout = timeout
        self._stopping.set()
        self.wake()
        self._thread.join(timeout + 5)
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._thread = None
        self._pool = None

    def _run(self) -> None:
        self._learn_hold()  # a hold stored before this start (a 429) holds the key check too
        if self._hold_until <= self.clock():
            answer = self._probe()
            if answer.status is None:
                log.warning(
                    "Brixo unreachable at start (%s): votes are kept, and sent once it answers",
                    answer.describe(),
                )
        while not self._stopping.is_set():
            try:
                self._learn_hold()
                self._upkeep()
                self._claim_more()
                results = self._collect(self._wait_time())
                self.acks_first.wait()
                self._record(results)
            except Exception:  # a database hiccup must not end delivery
                log.exception("delivery loop error; retrying")
                self._stopping.wait(self.poll_interval)
        self._finish_in_flight(deadline=monotonic() + self._stop_timeout)

    def _upkeep(self) -> None:
        """Every few seconds: renew the leases in flight and write the outcomes not written yet
        (each round until they are); now and then, forget old events."""
        now = self.clock()
        if not_yet(now, self._next_upkeep, self.lease / 3):
            return
        started = monotonic()
        if self._in_flight or self._unsettled:
            if started - self._leases_renewed > LEASE_TRUST * self.lease:  # frozen, or no database
                self._leases_doubtful_before = started  # another process may have those acts
            self.outbox.renew(self.owner, self.lease, now)  # raising: tried again next round
        self._leases_renewed = started
        self._flush()
        self._next_upkeep = now if self._unsettled else now + self.lease / 3
        if _RANDOM.random() < 0.01:
            forget_expired(self.outbox.db, now)

    def _wait_time(self) -> float:
        now = self.clock()
        if self._hold_until > now:
            return min(self._hold_until - now, self.poll_interval)
        if self._paused:
            return min(max(0.0, self._next_probe - now), self.poll_interval)
        if self._retry_times:
            retry_at = max(self._retry_times[0], self._claimed_at + RETRY_CLAIM_GAP)
            if retry_at > now:  # (one due now waits for room: an answer wakes the loop)
                return min(retry_at - now, self.poll_interval)
        return self.poll_interval

    def _retry_at(self, when: float) -> None:
        """Claim again at `when`: a retry falls due then (see RETRY_CLAIM_GAP)."""
        if len(self._retry_times) < RETRY_TIMES_KEPT:
            heapq.heappush(self._retry_times, when)

    def _retry_due(self, now: float) -> bool:
        """True when a retry this worker scheduled is due, and the last claim is
        RETRY_CLAIM_GAP ago."""
        return (
            bool(self._retry_times)
            and self._retry_times[0] <= now
            and not not_yet(now, self._claimed_at + RETRY_CLAIM_GAP, RETRY_CLAIM_GAP)
        )

    def _claim_more(self) -> None:
        now = self.clock()
        if self._hold_until > now:
            return
        if self._paused:
            # (a hold that set the next probe later has ended by now: see above)
            if not not_yet(now, self._next_probe, self.probe_interval) and self._in_flight == 0:
                self._probe()
            if self._paused:
                return
        room = 2 * self.concurrency - self._in_flight
        if room <= 0 or (
            not_yet(now, self._claim_at, self.poll_interval) and not self._retry_due(now)
        ):
            return
        if self._unsettled:  # after a database outage: their leases may have lapsed, and a
            return  # claim would take (and send) them again before their outcome is written
        self.acks_first.wait()
        leased = monotonic()
        claimed = self.outbox.claim(self.owner, room, self.lease, now)
        self._claim_at = now if len(claimed) == room else now + self.poll_interval
        self._claimed_at = now
        while self._retry_times and self._retry_times[0] <= now:
            heapq.heappop(self._retry_times)
        self._count_in_flight(len(claimed))
        for act in claimed:
            assert self._pool is not None
            self._pool.submit(self._send, act, leased)

    def _send(self, act: Claimed, leased: float) -> None:
        """Send one act leased at `leased` (monotonic), unless it is to wait (it is released)."""
        self._learn_hold()
        if (
            self._stopping.is_set()
            or self._paused
            or self._hold_until > self.clock()
            or self._lease_doubtful(leased)
        ):
            self._results.put((act, None))
            return
        self.acks_first.wait()
        try:
            answer = self.sender.send(signal_of(act))
        except Exception as error:  # a bug, not Brixo's answer: the act is retried, not lost
            log.exception("sending act %s failed in the relay; it will be retried", act.id)
            self._results.put((act, Answer(Outcome.RETRY, None, type(error).__name__)))
            return
        self._observe(answer, self.clock())  # at once, so queued sends see a hold or a pause
        self._results.put((act, answer))

    def _lease_doubtful(self, leased: float) -> bool:
        """True when the lease of an act leased at `leased` may have lapsed, so that another
        process may have claimed and sent it: its last renewal lies too far back (this process
        was frozen, say), or came too late. Released, the act is claimed again if still due."""
        if leased < self._leases_doubtful_before:
            return True
        return monotonic() - max(leased, self._leases_renewed) > LEASE_TRUST * self.lease

    def _collect(self, timeout: float) -> list[tuple[Claimed, Answer | None]]:
        results: list[tuple[Claimed, Answer | None]] = []
        try:
            results.append(self._results.get(timeout=max(0.0, timeout)))
            # Gather what else comes within a few ms: one claim and one settle cover them all.
            until = monotonic() + BATCH_WINDOW
            while (left := until - monotonic()) > 0:
                results.append(self._results.get(timeout=left))
        except queue.Empty:
            pass
        if any(act is None for act, _ in results):
            self._claim_at = 0.0  # woken: a new act was recorded
        return [(act, answer) for act, answer in results if act is not None]

    def _record(self, results: list[tuple[Claimed, Answer | None]]) -> None:
        if not results:
            return
        now = self.clock()
        settled: list[dict[str, Any]] = []
        released: list[int] = []
        self._count_in_flight(-len(results))
        for act, answer in results:
            if answer is None:
                released.append(act.id)
                continue
            row = self.policy.settle(act, answer, now)
            settled.append(row)
            if row["state"] == PENDING and row["next_attempt_at"] > now:
                self._retry_at(row["next_attempt_at"])
            outcome = row["state"] if row["state"] in (DELIVERED, DEAD) else answer.outcome.value
            log.log(
                logging.WARNING if outcome == DEAD else logging.INFO,  # never sent: kept, listed
                "delivery act=%s workspace=%s target=%s:%s outcome=%s attempt=%s status=%s%s",
                act.id,
                act.workspace,
                act.target.kind,
                act.target.id,
                outcome,
                row["attempts"],
                answer.status or "-",
                f" error={row['last_error']!r}" if row["last_error"] else "",
            )
        self._unsettled.extend(settled)
        self._flush()
        self.outbox.release(self.owner, released, max(self._hold_until, now) if released else None)

    def _flush(self) -> None:
        """Write the outcomes not yet written; on a database error keep them (and their leases)."""
        if not self._unsettled:
            return
        try:
            self.outbox.settle(self.owner, self._unsettled)
        except Exception:
            log.exception("can't record %d delivery outcomes yet; will retry", len(self._unsettled))
            return
        self._unsettled = []

    def _observe(self, answer: Answer, now: float) -> None:
        with self._lock:
            self._observe_locked(answer, now)
        if answer.retry_after:  # every process delivering from this database holds too
            try:
                self.outbox.hold(now + answer.retry_after)
            except Exception:
                log.exception("can't tell other processes to hold their sends")

    def _learn_hold(self) -> None:
        """At most every `hold_check_interval`: a hold another process was asked for (429)."""
        now = self.clock()
        with self._lock:
            if not_yet(now, self._next_hold_check, self.hold_check_interval):
                return
            self._next_hold_check = now + self.hold_check_interval
        try:
            until = self.outbox.held_until()
        except Exception:
            log.exception("can't read the sends' hold; going on")
            return
        with self._lock:
            if until > max(self._hold_until, now):
                log.info(
                    "sends held %.1f s: Brixo asked for it (429) in another process or an "
                    "earlier run",
                    until - now,
                )
                self._hold_until = until

    def _observe_locked(self, answer: Answer, now: float) -> None:
        if answer.outcome is Outcome.UNAUTHORIZED:
            if not self._paused:
                log.warning("Brixo refused the API key (401): delivery paused, votes kept")
            self._paused = True
            self._next_probe = now + self.probe_interval
            self._answered = True
            return
        if answer.status is not None:
            if self._unanswered:
                log.info("Brixo answers again: delivery resumed")
            self._unanswered = 0
            self._answered = True  # paused, it isn't the key's (a send from before the 401)
        elif now >= self._hold_until:  # the sends already under way when it went down don't count
            self._unanswered += 1
            hold = min(UNREACHABLE_HOLD_CAP, self.policy.backoff(self._unanswered))
            self._hold_until = now + hold
            self._answered = False
            log_level = logging.WARNING if self._unanswered == 1 else logging.DEBUG
            log.log(log_level, "Brixo unreachable (%s): sends held %.1f s", answer.describe(), hold)
        if answer.retry_after:
            self._hold_until = max(self._hold_until, now + answer.retry_after)

    def _probe(self) -> Answer:
        """Ask Brixo whether the key works, without sending a signal; returns its answer.

        A busy or failing Brixo (408, 429, 5xx) says nothing of the key: a pause goes on until
        a later probe gets past auth, and a Retry-After holds every send as after a signal.
        """
        answer = self.sender.probe()
        now = self.clock()
        if answer.outcome is Outcome.UNAUTHORIZED:
            self._observe(answer, now)
        elif answer.outcome is Outcome.RETRY and answer.status is not None:
            if answer.retry_after:
                self._observe(answer, now)
            self._next_probe = max(now + self.probe_interval, self._hold_until)
            self._answered = True  # a busy Brixo: says nothing of the key
        elif answer.status is not None:
            if self._paused:
                log.info("Brixo accepts the API key again: delivery resumed")
            self._paused = False
            self._answered = True
        else:
            self._answered = False
            self._next_probe = now + self.probe_interval
        return answer

    def _finish_in_flight(self, deadline: float) -> None:
        while self._in_flight > 0 and monotonic() < deadline:
            self._record(self._collect(min(0.5, max(0.0, deadline - monotonic()))))
        self._flush()
