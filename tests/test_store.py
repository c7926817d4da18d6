"""The outbox, votes, seen events and mappings, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import Connection, delete, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError

from bot.core.acts import Act, Target
from bot.core.brixo import Answer, Outcome
from bot.core.db import (
    SCHEMA_VERSION,
    Database,
    DatabaseUnavailable,
    DriverStatement,
    acts,
    schema_version,
    seen,
    votes,
)
from bot.core.delivery import RetryPolicy
from bot.core.mapping import METADATA, POSTED, Mappings, Templates
from bot.core.outbox import (
    AWAITING_COMMENT,
    DEAD,
    DELIVERED,
    PENDING,
    SAME_VOTE_WINDOW,
    Claimed,
    Outbox,
    forget_expired,
    mark_seen,
)
from bot.slack.bot_users import BotUsers
from tests.conftest import make_version_1, make_version_2
from tests.pg import database_params

pytestmark = pytest.mark.parametrize("database_url", database_params(), indirect=True)

T0 = 1_770_000_000.0


def act(
    target_id: str = "msg-1",
    value: str = "thumbs_up",
    user: str = "U1",
    workspace: str = "T1",
    at: float = T0,
    kind: str = "message",
    comment: str | None = None,
) -> Act:
    return Act(
        platform="slack",
        workspace=workspace,
        user_id=user,
        source="button",
        target=Target(kind, target_id),  # type: ignore[arg-type]
        value=value,  # type: ignore[arg-type]
        occurred_at=at,
        comment=comment,
        channel="C1",
        ts="1.000100",
    )


def settled(claimed_id: int, state: str, now: float, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "act_id": claimed_id,
        "state": state,
        "attempts": 1,
        "next_attempt_at": now,
        "not_found_since": None,
        "first_tried_at": now,
        "last_status": 204 if state == DELIVERED else 400,
        "last_error": None if state == DELIVERED else "HTTP 400: bad",
        "finished_at": now if state in (DELIVERED, DEAD) else None,
        "comment": None,
        "comment_cut": False,
    }
    row.update(extra)
    return row


def test_an_act_due_now_is_recorded_leased_to_the_deliverer_and_handed_over(store: Outbox) -> None:
    deliverer = FakeDeliverer(lease=("owner-a", T0 + 30))
    outbox = Outbox(store.db, deliverer)
    recorded = outbox.record(act("m1", comment="  good  "), T0)
    waiting = outbox.record(act("m2"), T0, comment_until=T0 + 600)

    (fresh,) = deliverer.taken  # the act waiting for its comment is not handed over
    assert deliverer.woken == 0
    assert fresh == Claimed(
        recorded.act_id or 0,
        "T1",
        Target("message", "m1"),
        "thumbs_up",
        T0,
        "good",
        comment_cut=False,
        attempts=0,
        not_found_since=None,
        created_at=T0,
    )
    # Leased in the same transaction: no one claims it while the lease holds...
    assert outbox.claim("owner-b", limit=10, lease=30, now=T0 + 29) == []
    outbox.settle("owner-a", [settled(fresh.id, DELIVERED, T0 + 1)])
    assert outbox.counts(T0 + 2)[DELIVERED] == 1
    assert waiting.created


@pytest.mark.parametrize("busy", [False, True])
def test_a_changed_vote_releases_the_vote_waiting_for_its_comment_to_go_first(
    store: Outbox, busy: bool
) -> None:
    deliverer = FakeDeliverer(lease=None if busy else ("owner-a", T0 + 30))
    outbox = Outbox(store.db, deliverer)
    waiting = outbox.record(act("m1", "thumbs_down"), T0, comment_until=T0 + 600)
    changed = outbox.record(act("m1", "thumbs_up", at=T0 + 1), T0 + 1)

    if busy:  # both wait for the deliverer's claim
        assert deliverer.taken == [] and deliverer.woken == 1
        claimed = outbox.claim("owner-b", limit=10, lease=30, now=T0 + 1)
        assert sorted(c.id for c in claimed) == [waiting.act_id, changed.act_id]
        return
    # Handed over together, the earlier vote first (without a comment), both leased already.
    assert [(c.id, c.value, c.comment, c.comment_cut) for c in deliverer.taken] == [
        (waiting.act_id, "thumbs_down", None, False),
        (changed.act_id, "thumbs_up", None, False),
    ]
    assert deliverer.woken == 0
    assert outbox.claim("owner-b", limit=10, lease=30, now=T0 + 29) == []


def test_a_handed_over_act_whose_owner_died_is_claimed_when_its_lease_lapses(
    store: Outbox,
) -> None:
    outbox = Outbox(store.db, FakeDeliverer(lease=("dead-owner", T0 + 30)))
    outbox.record(act("m1"), T0)
    assert outbox.claim("owner-b", limit=10, lease=30, now=T0 + 29) == []
    (claimed,) = outbox.claim("owner-b", limit=10, lease=30, now=T0 + 31)
    assert claimed.target.id == "m1"


def test_migrate_is_idempotent(store: Outbox) -> None:
    assert store.db.schema_state() == "ok"
    assert store.db.migrate(T0 + 1) == store.db.migrate(T0 + 2)


@pytest.mark.parametrize("newer", [SCHEMA_VERSION + 1, 99])
def test_a_newer_schema_stops_the_relay_with_one_line(store: Outbox, newer: int) -> None:
    with store.db.write() as conn:
        conn.execute(insert(schema_version).values(version=newer, applied_at=T0))
    with pytest.raises(DatabaseUnavailable) as caught:
        store.db.migrate(T0)
    assert str(caught.value) == (
        f"DATABASE_URL: its schema version {newer} is newer than this relay's "
        f"({SCHEMA_VERSION}); upgrade the relay"
    )


def test_a_version_1_database_is_migrated_at_start_and_keeps_its_acts(store: Outbox) -> None:
    """A database written by a relay of schema version 1 (no `first_tried_at`): its acts are
    still delivered; DELIVERY_MAX_AGE counts from an untried act's first try, and from when it
    was stored for one already being retried, as version 1 counted."""
    make_version_1(store.db, T0)
    columns = {"platform": "slack", "workspace": "T1", "source": "button"}
    columns |= {"target_kind": "message", "value": "thumbs_up", "occurred_at": T0}
    columns |= {"state": PENDING, "next_attempt_at": T0, "created_at": T0}
    with store.db.write() as conn:
        conn.execute(insert(acts).values(user_id="U1", target_id="m-untried", **columns))
        conn.execute(
            insert(acts).values(user_id="U2", target_id="m-retried", attempts=3, **columns)
        )
    assert store.db.schema_state() == "outdated"
    store.db.dispose()
    upgraded = Database(store.db.url)
    assert upgraded.migrate(T0 + 1) == SCHEMA_VERSION == 3
    assert upgraded.schema_state() == "ok"
    outbox = Outbox(upgraded)
    claimed = outbox.claim("owner", limit=5, lease=30, now=T0 + 2 * 86400)
    assert {(c.target.id, c.first_tried_at) for c in claimed} == {
        ("m-untried", None),
        ("m-retried", T0),
    }
    busy = Answer(Outcome.RETRY, 503)
    rows = [RetryPolicy().settle(c, busy, T0 + 2 * 86400) for c in claimed]
    assert {r["state"] for r in rows} == {PENDING, DEAD}  # the one retried for 2 days gave up
    outbox.settle("owner", rows)
    (again,) = outbox.claim("owner", limit=5, lease=30, now=T0 + 3 * 86400)
    assert (again.target.id, again.first_tried_at) == ("m-untried", T0 + 2 * 86400)
    # A downgrade that only removes the version row: the next upgrade takes it again.
    with upgraded.write() as conn:
        conn.execute(delete(schema_version).where(schema_version.c.version >= 2))
    assert upgraded.migrate(T0 + 4) == SCHEMA_VERSION
    assert upgraded.schema_state() == "ok"
    upgraded.dispose()


def test_a_version_2_database_keeps_its_acts_and_never_reuses_their_ids(store: Outbox) -> None:
    """Version 3 rebuilds SQLite's `brixo_acts` with AUTOINCREMENT (PostgreSQL's sequence needs
    nothing): the rows, their IDs and the due index stay; an ID deleted at the top is not
    given again. A comment an older relay stored cut is no longer marked to be cut."""
    ids = [store.record(act(f"m{n}"), T0).act_id for n in range(3)]
    with store.db.write() as conn:  # cut by an older relay after a 413, and stored cut
        conn.execute(update(acts).where(acts.c.id == ids[0]).values(comment_cut=True))
    make_version_2(store.db, T0)
    store.db.dispose()
    upgraded = Database(store.db.url)
    assert upgraded.migrate(T0 + 1) == SCHEMA_VERSION
    with upgraded.read() as conn:
        indexes = {i["name"] for i in inspect(conn).get_indexes("brixo_acts")}
        if upgraded.is_sqlite:
            (table_sql,) = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'brixo_acts'"
            ).one()
            assert "AUTOINCREMENT" in table_sql
    assert indexes == {"brixo_acts_due"}
    outbox = Outbox(upgraded)
    assert sorted(e.id for e in outbox.entries()) == ids
    with upgraded.read() as conn:  # sent as it is stored, not cut again
        assert conn.scalar(select(acts.c.comment_cut).where(acts.c.id == ids[0])) is False
    assert outbox.discard(ids[-1])
    later = outbox.record(act("m-later"), T0 + 2).act_id
    assert later is not None and later > ids[-1]
    upgraded.dispose()


class FakeDeliverer:
    """A delivery worker as the outbox sees it: with `lease` it takes new acts at once."""

    def __init__(self, lease: tuple[str, float] | None = None) -> None:
        self.lease = lease
        self.woken = 0
        self.taken: list[Claimed] = []

    def wake(self) -> None:
        self.woken += 1

    def lease_new(self, now: float) -> tuple[str, float] | None:
        return self.lease

    def take(self, acts: Sequence[Claimed]) -> None:
        self.taken.extend(acts)


def test_record_claim_settle_counts(store: Outbox) -> None:
    deliverer = FakeDeliverer(lease=None)  # busy: new acts wait for a claim
    outbox = Outbox(store.db, deliverer)
    first = outbox.record(act("m1"), T0)
    second = outbox.record(act("m2", comment="meh"), T0 + 1)
    assert first.created and second.created and first.act_id != second.act_id
    assert deliverer.woken == 2 and deliverer.taken == []
    counts = outbox.counts(T0 + 11)
    assert counts[PENDING] == 2 and counts[DELIVERED] == 0 and counts[DEAD] == 0
    assert counts["oldest_pending_age"] == pytest.approx(11)

    claimed = outbox.claim("owner-a", limit=10, lease=30, now=T0 + 2)
    assert {c.target.id for c in claimed} == {"m1", "m2"}
    by_id = {c.target.id: c for c in claimed}
    assert by_id["m2"].comment == "meh"
    assert by_id["m1"].occurred_at == T0 and by_id["m1"].value == "thumbs_up"
    assert by_id["m1"].workspace == "T1" and by_id["m1"].attempts == 0
    # Leased: nobody else gets them meanwhile.
    assert outbox.claim("owner-b", limit=10, lease=30, now=T0 + 3) == []

    outbox.settle(
        "owner-a",
        [
            settled(by_id["m1"].id, DELIVERED, T0 + 4),
            settled(by_id["m2"].id, DEAD, T0 + 4),
        ],
    )
    counts = outbox.counts(T0 + 5)
    assert (counts[PENDING], counts[DELIVERED], counts[DEAD]) == (0, 1, 1)
    assert counts["oldest_pending_age"] is None
    (dead,) = outbox.entries((DEAD,))
    assert dead.target == Target("message", "m2") and dead.last_error == "HTTP 400: bad"
    assert outbox.claim("owner-b", limit=10, lease=30, now=T0 + 1000) == []


def test_retry_later_then_due(store: Outbox) -> None:
    store.record(act("m1"), T0)
    (claimed,) = store.claim("a", 10, 30, T0)
    store.settle(
        "a", [settled(claimed.id, PENDING, T0, next_attempt_at=T0 + 60, last_error="HTTP 503")]
    )
    assert store.claim("b", 10, 30, T0 + 59) == []
    (again,) = store.claim("b", 10, 30, T0 + 60)
    assert again.id == claimed.id and again.attempts == 1


def test_claim_respects_limit_and_order(store: Outbox) -> None:
    for n in range(5):
        store.record(act(f"m{n}"), T0 + n)
    first = store.claim("a", 2, 30, T0 + 10)
    rest = store.claim("b", 10, 30, T0 + 10)
    assert [c.target.id for c in first] == ["m0", "m1"]
    assert sorted(c.target.id for c in rest) == ["m2", "m3", "m4"]


def test_settle_by_a_stale_owner_changes_nothing(store: Outbox) -> None:
    store.record(act("m1"), T0)
    (old,) = store.claim("a", 10, lease=5, now=T0)
    assert store.claim("b", 10, lease=5, now=T0 + 4) == []
    (new,) = store.claim("b", 10, lease=5, now=T0 + 6)  # a's lease lapsed
    assert new.id == old.id
    store.settle("a", [settled(old.id, DEAD, T0 + 7)])  # a woke up late: ignored
    assert store.counts(T0 + 7)[DEAD] == 0
    store.settle("b", [settled(new.id, DELIVERED, T0 + 7)])
    assert store.counts(T0 + 7)[DELIVERED] == 1


def test_renew_extends_leases(store: Outbox) -> None:
    store.record(act("m1"), T0)
    store.record(act("m2"), T0)
    assert len(store.claim("a", 10, lease=10, now=T0)) == 2
    store.renew("a", lease=10, now=T0 + 8)  # now leased until T0 + 18
    assert store.claim("b", 10, lease=10, now=T0 + 12) == []
    assert store.claim("b", 10, lease=10, now=T0 + 17.5) == []
    assert len(store.claim("b", 10, lease=10, now=T0 + 18.5)) == 2


def test_release_gives_acts_back(store: Outbox) -> None:
    store.record(act("m1"), T0)
    (claimed,) = store.claim("a", 10, lease=60, now=T0)
    store.release("a", [claimed.id], not_before=T0 + 5)
    assert store.claim("b", 10, 60, T0 + 4) == []
    (again,) = store.claim("b", 10, 60, T0 + 5)
    assert again.attempts == 0


def test_concurrent_claims_never_share_an_act(store: Outbox) -> None:
    for n in range(60):
        store.record(act(f"m{n}"), T0)
    results: dict[str, list[int]] = {}
    barrier = threading.Barrier(4)

    def claimer(owner: str) -> None:
        barrier.wait()
        got: list[int] = []
        while batch := store.claim(owner, 5, 60, T0 + 1):
            got.extend(c.id for c in batch)
        results[owner] = got

    threads = [threading.Thread(target=claimer, args=(f"o{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    claimed = [i for got in results.values() for i in got]
    assert len(results) == 4
    assert len(claimed) == 60 and len(set(claimed)) == 60


def test_same_vote_within_24h_sends_nothing(store: Outbox) -> None:
    assert store.record(act("m1", "thumbs_up", at=T0), T0).created
    again = store.record(act("m1", "thumbs_up", at=T0 + 3600), T0 + 3600)
    assert not again.created and again.reason == "same vote within 24 h"
    # Another person, another target kind, another workspace: each their own vote.
    assert store.record(act("m1", user="U2"), T0).created
    assert store.record(act("m1", kind="conversation"), T0).created
    assert store.record(act("m1", workspace="T2"), T0).created
    # After 24 h (SPEC's figure, written out) the same vote counts again.
    assert SAME_VOTE_WINDOW == 24 * 3600
    later = T0 + 24 * 3600 + 1
    assert store.record(act("m1", "thumbs_up", at=later), later).created
    assert store.counts(later)[PENDING] == 5


def test_changed_vote_gives_a_new_act(store: Outbox) -> None:
    assert store.record(act("m1", "thumbs_up", at=T0), T0).created
    assert store.record(act("m1", "thumbs_down", at=T0 + 10), T0 + 10).created
    assert not store.record(act("m1", "thumbs_down", at=T0 + 20), T0 + 20).created
    assert store.record(act("m1", "thumbs_up", at=T0 + 30), T0 + 30).created
    values = [e.value for e in store.entries((PENDING,))]
    assert values == ["thumbs_up", "thumbs_down", "thumbs_up"]


def test_a_changed_vote_sends_the_earlier_one_waiting_for_its_comment_at_once(
    store: Outbox,
) -> None:
    waiting = store.record(act("m1", "thumbs_down", at=T0), T0, comment_until=T0 + 600)
    other = store.record(act("m2", "thumbs_down", at=T0), T0, comment_until=T0 + 600)
    assert store.record(act("m1", "thumbs_up", at=T0 + 10), T0 + 10).created
    states = store.states_of([waiting.act_id or 0, other.act_id or 0], T0 + 10)
    assert states[waiting.act_id or 0][0] == PENDING  # no longer waits: due now
    assert states[other.act_id or 0][0] == AWAITING_COMMENT  # another target: still waits
    assert [e.value for e in store.entries((PENDING,))] == ["thumbs_down", "thumbs_up"]


def test_the_act_waiting_for_a_persons_comment_is_found_by_person_and_target(
    store: Outbox,
) -> None:
    waiting = store.record(act("m1", "thumbs_down"), T0, comment_until=T0 + 600).act_id
    store.record(act("m2", "thumbs_down"), T0, comment_until=T0 + 600)
    assert store.waiting_for_comment("T1", "U1", Target("message", "m1")) == waiting
    assert store.waiting_for_comment("T1", "U2", Target("message", "m1")) is None
    assert store.waiting_for_comment("T2", "U1", Target("message", "m1")) is None
    assert store.waiting_for_comment("T1", "U1", Target("conversation", "m1")) is None
    assert waiting is not None and store.finish_comment(waiting, "T1", "U1", None, T0 + 1)
    assert store.waiting_for_comment("T1", "U1", Target("message", "m1")) is None


def test_a_vote_in_another_workspace_never_releases_one_waiting_for_its_comment(
    store: Outbox,
) -> None:
    """The same user ID (org-wide on Enterprise Grid) voting on the same customer ID from
    another workspace is another vote: the one waiting in the first workspace keeps waiting
    for its comment, and still takes it."""
    waiting = store.record(act("m1", "thumbs_down", workspace="T1"), T0, comment_until=T0 + 600)
    assert store.record(act("m1", "thumbs_up", workspace="T2", at=T0 + 10), T0 + 10).created
    assert store.states_of([waiting.act_id or 0], T0 + 10)[waiting.act_id or 0][0] == (
        AWAITING_COMMENT
    )
    assert store.finish_comment(waiting.act_id or 0, "T1", "U1", "why", T0 + 20)


def test_a_late_older_vote_is_sent_but_never_becomes_the_latest(store: Outbox) -> None:
    """👍 at T0, then a 👎 acted earlier arriving late, then 👍 again: the 👎 is an act of its
    own, but the person's latest vote stays 👍, so the last 👍 repeats it and sends nothing."""
    assert store.record(act("m1", "thumbs_up", at=T0), T0).created
    assert store.record(act("m1", "thumbs_down", at=T0 - 60), T0 + 1).created
    repeat = store.record(act("m1", "thumbs_up", at=T0 + 30), T0 + 30)
    assert not repeat.created and repeat.reason == "same vote within 24 h"
    values = [e.value for e in store.entries((PENDING,))]
    assert values == ["thumbs_up", "thumbs_down"]


def test_seen_key_makes_redelivery_a_no_op(store: Outbox) -> None:
    assert store.record(act("m1"), T0, seen_key="slack:event:Ev1").created
    dup = store.record(act("m1", "thumbs_down"), T0 + 1, seen_key="slack:event:Ev1")
    assert not dup.created and dup.reason == "event already handled"
    assert store.counts(T0)[PENDING] == 1


def test_mark_seen_and_expiry(store: Outbox) -> None:
    db = store.db
    with db.write() as conn:
        assert mark_seen(db, conn, "k1", T0, ttl=10)
        assert not mark_seen(db, conn, "k1", T0 + 5, ttl=10)
        assert mark_seen(db, conn, "k1", T0 + 11, ttl=10)  # expired: seen anew
        assert mark_seen(db, conn, "k2", T0, ttl=10)
        assert mark_seen(db, conn, "x" * 400, T0, ttl=10)  # long keys are cut, not refused
    assert forget_expired(db, T0 + 15) == 2  # k2 and the long one (k1 lives until T0 + 21)
    with db.write() as conn:
        assert not mark_seen(db, conn, "k1", T0 + 16, ttl=10)
        assert mark_seen(db, conn, "k2", T0 + 16, ttl=10)


def test_vote_records_older_than_the_24_h_rule_needs_are_forgotten(store: Outbox) -> None:
    """A person's vote is kept for "the same vote within 24 h", not for good."""
    later = T0 + 3 * SAME_VOTE_WINDOW
    for n in range(3):
        assert store.record(act(f"old-{n}"), T0).created
    assert store.record(act("recent", at=later), later).created
    forget_expired(store.db, later + 60)
    with store.db.read() as conn:
        assert conn.scalars(select(votes.c.target_id)).all() == ["recent"]
    again = store.record(act("recent", at=later + 30), later + 60)
    assert not again.created and again.reason == "same vote within 24 h"


def test_forgetting_expired_records_keeps_the_24_h_rule_whenever_it_runs(store: Outbox) -> None:
    """The delivery worker forgets old vote records from time to time: never one the 24 h rule
    still needs, even for a repeat acted within the day that arrives late (times are the chat
    platform's; a redelivery or a held reaction can come hours after the act)."""
    assert store.record(act("m1", at=T0), T0).created
    almost_a_day = T0 + SAME_VOTE_WINDOW - 60
    forget_expired(store.db, almost_a_day)
    again = store.record(act("m1", at=almost_a_day), almost_a_day)
    assert not again.created and again.reason == "same vote within 24 h"
    assert store.record(act("m2", at=T0), T0).created
    arrived = T0 + SAME_VOTE_WINDOW + 3600  # acted within the day, recorded a day and an hour on
    forget_expired(store.db, arrived)
    late = store.record(act("m2", at=T0 + SAME_VOTE_WINDOW - 3600), arrived)
    assert not late.created and late.reason == "same vote within 24 h"


def test_purge_deletes_in_batches_of_its_own_transaction(
    store: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch commits on its own: a purge of 1M acts in one transaction held a running
    relay's votes off the write lock for 1.6 s."""
    ids = [store.record(act(f"m-{n}"), T0).act_id for n in range(9)]
    with store.db.write() as conn:
        conn.execute(update(acts).where(acts.c.id.in_(ids[:7])).values(state=DELIVERED))
        conn.execute(update(acts).where(acts.c.id == ids[7]).values(state=DEAD))
    writes = []
    write = store.db.write
    monkeypatch.setattr(store.db, "write", lambda: writes.append(1) or write())
    assert store.purge(batch=3) == 7
    assert len(writes) == 3  # 3 + 3 + 1
    with store.db.read() as conn:
        assert sorted(conn.scalars(select(acts.c.state)).all()) == [DEAD, PENDING]
    assert store.purge(dead=True, batch=3) == 1


def test_comment_wait_then_finish_or_time_out(store: Outbox) -> None:
    waiting = store.record(act("m1", "thumbs_down"), T0, comment_until=T0 + 600)
    timed_out = store.record(act("m2", "thumbs_down"), T0, comment_until=T0 + 600)
    assert store.counts(T0)[AWAITING_COMMENT] == 2
    assert store.claim("a", 10, 30, T0 + 1) == []
    # Only the voter, in their workspace, can finish it.
    assert waiting.act_id is not None
    assert not store.finish_comment(waiting.act_id, "T1", "U2", "hijack", T0 + 2)
    assert not store.finish_comment(waiting.act_id, "T2", "U1", "hijack", T0 + 2)
    assert store.finish_comment(waiting.act_id, "T1", "U1", "too vague", T0 + 2)
    assert not store.finish_comment(waiting.act_id, "T1", "U1", "twice", T0 + 3)
    (ready,) = store.claim("a", 10, 10_000, T0 + 3)
    assert ready.comment == "too vague"
    # No answer within the wait: sent without a comment.
    (late,) = store.claim("a", 10, 30, T0 + 600)
    assert late.id == timed_out.act_id and late.comment is None
    assert store.counts(T0 + 600)[AWAITING_COMMENT] == 0


def test_take_dead_all_or_given_ids(store: Outbox) -> None:
    for n in range(3):
        store.record(act(f"m{n}"), T0)
    claimed = store.claim("a", 10, 30, T0)
    store.settle("a", [settled(c.id, DEAD, T0 + 1) for c in claimed])
    ids = sorted(c.id for c in claimed)

    def revive(now: float, act_ids: list[int]) -> int:
        taken = store.take_dead("cli", 15, now, act_ids)
        store.release("cli", [a.id for a in taken])
        return len(taken)

    assert revive(T0 + 100, [ids[0]]) == 1
    assert revive(T0 + 100, [ids[0]]) == 0  # not dead any more
    assert store.counts(T0 + 100)[DEAD] == 2
    again = store.claim("b", 10, 30, T0 + 100)
    assert [c.id for c in again] == [ids[0]]
    assert again[0].attempts == 0 and again[0].created_at == T0 + 100  # fresh window
    assert again[0].first_tried_at is None
    assert revive(T0 + 200, []) == 2
    assert store.counts(T0 + 200)[DEAD] == 0


def test_purge(store: Outbox) -> None:
    for n in range(4):
        store.record(act(f"m{n}"), T0)
    c = store.claim("a", 3, 30, T0)
    store.settle(
        "a",
        [
            settled(c[0].id, DELIVERED, T0),
            settled(c[1].id, DELIVERED, T0),
            settled(c[2].id, DEAD, T0),
        ],
    )
    assert store.purge() == 2
    counts = store.counts(T0)
    assert (counts[DELIVERED], counts[DEAD], counts[PENDING]) == (0, 1, 1)
    assert store.purge(dead=True) == 1
    assert store.counts(T0)[PENDING] == 1
    assert store.purge(dead=True) == 0


def test_an_act_id_is_never_given_again(store: Outbox) -> None:
    """Every act purged, or the newest discarded (a bot's reaction): the next act's ID is new
    (SQLite would otherwise start again after the highest ID left, and `act=3` in old logs
    would name another act)."""
    for n in range(3):
        store.record(act(f"m{n}"), T0)
    claimed = store.claim("a", 3, 30, T0)
    store.settle("a", [settled(c.id, DELIVERED, T0) for c in claimed])
    assert store.purge(dead=True) == 3
    newest = max(c.id for c in claimed)
    later = store.record(act("m-later"), T0 + 1).act_id
    assert later is not None and later > newest
    assert store.discard(later)
    again = store.record(act("m-again"), T0 + 2).act_id
    assert again is not None and again > later


def test_entries_list_pending_and_dead_with_errors(store: Outbox) -> None:
    store.record(act("ok"), T0)
    store.record(act("bad"), T0)
    store.record(act("wait", "thumbs_down"), T0, comment_until=T0 + 600)
    claimed = [c for c in store.claim("a", 10, 30, T0) if c.target.id == "bad"]
    store.settle("a", [settled(claimed[0].id, DEAD, T0, last_error="HTTP 400: occurred_at bad")])
    entries = {e.target.id: e for e in store.entries()}
    assert entries["bad"].state == DEAD and entries["bad"].last_error == "HTTP 400: occurred_at bad"
    assert entries["ok"].state == PENDING
    assert entries["wait"].state == AWAITING_COMMENT
    assert [e.target.id for e in store.entries((DEAD,))] == ["bad"]


def test_odd_target_ids_are_stored_exactly(store: Outbox) -> None:
    odd = ["a/b?c#d%e f", "ünï✓💬", "..", "x" * 1024]
    for n, target in enumerate(odd):
        store.record(act(target, user=f"U{n}"), T0)
    assert sorted(c.target.id for c in store.claim("a", 10, 30, T0)) == sorted(odd)


def test_mappings_record_and_lookup_per_workspace(store: Outbox) -> None:
    maps = Mappings(store.db)
    maps.record(
        "T1",
        "C1",
        "1.0002",
        message_id="msg/1",
        conversation_id="conv 1",
        thread_ts="1.0001",
        source=POSTED,
        now=T0,
    )
    found = maps.message("T1", "C1", "1.0002")
    assert found is not None
    assert (found.message_id, found.conversation_id, found.thread_ts, found.source) == (
        "msg/1",
        "conv 1",
        "1.0001",
        POSTED,
    )
    assert maps.conversation("T1", "C1", "1.0001") == "conv 1"
    # Another workspace (or channel) can never reach it.
    assert maps.message("T2", "C1", "1.0002") is None
    assert maps.message("T1", "C2", "1.0002") is None
    assert maps.conversation("T2", "C1", "1.0001") is None
    maps.record(
        "T2",
        "C1",
        "1.0002",
        message_id="other",
        conversation_id=None,
        thread_ts=None,
        source=METADATA,
        now=T0,
    )
    t2 = maps.message("T2", "C1", "1.0002")
    assert t2 is not None and t2.message_id == "other"
    t1 = maps.message("T1", "C1", "1.0002")
    assert t1 is not None and t1.message_id == "msg/1"


def test_posted_mapping_outranks_metadata(store: Outbox) -> None:
    maps = Mappings(store.db)
    maps.record(
        "T1",
        "C1",
        "5.1",
        message_id="posted",
        conversation_id=None,
        thread_ts=None,
        source=POSTED,
        now=T0,
    )
    maps.record(
        "T1",
        "C1",
        "5.1",
        message_id="seen-later",
        conversation_id=None,
        thread_ts=None,
        source=METADATA,
        now=T0,
    )
    kept = maps.message("T1", "C1", "5.1")
    assert kept is not None and kept.message_id == "posted"
    maps.record(
        "T1",
        "C1",
        "6.1",
        message_id="meta",
        conversation_id="cv",
        thread_ts=None,
        source=METADATA,
        now=T0,
    )
    maps.record(
        "T1",
        "C1",
        "6.1",
        message_id="posted",
        conversation_id="cv",
        thread_ts=None,
        source=POSTED,
        now=T0,
    )
    replaced = maps.message("T1", "C1", "6.1")
    assert replaced is not None and replaced.message_id == "posted" and replaced.source == POSTED
    # A thread root with no thread_ts is its own thread.
    assert maps.conversation("T1", "C1", "6.1") == "cv"


def test_metadata_updated_with_other_ids_replaces_the_earlier_metadata(store: Outbox) -> None:
    """message_metadata_updated: the same source again replaces the IDs it gave before."""
    maps = Mappings(store.db)
    fields = {"conversation_id": None, "thread_ts": None, "source": METADATA, "now": T0}
    maps.record("T1", "C1", "7.1", message_id="m-first", **fields)
    maps.record("T1", "C1", "7.1", message_id="m-updated", **fields)
    mapping = maps.message("T1", "C1", "7.1")
    assert mapping is not None and mapping.message_id == "m-updated"


def test_templates(store: Outbox) -> None:
    templates = Templates("{team}-{channel}-{ts}", "{team}:{thread_ts}")
    mapped = templates.mapping("T1", "C1", "2.0", "1.0")
    assert mapped is not None
    assert (mapped.message_id, mapped.conversation_id) == ("T1-C1-2.0", "T1:1.0")
    root = templates.mapping("T1", "C1", "2.0", None)
    assert root is not None and root.conversation_id == "T1:2.0"
    assert Templates().mapping("T1", "C1", "2.0", None) is None


def test_two_databases_objects_share_one_store(store: Outbox) -> None:
    """Another connection (as another process would) sees committed acts at once."""
    store.record(act("m1"), T0)
    other = Database(store.db.url)
    try:
        with other.read() as conn:
            assert conn.execute(acts.select()).all()[0].target_id == "m1"
    finally:
        other.dispose()


def test_driver_statements_return_what_execute_does_and_raise_sqlalchemys_errors(
    store: Outbox,
) -> None:
    db = store.db
    add = DriverStatement(db, insert(seen).returning(seen.c.key), ("key", "expires_at"))
    find = select(seen.c.key, seen.c.expires_at).where(seen.c.key == "k'1; --")
    with db.write() as conn:
        assert add.first(conn, {"key": "k'1; --", "expires_at": T0}) == ("k'1; --",)
        assert add.first(conn, {"key": "k2", "expires_at": T0 + 1}) == ("k2",)
    with db.read(single=True) as conn:
        assert DriverStatement(db, find).first(conn, {}) == tuple(conn.execute(find).one())
        assert DriverStatement(db, find.where(seen.c.key == "none")).first(conn, {}) is None
    with pytest.raises(IntegrityError), db.write() as conn:  # SQLAlchemy's, not the driver's
        add.first(conn, {"key": "k2", "expires_at": T0})
    with pytest.raises(ValueError, match="expanding IN"):  # only `execute` can expand it
        DriverStatement(db, select(seen.c.key).where(seen.c.key.in_(["a", "b"])))
    with db.read() as conn:  # the failed transaction left nothing behind
        assert conn.execute(select(seen.c.key).order_by(seen.c.key)).scalars().all() == [
            "k'1; --",
            "k2",
        ]


def test_a_single_read_opens_no_transaction_and_leaves_writes_atomic(store: Outbox) -> None:
    """PostgreSQL runs a one-statement read without BEGIN/ROLLBACK; the pooled connection
    it used still gives the next write a real transaction (here: one connection in the pool)."""
    db = Database(store.db.url, pool_size=1)
    try:
        for _ in range(3):
            with db.read(single=True) as conn:
                assert conn.execute(select(seen.c.key)).all() == []
                if not db.is_sqlite:
                    driver = conn.connection.driver_connection
                    assert driver.info.transaction_status == TransactionStatus.IDLE
            with pytest.raises(RuntimeError), db.write() as conn:
                conn.execute(insert(seen).values(key="k", expires_at=T0))
                raise RuntimeError("the vote's transaction fails half-way")
        with db.read() as conn:
            assert conn.execute(select(seen.c.key)).all() == []
    finally:
        db.dispose()


def test_votes_wait_for_the_disk_and_delivery_bookkeeping_does_not(store: Outbox) -> None:
    """A vote's commit waits for the disk (SQLite synchronous=FULL, PostgreSQL's own setting,
    which the test server turns off for speed) even on a pooled connection that last wrote
    delivery bookkeeping without waiting (NORMAL, off)."""
    db = Database(store.db.url, pool_size=1)
    try:
        with db.read() as conn:
            server_default = (
                None if db.is_sqlite else conn.exec_driver_sql("SHOW synchronous_commit").scalar()
            )
        for wait_for_disk in (False, True, False, True):
            with db.write(wait_for_disk=wait_for_disk) as conn:
                if db.is_sqlite:
                    (level,) = conn.exec_driver_sql("PRAGMA synchronous").one()
                    assert level == (2 if wait_for_disk else 1)  # FULL, NORMAL
                else:
                    (level,) = conn.exec_driver_sql("SHOW synchronous_commit").one()
                    assert level == (server_default if wait_for_disk else "off")
    finally:
        db.dispose()


def test_processes_starting_together_on_a_fresh_database_all_migrate(
    database_url: str,
) -> None:
    """Heroku's first boot: every worker creates the schema at once; none may fail."""
    from tests.conftest import _sqlalchemy_url

    url = _sqlalchemy_url(database_url)
    databases = [Database(url, pool_size=1) for _ in range(6)]
    start = threading.Barrier(len(databases))
    errors: list[BaseException] = []

    def migrate(database: Database) -> None:
        start.wait()
        try:
            database.migrate(T0)
        except BaseException as error:  # noqa: BLE001 (collected for the assertion)
            errors.append(error)

    threads = [threading.Thread(target=migrate, args=(d,)) for d in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for database in databases:
        database.dispose()
    assert errors == []


def test_the_sends_hold_only_ever_grows(store: Outbox) -> None:
    assert store.held_until() == 0.0
    store.hold(T0 + 10)
    store.hold(T0 + 5)  # a shorter Retry-After seen later doesn't cut the hold short
    assert store.held_until() == T0 + 10
    store.hold(T0 + 20)
    assert store.held_until() == T0 + 20


def test_an_act_held_for_a_check_is_released_or_discarded(store: Outbox) -> None:
    """A reaction held while Slack is asked whether its user is a bot: not due, not leased."""
    held = store.record(act("held-1"), T0, not_before=T0 + 10).act_id
    bot = store.record(act("held-2", user="UBOT2"), T0, not_before=T0 + 10).act_id
    assert held and bot
    assert store.claim("o1", 10, 15.0, T0 + 1) == []  # neither is due yet
    store.release_now(held, T0 + 1)
    assert [c.id for c in store.claim("o1", 10, 15.0, T0 + 1)] == [held]
    assert store.discard(bot)
    assert store.counts(T0 + 1)["pending"] == 1  # only the released one, leased to o1
    assert not store.discard(held)  # under way: it stays


def test_a_bot_user_learnt_by_another_process_is_known_to_this_one(store: Outbox) -> None:
    """Processes sharing a database: a watched bot's user learnt by one is, while both run, a
    bot for the other too (a miss reads the table again once `refresh` has passed)."""
    learner, other = BotUsers(store.db), BotUsers(store.db, refresh=0.0)
    assert "UASSIST" not in other
    learner.learn("BASSIST", "UASSIST")
    assert "UASSIST" in learner
    assert "UASSIST" in other
    assert "U7" not in other


def test_a_retried_dead_letter_that_died_on_a_404_gets_a_fresh_not_found_grace(
    store: Outbox,
) -> None:
    """`outbox retry` of an act that died on a 404: its grace starts again, so its next 404
    leaves it pending instead of killing it at once."""
    store.record(act("m-late"), T0)
    (claimed,) = store.claim("a", 10, 30, T0)
    store.settle("a", [settled(claimed.id, DEAD, T0 + 700, not_found_since=T0)])
    (revived,) = store.take_dead("cli", 15, T0 + 1000)
    assert revived.not_found_since is None
    missing = Answer(Outcome.NOT_FOUND, 404, "Message 'm-late' not found")
    row = RetryPolicy(not_found_grace=600).settle(revived, missing, T0 + 1001)
    assert (row["state"], row["not_found_since"]) == (PENDING, T0 + 1001)
    assert store.settle_one("cli", row)
    (again,) = store.claim("b", 10, 30, row["next_attempt_at"])
    assert again.not_found_since == T0 + 1001


def test_take_dead_hands_dead_letters_over_oldest_first_whatever_the_rows_order(
    store: Outbox,
) -> None:
    """Retried dead letters go oldest first, so a person's newer vote lands last, even where
    the database returns the rows in another order (PostgreSQL: an updated row moves)."""
    for n in range(4):
        store.record(act(f"m{n}"), T0)
    claimed = store.claim("a", 10, 30, T0)
    store.settle("a", [settled(c.id, DEAD, T0 + 1) for c in claimed])
    ids = sorted(c.id for c in claimed)
    with store.db.write() as conn:  # rewritten: now stored after the others
        conn.execute(update(acts).where(acts.c.id.in_(ids[:2])).values(last_error="again"))
    assert [a.id for a in store.take_dead("cli", 15, T0 + 100)] == ids


def test_a_limited_claim_takes_the_longest_overdue_acts_first(store: Outbox) -> None:
    """Acts due out of their ID order: a claim of one takes the one due earliest."""
    for n, due in enumerate((30, 10, 20)):
        store.record(act(f"m{n}"), T0, not_before=T0 + due)
    order = [c.target.id for n in range(3) for c in store.claim(f"o{n}", 1, 60, T0 + 100)]
    assert order == ["m1", "m2", "m0"]


def test_discard_leaves_a_held_act_that_was_already_sent_once(store: Outbox) -> None:
    """A held act already tried (pending again after a 503) is under way: `discard` must not
    delete it silently."""
    held = store.record(act("held"), T0, not_before=T0 + 10).act_id
    assert held is not None
    assert [c.id for c in store.claim("a", 10, 30, T0 + 10)] == [held]
    store.settle("a", [settled(held, PENDING, T0 + 11, next_attempt_at=T0 + 60)])
    assert store.states_of([held], T0 + 12) == {held: (PENDING, False)}  # not leased
    assert not store.discard(held)
    assert store.states_of([held], T0 + 12) == {held: (PENDING, False)}


@pytest.mark.parametrize(("source", "kept"), [(METADATA, "conv-first"), (POSTED, "conv-later")])
def test_which_reply_sets_the_threads_conversation(store: Outbox, source: str, kept: str) -> None:
    """Two replies of a thread with different conversation IDs. Mapped by metadata, the
    thread keeps the first one, which "Rate this conversation" goes on rating; posted through
    the relay, the latest answer's is the thread's now (an agent may start a new conversation
    in the same thread). Each reply keeps its own."""
    maps = Mappings(store.db)
    for ts, conversation in (("8.2", "conv-first"), ("8.3", "conv-later")):
        maps.record(
            "T1",
            "C1",
            ts,
            message_id=None,
            conversation_id=conversation,
            thread_ts="8.1",
            source=source,
            now=T0,
        )
    assert maps.conversation("T1", "C1", "8.1") == kept
    later = maps.message("T1", "C1", "8.3")
    assert later is not None and later.conversation_id == "conv-later"


def test_only_delivery_bookkeeping_commits_without_waiting_for_the_disk(
    store: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a server whose commits wait for the disk, a vote and a comment commit so; only
    claims, settlements and renewals don't (SQLite: FULL against NORMAL)."""
    if not store.db.is_sqlite:
        name = store.db.engine.url.database
        with store.db.write() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    database = Database(store.db.url, pool_size=1)
    levels: list[str] = []
    transaction = database._transaction

    @contextmanager
    def spied(wait_for_disk: bool) -> Iterator[Connection]:
        with transaction(wait_for_disk) as conn:
            query = "PRAGMA synchronous" if database.is_sqlite else "SHOW synchronous_commit"
            levels.append(str(conn.exec_driver_sql(query).scalar()))
            yield conn

    monkeypatch.setattr(database, "_transaction", spied)
    durable, quick = ("2", "1") if database.is_sqlite else ("on", "off")
    outbox = Outbox(database)
    try:
        waiting = outbox.record(act("m1"), T0, comment_until=T0 + 600).act_id
        assert waiting is not None
        assert levels == [durable]  # the vote
        assert outbox.finish_comment(waiting, "T1", "U1", "why", T0 + 1)
        assert levels[1:] == [durable]
        (claimed,) = outbox.claim("a", 10, 30, T0 + 1)
        outbox.renew("a", 30, T0 + 2)
        outbox.settle("a", [settled(claimed.id, DELIVERED, T0 + 3)])
        assert levels[2:] == [quick] * 3
        with database.write() as conn:  # the next write on the same connection waits again
            assert levels[-1] == durable
            conn.execute(delete(seen))
    finally:
        database.dispose()
