"""Chaos runner: votes through the real `python -m bot serve` processes while Brixo misbehaves.

A seeded, bounded run: reactions, clicks, comment modals, conversation ratings and Slack's
redeliveries go over signed HTTP to one relay process (SQLite) or two sharing one PostgreSQL
database, while a Brixo stand-in answers 5xx, 429 with Retry-After, 404-then-found, drops
connections and stalls, and relay processes are SIGKILLed and restarted. At the end every act
(row of brixo_acts) must have been delivered exactly once (one 204 at Brixo), or be a dead
letter with its reason, or still be pending with a reason; every vote the app acknowledged
with HTTP 200 must have its act. Duplicates are counted and each must be explained by a
SIGKILL (delivered, killed before the outcome was written) or by a stall that outlived the
client's timeout (Brixo accepted after the relay gave up).

Short mode runs in the test suite (tests/test_chaos.py). The long mode:

    python -m tests.chaos --long                  # SQLite, then PostgreSQL (two relays)
    python -m tests.chaos --seed 7 --votes 5000 --kills 8 --backend postgresql

Faults are a pure function of (seed, request path, n-th request to that path), and the
traffic plan of the seed alone, so `--seed N` replays a run (thread timing aside).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import requests

from bot.core.acts import rfc3339
from bot.core.brixo import KEY_CHECK_ID
from bot.core.settings import parse_database_url
from tests.fakes import FakeSlackAPI, SlackSender
from tests.fakes import slack_requests as sr
from tests.fakes.brixo import FakeBrixo, Received, _BrixoHandler, _Fault
from tests.procs import Proc, start_bot
from tests.waiting import wait_until

Backend = Literal["sqlite", "postgresql"]

BRIXO_KEY = "brixo-chaos-key-5d1e"
SIGNING_SECRET = "chaos-signing-secret-77a0"
BOT_TOKEN = "xoxb-chaos-bot-token-90f1"
CLIENT_READ_TIMEOUT = 15.0  # BrixoClient's read timeout: a longer stall is a late acceptance
LEASE = 15.0  # DeliveryWorker's lease: a killed process's acts are free again after it
AWKWARD = [
    "",
    "ok",
    "naïve café ☕",
    "emoji 👍🏽👎🏿 ZWJ 👩‍💻",
    "quotes ' \" `",
    "'; DROP TABLE brixo_acts; --",
    "back\\slash and /slash/ ?q=1 #frag %2e%2e",
    "newline\nand\ttab",
    "RTL \u202e txet",
    "ＦＵＬＬＷＩＤＴＨ",
    "\u0000nul? no",  # replaced before sending: Slack's inputs never carry NUL
]
ID_CHARS = ["", "/", "..", "%2e", " ", "?x", "#", "é", "👍", "'", '"', "\\", "+", "&", "="]


# --- Brixo with seeded random faults -----------------------------------------------------


def _unit(seed: int, *parts: object) -> float:
    """A number in [0, 1) that depends only on the seed and `parts`."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class FaultRates:
    """Probabilities per request (the rest is answered normally)."""

    fail_5xx: float = 0.08
    throttle_429: float = 0.03
    drop: float = 0.04
    stall: float = 0.08  # a short stall (0.2–1.5 s), then a normal answer
    long_stall: float = 0.002  # longer than the client's timeout: Brixo accepts it late
    not_found_first: float = 0.06  # per target: 404 for its first 1–3 requests, then found
    never_found: float = 0.01  # per target: 404 for good (a dead letter after the grace)


class _ChaosHandler(_BrixoHandler):
    def handle_any(self) -> None:
        fake: ChaosBrixo = self.server.owner
        fake._local.path = self.path
        fake._local.fault = None
        super().handle_any()


class ChaosBrixo(FakeBrixo):
    """FakeBrixo whose faults are drawn per request from the seed (queued faults still first)."""

    handler_class: ClassVar[type[_BrixoHandler]] = _ChaosHandler

    def __init__(self, seed: int, rates: FaultRates, max_long_stalls: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.seed = seed
        self.rates = rates
        self.max_long_stalls = max_long_stalls
        self.faults: Counter[str] = Counter()
        self.late: list[Received] = []  # accepted after a stall that outlived the client
        self._local = threading.local()
        self._seen: Counter[str] = Counter()
        self._found_after: dict[str, int] = {}
        self._chaos_lock = threading.Lock()
        self.enabled = True

    def _pop_fault(self) -> _Fault | None:
        queued = super()._pop_fault()
        if queued is not None or not self.enabled:
            return queued
        path = getattr(self._local, "path", "")
        if KEY_CHECK_ID in path:
            return None
        with self._chaos_lock:
            n = self._seen[path]
            self._seen[path] += 1
            roll = _unit(self.seed, "fault", path, n)
            r = self.rates
            fault: _Fault | None = None
            edges = [
                ("5xx", r.fail_5xx),
                ("429", r.throttle_429),
                ("drop", r.drop),
                ("stall", r.stall),
                ("long_stall", r.long_stall),
            ]
            low = 0.0
            kind = ""
            for name, p in edges:
                if low <= roll < low + p:
                    kind = name
                    break
                low += p
            if kind == "long_stall" and self.faults["long_stall"] >= self.max_long_stalls:
                kind = "stall"
            if kind == "5xx":
                status = (500, 502, 503, 504)[int(_unit(self.seed, "status", path, n) * 4)]
                fault = _Fault("fail", status=status, detail="chaos")
            elif kind == "429":
                wait = "1" if _unit(self.seed, "ra", path, n) < 0.7 else "2"
                fault = _Fault("fail", status=429, retry_after=wait, detail="chaos throttle")
            elif kind == "drop":
                fault = _Fault("drop")
            elif kind == "stall":
                fault = _Fault("stall", seconds=0.2 + 1.3 * _unit(self.seed, "s", path, n))
            elif kind == "long_stall":
                fault = _Fault("stall", seconds=CLIENT_READ_TIMEOUT + 1.5)
            if kind:
                self.faults[kind] += 1
        self._local.fault = kind
        return fault

    def _judge(
        self, method: str, route: Any, headers: Any, body: bytes, too_large: bool
    ) -> tuple[int, str]:
        status, detail = super()._judge(method, route, headers, body, too_large)
        if status != 204 or route is None or not self.enabled:
            return status, detail
        ident = route[1]
        with self._chaos_lock:
            if ident not in self._found_after:
                roll = _unit(self.seed, "404", ident)
                never = roll < self.rates.never_found
                first = roll < self.rates.never_found + self.rates.not_found_first
                self._found_after[ident] = (
                    -1 if never else (1 + int(_unit(self.seed, "k", ident) * 3) if first else 0)
                )
            after = self._found_after[ident]
            if after == -1 or after > 0:
                if after > 0:
                    self._found_after[ident] = after - 1
                self.faults["404_never" if after == -1 else "404_then_found"] += 1
                return 404, f"Message {ident!r} not found (chaos)"
        return status, detail

    def _record(self, received: Received) -> None:
        super()._record(received)
        if getattr(self._local, "fault", None) == "long_stall" and received.status == 204:
            with self._chaos_lock:
                self.late.append(received)


# --- the relay processes ----------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(repo: Path) -> dict[str, str]:
    keep = ("PATH", "HOME", "TMPDIR", "VIRTUAL_ENV", "LD_LIBRARY_PATH")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(
        {
            "PYTHONPATH": str(repo),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        }
    )
    return env


class RelayProc:
    """One `python -m bot serve` on a fixed port that can be SIGKILLed and restarted."""

    def __init__(self, name: str, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.port = free_port()
        self.env = {**env, "PORT": str(self.port)}
        self.cwd = cwd
        self.proc: Proc | None = None
        self.up = threading.Event()
        self.cycling = threading.Lock()  # one kill-and-restart at a time
        self.sender = SlackSender(f"http://127.0.0.1:{self.port}", SIGNING_SECRET, timeout=5.0)
        self.logs: list[str] = []

    def start(self) -> None:
        self.proc = start_bot("serve", env=self.env, cwd=self.cwd)
        self.proc.wait_healthy(f"http://127.0.0.1:{self.port}/healthz", timeout=60)
        self.up.set()

    def kill(self) -> None:
        """SIGKILL the whole process group (gunicorn master and worker): no cleanup at all."""
        self.up.clear()
        assert self.proc is not None
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._keep_logs()

    def stop(self) -> None:
        self.up.clear()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except Exception:
                self.kill()
        if self.proc is not None:
            self.proc.stop()
            self._keep_logs()
        self.sender.close()

    def _keep_logs(self) -> None:
        if self.proc is not None:
            self.logs.append(self.proc.stderr)
            self.proc = None if self.proc.returncode is not None else self.proc


# --- the traffic plan ---------------------------------------------------------------------


@dataclass
class Vote:
    """One vote the runner sent, and what the app answered."""

    n: int
    kind: str  # reaction, click, rating, change, repeat
    team: str
    user: str
    channel: str
    target_kind: str  # message | conversation
    target_id: str
    value: str  # thumbs_up | thumbs_down
    expect_act: bool  # a new act is due (False for a repeat of the same vote)
    acked: bool = False
    comment: str | None = None  # the comment submitted and accepted, when any
    comment_plan: str = ""  # submit | close | ignore


@dataclass
class Report:
    """A run's figures and verdict."""

    seed: int
    backend: str
    relays: int
    votes_sent: int = 0
    votes_acked: int = 0
    requests_to_app: int = 0
    redeliveries: int = 0
    comments: int = 0
    acts: int = 0
    delivered: int = 0
    dead: int = 0
    pending: int = 0
    kills: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    brixo_requests: int = 0
    accepted: int = 0
    lost: list[str] = field(default_factory=list)
    duplicates_kill: int = 0
    duplicates_late: int = 0
    duplicates_unexplained: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    dead_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicates_unexplained or self.problems)

    def summary(self) -> str:
        lines = [
            f"chaos seed={self.seed} backend={self.backend} relays={self.relays} "
            f"in {self.seconds:.0f} s: {'OK' if self.ok else 'FAILED'}",
            f"  votes sent={self.votes_sent} acked={self.votes_acked} "
            f"(app requests {self.requests_to_app}, redeliveries {self.redeliveries}, "
            f"comments {self.comments})",
            f"  acts={self.acts} delivered={self.delivered} dead={self.dead} "
            f"pending={self.pending}; dead reasons {self.dead_reasons}",
            f"  kills={self.kills}; Brixo requests={self.brixo_requests} "
            f"accepted={self.accepted}; faults {dict(sorted(self.faults.items()))}",
            f"  lost={len(self.lost)} duplicated: at a kill={self.duplicates_kill}, "
            f"accepted late after a client timeout={self.duplicates_late}, "
            f"unexplained={len(self.duplicates_unexplained)}",
        ]
        for problem in (self.lost + self.duplicates_unexplained + self.problems)[:30]:
            lines.append(f"  ! {problem}")
        lines.append(f"  replay: python -m tests.chaos --seed {self.seed} --backend {self.backend}")
        return "\n".join(lines)


@dataclass
class Config:
    seed: int
    votes: int = 400
    kills: int = 2
    backend: Backend = "sqlite"
    rates: FaultRates = field(default_factory=FaultRates)
    max_long_stalls: int = 1
    not_found_grace: str = "8s"
    comment_wait: str = "2s"
    settle_timeout: float = 90.0

    @property
    def relays(self) -> int:
        return 2 if self.backend == "postgresql" else 1


class Runner:
    """Drives one chaos run; `run()` returns its Report."""

    def __init__(self, config: Config, workdir: Path, database_url: str, repo: Path) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.workdir = workdir
        self.database_url = database_url
        self.repo = repo
        self.report = Report(config.seed, config.backend, config.relays)
        self.votes: list[Vote] = []
        self.kill_times: list[float] = []
        self.relays: list[RelayProc] = []
        self.brixo: ChaosBrixo | None = None
        self.slack: FakeSlackAPI | None = None
        self._redeliver: list[tuple[float, bytes, int]] = []  # (due, envelope, attempt)
        self._modals: list[tuple[float, str, Vote]] = []  # (deadline, trigger_id, vote)
        self._mine: dict[tuple[str, str, str], Vote] = {}  # (user, kind, target) -> last vote
        self._envelopes = SlackSender("http://127.0.0.1:9", SIGNING_SECRET)

    # -- plumbing --

    @contextmanager
    def environment(self) -> Iterator[None]:
        with ExitStack() as stack:
            self.brixo = stack.enter_context(
                ChaosBrixo(
                    self.cfg.seed,
                    self.cfg.rates,
                    self.cfg.max_long_stalls,
                    api_key=BRIXO_KEY,
                    max_body_bytes=65536,
                )
            )
            self.slack = stack.enter_context(FakeSlackAPI())
            from bot.slack.manifest import BOT_SCOPES

            self.slack.scopes = list(BOT_SCOPES)
            env = {
                **base_env(self.repo),
                "SLACK_API_URL": self.slack.url,
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "BRIXO_API_URL": self.brixo.url,
                "BRIXO_API_KEY": BRIXO_KEY,
                "DATABASE_URL": self.database_url,
                "ASK_COMMENT": "negative",
                "COMMENT_WAIT": self.cfg.comment_wait,
                "NOT_FOUND_GRACE": self.cfg.not_found_grace,
                "DELIVERY_CONCURRENCY": "8",
                "LOG_LEVEL": "warning",
                "WEB_CONCURRENCY": "1",
                "GUNICORN_THREADS": "8",
            }
            self.relays = [
                RelayProc(f"relay{i}", env, self.workdir) for i in range(self.cfg.relays)
            ]
            try:
                for relay in self.relays:  # one after the other: the first one migrates
                    relay.start()
                yield
            finally:
                for relay in self.relays:
                    relay.stop()

    def live_relay(self, prefer: int) -> RelayProc | None:
        order = self.relays[prefer % len(self.relays) :] + self.relays[: prefer % len(self.relays)]
        for relay in order:
            if relay.up.is_set():
                return relay
        return None

    def post(self, body: bytes, content_type: str, prefer: int, retry: int = 0) -> int:
        """POST a signed body to a live relay; the HTTP status, or 0 when none answered."""
        relay = self.live_relay(prefer)
        if relay is None:
            wait_until(lambda: any(r.up.is_set() for r in self.relays), timeout=60)
            relay = self.live_relay(prefer)
            assert relay is not None
        headers = sr.sign(body, SIGNING_SECRET)
        headers["Content-Type"] = content_type
        if retry:
            headers["X-Slack-Retry-Num"] = str(retry)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        self.report.requests_to_app += 1
        try:
            answer = relay.sender.raw(body, headers)
        except requests.RequestException:
            return 0
        if answer.status_code >= 500:
            self.report.problems.append(f"app answered {answer.status_code} to a signed request")
        self._last_answer = answer
        return answer.status_code

    def interaction(self, payload: dict[str, Any], prefer: int) -> requests.Response | None:
        from urllib.parse import urlencode

        body = urlencode({"payload": json.dumps(payload)}).encode()
        status = self.post(body, "application/x-www-form-urlencoded", prefer)
        return self._last_answer if status == 200 else None

    def pump(self, final: bool = False) -> None:
        """Send redeliveries that are due; answer modals whose views.open has arrived."""
        now = time.monotonic()
        due = [r for r in self._redeliver if r[0] <= now or final]
        self._redeliver = [r for r in self._redeliver if not (r[0] <= now or final)]
        for _, envelope, attempt in due:
            self.report.redeliveries += 1
            status = self.post(envelope, "application/json", attempt, retry=attempt)
            if status == 200:
                self._acked_envelope(envelope)
            elif attempt < 3:
                self._redeliver.append((time.monotonic() + 0.5 * attempt, envelope, attempt + 1))
        assert self.slack is not None
        opened = {c.args.get("trigger_id"): c for c in self.slack.calls_to("views.open")}
        still: list[tuple[float, str, Vote]] = []
        for deadline, trigger, vote in self._modals:
            call = opened.get(trigger)
            if call is None:
                if time.monotonic() < deadline:
                    still.append((deadline, trigger, vote))
                continue
            self.answer_modal(vote, call.args.get("view") or {})
        self._modals = still

    def _acked_envelope(self, envelope: bytes) -> None:
        doc = json.loads(envelope)
        vote = self._by_event.get(doc.get("event_id"))
        if vote is not None:
            vote.acked = True

    # -- votes --

    def new_target(self, n: int) -> str:
        tail = "".join(self.rng.choice(ID_CHARS) for _ in range(self.rng.randint(0, 3)))
        return f"m{self.cfg.seed}-{n}{tail}"

    def map_reply(self, team: str, channel: str, ts: str, message_id: str | None,
                  conversation_id: str | None, prefer: int) -> bool:  # fmt: skip
        payload: dict[str, Any] = {"message_id": message_id}
        if conversation_id:
            payload["conversation_id"] = conversation_id
        event = sr.message_metadata_posted(channel, ts, "brixo_message", payload, team_id=team)
        for attempt in range(4):
            if (
                self.post(
                    json.dumps(self._envelopes.envelope(event, team)).encode(),
                    "application/json",
                    prefer + attempt,
                    retry=attempt,
                )
                == 200
            ):
                return True
            wait_until(lambda: any(r.up.is_set() for r in self.relays), timeout=60)
        return False

    def one_vote(self, n: int) -> None:
        rng = self.rng
        team = rng.choice(("T1", "T1", "T2"))
        user = f"U{rng.randint(1, 40)}"
        channel = f"C{rng.randint(1, 5)}"
        prefer = rng.randrange(len(self.relays))
        roll = rng.random()
        if roll < 0.08 and self._mine:
            return self.change_or_repeat(n, prefer)
        if roll < 0.20:
            return self.rating(n, team, user, channel, prefer)
        ts = f"{1_700_000_000 + n}.{rng.randint(0, 999_999):06d}"
        target = self.new_target(n)
        if not self.map_reply(team, channel, ts, target, None, prefer):
            return
        value = "thumbs_up" if rng.random() < 0.55 else "thumbs_down"
        vote = Vote(n, "", team, user, channel, "message", target, value, True)
        vote.comment_plan = rng.choice(("submit", "submit", "close", "ignore"))
        self.votes.append(vote)
        self._mine[(user, "message", target)] = vote
        self._where[(team, "message", target)] = (channel, ts)
        if rng.random() < 0.5:
            vote.kind = "reaction"
            self.react(vote, ts, prefer)
        else:
            vote.kind = "click"
            self.click(vote, ts, prefer)

    def react(self, vote: Vote, ts: str, prefer: int) -> None:
        up = vote.value == "thumbs_up"
        name = self.rng.choice(("+1", "thumbsup") if up else ("-1", "thumbsdown"))
        if self.rng.random() < 0.3:
            name += f"::skin-tone-{self.rng.randint(2, 6)}"
        event = sr.reaction_added(vote.user, name, vote.channel, ts, event_ts=sr.now_ts())
        envelope = self._envelopes.envelope(event, vote.team)
        self._by_event[envelope["event_id"]] = vote
        body = json.dumps(envelope).encode()
        status = self.post(body, "application/json", prefer)
        if status == 200:
            vote.acked = True
            if self.rng.random() < 0.1:
                self._redeliver.append((time.monotonic() + self.rng.random(), body, 1))
        else:
            self._redeliver.append((time.monotonic() + 0.3, body, 1))

    def click(self, vote: Vote, ts: str, prefer: int) -> None:
        trigger = f"trig-{vote.n}-{self.rng.randint(0, 1 << 30)}"
        payload = sr.block_action(
            vote.user,
            vote.team,
            vote.channel,
            ts,
            sr.feedback_button_action("up" if vote.value == "thumbs_up" else "down"),
            trigger_id=trigger,
        )
        if self.interaction(payload, prefer) is not None:
            vote.acked = True
            if vote.value == "thumbs_down" and vote.comment_plan != "ignore":
                self._modals.append((time.monotonic() + 5, trigger, vote))

    def change_or_repeat(self, n: int, prefer: int) -> None:
        key = self.rng.choice(sorted(self._mine))
        before = self._mine[key]
        if not before.acked:
            return
        channel, ts = self._where[(before.team, "message", before.target_id)]
        repeat = self.rng.random() < 0.4
        if repeat:
            value = before.value
        else:
            value = "thumbs_down" if before.value == "thumbs_up" else "thumbs_up"
            if (before.user, before.target_id) in self._changed:
                return  # a change back would rightly be a new act: one change per vote
            self._changed.add((before.user, before.target_id))
        vote = Vote(n, "repeat" if repeat else "change", before.team, before.user, channel,
                    "message", before.target_id, value, not repeat)  # fmt: skip
        vote.comment_plan = "ignore"
        self.votes.append(vote)
        self._mine[key] = vote
        self.click(vote, ts, prefer)

    def rating(self, n: int, team: str, user: str, channel: str, prefer: int) -> None:
        root = f"{1_600_000_000 + n}.000100"
        reply = f"{1_600_000_000 + n}.000200"
        conversation = f"conv{self.cfg.seed}-{n}"
        if not self.map_reply(team, channel, reply, f"{conversation}-m", conversation, prefer):
            return
        value = "thumbs_up" if self.rng.random() < 0.5 else "thumbs_down"
        vote = Vote(n, "rating", team, user, channel, "conversation", conversation, value, True)
        vote.comment_plan = "submit"
        self.votes.append(vote)
        trigger = f"trig-r{n}-{self.rng.randint(0, 1 << 30)}"
        payload = sr.message_shortcut(user, team, channel, reply, thread_ts=root,
                                      trigger_id=trigger)  # fmt: skip
        payload["message"]["thread_ts"] = root
        if self.interaction(payload, prefer) is not None:
            self._modals.append((time.monotonic() + 5, trigger, vote))
        else:
            vote.expect_act = False  # the shortcut itself records nothing

    def answer_modal(self, vote: Vote, view: dict[str, Any]) -> None:
        from bot.slack.blocks import COMMENT_BLOCK, COMMENT_INPUT, VOTE_BLOCK, VOTE_INPUT

        comment = self.rng.choice(AWKWARD).replace("\u0000", "")
        if self.rng.random() < 0.2:
            comment += " " + "long " * self.rng.randint(50, 500)
        values: dict[str, Any] = {
            COMMENT_BLOCK: {COMMENT_INPUT: {"type": "plain_text_input", "value": comment}}
        }
        shown = {k: view.get(k) for k in ("callback_id", "private_metadata")}
        if vote.kind == "rating":
            choice = "up" if vote.value == "thumbs_up" else "down"
            values[VOTE_BLOCK] = {VOTE_INPUT: {"selected_option": {"value": choice}}}
            answer = self.interaction(sr.view_submission(vote.user, vote.team, shown, values), 0)
            vote.acked = answer is not None
            if vote.acked:
                vote.comment = comment.strip() or None
            return
        if vote.comment_plan == "close":
            self.interaction(sr.view_closed(vote.user, vote.team, shown), 0)
            return
        answer = self.interaction(sr.view_submission(vote.user, vote.team, shown, values), 0)
        if answer is not None and comment.strip():
            refused = answer.content and "errors" in answer.text
            if not refused:
                vote.comment = comment.strip()
                self.report.comments += 1

    # -- the run --

    def run(self) -> Report:
        started = time.monotonic()
        self._by_event: dict[str, Vote] = {}
        self._where: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._changed: set[tuple[str, str]] = set()
        self._last_answer: requests.Response | None = None
        cfg = self.cfg
        kill_at = sorted(self.rng.sample(range(cfg.votes // 5, cfg.votes * 4 // 5), cfg.kills))
        with self.environment():
            killers: list[threading.Thread] = []
            for n in range(cfg.votes):
                if kill_at and n == kill_at[0]:
                    kill_at.pop(0)
                    victim = self.relays[len(self.kill_times) % len(self.relays)]
                    thread = threading.Thread(target=self.kill_and_restart, args=(victim,))
                    thread.start()
                    killers.append(thread)
                self.one_vote(n)
                self.report.votes_sent = len(self.votes)
                self.pump()
            for thread in killers:
                thread.join(timeout=120)
            end = time.monotonic() + 10
            while (self._redeliver or self._modals) and time.monotonic() < end:
                self.pump()
                time.sleep(0.05)
            self.pump(final=True)
            self.settle()
            self.check()
        self.report.seconds = time.monotonic() - started
        return self.report

    def kill_and_restart(self, relay: RelayProc) -> None:
        # SIGKILL a moment later, while requests and deliveries are in flight.
        time.sleep(self.rng.random() * 0.5)
        with relay.cycling:  # a second kill waits until the first restart is up
            self.kill_times.append(time.time())
            relay.kill()
            self.report.kills += 1
            relay.start()

    def rows(self) -> list[dict[str, Any]]:
        from sqlalchemy import select

        from bot.core.db import Database, acts

        database = Database(parse_database_url("DATABASE_URL", self.database_url), pool_size=1)
        try:
            with database.read() as conn:
                return [dict(r._mapping) for r in conn.execute(select(acts).order_by(acts.c.id))]
        finally:
            database.dispose()

    def settle(self) -> None:
        """Wait until no act is pending or waiting for a comment.

        The deadline is `settle_timeout`, stretched (up to three times that) to 20 s past the
        latest retry the relay has scheduled: an act backing off after a run of faults is
        waiting as SPEC.md says, not stuck. An act left past its retry time is what check()
        reports.
        """
        start = time.monotonic()
        hard_stop = start + 3 * self.cfg.settle_timeout
        while True:
            open_rows = [r for r in self.rows() if r["state"] not in ("delivered", "dead")]
            if not open_rows:
                return
            latest_retry = max(r["next_attempt_at"] for r in open_rows) - time.time()
            deadline = max(start + self.cfg.settle_timeout, time.monotonic() + latest_retry + 20)
            if time.monotonic() >= min(deadline, hard_stop):
                return
            time.sleep(0.5)

    def check(self) -> None:
        assert self.brixo is not None
        rep = self.report
        rows = self.rows()
        rep.acts = len(rows)
        states = Counter(r["state"] for r in rows)
        rep.delivered, rep.dead = states["delivered"], states["dead"]
        rep.pending = states["pending"] + states["awaiting_comment"]
        rep.votes_acked = sum(v.acked for v in self.votes)
        requests_seen = [r for r in self.brixo.requests if r.id != KEY_CHECK_ID]
        rep.brixo_requests = len(requests_seen)
        rep.faults = dict(self.brixo.faults)
        accepted: dict[tuple[str, str, str, str], list[Received]] = defaultdict(list)
        for r in requests_seen:
            if r.status == 204:
                a = r.attributes
                accepted[(r.kind, r.id, a.get("value", ""), a.get("occurred_at", ""))].append(r)
        rep.accepted = sum(len(v) for v in accepted.values())
        late_ids = {id(r) for r in self.brixo.late}
        late_keys = {(r.kind, r.id, r.attributes.get("value"), r.attributes.get("occurred_at"))
                     for r in self.brixo.late}  # fmt: skip
        known: set[tuple[str, str, str, str]] = set()
        dead_reasons: Counter[str] = Counter()
        for row in rows:
            key = (row["target_kind"] + "s", row["target_id"], row["value"],
                   rfc3339(row["occurred_at"]))  # fmt: skip
            known.add(key)
            got = accepted.get(key, [])
            label = f"act {row['id']} {key[0]}:{key[1]!r} {key[2]} ({row['state']})"
            if row["state"] == "delivered":
                if not got:
                    rep.lost.append(f"{label}: marked delivered, Brixo never accepted it")
                elif len(got) > 1:
                    self.classify_duplicate(label, got, key in late_keys, late_ids)
                for r in got:
                    if r.attributes.get("user_message") != (row["comment"] or None):
                        rep.problems.append(f"{label}: user_message differs from the comment")
            elif row["state"] == "dead":
                if got:
                    rep.problems.append(f"{label}: dead letter that Brixo accepted {len(got)}x")
                if not row["last_error"]:
                    rep.problems.append(f"{label}: dead letter without a reason")
                dead_reasons[re.sub(r"\d+", "N", str(row["last_error"]).split(":")[0])] += 1
            else:
                if got:
                    rep.problems.append(f"{label}: accepted {len(got)}x yet still {row['state']}")
                if row["state"] == "pending" and not row["last_error"]:
                    rep.problems.append(f"{label}: pending at the end without a reason")
                if row["state"] == "awaiting_comment":
                    rep.problems.append(f"{label}: still waiting for a comment at the end")
                elif row["state"] == "pending":
                    rep.problems.append(
                        f"{label}: pending after {row['attempts']} attempt(s), next in "
                        f"{row['next_attempt_at'] - time.time():.0f} s; last: {row['last_error']}"
                    )
        rep.dead_reasons = dict(dead_reasons)
        for key in accepted:
            if key not in known:
                rep.problems.append(f"Brixo accepted a signal no act stands for: {key}")
        # No loss: every acknowledged vote that should give an act has exactly one.
        per_vote: Counter[tuple[str, str, str, str, str]] = Counter(
            (r["workspace"], r["user_id"], r["target_kind"], r["target_id"], r["value"])
            for r in rows
        )
        for count_key, count in per_vote.items():
            if count > 1:
                rep.problems.append(f"{count} acts for one vote {count_key}")
        comments = {
            (r["workspace"], r["user_id"], r["target_kind"], r["target_id"], r["value"]): r[
                "comment"
            ]
            for r in rows
        }
        for vote in self.votes:
            key5 = (vote.team, vote.user, vote.target_kind, vote.target_id, vote.value)
            if vote.acked and vote.expect_act and per_vote[key5] == 0:
                rep.lost.append(f"vote {vote.n} ({vote.kind}) acked with 200 but has no act")
            if vote.comment and per_vote[key5] and comments[key5] != vote.comment:
                rep.problems.append(f"vote {vote.n}: accepted comment not in its act")
        if rep.pending:
            rep.problems.append(f"{rep.pending} act(s) not settled within the deadline")

    def classify_duplicate(self, label: str, got: list[Received], late: bool,
                           late_ids: set[int]) -> None:  # fmt: skip
        first = min(r.at for r in got)
        if any(id(r) in late_ids for r in got) or late:
            self.report.duplicates_late += len(got) - 1
        elif any(first <= k + 0.2 for k in self.kill_times) and any(
            r.at >= k for r in got for k in self.kill_times
        ):
            self.report.duplicates_kill += len(got) - 1
        else:
            times = ", ".join(f"{r.at:.2f}" for r in sorted(got, key=lambda r: r.at))
            self.report.duplicates_unexplained.append(
                f"{label}: accepted {len(got)}x at {times}; kills at "
                f"{[round(k, 2) for k in self.kill_times]}"
            )


def run_chaos(config: Config, workdir: Path, database_url: str | None = None) -> Report:
    """One chaos run on SQLite (in `workdir`) or on the PostgreSQL at `database_url`."""
    repo = Path(__file__).resolve().parent.parent
    url = database_url or f"sqlite:///{workdir}/chaos.db"
    return Runner(config, workdir, url, repo).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--seed", type=int, default=None, help="replay this seed")
    parser.add_argument("--votes", type=int, default=None, help="votes per backend")
    parser.add_argument("--kills", type=int, default=None, help="SIGKILLs per backend")
    parser.add_argument("--long", action="store_true", help="thousands of votes, more kills")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    votes = args.votes or (3000 if args.long else 400)
    kills = args.kills if args.kills is not None else (8 if args.long else 2)
    backends: list[Backend] = (
        ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]  # type: ignore[list-item]
    )
    print(f"chaos seed={seed} votes={votes} kills={kills}", flush=True)
    import tempfile

    from tests.pg import PostgresServer

    failed = False
    for backend in backends:
        config = Config(seed, votes, kills, backend, max_long_stalls=6 if args.long else 1,
                        not_found_grace="30s" if args.long else "8s",
                        settle_timeout=300 if args.long else 90)  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
            server = None
            url = None
            if backend == "postgresql":
                server = PostgresServer("chaos")
                server.start()
                url = server.create_database("chaos")
            try:
                report = run_chaos(config, Path(tmp), url)
            finally:
                if server is not None:
                    server.stop()
        print(report.summary(), flush=True)
        failed |= not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
