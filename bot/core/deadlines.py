"""A deadline for a whole request to Brixo, answer included.

requests' read timeout bounds each read of the socket, not the answer: a server (or a proxy)
that trickles its answer a few bytes at a time would hold a send, and a delivery slot or the
`send` command, for as long as it liked. Past its deadline a request's socket is shut down,
which ends the read at once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any

from bot.core.forks import at_fork


class Watch:
    """One request under watch: its deadline, the connection it went out on, and whether it
    was cut off."""

    __slots__ = ("connection", "deadline", "expired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.connection: Any = None
        self.expired = False


class WatchedConnection:
    """Mixed into a urllib3 connection class by `Deadlines.watched`."""

    current: threading.local  # the sending threads' watches
    watch: Watch | None = None  # the watch of the request this connection carries

    def request(self, *args: Any, **kwargs: Any) -> Any:
        watch = getattr(self.current, "watch", None)
        if watch is not None:
            watch.connection = self
        self.watch = watch
        return super().request(*args, **kwargs)  # type: ignore[misc]


class Deadlines:
    """Cuts off requests that outlast `seconds`, on one thread of its own (started at the
    first request), for every sending thread.

    The connections must be of `watched(…)` classes: each tells the watch of the thread that
    sends on it which connection to cut.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._current = threading.local()
        self._renew()
        at_fork(in_child=self._renew)

    def _renew(self) -> None:
        """No watches and no thread yet (in a forked child, the parent's are gone)."""
        self._lock = threading.Condition(threading.Lock())
        # Oldest first: every deadline is `seconds` after its start, so the first ends first.
        self._watches: dict[int, Watch] = {}
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self) -> Iterator[Watch]:
        """Watch the request this thread sends within the block."""
        watch = Watch(monotonic() + self.seconds)
        key = id(watch)
        with self._lock:  # no wake-up for the thread: it looks again within `seconds` anyway
            self._watches[key] = watch
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="brixo-deadlines", daemon=True
                )
                self._thread.start()
        self._current.watch = watch
        try:
            yield watch
        finally:
            self._current.watch = None
            with self._lock:
                self._watches.pop(key, None)

    def watched(self, connection_class: type) -> type:
        """`connection_class` whose connections report themselves to the sending thread's watch."""
        return type(
            f"Watched{connection_class.__name__}",
            (WatchedConnection, connection_class),
            {"current": self._current},
        )

    def _run(self) -> None:
        with self._lock:
            while True:
                if not self._watches:  # a watch added meanwhile ends after this wait does
                    self._lock.wait(self.seconds)
                    continue
                key, watch = next(iter(self._watches.items()))
                left = watch.deadline - monotonic()
                if left > 0:
                    self._lock.wait(left)
                    continue
                del self._watches[key]
                watch.expired = True
                _cut(watch)


def _cut(watch: Watch) -> None:
    """End the reads of the watched request at once (they see the connection closed)."""
    connection = watch.connection
    sock = getattr(connection, "sock", None)
    if sock is None or getattr(connection, "watch", None) is not watch:  # another request's now
        return
    with contextlib.suppress(OSError):  # closed meanwhile
        sock.shutdown(socket.SHUT_RDWR)
