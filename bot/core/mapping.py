"""Chat messages and threads mapped to the customer's message and conversation IDs."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select

from bot.core.acts import Target
from bot.core.db import Database, DriverStatement, mappings, threads, upsert

# Where a mapping came from; a reply posted through the relay outranks what was seen later.
POSTED = "posted"
METADATA = "metadata"
TEMPLATE = "template"


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
        """IDs from the templates, or None when neither is set."""
        if not self.message and not self.conversation:
            return None
        root = thread_ts or ts
        fields = {"team": team, "channel": channel, "ts": ts, "thread_ts": root}
        return Mapping(
            self.message.format(**fields) if self.message else None,
            self.conversation.format(**fields) if self.conversation else None,
            thread_ts,
            TEMPLATE,
        )


# Built once (composing a SELECT costs more CPU than running it).
_MESSAGE = select(
    mappings.c.message_id, mappings.c.conversation_id, mappings.c.thread_ts, mappings.c.source
).where(
    mappings.c.workspace == bindparam("workspace"),
    mappings.c.channel == bindparam("channel"),
    mappings.c.ts == bindparam("ts"),
)


class Mappings:
    """The mapping tables, keyed by workspace so no workspace can reach another's replies."""

    def __init__(self, database: Database) -> None:
        self.db = database
        self._message = DriverStatement(database, _MESSAGE)  # on every vote's ack path

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
    ) -> None:
        """Remember a reply's IDs (and its thread's); a posted reply's IDs are never replaced."""
        row = upsert(self.db, mappings).values(
            workspace=workspace,
            channel=channel,
            ts=ts,
            thread_ts=thread_ts,
            message_id=message_id,
            conversation_id=conversation_id,
            source=source,
            created_at=now,
        )
        if source == POSTED:
            row = row.on_conflict_do_update(
                index_elements=[mappings.c.workspace, mappings.c.channel, mappings.c.ts],
                set_={
                    "message_id": row.excluded.message_id,
                    "conversation_id": row.excluded.conversation_id,
                    "thread_ts": row.excluded.thread_ts,
                    "source": row.excluded.source,
                },
            )
        else:
            row = row.on_conflict_do_nothing()
        with self.db.write() as conn:
            conn.execute(row)
            if conversation_id:
                thread = upsert(self.db, threads).values(
                    workspace=workspace,
                    channel=channel,
                    thread_ts=thread_ts or ts,
                    conversation_id=conversation_id,
                    source=source,
                    created_at=now,
                )
                conn.execute(thread.on_conflict_do_nothing())

    def message(self, workspace: str, channel: str, ts: str) -> Mapping | None:
        """The IDs recorded for a reply, if any."""
        key = {"workspace": workspace, "channel": channel, "ts": ts}
        with self.db.read(single=True) as conn:
            row = self._message.first(conn, key)
        return Mapping(*row) if row else None

    def conversation(self, workspace: str, channel: str, thread_ts: str) -> str | None:
        """The conversation ID recorded for a thread, if any."""
        with self.db.read(single=True) as conn:
            return conn.scalar(
                select(threads.c.conversation_id).where(
                    threads.c.workspace == workspace,
                    threads.c.channel == channel,
                    threads.c.thread_ts == thread_ts,
                )
            )
