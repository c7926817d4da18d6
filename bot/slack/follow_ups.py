"""Work after the ack (Slack calls, agent answers), on a few threads of its own."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bot.core.forks import at_fork

log = logging.getLogger("bot.slack")


class FollowUps:
    """Runs follow-ups (thanks, modals, seeding) after the ack, as Bolt's lazy listeners would.

    Bolt deep-copies the whole request for each lazy listener: on a vote that copy was a fifth
    of the ack's CPU (README.md, Performance). Follow-ups get only what the listener hands them.
    """

    def __init__(self, workers: int = 10) -> None:  # as many as Bolt's own listener threads
        self.workers = workers
        self._renew()
        at_fork(in_child=self._renew)

    def _renew(self) -> None:
        """Threads of its own (in a forked child, the parent's are gone)."""
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="slack-follow-up")

    def shutdown(self) -> None:
        """Let the follow-ups already handed over finish, then end the threads; take no more."""
        self._pool.shutdown(wait=False)

    def submit(self, function: Callable[..., None], *args: Any) -> None:
        """Run `function(*args)` soon; a failure is logged, never raised."""
        self._pool.submit(self._run, function, args)

    def submit_later(
        self, delay: float, function: Callable[..., None], *args: Any
    ) -> threading.Timer:
        """`submit` after `delay` seconds, on a timer no exit waits for (dropped once shut down)."""
        timer = threading.Timer(delay, self._submit_unless_shut, (function, args))
        timer.daemon = True
        timer.start()
        return timer

    def _submit_unless_shut(self, function: Callable[..., None], args: tuple[Any, ...]) -> None:
        with contextlib.suppress(RuntimeError):  # the pool was shut down meanwhile
            self._pool.submit(self._run, function, args)

    @staticmethod
    def _run(function: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            function(*args)
        except Exception:
            log.exception("follow-up %s failed", function.__name__)
