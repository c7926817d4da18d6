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


def test_a_follow_up_submitted_for_later_runs_then_unless_shut_down_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A later follow-up (a user check asked again) runs after its delay; once the follow-ups
    are shut down (the process stopping), it is dropped without an error."""
    follow_ups = FollowUps(workers=1)
    ran = threading.Event()
    follow_ups.submit_later(0.05, ran.set)
    assert ran.wait(5)
    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda hook: errors.append(hook.exc_value))
    dropped = threading.Event()
    timer = follow_ups.submit_later(0.05, dropped.set)
    follow_ups.shutdown()
    timer.join(5)
    assert not timer.is_alive() and errors == []
    assert not dropped.is_set()
