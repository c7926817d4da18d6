"""The 429 hold the relays keep in their database, for the commands that ask Brixo themselves."""

from __future__ import annotations

import os
from collections.abc import Callable
from time import time
from typing import TYPE_CHECKING, TypeVar

from bot.core.settings import Settings

if TYPE_CHECKING:
    from bot.core.outbox import Outbox

T = TypeVar("T")


def database_exists(settings: Settings) -> bool:
    """False for a SQLite file not created yet (opening it would create it)."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    return url.get_backend_name() != "sqlite" or bool(url.database and os.path.exists(url.database))


def seconds_held(settings: Settings) -> float:
    """Seconds left of the hold on requests to Brixo a relay stored after a 429 (0 without
    one, or without a database yet)."""
    until = _with_outbox(settings, lambda outbox: outbox.held_until())
    return max(0.0, (until or 0.0) - time())


def hold_sends(settings: Settings, until: float) -> None:
    """Store a hold on requests to Brixo, as a relay does after a 429 (where a database is)."""
    _with_outbox(settings, lambda outbox: outbox.hold(until))


def _with_outbox(settings: Settings, use: Callable[[Outbox], T]) -> T | None:
    """`use` on the outbox of an existing database; None without one or on its errors."""
    from bot.core.db import Database
    from bot.core.outbox import Outbox

    if not database_exists(settings):
        return None
    database = Database(settings.database_url, pool_size=1)
    try:
        return use(Outbox(database))
    except Exception:  # no schema yet, or unreachable
        return None
    finally:
        database.dispose()
