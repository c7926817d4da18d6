"""Which Slack users are watched bots listed by bot ID (B…): their reactions are no votes."""

from __future__ import annotations

from time import monotonic, time

from sqlalchemy import select

from bot.core.db import Database, bot_users, upsert


class BotUsers:
    """User IDs of watched bots listed by bot ID (B…), learnt from their messages.

    Kept in the database for other processes and the next start; read into memory at start,
    and again on a miss at most every `refresh` seconds, so a reaction costs no query.
    """

    def __init__(self, database: Database, refresh: float = 2.0) -> None:
        self.db = database
        self.refresh = refresh
        self._known: frozenset[str] = frozenset()
        self._loaded_at = 0.0
        self._load()

    def learn(self, bot_id: str, user_id: str) -> None:
        """Remember that `user_id` is the bot `bot_id`'s user (written once)."""
        if user_id in self._known:
            return
        row = upsert(self.db, bot_users).values(user_id=user_id, bot_id=bot_id, created_at=time())
        with self.db.write() as conn:
            conn.execute(row.on_conflict_do_nothing())
        self._known = self._known | {user_id}

    def __contains__(self, user_id: object) -> bool:
        if user_id in self._known:
            return True
        if monotonic() - self._loaded_at < self.refresh:
            return False
        self._load()
        return user_id in self._known

    def _load(self) -> None:
        self._loaded_at = monotonic()
        with self.db.read(single=True) as conn:
            self._known = frozenset(conn.scalars(select(bot_users.c.user_id)))
