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

from urllib3.exceptions import ConnectTimeoutError

from bot.core.forks import at_fork


class Watch:
    """One request under watch: its deadline, the connection it went out on, and whether it
    was cut off."""

    __slots__ = ("connection", "cut", "deadline")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.connection: Any = None
        self.cut = False


class WatchedConnection:
    """Mixed into a urllib3 connection class by `Deadlines.watched`."""

    current: threading.local  # the sending threads' watches
    watch: Watch | None = None  # the watch of the request this connection carries

    def _bind(self) -> Watch | None:
        watch = getattr(self.current, "watch", None)
        if watch is not None:
            watch.connection = self
        self.watch = watch
        return watch

    def connect(self) -> None:
        """Connect (DNS and TCP can't be cut); past the deadline by then, send nothing."""
        watch = self._bind()
        super().connect()  # type: ignore[misc]
        if watch is not None and monotonic() >= watch.deadline:
            self.close()  # type: ignore[attr-defined]
            raise ConnectTimeoutError(self, "connected after the request's deadline")

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self._bind()
        return super().request(*args, **kwargs)  # type: ignore[misc]


class Deadlines:
    """Cuts off requests that outlast `seconds`, on a thread of its own (started by the first
    request, ended after `seconds` without one), for every sending thread.

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
        # Oldest first: each deadline is `seconds` after it was added, so the first ends first.
        self._watches: dict[int, Watch] = {}
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self) -> Iterator[Watch]:
        """Watch the request this thread sends within the block; `cut` says whether it was cut
        off (what was read of its answer then may be partial)."""
        with self._lock:  # no wake-up for the thread: it looks again within `seconds` anyway
            watch = Watch(monotonic() + self.seconds)
            self._watches[id(watch)] = watch
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
            with self._lock:  # done: no cut from here on
                self._watches.pop(id(watch), None)
                if watch.connection is not None and watch.connection.watch is watch:
                    watch.connection.watch = None

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
                    if not self._watches:  # idle: the next request starts a thread again
                        self._thread = None
                        return
                    continue
                key, watch = next(iter(self._watches.items()))
                left = watch.deadline - monotonic()
                if left > 0:
                    self._lock.wait(left)
                    continue
                del self._watches[key]
                watch.cut = _cut(watch)


def _cut(watch: Watch) -> bool:
    """End the reads of the watched request at once (they see the connection closed); False
    when there is no socket of its own to cut (still connecting: see `connect`)."""
    connection = watch.connection
    sock = getattr(connection, "sock", None)
    if sock is None or getattr(connection, "watch", None) is not watch:
        return False
    # The plain socket's shutdown: an SSL socket's own would unwrap TLS under a reading thread.
    with contextlib.suppress(OSError):  # closed meanwhile
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    return True
