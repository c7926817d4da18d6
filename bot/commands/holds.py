"""The 429 hold the relays keep in their database, for the commands that ask Brixo themselves."""

from __future__ import annotations

import os
import sys
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


def seconds_held(settings: Settings, say_why: bool = False) -> float:
    """Seconds left of the hold on requests to Brixo a relay stored after a 429 (0 without
    one, or without a database yet). `say_why`: a note on stderr when it can't be read."""
    until = _with_outbox(settings, lambda outbox: outbox.held_until(), say_why)
    return max(0.0, (until or 0.0) - time())


def hold_sends(settings: Settings, until: float) -> bool:
    """Store a hold on requests to Brixo, as a relay does after a 429; False where there is
    no database to store it in."""

    def hold(outbox: Outbox) -> bool:
        outbox.hold(until)
        return True

    return _with_outbox(settings, hold) or False


def _with_outbox(settings: Settings, use: Callable[[Outbox], T], say_why: bool = False) -> T | None:
    """`use` on the outbox of an existing database; None without one or on its errors.

    A server that doesn't answer costs at most 2 s, whatever `connect_timeout` the URL sets:
    the hold is worth no longer wait.
    """
    from sqlalchemy.engine import make_url

    from bot.core.db import Database
    from bot.core.outbox import Outbox

    if not database_exists(settings):
        return None
    url = make_url(settings.database_url).difference_update_query(["connect_timeout"])
    database = Database(url.render_as_string(hide_password=False), pool_size=1)
    try:
        return use(Outbox(database))
    except Exception as error:  # no schema yet, or unreachable
        if say_why:
            print(
                f"note: the relays' database can't be read ({type(error).__name__}), so a 429 "
                "hold stored there isn't honoured",
                file=sys.stderr,
            )
        return None
    finally:
        database.dispose()
