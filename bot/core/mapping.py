"""Chat messages and threads mapped to the customer's message and conversation IDs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, func, or_, select

from bot.core.acts import Target
from bot.core.db import Database, DriverStatement, mappings, threads, upsert

log = logging.getLogger(__name__)

# Where a mapping came from, highest rank first (first match wins): posted through the relay,
# the message's metadata, the templates. A higher-ranked source replaces a lower-ranked one.
POSTED = "posted"
METADATA = "metadata"
TEMPLATE = "template"


# What `customer_id` takes, for the messages about an ID it refused.
USABLE_ID = "text of 1 to 1024 characters, not only blanks"


def customer_id(value: Any) -> str | None:
    """A usable customer ID: text, not blank, at most 1024 characters, NUL-free, valid UTF-8;
    a whole number (an agent's or metadata's JSON `123`) as its digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > 1024 or "\x00" in value:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _rank(source: Any) -> ColumnElement[int]:
    """A source's rank in SQL: posted 3, metadata 2, template (or anything else) 1."""
    return case({POSTED: 3, METADATA: 2}, value=source, else_=1)


@dataclass(frozen=True)
class Mapping:
    """The customer's IDs for one reply."""

    message_id: str | None
    conversation_id: str | None
    thread_ts: str | None
    source: str

    @property
    def target(self) -> Target:
        """What a vote on this reply rates: its message, else its conversation."""
        if self.message_id:
            return Target("message", self.message_id)
        return Target("conversation", self.conversation_id or "")


@dataclass(frozen=True)
class Templates:
    """MESSAGE_ID_TEMPLATE / CONVERSATION_ID_TEMPLATE with {team} {channel} {ts} {thread_ts}."""

    message: str | None = None
    conversation: str | None = None

    def mapping(self, team: str, channel: str, ts: str, thread_ts: str | None) -> Mapping | None:
        """IDs from the templates, or None when neither is set; an ID longer than 1024
        characters is left out, with a warning, as in metadata."""
        if not self.message and not self.conversation:
            return None
        root = thread_ts or ts
        fields = {"team": team, "channel": channel, "ts": ts, "thread_ts": root}
        # A conversation is its thread: its {ts} is the root's, whichever reply is rated.
        for_conversation = {**fields, "ts": root}
        ids = []
        for name, template, values in (
            ("MESSAGE", self.message, fields),
            ("CONVERSATION", self.conversation, for_conversation),
        ):
            value = customer_id(template.format(**values)) if template else None
            if template and value is None:
                log.warning(
                    "ignored the ID %s_ID_TEMPLATE gave for %s in %s: not %s",
                    name,
                    ts,
                    channel,
                    USABLE_ID,
                )
            ids.append(value)
        if not any(ids):
            return None
        return Mapping(ids[0], ids[1], thread_ts, TEMPLATE)


# Built once (composing a SELECT costs more CPU than running it).
_MESSAGE = select(
    mappings.c.message_id, mappings.c.conversation_id, mappings.c.thread_ts, mappings.c.source
).where(
    mappings.c.workspace == bindparam("workspace"),
    mappings.c.channel == bindparam("channel"),
    mappings.c.ts == bindparam("ts"),
)


def _record_message(database: Database) -> Any:
    """Upsert a reply's mapping: the same or a higher-ranked source replaces the whole mapping,
    a lower-ranked one only fills in a missing thread; returns the mapping in force."""
    row = upsert(database, mappings)
    new = row.excluded
    replaces = _rank(new.source) >= _rank(mappings.c.source)
    taken = {
        name: case((replaces, new[name]), else_=mappings.c[name])
        for name in ("message_id", "conversation_id", "source")
    }
    return row.on_conflict_do_update(
        index_elements=[mappings.c.workspace, mappings.c.channel, mappings.c.ts],
        set_={**taken, "thread_ts": func.coalesce(new.thread_ts, mappings.c.thread_ts)},
    ).returning(
        mappings.c.message_id, mappings.c.conversation_id, mappings.c.thread_ts, mappings.c.source
    )


def _record_thread(database: Database) -> Any:
    """Upsert a thread's conversation: only a higher-ranked source replaces it (the first of a
    rank stays), but for replies posted through the relay, where the latest answer's says
    which conversation the thread is in now."""
    row = upsert(database, threads)
    new = row.excluded
    return row.on_conflict_do_update(
        index_elements=[threads.c.workspace, threads.c.channel, threads.c.thread_ts],
        set_={"conversation_id": new.conversation_id, "source": new.source},
        where=or_(
            _rank(new.source) > _rank(threads.c.source),
            and_(new.source == POSTED, threads.c.source == POSTED),
        ),
    )


class Mappings:
    """The mapping tables, keyed by workspace so no workspace can reach another's replies.

    The IDs of a reply mapped from the templates are worked out again from `templates` each
    time it is looked up: a template changed (or removed) since then applies to it too.
    """

    def __init__(self, database: Database, templates: Templates | None = None) -> None:
        self.db = database
        self.templates = templates or Templates()
        self._message = DriverStatement(database, _MESSAGE)  # on every vote's ack path
        self._record_message = _record_message(database)
        self._record_thread = _record_thread(database)

    def record(
        self,
        workspace: str,
        channel: str,
        ts: str,
        *,
        message_id: str | None,
        conversation_id: str | None,
        thread_ts: str | None,
        source: str,
        now: float,
    ) -> Mapping:
        """Remember a reply's IDs (and its thread's), unless a higher-ranked source gave them.

        Returns the mapping in force afterwards: the thread's conversation follows it, so a
        reply whose thread only becomes known later (metadata events carry none) still maps it.
        """
        place = {"workspace": workspace, "channel": channel, "created_at": now}
        reply = {
            **place,
            "ts": ts,
            "thread_ts": thread_ts,
            "message_id": message_id,
            "conversation_id": conversation_id,
            "source": source,
        }
        with self.db.write() as conn:
            mapping = Mapping(*conn.execute(self._record_message, reply).one())
            if mapping.conversation_id:
                conn.execute(
                    self._record_thread,
                    {
                        **place,
                        "thread_ts": mapping.thread_ts or ts,
                        "conversation_id": mapping.conversation_id,
                        "source": mapping.source,
                    },
                )
        return mapping

    def message(self, workspace: str, channel: str, ts: str) -> Mapping | None:
        """The IDs recorded for a reply (from today's templates for a template's), if any."""
        key = {"workspace": workspace, "channel": channel, "ts": ts}
        with self.db.read(single=True) as conn:
            row = self._message.first(conn, key)
        if not row:
            return None
        mapping = Mapping(*row)
        if mapping.source == TEMPLATE:
            return self.templates.mapping(workspace, channel, ts, mapping.thread_ts)
        return mapping

    def conversation(
        self, workspace: str, channel: str, thread_ts: str, source: str | None = None
    ) -> str | None:
        """The conversation ID recorded for a thread (from `source` alone, if given), if any;
        one from the templates comes from today's templates, the thread's root as its {ts}."""
        query = select(threads.c.conversation_id, threads.c.source).where(
            threads.c.workspace == workspace,
            threads.c.channel == channel,
            threads.c.thread_ts == thread_ts,
        )
        if source is not None:
            query = query.where(threads.c.source == source)
        with self.db.read(single=True) as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        if row.source != TEMPLATE:
            return str(row.conversation_id)
        mapping = self.templates.mapping(workspace, channel, thread_ts, thread_ts)
        return mapping.conversation_id if mapping else None
