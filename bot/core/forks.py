"""Starting afresh in a process forked from a running one (gunicorn `--preload`)."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable


def at_fork(
    *,
    in_child: Callable[[], None],
    before: Callable[[], None] | None = None,
    in_parent: Callable[[], None] | None = None,
) -> None:
    """Call these bound methods around every fork while their object lives.

    A child has only the thread that forked: the parent's threads are gone, the locks they held
    stay held, and pooled connections and sockets are the parent's. Each object that owns such
    things renews them `in_child`; `before` may wait for its threads to leave a library's
    critical section first (`in_parent` then lets them go on).
    """
    for hook, method in (
        ("before", before),
        ("after_in_parent", in_parent),
        ("after_in_child", in_child),
    ):
        if method is not None:
            os.register_at_fork(**{hook: _weakly(method)})


def _weakly(method: Callable[[], None]) -> Callable[[], None]:
    ref = weakref.WeakMethod(method)

    def call() -> None:
        bound = ref()
        if bound is not None:
            bound()

    return call
