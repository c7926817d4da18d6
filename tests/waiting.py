"""Polling helper: tests wait for a condition with a deadline, never for time alone (the chaos
harness keeps two loops of its own, which pump its fakes or stretch the deadline as they wait)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "",
) -> T:
    """Call ``predicate`` until it returns something truthy and return that value.

    Raises ``AssertionError`` (with ``message`` and the last value seen) when
    ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = message or "condition not met"
            raise AssertionError(f"{detail} (waited {timeout:.1f}s; last value: {value!r})")
        time.sleep(interval)
