"""Brixo and Slack Web API stand-ins in their own process, so they don't share the GIL.

`python -m benchmarks.stand_in` prints one JSON line `{"brixo": URL, "slack": URL}` and serves
until stdin closes. Besides FakeBrixo's API, `/_bench/*` lets the benchmark steer and read it:
`POST /_bench/latency?s=0.05`, `POST /_bench/reset`, `GET /_bench/stats`, `GET /_bench/ids`.
"""

from __future__ import annotations

import json
import sys
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from tests.fakes import FakeSlackAPI, QuietHandler
from tests.fakes.brixo import FakeBrixo, _BrixoHandler


class _BenchHandler(_BrixoHandler):
    def handle_any(self) -> None:
        if not self.path.startswith("/_bench/"):
            super().handle_any()
            return
        fake: BenchBrixo = self.server.owner
        self.read_body(None)
        split = urlsplit(self.path)
        action = split.path.removeprefix("/_bench/")
        answer: Any = {"ok": True}
        if action == "latency":
            fake.set_latency(float(parse_qs(split.query)["s"][0]))
        elif action == "reset":
            fake.clear()
        elif action == "stats":
            answer = fake.stats()
        elif action == "ids":
            answer = sorted({r.id for r in fake.accepted})
        self.send_raw(200, json.dumps(answer).encode(), "application/json")


class BenchBrixo(FakeBrixo):
    """FakeBrixo with the `/_bench/` control routes."""

    handler_class: ClassVar[type[QuietHandler]] = _BenchHandler

    def stats(self) -> dict[str, Any]:
        """Requests, accepted signals, distinct accepted IDs, first and last acceptance."""
        received = self.requests
        accepted = [r for r in received if r.status == 204]
        return {
            "requests": len(received),
            "accepted": len(accepted),
            "distinct": len({r.id for r in accepted}),
            "first_at": min((r.at for r in accepted), default=None),
            "last_at": max((r.at for r in accepted), default=None),
        }


def main() -> int:
    brixo = BenchBrixo(api_key=sys.argv[1] if len(sys.argv) > 1 else "brixo-bench-key").start()
    slack = FakeSlackAPI().start()
    print(json.dumps({"brixo": brixo.url, "slack": slack.url}), flush=True)
    sys.stdin.read()  # until the benchmark closes it
    brixo.stop()
    slack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
