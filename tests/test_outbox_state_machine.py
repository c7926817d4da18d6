"""The outbox as a state machine: any sequence of operations keeps its promises.

Hypothesis drives record / claim (by one of two owners) / settle delivered, failed or dead
(by the holder or by a stale owner) / release / lease expiry (a fake clock) / finish_comment /
take_dead / restart (a new Outbox on the same database), against a plain model. After every
step the database must equal the model, and:

- an act is never leased to two owners at once (a claim only returns free, due acts);
- a delivered act is never claimed again;
- an outcome settled by a stale owner changes nothing;
- the counts per state add up to the acts recorded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import delete, select

from bot.core.acts import Act, Target, clean_comment
from bot.core.db import Database, acts, seen, votes
from bot.core.outbox import (
    AWAITING_COMMENT,
    DEAD,
    DELIVERED,
    PENDING,
    SAME_VOTE_WINDOW,
    SEEN_TTL,
    STATES,
    Outbox,
)
from bot.core.settings import parse_database_url

OWNERS = ("owner-a", "owner-b")
USERS = ("U1", "U2", "U3")
TARGETS = ("m-1", "m-2", "m-3", "'; DROP TABLE brixo_acts; --")
EVENTS = ("Ev1", "Ev2", "Ev3", "Ev4")
COMMENT_WAIT = 30.0


@dataclass
class Row:
    """The model of one act."""

    user: str
    state: str
    next_at: float
    attempts: int = 0
    owner: str | None = None
    until: float | None = None
    comment: str | None = None
    target: str = ""


def machine_for(url: str) -> type[RuleBasedStateMachine]:
    """The state machine class over the database at `url` (emptied for every example)."""

    shared = Database(parse_database_url("DATABASE_URL", url))
    shared.migrate(0.0)

    class OutboxMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.db = shared
            with self.db.write() as conn:
                for table in (acts, votes, seen):
                    conn.execute(delete(table))
            self.outbox = Outbox(self.db)
            self.now = 1_000_000.0
            self.rows: dict[int, Row] = {}
            self.votes: dict[tuple[str, str], tuple[str, float]] = {}
            self.seen: dict[str, float] = {}

        def teardown(self) -> None:
            if self.db is not shared:
                self.db.dispose()

        @initialize()
        def start(self) -> None:
            pass

        # --- operations ---------------------------------------------------------------

        @rule(
            user=st.sampled_from(USERS),
            target_id=st.sampled_from(TARGETS),
            up=st.booleans(),
            wait=st.booleans(),
            event=st.none() | st.sampled_from(EVENTS),
        )
        def record(
            self, user: str, target_id: str, up: bool, wait: bool, event: str | None
        ) -> None:
            target = target_id
            value = "thumbs_up" if up else "thumbs_down"
            act = Act("slack", "T1", user, "reaction", Target("message", target), value,
                      self.now)  # type: ignore[arg-type]  # fmt: skip
            until = self.now + COMMENT_WAIT if wait else None
            got = self.outbox.record(act, self.now, comment_until=until, seen_key=event)
            # The model: the event key first (kept even when the vote repeats), then the vote.
            expected = True
            if event is not None:
                if self.seen.get(event, -1.0) >= self.now:
                    expected = False
                else:
                    self.seen[event] = self.now + SEEN_TTL
            if expected:
                last = self.votes.get((user, target))
                if last and last[0] == value and self.now - last[1] < SAME_VOTE_WINDOW:
                    expected = False
            assert got.created == expected, (got, expected)
            if expected:
                assert got.act_id is not None and got.act_id not in self.rows
                self.votes[(user, target)] = (value, self.now)
                # The person's vote on the target still waiting for its comment goes now.
                for row in self.rows.values():
                    if (row.user, row.target, row.state) == (user, target, AWAITING_COMMENT):
                        row.state, row.next_at = PENDING, self.now
                self.rows[got.act_id] = Row(
                    user, AWAITING_COMMENT if wait else PENDING, until or self.now, target=target
                )

        @rule(owner=st.sampled_from(OWNERS), limit=st.integers(1, 4), lease=st.integers(1, 20))
        def claim(self, owner: str, limit: int, lease: int) -> None:
            eligible = {
                i: r
                for i, r in self.rows.items()
                if r.state in (PENDING, AWAITING_COMMENT)
                and r.next_at <= self.now
                and (r.until is None or r.until < self.now)
            }
            got = self.outbox.claim(owner, limit, float(lease), self.now)
            ids = [c.id for c in got]
            assert len(ids) == len(set(ids))
            for i in ids:
                row = self.rows[i]
                assert row.state != DELIVERED, f"delivered act {i} claimed again"
                assert row.until is None or row.until < self.now, (
                    f"act {i} leased to {owner} while {row.owner} holds it until {row.until}"
                )
            assert set(ids) <= set(eligible)
            assert len(ids) == min(limit, len(eligible))
            if ids and len(ids) < len(eligible):  # the most overdue first
                left = [r.next_at for i, r in eligible.items() if i not in ids]
                assert max(self.rows[i].next_at for i in ids) <= min(left)
            for c in got:
                row = self.rows[c.id]
                assert (c.attempts, c.target.kind) == (row.attempts, "message")
                row.state, row.owner, row.until = PENDING, owner, self.now + lease

        @precondition(lambda self: bool(self.rows))
        @rule(
            data=st.data(),
            owner=st.sampled_from(OWNERS),
            outcome=st.sampled_from((DELIVERED, PENDING, DEAD)),
            delay=st.integers(0, 10),
        )
        def settle(self, data: st.DataObject, owner: str, outcome: str, delay: int) -> None:
            act_id = data.draw(st.sampled_from(sorted(self.rows)))
            row = self.rows[act_id]
            attempts = row.attempts + 1
            values: dict[str, Any] = {
                "act_id": act_id,
                "state": outcome,
                "attempts": attempts,
                "next_attempt_at": self.now + delay,
                "not_found_since": None,
                "first_tried_at": self.now,
                "last_status": {DELIVERED: 204, PENDING: 503, DEAD: 400}[outcome],
                "last_error": None if outcome == DELIVERED else "HTTP 503",
                "finished_at": None if outcome == PENDING else self.now,
                "comment": row.comment,
                "comment_cut": False,
            }
            self.outbox.settle(owner, [values])
            if row.owner == owner:  # otherwise a stale owner: nothing may change
                row.state, row.attempts, row.next_at = outcome, attempts, self.now + delay
                row.owner = row.until = None

        @precondition(lambda self: bool(self.rows))
        @rule(data=st.data(), owner=st.sampled_from(OWNERS), later=st.none() | st.integers(0, 9))
        def release(self, data: st.DataObject, owner: str, later: int | None) -> None:
            ids = data.draw(st.lists(st.sampled_from(sorted(self.rows)), max_size=3, unique=True))
            not_before = None if later is None else self.now + later
            self.outbox.release(owner, ids, not_before)
            for i in ids:
                row = self.rows[i]
                if row.owner == owner:
                    row.owner = row.until = None
                    if not_before is not None:
                        row.next_at = not_before

        @rule(owner=st.sampled_from(OWNERS), lease=st.integers(1, 20))
        def renew(self, owner: str, lease: int) -> None:
            self.outbox.renew(owner, float(lease), self.now)
            for row in self.rows.values():
                if row.owner == owner:
                    row.until = self.now + lease

        @rule(seconds=st.sampled_from((0.5, 1.0, 5.0, 12.0, 31.0, SAME_VOTE_WINDOW)))
        def advance(self, seconds: float) -> None:
            """Time passes: leases lapse, comment waits end, backoffs come due."""
            self.now += seconds

        @precondition(lambda self: bool(self.rows))
        @rule(data=st.data(), right_user=st.booleans(), comment=st.none() | st.text(max_size=20))
        def finish_comment(
            self, data: st.DataObject, right_user: bool, comment: str | None
        ) -> None:
            act_id = data.draw(st.sampled_from(sorted(self.rows)))
            row = self.rows[act_id]
            user = row.user if right_user else "U-intruder"
            done = self.outbox.finish_comment(act_id, "T1", user, comment, self.now)
            expected = right_user and row.state == AWAITING_COMMENT
            assert done == expected
            if expected:
                row.state, row.next_at, row.comment = PENDING, self.now, clean_comment(comment)

        @rule(data=st.data(), everything=st.booleans())
        def retry_dead(self, data: st.DataObject, everything: bool) -> None:
            ids = (
                []
                if everything or not self.rows
                else data.draw(
                    st.lists(st.sampled_from(sorted(self.rows)), max_size=2, unique=True)
                )
            )
            taken = self.outbox.take_dead("cli", 15.0, self.now, ids)  # as `outbox retry`
            self.outbox.release("cli", [a.id for a in taken])  # and as if its send was stopped
            count = len(taken)
            chosen = [i for i in (ids or self.rows) if self.rows[i].state == DEAD]
            assert count == len(chosen)
            for i in chosen:
                row = self.rows[i]
                row.state, row.next_at, row.attempts = PENDING, self.now, 0

        @rule()
        def restart(self) -> None:
            """The process dies and another opens the same database: nothing is forgotten."""
            if self.db is not shared:
                self.db.dispose()
            self.db = Database(parse_database_url("DATABASE_URL", url))
            self.db.migrate(self.now)
            self.outbox = Outbox(self.db)

        # --- invariants ---------------------------------------------------------------

        @invariant()
        def database_equals_model(self) -> None:
            with self.db.read() as conn:
                found = {
                    r.id: r
                    for r in conn.execute(
                        select(
                            acts.c.id,
                            acts.c.state,
                            acts.c.next_attempt_at,
                            acts.c.attempts,
                            acts.c.lease_owner,
                            acts.c.lease_until,
                            acts.c.comment,
                        )
                    )
                }
            assert set(found) == set(self.rows)
            for i, row in self.rows.items():
                db = found[i]
                assert (db.state, db.attempts, db.lease_owner) == (
                    row.state,
                    row.attempts,
                    row.owner,
                ), i
                assert db.next_attempt_at == pytest.approx(row.next_at), i
                assert (db.lease_until is None) == (row.until is None), i
                if row.until is not None:
                    assert db.lease_until == pytest.approx(row.until), i
                assert db.comment == row.comment, i
                # A finished act holds no lease.
                if row.state in (DELIVERED, DEAD):
                    assert db.lease_owner is None

        @invariant()
        def counts_add_up(self) -> None:
            counts = self.outbox.counts(self.now)
            assert sum(counts[s] for s in STATES) == len(self.rows)
            for state in STATES:
                assert counts[state] == sum(r.state == state for r in self.rows.values())

    return OutboxMachine


# Random on a laptop (each run explores new paths); the same examples in CI, so that whether
# a commit lands never depends on the draw.
SETTINGS = settings(
    derandomize=os.environ.get("CI") == "true",
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def test_outbox_state_machine_sqlite(tmp_path: Path) -> None:
    run_state_machine_as_test(machine_for(f"sqlite:///{tmp_path}/relay.db"), settings=SETTINGS)


def test_outbox_state_machine_postgresql(postgres_url: str) -> None:
    run_state_machine_as_test(
        machine_for(postgres_url), settings=settings(SETTINGS, max_examples=25)
    )
