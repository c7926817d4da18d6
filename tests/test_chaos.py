"""Chaos, short mode: a few hundred votes through real relay processes while Brixo misbehaves.

See tests/chaos.py for what a run does and checks; `python -m tests.chaos --long` is the long
mode. The seed is random per run and printed; a failure replays with `--seed N`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from tests.chaos import Config, Report, run_chaos

VOTES = int(os.environ.get("CHAOS_VOTES", "350"))
SEED = int(os.environ.get("CHAOS_SEED", str(random.SystemRandom().randrange(1 << 31))))


def _check(report: Report) -> None:
    print(report.summary())
    assert report.ok, report.summary()
    # The run really was chaotic, or it proves nothing.
    assert report.kills == 2, report.summary()
    for kind in ("5xx", "429", "drop", "stall", "404_then_found"):
        assert report.faults.get(kind, 0) > 0, f"no {kind} fault injected\n{report.summary()}"
    assert report.votes_acked >= VOTES * 0.8, report.summary()
    assert report.delivered > VOTES * 0.6, report.summary()
    assert report.pending == 0, report.summary()


def test_chaos_sqlite_one_relay(tmp_path: Path) -> None:
    _check(run_chaos(Config(SEED, VOTES, kills=2, backend="sqlite"), tmp_path))


def test_chaos_postgresql_two_relays(tmp_path: Path, postgres_url: str) -> None:
    _check(run_chaos(Config(SEED, VOTES, kills=2, backend="postgresql"), tmp_path, postgres_url))
