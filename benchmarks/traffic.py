"""Signed Slack traffic (reactions and 👍/👎 clicks on pre-mapped replies) and the load generator.

Vote `i` is a vote on reply `i` by one of PEOPLE people (user `U{run}p{i % PEOPLE}`), reply ts
`ts_of(i)`, mapped to the customer's message ID `message_id_of(ts_of(i))`, so every vote is one
act and one signal, and Brixo's distinct IDs tell which acts arrived. Even votes are reactions,
odd ones button clicks.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

from tests.fakes.slack_requests import (
    SlackSender,
    block_action,
    feedback_button_action,
    reaction_added,
    sign,
)

SIGNING_SECRET = "bench-signing-secret-5f2a"
BOT_TOKEN = "xoxb-bench-bot-token-1a2b"
BRIXO_KEY = "brixo-bench-key"
TEAM = "T1"
CHANNEL = "CBENCH"
REACTION = "reaction"
CLICK = "click"
# People voting in each run of traffic: each votes on many replies (every vote is still a new
# act), as in a workspace, where a person's first reaction is the only one that makes the relay
# ask Slack whether they are a bot.
PEOPLE = 100


def ts_of(i: int) -> str:
    """The Slack ts of reply `i`."""
    return f"1700000000.{i:06d}"


def message_id_of(ts: str) -> str:
    """The customer's message ID of the reply at `ts` (what the pre-mapping records)."""
    return f"msg-{ts}"


@dataclass(frozen=True)
class Request:
    """One signed POST /slack/events, ready to send."""

    vote: int
    kind: str
    body: bytes
    headers: dict[str, str]


def vote_request(i: int, sender: SlackSender, run: str = "") -> Request:
    """Vote `i`: a `+1`/`-1` reaction (even i) or a feedback-button click (odd i)."""
    value_up = (i // 2) % 2 == 0
    user = f"U{run}p{i % PEOPLE}"
    if i % 2 == 0:
        event = reaction_added(user, "+1" if value_up else "-1", CHANNEL, ts_of(i))
        body = json.dumps(sender.envelope(event, TEAM, event_id=f"Ev{run}{i:09d}")).encode()
        return Request(i, REACTION, body, sign(body, SIGNING_SECRET))
    action = feedback_button_action("up" if value_up else "down")
    payload = block_action(user, TEAM, CHANNEL, ts_of(i), action)
    body = urlencode({"payload": json.dumps(payload)}).encode()
    headers = sign(body, SIGNING_SECRET)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    return Request(i, CLICK, body, headers)


def build(votes: Sequence[int], run: str = "") -> list[Request]:
    """Signed requests for these votes (signatures are valid for Slack's 5 minutes)."""
    sender = SlackSender("http://127.0.0.1", SIGNING_SECRET)
    return [vote_request(i, sender, run) for i in votes]


@dataclass
class Result:
    """What a load run saw: latencies per kind, acked votes, failures, wall time."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {REACTION: [], CLICK: []})
    acked: list[int] = field(default_factory=list)
    failed: int = 0
    started: float = 0.0
    ended: float = 0.0

    @property
    def rate(self) -> float:
        """Acknowledged votes per second."""
        return len(self.acked) / max(1e-9, self.ended - self.started)


def run_load(
    port: int,
    requests: Sequence[Request],
    concurrency: int,
    rate: float | None = None,
    stop_on_error: bool = False,
    deadline: float = 120.0,
) -> Result:
    """Send `requests` over `concurrency` keep-alive connections; paced to `rate`/s if given.

    Paced runs are open-loop (a request late for its slot goes at once, and its latency is
    counted from its slot), so a slow server can't hide its queueing. Only HTTP 200 counts as
    acked. With `stop_on_error`, a thread stops at its first connection error.
    """
    result = Result()
    lock = threading.Lock()
    cursor = iter(range(len(requests)))
    start = time.perf_counter() + 0.05
    stop_at = start + deadline

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        local: list[tuple[Request, float]] = []
        failed = 0
        while time.perf_counter() < stop_at:
            with lock:
                n = next(cursor, None)
            if n is None:
                break
            request = requests[n]
            slot = start + n / rate if rate else time.perf_counter()
            pause = slot - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            try:
                conn.request("POST", "/slack/events", request.body, request.headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                ok = False
                if stop_on_error:
                    failed += 1
                    break
            if ok:
                local.append((request, time.perf_counter() - slot))
            else:
                failed += 1
        conn.close()
        with lock:
            result.failed += failed
            for request, latency in local:
                result.latencies[request.kind].append(latency)
                result.acked.append(request.vote)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    result.started = start
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.ended = time.perf_counter()
    return result


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]
