"""Follow-ups after the ack run on their own threads; a failing one is logged, not raised."""

from __future__ import annotations

import logging
import threading

import pytest

from bot.slack.follow_ups import FollowUps


def test_a_follow_up_runs_after_submit_returns() -> None:
    gate, done = threading.Event(), threading.Event()
    ran: list[str] = []

    def thank(who: str) -> None:
        gate.wait(5)
        ran.append(who)
        done.set()

    FollowUps(workers=1).submit(thank, "U1")
    assert ran == []  # submit did not wait for it
    gate.set()
    assert done.wait(5)
    assert ran == ["U1"]


def test_a_failing_follow_up_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    follow_ups = FollowUps(workers=1)
    done = threading.Event()

    def broken() -> None:
        raise RuntimeError("Slack said no")

    with caplog.at_level(logging.ERROR, logger="bot.slack"):
        follow_ups.submit(broken)
        follow_ups.submit(done.set)  # one worker: runs after `broken` has failed
        assert done.wait(5)
    assert "follow-up broken failed" in caplog.text
    assert "Slack said no" in caplog.text
