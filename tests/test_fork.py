"""A relay started before its process forks (library mode under `gunicorn --preload`).

The child has only the thread that forked: the parent's delivery threads are gone, any lock one
of them held stays held, and the database and Brixo connections are the parent's. The child
must deliver its own votes, under a lease of its own, and never wait on a lock of the parent's.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from time import time

import pytest
from sqlalchemy import select

from bot import FeedbackRelay
from bot.core.acts import UP, Act, Target
from bot.core.db import acts
from bot.core.outbox import DELIVERED
from tests.conftest import BRIXO_KEY
from tests.fakes import FakeBrixo
from tests.waiting import wait_until


@pytest.fixture
def relay(brixo: FakeBrixo, tmp_path: Path) -> Iterator[FeedbackRelay]:
    relay = FeedbackRelay(
        brixo_api_key=BRIXO_KEY,
        brixo_api_url=brixo.url,
        database_url=f"sqlite:///{tmp_path / 'relay.db'}",
    )
    yield relay
    relay.close()


def vote(relay: FeedbackRelay, message_id: str) -> int:
    """Record a 👍 on `message_id`; returns its act ID."""
    act = Act("slack", "T1", "U1", "button", Target("message", message_id), UP, time())
    recorded = relay.core.record_act(act, ask_comment=False)
    assert recorded.act_id is not None
    return recorded.act_id


def in_child(relay: FeedbackRelay, parent_owner: str) -> int:
    """The child's part: 0 once its own vote was delivered by its own delivery."""
    signal.alarm(20)  # a lock left held by the parent would hang here for good
    act_id = vote(relay, "m-child")

    def delivered_by() -> str | None:
        with relay.core.db.engine.connect() as conn:
            row = conn.execute(
                select(acts.c.state, acts.c.lease_owner).where(acts.c.id == act_id)
            ).one()
        return str(row.lease_owner) if row.state == DELIVERED else None

    return 0 if wait_until(delivered_by, timeout=15) != parent_owner else 2


def test_a_child_forked_from_a_started_relay_delivers_its_own_votes_once(
    relay: FeedbackRelay, brixo: FakeBrixo
) -> None:
    relay.start()
    first = vote(relay, "m-parent")
    # The parent's delivery threads and Brixo connection exist, its outcome is written.
    wait_until(lambda: relay.core.outbox.states_of([first], time())[first][0] == DELIVERED)
    worker = relay.core.worker
    assert worker is not None
    # As if a thread were writing when the fork came and went on past the fork's 2 s wait.
    held = relay.core.db._write_lock
    assert held is not None
    held.acquire()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            code = in_child(relay, worker.owner)
        finally:
            os._exit(code)
    held.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [r.id for r in brixo.accepted_for("m-child")] == ["m-child"]
    # The parent goes on delivering as before.
    vote(relay, "m-parent-2")
    assert [r.id for r in brixo.wait_for_accepted(3)] == ["m-parent", "m-child", "m-parent-2"]
    assert {t.name for t in threading.enumerate()} >= {"brixo-delivery"}
