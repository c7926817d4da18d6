"""A relay started before its process forks (library mode under `gunicorn --preload`).

The child has only the thread that forked: the parent's delivery threads are gone, any lock one
of them held stays held, and the database and Brixo connections are the parent's. The child
must deliver its own votes, under a lease of its own, and never wait on a lock of the parent's.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from time import time
from types import SimpleNamespace

import pytest
from sqlalchemy import Connection

from bot import FeedbackRelay
from bot.core.acts import UP, Act, Target
from bot.core.deadlines import Deadlines
from bot.core.outbox import DELIVERED
from bot.slack.follow_ups import FollowUps
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


def in_child(relay: FeedbackRelay, parent_owner: str, parent_pool: int) -> int:
    """The child's part: 0 once its own vote was delivered by a delivery of its own (the
    parent's holds every send meanwhile), over database connections of its own."""
    signal.alarm(20)  # a lock left held by the parent would hang here for good
    worker = relay.core.worker
    if worker is None or worker.owner == parent_owner or not worker.running:
        return 2
    if id(relay.core.db.engine.pool) == parent_pool:  # the parent's pooled connections
        return 3
    act_id = vote(relay, "m-child")
    wait_until(lambda: relay.core.outbox.states_of([act_id], time())[act_id][0] == DELIVERED)
    return 0


def test_a_child_forked_from_a_started_relay_delivers_its_own_votes_once(
    relay: FeedbackRelay, brixo: FakeBrixo
) -> None:
    relay.start()
    first = vote(relay, "m-parent")
    # The parent's delivery threads and Brixo connection exist, its outcome is written.
    wait_until(lambda: relay.core.outbox.states_of([first], time())[first][0] == DELIVERED)
    worker = relay.core.worker
    assert worker is not None
    worker._hold_until = time() + 60  # the parent sends nothing while the child runs
    # As if a thread were writing when the fork came and went on past the fork's 2 s wait.
    held = relay.core.db._write_lock
    assert held is not None
    held.acquire()
    parent_pool = id(relay.core.db.engine.pool)
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            code = in_child(relay, worker.owner, parent_pool)
        finally:
            os._exit(code)
    held.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [r.id for r in brixo.accepted_for("m-child")] == ["m-child"]
    # The parent goes on delivering as before.
    worker._hold_until = 0.0
    vote(relay, "m-parent-2")
    assert [r.id for r in brixo.wait_for_accepted(3)] == ["m-parent", "m-child", "m-parent-2"]
    assert {t.name for t in threading.enumerate()} >= {"brixo-delivery"}


def test_follow_ups_run_in_a_forked_child() -> None:
    """The parent's follow-up threads are gone in the child; it gets threads of its own."""
    follow_ups = FollowUps(workers=1)
    ran = threading.Event()
    follow_ups.submit(ran.set)
    assert ran.wait(5)  # the parent's one thread exists, idle
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            signal.alarm(10)
            done = threading.Event()
            follow_ups.submit(done.set)
            code = 0 if done.wait(5) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    follow_ups.shutdown()
    assert os.waitstatus_to_exitcode(status) == 0


def test_request_deadlines_apply_in_a_forked_child() -> None:
    """The parent's deadline thread is gone in the child: a request there starts one of its
    own, and a request that outlasts its deadline is still cut off."""
    deadlines = Deadlines(0.2)
    with deadlines.watch():
        pass  # the parent's thread, started
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            signal.alarm(10)
            left, right = socket.socketpair()  # nothing ever comes from `right`
            with deadlines.watch() as watch:
                watch.connection = SimpleNamespace(sock=left, watch=watch)
                ended = left.recv(1) == b""  # the read ends once its deadline is past
            code = 0 if ended and watch.cut else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_fork_waits_for_a_write_under_way_and_the_parent_writes_after_it(
    relay: FeedbackRelay,
) -> None:
    """A fork that comes while one of the relay's threads writes to SQLite waits for that write
    to end (up to 2 s), and the parent's next vote is stored, not stuck on a lock."""
    db = relay.core.db
    writing, go, ended = threading.Event(), threading.Event(), threading.Event()

    def slow_write(conn: Connection) -> None:
        writing.set()
        go.wait(10)
        ended.set()

    writer = threading.Thread(target=db.write_together, args=(slow_write,))
    writer.start()
    assert writing.wait(10)
    threading.Timer(0.5, go.set).start()  # the write ends well within the fork's 2 s wait
    pid = os.fork()
    if pid == 0:  # the child
        os._exit(0)
    ended_before_fork = ended.is_set()
    _, status = os.waitpid(pid, 0)
    writer.join(10)
    assert os.waitstatus_to_exitcode(status) == 0
    assert ended_before_fork
    done = threading.Event()
    threading.Thread(target=lambda: (vote(relay, "m-after-fork"), done.set()), daemon=True).start()
    assert done.wait(10), "the parent's vote after the fork is stuck"
