"""The durable outbox: an act and its signal are written in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    Update,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from bot.core.acts import Act, Target, Value, clean_comment
from bot.core.db import Database, DriverStatement, acts, holds, seen, upsert, votes

log = logging.getLogger(__name__)

PENDING = "pending"
AWAITING_COMMENT = "awaiting_comment"
DELIVERED = "delivered"
DEAD = "dead"
STATES = (AWAITING_COMMENT, PENDING, DELIVERED, DEAD)

SAME_VOTE_WINDOW = 24 * 3600.0
SEEN_TTL = 24 * 3600.0


@dataclass(frozen=True)
class Recorded:
    """What `Outbox.record` did: an act ID, or why there is none."""

    act_id: int | None
    reason: str = ""

    @property
    def created(self) -> bool:
        """True when a new act (and so a signal) was stored."""
        return self.act_id is not None

    @property
    def stands(self) -> bool:
        """True when the person's vote is on record: a new act, or the same vote again within
        24 h (nothing sent, but thanked again); False for an event already handled."""
        return self.created or self.reason == SAME_VOTE


# Why `Outbox.record` stored no act.
EVENT_SEEN = "event already handled"
SAME_VOTE = "same vote within 24 h"


@dataclass(frozen=True)
class Claimed:
    """An act leased to one deliverer."""

    id: int
    workspace: str
    target: Target
    value: Value
    occurred_at: float
    comment: str | None
    comment_cut: bool
    attempts: int
    not_found_since: float | None
    created_at: float
    first_tried_at: float | None = None  # DELIVERY_MAX_AGE counts from the first try


# What a vote's transaction returns: its act's ID and lease, and the earlier acts it released.
_Stored = tuple[int, tuple[str, float] | None, list[Claimed]]


@dataclass(frozen=True)
class Entry:
    """One outbox row, for listing."""

    id: int
    workspace: str
    source: str
    target: Target
    value: str
    state: str
    attempts: int
    last_error: str | None
    created_at: float
    next_attempt_at: float


class Deliverer(Protocol):
    """What the outbox tells this process's delivery worker about new acts."""

    def wake(self) -> None:
        """Acts are due: claim them."""

    def lease_new(self, now: float) -> tuple[str, float] | None:
        """(owner, lease end) for an act due now, if the worker can take it at once."""

    def take(self, acts: Sequence[Claimed]) -> None:
        """Send acts recorded under a lease from `lease_new`, one after another in this order."""


# Acts deleted a transaction by `outbox purge`: one of 1M rows held a vote's write for 1.6 s.
PURGE_BATCH = 5000


class Outbox:
    """Acts waiting for delivery, their leases and their outcomes.

    An act due at once is recorded already leased to this process's deliverer and handed to it
    in memory, saving a claim; anything else waits for the deliverer's claim.
    """

    def __init__(self, database: Database, deliverer: Deliverer | None = None) -> None:
        self.db = database
        self.deliverer = deliverer
        # Built once: composing these per vote cost ~2 ms of CPU, more than running them; and
        # the vote's statements run on the driver's cursor (see DriverStatement).
        vote = upsert(database, votes)
        newer = vote.excluded.voted_at >= votes.c.voted_at  # a tie: the later arrival
        vote = vote.on_conflict_do_update(
            index_elements=[
                votes.c.workspace,
                votes.c.user_id,
                votes.c.target_kind,
                votes.c.target_id,
            ],
            # A vote acted before the one stored (a late delivery) is an act of its own, but
            # the person's latest vote stays the latest.
            set_={
                "value": case((newer, vote.excluded.value), else_=votes.c.value),
                "voted_at": case((newer, vote.excluded.voted_at), else_=votes.c.voted_at),
            },
            where=or_(
                votes.c.value != vote.excluded.value,
                vote.excluded.voted_at - votes.c.voted_at >= SAME_VOTE_WINDOW,
            ),
        ).returning(votes.c.voted_at)
        self._vote = DriverStatement(database, vote, _VOTE_COLUMNS)
        self._insert_act = DriverStatement(
            database, insert(acts).returning(acts.c.id), _ACT_COLUMNS
        )
        # The person's earlier vote on the target that still waits for its comment goes now,
        # without one, leased with the new act (when the deliverer can take them) so that it
        # is sent first: a changed vote is no reason to send the old one after the new.
        release_waiting = (
            update(acts)
            .where(
                acts.c.state == AWAITING_COMMENT,
                acts.c.workspace == bindparam("workspace"),
                acts.c.user_id == bindparam("user_id"),
                acts.c.target_kind == bindparam("target_kind"),
                acts.c.target_id == bindparam("target_id"),
            )
            .values(
                state=PENDING,
                next_attempt_at=bindparam("now"),
                lease_owner=bindparam("owner"),
                lease_until=bindparam("until"),
            )
            .returning(*_CLAIMED)
        )
        self._release_waiting = DriverStatement(database, release_waiting)
        settle = (
            update(acts)
            .where(acts.c.id == bindparam("act_id"), acts.c.lease_owner == bindparam("owner"))
            .values(
                {
                    **{name: bindparam(name) for name in _SETTLED},
                    "lease_owner": None,
                    "lease_until": None,
                }
            )
        )
        self._settle_sql = settle
        self._settle = DriverStatement(database, settle)
        due = (
            select(acts.c.id)
            .where(
                acts.c.state.in_((PENDING, AWAITING_COMMENT)),
                acts.c.next_attempt_at <= bindparam("now"),
                or_(acts.c.lease_until.is_(None), acts.c.lease_until < bindparam("now")),
            )
            .order_by(acts.c.next_attempt_at)
            .limit(bindparam("limit"))
            .with_for_update(skip_locked=True)
        )
        self._claim = (  # with `execute`: its IN list needs expanding
            update(acts)
            .where(acts.c.id.in_(due.scalar_subquery()))
            .values(state=PENDING, lease_owner=bindparam("owner"), lease_until=bindparam("until"))
            .returning(*_CLAIMED)
        )

    def record(
        self,
        act: Act,
        now: float,
        *,
        comment_until: float | None = None,
        seen_key: str | None = None,
        not_before: float | None = None,
    ) -> Recorded:
        """Store an act, unless its event was seen or it repeats the person's vote within 24 h.

        With `comment_until` the act waits for a comment until then; with `not_before` it is
        due then (`release_now` or `discard` may settle it first); otherwise it is due now.
        """
        later = comment_until is not None or not_before is not None  # not due at once
        comment = clean_comment(act.comment)

        def store(conn: Connection) -> Recorded | _Stored:
            if seen_key and not mark_seen(self.db, conn, seen_key, now):
                return Recorded(None, EVENT_SEEN)
            vote = {
                "workspace": act.workspace,
                "user_id": act.user_id,
                "target_kind": act.target.kind,
                "target_id": act.target.id,
                "value": act.value,
                "voted_at": act.occurred_at,
            }
            if self._vote.first(conn, vote) is None:
                return Recorded(None, SAME_VOTE)
            person_on_target = {
                k: vote[k] for k in ("workspace", "user_id", "target_kind", "target_id")
            }
            lease = self.deliverer.lease_new(now) if self.deliverer else None
            owner, until = lease or (None, None)
            released = self._release_waiting.all(
                conn, {**person_on_target, "now": now, "owner": owner, "until": until}
            )
            state = AWAITING_COMMENT if comment_until is not None else PENDING
            due = comment_until or not_before or now
            row = _act_row(act, comment, state, due, now, None if later else lease)
            (act_id,) = self._insert_act.first(conn, row)
            return act_id, lease, [_claimed(r) for r in released]

        stored = self.db.write_together(store)
        if isinstance(stored, Recorded):
            return stored
        act_id, lease, released = stored
        if lease and self.deliverer:  # leased in the vote's transaction: hand them over
            fresh = [] if later else [_fresh(act_id, act, comment, now)]
            if released or fresh:
                self.deliverer.take([*released, *fresh])
        elif released or not later:
            self._wake()  # due now, left to the deliverer's next claim
        return Recorded(act_id)

    def _wake(self) -> None:
        if self.deliverer:
            self.deliverer.wake()

    def release_now(self, act_id: int, now: float) -> None:
        """Make an act held with `not_before` due now (unless a deliverer already took it).

        Written without waiting for the disk: lost in a crash, the act is due at `not_before`.
        """
        self.hold_until(act_id, now)
        self._wake()

    def hold_until(self, act_id: int, when: float) -> None:
        """Make a pending act (one no deliverer took yet) due at `when`, without waiting for
        the disk: lost in a crash, it keeps the time it had."""
        with self.db.write(wait_for_disk=False) as conn:
            conn.execute(
                update(acts)
                .where(acts.c.id == act_id, acts.c.state == PENDING, acts.c.lease_owner.is_(None))
                .values(next_attempt_at=when)
            )

    def discard(self, act_id: int) -> bool:
        """Forget an act not sent yet (it was no vote after all); False when it is under way."""
        with self.db.write() as conn:
            gone = conn.execute(
                delete(acts).where(
                    acts.c.id == act_id,
                    acts.c.state.in_((PENDING, AWAITING_COMMENT)),
                    acts.c.attempts == 0,
                    acts.c.lease_owner.is_(None),
                )
            ).rowcount
        return bool(gone)

    def waiting_for_comment(self, workspace: str, user_id: str, target: Target) -> int | None:
        """The ID of this person's act on `target` still waiting for its comment, if any."""
        query = (
            select(acts.c.id)
            .where(
                acts.c.state == AWAITING_COMMENT,
                acts.c.workspace == workspace,
                acts.c.user_id == user_id,
                acts.c.target_kind == target.kind,
                acts.c.target_id == target.id,
            )
            .order_by(acts.c.id.desc())
            .limit(1)
        )
        with self.db.read(single=True) as conn:
            return conn.scalar(query)

    def finish_comment(
        self, act_id: int, workspace: str, user_id: str, comment: str | None, now: float
    ) -> bool:
        """Release an act waiting for a comment, with the comment or without (cancel/close).

        Only the person who voted, in their workspace, can; False when the act no longer waits.
        """
        comment = clean_comment(comment)
        with self.db.write() as conn:
            done = conn.execute(
                update(acts)
                .where(
                    acts.c.id == act_id,
                    acts.c.workspace == workspace,
                    acts.c.user_id == user_id,
                    acts.c.state == AWAITING_COMMENT,
                )
                .values(comment=comment, state=PENDING, next_attempt_at=now)
            ).rowcount
        if done:
            self._wake()
        return bool(done)

    def claim(self, owner: str, limit: int, lease: float, now: float) -> list[Claimed]:
        """Lease up to `limit` due acts to `owner`; other processes skip the locked rows."""
        params = {"now": now, "limit": limit, "owner": owner, "until": now + lease}
        with self.db.write(wait_for_disk=False) as conn:
            rows = conn.execute(self._claim, params).all()
        return [_claimed(r) for r in rows]

    def settle(self, owner: str, outcomes: Sequence[dict[str, Any]]) -> None:
        """Write delivery outcomes for acts leased to `owner`, all in one transaction.

        Each outcome holds every column of `_SETTLED` plus `act_id`.
        """
        if not outcomes:
            return
        with self.db.write(wait_for_disk=False) as conn:
            self._settle.many(conn, [{**o, "owner": owner} for o in outcomes])

    def settle_one(self, owner: str, outcome: dict[str, Any]) -> bool:
        """Write one act's outcome (as `settle`); False when `owner` no longer holds its lease."""
        with self.db.write() as conn:
            return bool(conn.execute(self._settle_sql, {**outcome, "owner": owner}).rowcount)

    def hold(self, until: float) -> None:
        """Ask every deliverer on this database to send nothing before `until` (a 429)."""
        row = upsert(self.db, holds).values(name="brixo", until=until)
        later = row.on_conflict_do_update(
            index_elements=[holds.c.name],
            set_={"until": row.excluded.until},
            where=holds.c.until < row.excluded.until,
        )
        with self.db.write(wait_for_disk=False) as conn:
            conn.execute(later)

    def held_until(self) -> float:
        """Until when sends are held for every deliverer (0 when they aren't)."""
        with self.db.read(single=True) as conn:
            return conn.scalar(select(holds.c.until).where(holds.c.name == "brixo")) or 0.0

    def renew(self, owner: str, lease: float, now: float) -> None:
        """Extend every lease `owner` holds; a dead owner's leases lapse within `lease`."""
        with self.db.write(wait_for_disk=False) as conn:
            conn.execute(
                update(acts).where(acts.c.lease_owner == owner).values(lease_until=now + lease)
            )

    def release(self, owner: str, act_ids: Iterable[int], not_before: float | None = None) -> None:
        """Give leased acts back untouched (stopping, paused), due again at `not_before`."""
        ids = list(act_ids)
        if not ids:
            return
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
        if not_before is not None:
            values["next_attempt_at"] = not_before
        with self.db.write(wait_for_disk=False) as conn:
            conn.execute(
                update(acts).where(acts.c.id.in_(ids), acts.c.lease_owner == owner).values(values)
            )

    def entries(
        self,
        states: Sequence[str] = (PENDING, AWAITING_COMMENT, DEAD),
        limit: int = 100,
    ) -> list[Entry]:
        """Rows in these states, oldest first."""
        query = select(acts).where(acts.c.state.in_(states)).order_by(acts.c.id).limit(limit)
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        return [
            Entry(
                r.id,
                r.workspace,
                r.source,
                Target(r.target_kind, r.target_id),
                r.value,
                r.state,
                r.attempts,
                r.last_error,
                r.created_at,
                r.next_attempt_at,
            )
            for r in rows
        ]

    def take_dead(
        self, owner: str, lease: float, now: float, act_ids: Sequence[int] = ()
    ) -> list[Claimed]:
        """Put dead letters (all, or these) back in line with a fresh window, leased to `owner`.

        Like a claim's, the lease keeps every deliverer's claim off them until `owner` settles
        or releases them, or it lapses. Oldest first.
        """
        statement = _revive(now, act_ids).values(lease_owner=owner, lease_until=now + lease)
        with self.db.write() as conn:
            rows = conn.execute(statement.returning(*_CLAIMED)).all()
        return sorted((_claimed(r) for r in rows), key=lambda act: act.id)

    def states_of(self, act_ids: Sequence[int], now: float) -> dict[int, tuple[str, bool]]:
        """(state, leased to a deliverer now) of each of these acts that exists."""
        query = select(acts.c.id, acts.c.state, acts.c.lease_until).where(
            acts.c.id.in_(list(act_ids))
        )
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        return {r.id: (r.state, r.lease_until is not None and r.lease_until >= now) for r in rows}

    def purge(self, dead: bool = False, batch: int = PURGE_BATCH) -> int:
        """Delete delivered acts, and dead letters too with `dead`: `batch` a transaction, so
        that a running relay's votes never wait long for the write lock."""
        states = [DELIVERED, DEAD] if dead else [DELIVERED]
        some = select(acts.c.id).where(acts.c.state.in_(states)).limit(batch)
        deleted = 0
        while True:
            with self.db.write() as conn:
                count = conn.execute(delete(acts).where(acts.c.id.in_(some.scalar_subquery())))
            deleted += count.rowcount
            if count.rowcount < batch:
                return deleted

    def counts(self, now: float) -> dict[str, Any]:
        """Acts per state and the age in seconds of the oldest pending one."""
        with self.db.read() as conn:
            per_state: dict[str, int] = dict(
                conn.execute(select(acts.c.state, func.count()).group_by(acts.c.state)).all()
            )
            oldest = conn.scalar(select(func.min(acts.c.created_at)).where(acts.c.state == PENDING))
        counts: dict[str, Any] = {state: int(per_state.get(state, 0)) for state in STATES}
        counts["oldest_pending_age"] = round(now - oldest, 3) if oldest is not None else None
        return counts


def _revive(now: float, act_ids: Sequence[int]) -> Update:
    """The UPDATE that puts dead letters (all, or these) back in line, due now."""
    statement = update(acts).where(acts.c.state == DEAD)
    if act_ids:
        statement = statement.where(acts.c.id.in_(list(act_ids)))
    return statement.values(
        state=PENDING,
        next_attempt_at=now,
        created_at=now,
        attempts=0,
        not_found_since=None,
        first_tried_at=None,
        finished_at=None,
        comment_cut=False,  # the whole comment first, once the cause is fixed
    )


def _fresh(act_id: int, act: Act, comment: str | None, now: float) -> Claimed:
    """A new act as its deliverer gets it, leased in the transaction that stored it."""
    return Claimed(
        act_id,
        act.workspace,
        act.target,
        act.value,
        act.occurred_at,
        comment,
        comment_cut=False,
        attempts=0,
        not_found_since=None,
        created_at=now,
    )


def _act_row(
    act: Act,
    comment: str | None,
    state: str,
    due: float,
    now: float,
    lease: tuple[str, float] | None,
) -> dict[str, Any]:
    """The `brixo_acts` row of a new act, leased to a deliverer or not."""
    owner, until = lease or (None, None)
    return {
        "platform": act.platform,
        "workspace": act.workspace,
        "user_id": act.user_id,
        "source": act.source,
        "target_kind": act.target.kind,
        "target_id": act.target.id,
        "value": act.value,
        "comment": comment,
        "comment_cut": False,
        "occurred_at": act.occurred_at,
        "channel": act.channel,
        "ts": act.ts,
        "state": state,
        "attempts": 0,
        "next_attempt_at": due,
        "created_at": now,
        "lease_owner": owner,
        "lease_until": until,
    }


def _claimed(row: Any) -> Claimed:
    """A row of `_CLAIMED` columns (SQLAlchemy's or the driver's tuple) as a Claimed act."""
    act_id, workspace, kind, target_id, value, occurred_at, comment, cut, *counts = row
    return Claimed(
        act_id, workspace, Target(kind, target_id), value, occurred_at, comment, bool(cut), *counts
    )


# What a claim returns of each act it leases.
_CLAIMED = (
    acts.c.id,
    acts.c.workspace,
    acts.c.target_kind,
    acts.c.target_id,
    acts.c.value,
    acts.c.occurred_at,
    acts.c.comment,
    acts.c.comment_cut,
    acts.c.attempts,
    acts.c.not_found_since,
    acts.c.created_at,
    acts.c.first_tried_at,
)
_VOTE_COLUMNS = ("workspace", "user_id", "target_kind", "target_id", "value", "voted_at")
_ACT_COLUMNS = (
    "platform",
    "workspace",
    "user_id",
    "source",
    "target_kind",
    "target_id",
    "value",
    "comment",
    "comment_cut",
    "occurred_at",
    "channel",
    "ts",
    "state",
    "attempts",
    "next_attempt_at",
    "created_at",
    "lease_owner",
    "lease_until",
)
_SETTLED = (
    "state",
    "attempts",
    "next_attempt_at",
    "not_found_since",
    "first_tried_at",
    "last_status",
    "last_error",
    "finished_at",
    "comment_cut",
)


def mark_seen(database: Database, conn: Any, key: str, now: float, ttl: float = SEEN_TTL) -> bool:
    """Remember `key` until it expires; False when it was already there and live."""
    statement = _SEEN.get(database.is_sqlite)
    if statement is None:
        row = upsert(database, seen)
        row = row.on_conflict_do_update(
            index_elements=[seen.c.key],
            set_={"expires_at": row.excluded.expires_at},
            where=seen.c.expires_at < bindparam("now"),
        ).returning(seen.c.key)
        statement = _SEEN[database.is_sqlite] = DriverStatement(
            database, row, ("key", "expires_at")
        )
    params = {"key": key[:255], "expires_at": now + ttl, "now": now}
    return statement.first(conn, params) is not None


_SEEN: dict[bool, DriverStatement] = {}  # the upsert of mark_seen, per dialect (SQLite or not)


def forget_expired(database: Database, now: float) -> int:
    """Drop expired keys of seen events (their count is returned), and vote records the 24 h
    rule no longer needs: kept twice that, since their times are the chat platform's clock."""
    with database.write() as conn:
        conn.execute(delete(votes).where(votes.c.voted_at < now - 2 * SAME_VOTE_WINDOW))
        return conn.execute(delete(seen).where(seen.c.expires_at < now)).rowcount
