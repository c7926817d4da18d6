"""CPU per Brixo request of the HTTP client options, one thread, keep-alive, 0 ms stand-in."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
import urllib3

from bot.core.acts import UP, Signal, Target
from bot.core.brixo import BrixoClient, signal_path

HEADERS = {
    "Authorization": "Bearer {key}",
    "Content-Type": "application/vnd.api+json",
    "Accept": "application/vnd.api+json",
    "User-Agent": "brixo-feedback-relay/bench",
}


@dataclass(frozen=True)
class ClientCost:
    """One option's cost per request."""

    name: str
    cpu_us: float
    wall_us: float


def _signal(i: int) -> Signal:
    return Signal(Target("message", f"msg-client-{i}"), UP, time.time())


def options(base_url: str, key: str) -> dict[str, Callable[[int], int]]:
    """name -> send(i) returning the HTTP status, each over its own keep-alive connection."""
    headers = {k: v.format(key=key) for k, v in HEADERS.items()}
    client = BrixoClient(key, base_url, pool_size=4)

    no_env = requests.Session()
    no_env.trust_env = False
    no_env.headers.update(headers)

    adapter_session = requests.Session()
    adapter_session.trust_env = False
    adapter = adapter_session.get_adapter(base_url)

    split = urlsplit(base_url)
    pool = urllib3.HTTPConnectionPool(split.hostname or "", split.port, maxsize=4, retries=False)
    raw = http.client.HTTPConnection(split.hostname or "", split.port, timeout=15)

    def body(i: int) -> bytes:
        return json.dumps(_signal(i).body()).encode()

    def url(i: int) -> str:
        return base_url + signal_path(_signal(i).target)

    def via_client(i: int) -> int:
        answer = client.send(_signal(i))
        return answer.status or 0

    def via_session(i: int) -> int:
        return no_env.post(url(i), data=body(i), timeout=(5, 15)).status_code

    def via_adapter(i: int) -> int:
        prepared = requests.Request("POST", url(i), headers=headers, data=body(i)).prepare()
        response = adapter.send(prepared, timeout=(5, 15))
        _ = response.content  # read it, so the connection goes back to the pool
        return response.status_code

    def via_urllib3(i: int) -> int:
        path = signal_path(_signal(i).target)
        timeout = urllib3.Timeout(connect=5, read=15)
        return pool.urlopen("POST", path, body=body(i), headers=headers, timeout=timeout).status

    def via_http_client(i: int) -> int:
        raw.request("POST", signal_path(_signal(i).target), body(i), headers)
        response = raw.getresponse()
        response.read()
        return response.status

    return {
        "BrixoClient.send (requests: one-host adapter, headers prepared once)": via_client,
        "requests Session.post, trust_env=False": via_session,
        "requests HTTPAdapter.send (request prepared each time)": via_adapter,
        "urllib3 HTTPConnectionPool.urlopen": via_urllib3,
        "http.client (stdlib, no pool)": via_http_client,
    }


def measure(base_url: str, key: str, count: int = 1500) -> list[ClientCost]:
    """CPU and wall time per request of each option (the stand-in runs in another process)."""
    costs: list[ClientCost] = []
    for name, send in options(base_url, key).items():
        for i in range(50):
            assert send(i) == 204, name
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(count):
            send(i)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        costs.append(ClientCost(name, 1e6 * cpu / count, 1e6 * wall / count))
    return costs


def ceiling(base_url: str, key: str, threads: int = 32, count: int = 6000) -> float:
    """Requests/s of `BrixoClient.send` alone in `threads` threads, nothing stored or logged.

    With a 0 ms Brixo this is the most one process's delivery could reach with requests.
    """
    client = BrixoClient(key, base_url, pool_size=threads)
    per_thread = count // threads

    def sends(first: int) -> None:
        for i in range(first, first + per_thread):
            client.send(_signal(i))

    sends(0)  # warm up
    workers = [threading.Thread(target=sends, args=(n * per_thread,)) for n in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    rate = per_thread * threads / (time.perf_counter() - started)
    client.close()
    return rate
