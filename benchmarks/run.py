"""`python -m benchmarks.run [--quick]`: the relay against a bare Bolt app and a naive relay.

Every server runs under gunicorn gthread with the same settings (1 worker, 16 threads,
keep-alive 5 s; the relay's worker adds a read deadline per request, one setsockopt) and
gets the same signed Slack traffic over HTTP on loopback. Brixo and Slack's Web API are
stand-ins in a separate process. See benchmarks/README.md for what each figure is.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from benchmarks import http_clients, lookups
from benchmarks.traffic import (
    BOT_TOKEN,
    BRIXO_KEY,
    CHANNEL,
    CLICK,
    PEOPLE,
    REACTION,
    SIGNING_SECRET,
    TEAM,
    Result,
    build,
    message_id_of,
    percentile,
    run_load,
    ts_of,
)
from bot.core.db import Database, acts, mappings
from bot.core.settings import SETTING_NAMES, Settings
from tests.pg import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
THREADS = 16  # gunicorn gthread threads, for every server
CONCURRENCY = 16  # client connections under load
LIGHT_ROUNDS = 4  # turns each server takes in the light-load phase
DELIVERY_THREADS = Settings.delivery_concurrency  # the relay's default DELIVERY_CONCURRENCY


@dataclass(frozen=True)
class Plan:
    """How much traffic each phase sends."""

    paced: int  # votes in the light-load latency phase
    paced_rate: float  # votes per second offered there
    burst: int  # votes in each full-speed phase
    drain: int  # pending acts pre-filled for the relay's delivery-only runs
    kill: int  # votes offered in the abrupt-stop run
    kill_after: float  # seconds into it the server gets SIGKILL
    lookup_sizes: list[int]
    client_calls: int


FULL = Plan(2000, 100.0, 2500, 6000, 3000, 3.0, [1_000, 100_000, 1_000_000], 1500)
QUICK = Plan(600, 100.0, 1200, 1500, 1500, 2.0, [1_000, 100_000], 500)


@dataclass
class Row:
    """One server's figures."""

    name: str
    ack: dict[str, tuple[float, float]] = field(default_factory=dict)  # kind -> p50, p99 (ms)
    ack_load: dict[str, tuple[float, float]] = field(default_factory=dict)
    votes_per_s: float | None = None
    e2e: dict[int, tuple[float, int, int]] = field(default_factory=dict)  # ms -> rate, got, sent
    drain: dict[int, float] = field(default_factory=dict)  # ms -> signals/s
    requests_alone: float | None = None  # BrixoClient.send alone, just before the 0 ms drain
    lost: tuple[int, int, int] | None = None  # acked, lost, duplicates
    rss_idle_mb: float | None = None
    rss_peak_mb: float | None = None
    failed: int = 0


# --- the stand-ins ---------------------------------------------------------------------------


class StandIns:
    """Brixo and Slack stand-ins in a child process (`benchmarks.stand_in`)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.stand_in", BRIXO_KEY],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        urls = json.loads(self.proc.stdout.readline())
        self.brixo: str = urls["brixo"]
        self.slack: str = urls["slack"]

    def _call(self, method: str, action: str) -> Any:
        request = urllib.request.Request(f"{self.brixo}/_bench/{action}", method=method, data=None)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def latency(self, seconds: float) -> None:
        self._call("POST", f"latency?s={seconds}")

    def reset(self) -> None:
        self._call("POST", "reset")

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "stats"))

    def ids(self) -> set[str]:
        return set(self._call("GET", "ids"))

    def wait_for(self, count: int, timeout: float, quiet: float = 0.0) -> dict[str, Any]:
        """Wait until `count` distinct IDs arrived (or nothing new for `quiet` s, or timeout)."""
        deadline, last, last_change = time.monotonic() + timeout, -1, time.monotonic()
        while True:
            stats = self.stats()
            if stats["distinct"] != last:
                last, last_change = stats["distinct"], time.monotonic()
            if stats["distinct"] >= count or time.monotonic() > deadline:
                return stats
            if quiet and time.monotonic() - last_change > quiet:
                return stats
            time.sleep(0.1)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


# --- the servers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Target:
    """A server to benchmark: how to start it, and its database if it has one."""

    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    database_url: str | None = None


class Server:
    """One gunicorn server in its own process group; SIGKILL takes the whole group."""

    def __init__(self, target: Target, port: int, log: Path) -> None:
        self.target, self.port = target, port
        env = {**target.env, "PORT": str(port)}
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [part.replace("{port}", str(port)) for part in target.command],
            cwd=target.cwd,
            env=env,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        """Until GET /healthz gets any answer (the bare and naive apps say 404)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.target.name} exited; see {self.log.name}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                conn.close()
                return
            conn.close()
            time.sleep(0.1)
        raise RuntimeError(f"{self.target.name} did not start; see {self.log.name}")

    def worker_pid(self) -> int:
        """The gunicorn worker (the arbiter's only child)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return int(children.split()[0])

    def memory_mb(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the worker, in MB."""
        fields = {}
        for line in Path(f"/proc/{self.worker_pid()}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
        return fields["VmRSS"], fields["VmHWM"]

    def stop(self) -> None:
        """SIGTERM: gunicorn drains requests and the relay's deliveries in flight."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def kill(self) -> None:
        """SIGKILL the arbiter and its worker at once: an abrupt stop."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def base_env(stand_ins: StandIns) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    env.update(
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_API_URL=stand_ins.slack,
        BRIXO_API_URL=stand_ins.brixo,
        BRIXO_API_KEY=BRIXO_KEY,
        PYTHONUNBUFFERED="1",
    )
    return env


def gunicorn(module: str) -> list[str]:
    """The relay's own gunicorn settings (bot/slack/server.py), for the other apps (plain
    gthread: the relay's RelayWorker would load the relay's modules into their memory)."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--worker-class=gthread",
        "--workers=1",
        f"--threads={THREADS}",
        "--keep-alive=5",
        "--timeout=30",
        "--graceful-timeout=28",
        "--bind=127.0.0.1:{port}",
        module,
    ]


def relay_target(name: str, stand_ins: StandIns, url: str, bot_path: Path) -> Target:
    env = base_env(stand_ins)
    env.update(
        DATABASE_URL=url,
        ASK_COMMENT="never",  # a 👎 would otherwise wait 10 minutes for its comment
        ACK_MESSAGE="",  # no ephemeral thanks: the other apps post nothing to Slack either
        LOG_LEVEL="INFO",
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS=str(THREADS),
        PYTHONPATH=str(bot_path),
    )
    return Target(name, [sys.executable, "-m", "bot", "serve"], env, bot_path, url)


def app_target(name: str, module: str, stand_ins: StandIns) -> Target:
    env = base_env(stand_ins)
    env["PYTHONPATH"] = str(ROOT)
    return Target(name, gunicorn(module), env, ROOT)


def sa_url(url: str) -> str:
    """The SQLAlchemy URL of a database URL (psycopg 3 for PostgreSQL)."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


# --- database set-up -------------------------------------------------------------------------


def prepare_database(url: str, replies: int) -> None:
    """Fresh schema with replies 0..replies-1 mapped (votes are then on mapped replies)."""
    database = Database(sa_url(url))
    database.migrate(time.time())
    now = time.time()
    rows = [
        {
            "workspace": TEAM,
            "channel": CHANNEL,
            "ts": ts_of(i),
            "thread_ts": None,
            "message_id": message_id_of(ts_of(i)),
            "conversation_id": None,
            "source": "metadata",
            "created_at": now,
        }
        for i in range(replies)
    ]
    with database.write() as conn:
        conn.execute(insert(mappings), rows)
    database.dispose()


def prefill_outbox(url: str, count: int, run: str) -> None:
    """`count` pending acts, due now, as if votes had just been recorded."""
    database = Database(sa_url(url))
    now = time.time()
    rows = [
        {
            "platform": "slack",
            "workspace": TEAM,
            "user_id": f"U{run}{i}",
            "source": "reaction",
            "target_kind": "message",
            "target_id": message_id_of(ts_of(i)),
            "value": "thumbs_up",
            "comment_cut": False,
            "occurred_at": now,
            "channel": CHANNEL,
            "ts": ts_of(i),
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for i in range(count)
    ]
    with database.write() as conn:
        conn.execute(insert(acts), rows)
    database.dispose()


def count_pending(url: str) -> int:
    database = Database(sa_url(url))
    with database.read() as conn:
        pending = conn.scalar(text("SELECT count(*) FROM brixo_acts WHERE state = 'pending'"))
    database.dispose()
    return int(pending or 0)


@contextlib.contextmanager
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL 15 with its durable defaults (fsync, synchronous_commit on)."""
    server = PostgresServer("bench", durable=True)
    server.start()
    try:
        import psycopg

        with psycopg.connect(server.database_url(), autocommit=True) as conn:
            for setting in ("fsync", "synchronous_commit"):
                row = conn.execute(f"SHOW {setting}").fetchone()
                if not row or row[0] != "on":
                    raise RuntimeError(f"benchmark PostgreSQL runs with {setting}={row}")
        yield server
    finally:
        server.stop()


# --- phases ---------------------------------------------------------------------------------


def latencies(result: Result) -> dict[str, tuple[float, float]]:
    return {
        kind: (1e3 * percentile(values, 50), 1e3 * percentile(values, 99))
        for kind, values in result.latencies.items()
    }


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Bench:
    """Runs every phase against one target and fills its Row."""

    def __init__(self, plan: Plan, stand_ins: StandIns, workdir: Path) -> None:
        self.plan, self.stand_ins, self.workdir = plan, stand_ins, workdir
        self.runs = 0

    def run_id(self) -> str:
        self.runs += 1
        return f"r{self.runs}x"

    def start(self, target: Target, port: int) -> Server:
        return Server(target, port, self.workdir / f"{target.name.replace(' ', '_')}.log")

    def burst(self, row: Row, server: Server, delivers: bool, latency_ms: int) -> None:
        plan = self.plan
        self.stand_ins.latency(latency_ms / 1000)
        self.stand_ins.reset()
        requests = build(range(plan.burst), self.run_id())
        sent_at = time.time()
        result = run_load(server.port, requests, CONCURRENCY)
        row.failed += result.failed
        if latency_ms == 0:
            row.votes_per_s = result.rate
            row.ack_load = latencies(result)
        if delivers:
            stats = self.stand_ins.wait_for(len(result.acked), timeout=30.0, quiet=10.0)
            elapsed = (stats["last_at"] or sent_at) - sent_at
            rate = stats["distinct"] / elapsed if elapsed > 0 else 0.0
            row.e2e[latency_ms] = (rate, stats["distinct"], len(result.acked))
        say(
            f"  burst @{latency_ms} ms: {result.rate:.0f} votes/s acked"
            + (f", e2e {row.e2e[latency_ms][0]:.0f} signals/s" if delivers else "")
        )

    def light_load(self, targets: list[Target], rounds: int = LIGHT_ROUNDS) -> dict[str, Row]:
        """Ack latency at `paced_rate`: every server up at once, taking turns for `rounds`
        rounds, so the machine's drift over minutes hits them all alike."""
        plan, rows = self.plan, {t.name: Row(t.name) for t in targets}
        servers: list[tuple[Target, Server]] = []
        self.stand_ins.latency(0)
        try:
            for target in targets:
                if target.database_url:
                    prepare_database(target.database_url, plan.paced)
                servers.append((target, self.start(target, free_port())))
            for _, server in servers:
                run_load(server.port, build(range(200), self.run_id()), 4)  # warm-up
            samples: dict[str, Result] = {t.name: Result() for t in targets}
            for _ in range(rounds):
                for target, server in servers:
                    votes = build(range(plan.paced // rounds), self.run_id())
                    result = run_load(server.port, votes, CONCURRENCY, plan.paced_rate)
                    rows[target.name].failed += result.failed
                    for kind, values in result.latencies.items():
                        samples[target.name].latencies[kind].extend(values)
        finally:
            for _, server in servers:
                server.stop()
        for name, row in rows.items():
            row.ack = latencies(samples[name])
            say(f"{name}: paced {plan.paced_rate:.0f}/s: {row.ack}")
        return rows

    def measure(self, target: Target, kind: str, row: Row) -> Row:
        """kind: 'bare', 'naive' or 'relay'; `row` holds the light-load figures already."""
        plan = self.plan
        delivers = kind != "bare"
        port = free_port()
        if target.database_url:
            prepare_database(target.database_url, max(plan.burst, plan.kill, plan.drain))
        self.stand_ins.latency(0)
        self.stand_ins.reset()
        say(f"{target.name}: starting")
        server = self.start(target, port)
        try:
            time.sleep(1.0)
            row.rss_idle_mb = server.memory_mb()[0]
            run_load(port, build(range(200), self.run_id()), 4)  # warm-up
            self.burst(row, server, delivers, 0)
            self.burst(row, server, delivers, 50)
            row.rss_peak_mb = server.memory_mb()[1]
        finally:
            server.stop()
        if kind == "relay" and target.database_url:
            row.requests_alone = self.requests_alone()
            for latency_ms in (0, 50):
                row.drain[latency_ms] = self.drain(target, port, latency_ms)
        if delivers:
            row.lost = self.abrupt_stop(target, port, kind)
        return row

    def requests_alone(self) -> float:
        """Requests/s of `BrixoClient.send` alone, in the relay's sender threads, 0 ms Brixo.

        Measured right before the relay's own drain, so both meet the machine in the same spell.
        """
        self.stand_ins.latency(0)
        rate = http_clients.ceiling(self.stand_ins.brixo, BRIXO_KEY, DELIVERY_THREADS)
        self.stand_ins.reset()
        say(f"  requests alone @0 ms: {rate:.0f} requests/s")
        return rate

    def drain(self, target: Target, port: int, latency_ms: int) -> float:
        """Delivery alone: pre-filled pending acts, rate between first and last acceptance."""
        assert target.database_url
        leftover = count_pending(target.database_url)
        prefill_outbox(target.database_url, self.plan.drain, self.run_id())
        self.stand_ins.latency(latency_ms / 1000)
        self.stand_ins.reset()
        server = self.start(target, port)
        try:
            stats = self.stand_ins.wait_for(self.plan.drain + leftover, timeout=60.0, quiet=10.0)
            peak = server.memory_mb()[1]
        finally:
            server.stop()
        span = (stats["last_at"] or 0) - (stats["first_at"] or 0)
        rate = (stats["accepted"] - 1) / span if span > 0 else 0.0
        say(
            f"  drain @{latency_ms} ms: {stats['distinct']} of {self.plan.drain} delivered, "
            f"{rate:.0f} signals/s, worker peak RSS {peak:.0f} MB"
        )
        return rate

    def abrupt_stop(self, target: Target, port: int, kind: str) -> tuple[int, int, int]:
        """SIGKILL mid-traffic, restart, wait; acked votes whose signal never arrived are lost."""
        plan = self.plan
        self.stand_ins.latency(0.05)
        self.stand_ins.reset()
        requests = build(range(plan.kill), self.run_id())
        by_vote = {r.vote: message_id_of(ts_of(r.vote)) for r in requests}
        server = self.start(target, port)
        outcome: list[Result] = []
        load = threading.Thread(
            target=lambda: outcome.append(run_load(port, requests, CONCURRENCY, stop_on_error=True))
        )
        load.start()
        time.sleep(plan.kill_after)
        server.kill()
        load.join()
        acked = {by_vote[v] for v in outcome[0].acked}
        server = self.start(target, port)  # the relay picks its outbox up again
        try:
            # The killed worker's leases lapse after 15 s; the naive relay has nothing to resume.
            deadline = time.monotonic() + (45.0 if kind == "relay" else 5.0)
            while not acked <= (arrived := self.stand_ins.ids()) and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(1.0)  # let duplicates in flight land too
            arrived, stats = self.stand_ins.ids(), self.stand_ins.stats()
        finally:
            server.stop()
        lost = len(acked - arrived)
        duplicates = stats["accepted"] - stats["distinct"]
        say(f"  abrupt stop: {len(acked)} acked, {lost} lost, {duplicates} sent twice")
        return len(acked), lost, duplicates


# --- report ----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{a / b:.2f}×"


def report(
    plan: Plan,
    rows: list[Row],
    found: dict[str, list[lookups.LookupResult]],
    clients: list[http_clients.ClientCost],
    started: float,
    quick: bool,
) -> str:
    lines = [
        f"# Benchmark results{' (--quick)' if quick else ''}",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.python_implementation()} "
        f"{platform.python_version()} · {os.cpu_count()} CPUs · "
        f"gunicorn gthread, 1 worker × {THREADS} threads for every server · "
        f"run took {time.monotonic() - started:.0f} s",
        "",
        f"Ack latency (light load): {plan.paced} votes per server paced at "
        f"{plan.paced_rate:.0f}/s, open loop, in {LIGHT_ROUNDS} rounds with all servers up and "
        "taking turns (so the machine's drift hits them alike); under load: "
        f"{plan.burst} votes over {CONCURRENCY} keep-alive connections at full speed "
        "(Brixo 0 ms). Half reactions, half 👍/👎 clicks, every vote on a mapped reply, "
        f"by {PEOPLE} people per run of traffic.",
        "",
        "| | " + " | ".join(r.name for r in rows) + " |",
        "|---|" + "---|" * len(rows),
    ]

    def line(label: str, cells: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    for kind, label in ((REACTION, "reaction"), (CLICK, "click")):
        line(
            f"ack {label} p50 / p99, light load (ms)",
            [f"{fmt(r.ack[kind][0], 2)} / {fmt(r.ack[kind][1], 2)}" for r in rows],
        )
    for kind, label in ((REACTION, "reaction"), (CLICK, "click")):
        line(
            f"ack {label} p50 / p99, under load (ms)",
            [f"{fmt(r.ack_load[kind][0], 1)} / {fmt(r.ack_load[kind][1], 1)}" for r in rows],
        )
    line("votes/s accepted (HTTP 200), full speed", [fmt(r.votes_per_s, 0) for r in rows])
    for ms in (0, 50):
        line(
            f"votes → Brixo {ms} ms, end to end (signals/s)",
            [
                f"{fmt(r.e2e[ms][0], 0)}"
                + (f" ({r.e2e[ms][1]} of {r.e2e[ms][2]})" if r.e2e[ms][1] < r.e2e[ms][2] else "")
                if ms in r.e2e
                else "–"
                for r in rows
            ],
        )
    for ms in (0, 50):
        line(
            f"delivery only, Brixo {ms} ms (signals/s)",
            [fmt(r.drain.get(ms), 0) for r in rows],
        )
    line(
        f"`BrixoClient.send` alone in {DELIVERY_THREADS} threads, just before (requests/s)",
        [fmt(r.requests_alone, 0) for r in rows],
    )
    line(
        "abrupt stop: acked / lost (sent twice)",
        [f"{r.lost[0]} / **{r.lost[1]}** ({r.lost[2]})" if r.lost else "–" for r in rows],
    )
    line("worker RSS idle (MB)", [fmt(r.rss_idle_mb, 0) for r in rows])
    line("worker peak RSS, VmHWM (MB)", [fmt(r.rss_peak_mb, 0) for r in rows])
    line("requests not acked with 200", [str(r.failed) for r in rows])

    lines += ["", "## Mapping lookups (`Mappings.message`, random hits, warm)", ""]
    lines += ["| rows | " + " | ".join(f"{db} p50 / mean / p99 (µs)" for db in found) + " |"]
    lines += ["|---|" + "---|" * len(found)]
    sizes = [r.rows for r in next(iter(found.values()))] if found else []
    for n, size in enumerate(sizes):
        cells = [
            f"{res[n].p50_us:.0f} / {res[n].mean_us:.0f} / {res[n].p99_us:.0f}"
            for res in found.values()
        ]
        lines.append(f"| {size:,} | " + " | ".join(cells) + " |")
    for db, res in found.items():
        lines.append("")
        lines.append(
            f"{db}: p50 lookup at {res[-1].rows:,} rows is {res[-1].p50_us / res[0].p50_us:.2f}× "
            f"the one at {res[0].rows:,} (bulk inserts took "
            + ", ".join(f"{r.insert_s:.1f} s" for r in res)
            + ")."
        )

    lines += [
        "",
        "## HTTP client cost per Brixo request (one thread, keep-alive, 0 ms stand-in)",
        "",
        "| client | CPU µs/request | wall µs/request | max requests/s per process (CPU) |",
        "|---|---|---|---|",
    ]
    for cost in clients:
        lines.append(
            f"| {cost.name} | {cost.cpu_us:.0f} | {cost.wall_us:.0f} | {1e6 / cost.cpu_us:,.0f} |"
        )
    lines += [
        "",
        f"The main table's `BrixoClient.send` alone row: that client in {DELIVERY_THREADS} "
        "threads (the relay's DELIVERY_CONCURRENCY), nothing stored or logged, against the "
        "0 ms stand-in, measured right before each relay's 0 ms drain: the most one process "
        "can deliver there with requests.",
    ]

    relays = [r for r in rows if r.name.startswith("relay")]
    bare = next((r for r in rows if r.name.startswith("bare")), None)
    naive = next((r for r in rows if r.name.startswith("naive")), None)
    lines += ["", "## Ratios", ""]
    lines += [
        "| | vs bare Bolt (floor) | vs naive relay |",
        "|---|---|---|",
    ]
    for relay in relays:
        for kind in (REACTION, CLICK):
            for name, pick in (("light", "ack"), ("load", "ack_load")):
                mine = getattr(relay, pick).get(kind, (None, None))[1]
                floor = getattr(bare, pick).get(kind, (None, None))[1] if bare else None
                theirs = getattr(naive, pick).get(kind, (None, None))[1] if naive else None
                lines.append(
                    f"| {relay.name}: ack {kind} p99, {name} | {ratio(mine, floor)} | "
                    f"{ratio(mine, theirs)} |"
                )

        def versus(attr: str, relay: Row = relay) -> str:
            mine = getattr(relay, attr)
            return " | ".join(
                ratio(mine, getattr(other, attr) if other else None) for other in (bare, naive)
            )

        lines.append(f"| {relay.name}: votes/s | {versus('votes_per_s')} |")
        for ms in (0, 50):
            mine_e2e = relay.e2e.get(ms, (None,))[0]
            theirs_e2e = naive.e2e.get(ms, (None,))[0] if naive else None
            lines.append(
                f"| {relay.name}: end-to-end signals/s @{ms} ms | – | "
                f"{ratio(mine_e2e, theirs_e2e)} |"
            )
        lines.append(f"| {relay.name}: peak RSS | {versus('rss_peak_mb')} |")

    lines += ["", "## Targets", ""]
    for relay in relays:
        lines += targets(relay, bare, found)
    lines.append("")
    return "\n".join(lines)


def targets(
    relay: Row,
    bare: Row | None,
    found: dict[str, list[lookups.LookupResult]],
) -> list[str]:
    def mark(ok: bool) -> str:
        return "met" if ok else "**missed**"

    out: list[str] = []
    if bare:
        for pick, label in (("ack", "light load"), ("ack_load", "under load")):
            worst = max(
                getattr(relay, pick)[k][1] / getattr(bare, pick)[k][1] for k in (REACTION, CLICK)
            )
            out.append(
                f"- {relay.name}: ack p99 ≤ 2× bare Bolt, {label}: {worst:.2f}× — "
                f"{mark(worst <= 2)}"
            )
    for ms, goal in ((50, 400), (0, 1500)):
        rate = relay.drain.get(ms, 0.0)
        alone = relay.requests_alone
        limit = (
            f" (requests alone, just before: {alone:,.0f}/s; the relay reached "
            f"{ratio(rate, alone)} of it)"
            if ms == 0 and alone
            else ""
        )
        out.append(
            f"- {relay.name}: delivery ≥ {goal}/s to the {ms} ms stand-in: {rate:.0f}/s — "
            f"{mark(rate >= goal)}{limit}"
        )
    db = "SQLite" if "sqlite" in relay.name.lower() else "PostgreSQL"
    if db in found and len(found[db]) > 1:
        res = found[db]
        growth = res[-1].p50_us / res[0].p50_us
        out.append(
            f"- {relay.name}: p50 lookup at {res[-1].rows:,} rows within 2× of 1k: {growth:.2f}× — "
            f"{mark(growth <= 2)}"
        )
    if relay.rss_idle_mb is not None:
        out.append(
            f"- {relay.name}: idle RSS < 80 MB: {relay.rss_idle_mb:.0f} MB — "
            f"{mark(relay.rss_idle_mb < 80)}; peak under load {fmt(relay.rss_peak_mb, 0)} MB"
        )
    if relay.lost:
        out.append(
            f"- {relay.name}: 0 signals lost on an abrupt stop: {relay.lost[1]} — "
            f"{mark(relay.lost[1] == 0)}"
        )
    return out


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run (about 2 minutes)")
    parser.add_argument(
        "--only",
        default="bare,naive,sqlite,postgres,lookups,clients",
        help="comma-separated parts to run (default: all)",
    )
    parser.add_argument(
        "--bot-path",
        type=Path,
        default=ROOT,
        help="the tree whose `bot` package is served as the relay (default: this one)",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS / "latest.md", help="where to write the table"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    parts = set(args.only.split(","))
    started = time.monotonic()
    rows: list[Row] = []
    found: dict[str, list[lookups.LookupResult]] = {}
    clients: list[http_clients.ClientCost] = []
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-", dir="/tmp"))
    say(f"work files and server logs in {workdir}")
    stand_ins = StandIns()
    try:
        with contextlib.ExitStack() as stack:
            pg = stack.enter_context(postgres()) if parts & {"postgres", "lookups"} else None
            bench = Bench(plan, stand_ins, workdir)
            # (target, kind, the same server on a database of its own for the light-load phase)
            servers: list[tuple[Target, str, Target]] = []
            for part, name, module in (
                ("bare", "bare Bolt", "benchmarks.bare_app:app"),
                ("naive", "naive relay", "benchmarks.naive_relay:app"),
            ):
                if part in parts:
                    target = app_target(name, module, stand_ins)
                    servers.append((target, part, target))
            databases: list[tuple[str, Callable[[str], str]]] = []
            if "sqlite" in parts:
                databases.append(("relay SQLite", lambda db: f"sqlite:///{workdir}/{db}.db"))
            if "postgres" in parts and pg:
                databases.append(("relay PostgreSQL", pg.create_database))
            for name, make_url in databases:
                target = relay_target(name, stand_ins, make_url("relay"), args.bot_path)
                paced = relay_target(name, stand_ins, make_url("relay_paced"), args.bot_path)
                servers.append((target, "relay", paced))
            light = bench.light_load([paced for _, _, paced in servers])
            for target, kind, _ in servers:
                rows.append(bench.measure(target, kind, light[target.name]))
            if "lookups" in parts:
                say("mapping lookups")
                found["SQLite"] = lookups.run_lookups(
                    lambda db: f"sqlite:///{workdir}/{db}.db", plan.lookup_sizes
                )
                if pg:
                    found["PostgreSQL"] = lookups.run_lookups(
                        lambda db: sa_url(pg.create_database(db)), plan.lookup_sizes
                    )
            if "clients" in parts:
                say("HTTP client cost")
                stand_ins.latency(0)
                clients = http_clients.measure(stand_ins.brixo, BRIXO_KEY, plan.client_calls)
                stand_ins.reset()
    finally:
        stand_ins.close()
    table = report(plan, rows, found, clients, started, args.quick)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table)
    print()
    print(table)
    say(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
