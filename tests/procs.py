"""Run the relay (or a small script over bot.core) as a real child process.

`run_bot` runs a command to completion; `start_bot` / `start_python` start one in the
background, collecting its output line by line so tests can wait for a line, for
`/healthz`, or for the exit, and send it signals.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests

from tests.waiting import wait_until


def run_bot(
    *args: str, env: Mapping[str, str], cwd: str | Path, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """`python -m bot ARGS` to completion, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=dict(env),
        cwd=str(cwd),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )


class Proc:
    """A background child process whose stdout and stderr lines are collected."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | Path) -> None:
        self.argv = list(argv)
        self.popen = subprocess.Popen(
            self.argv,
            env=dict(env),
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )
        self._lock = threading.Lock()
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self._out), daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._lock:
                lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stdout(self) -> str:
        with self._lock:
            return "\n".join(self._out)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "\n".join(self._err)

    @property
    def stdout_lines(self) -> list[str]:
        with self._lock:
            return list(self._out)

    @property
    def stderr_lines(self) -> list[str]:
        with self._lock:
            return list(self._err)

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def describe(self) -> str:
        return (
            f"{' '.join(self.argv)[:200]} (rc={self.returncode})\n"
            f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-3000:]}"
        )

    def wait_for_line(self, pattern: str, timeout: float = 15.0, stream: str = "stdout") -> str:
        """The first line of `stream` matching the regex `pattern`; fails if the process exits."""
        regex = re.compile(pattern)

        def found() -> str | None:
            lines = self.stdout_lines if stream == "stdout" else self.stderr_lines
            for line in lines:
                if regex.search(line):
                    return line
            if self.returncode is not None:
                raise AssertionError(f"process exited before {pattern!r}:\n{self.describe()}")
            return None

        return wait_until(found, timeout=timeout, message=f"no line {pattern!r}")

    def wait_healthy(self, url: str, timeout: float = 20.0) -> requests.Response:
        """Poll `url` (e.g. http://127.0.0.1:PORT/healthz) until it answers 200."""

        def healthy() -> requests.Response | None:
            if self.returncode is not None:
                raise AssertionError(f"process exited before it was healthy:\n{self.describe()}")
            try:
                response = requests.get(url, timeout=1)
            except requests.RequestException:
                return None
            return response if response.status_code == 200 else None

        return wait_until(healthy, timeout=timeout, message=f"{url} never answered 200")

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, no goodbye."""
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.popen.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def stop(self) -> None:
        """Make sure the process is gone (used at teardown)."""
        if self.returncode is None:
            self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(timeout=10)


def start_bot(*args: str, env: Mapping[str, str], cwd: str | Path) -> Proc:
    """`python -m bot ARGS` in the background."""
    return Proc([sys.executable, "-m", "bot", *args], env, cwd)


def start_python(code: str, *args: str, env: Mapping[str, str], cwd: str | Path) -> Proc:
    """`python -c CODE ARGS` in the background."""
    return Proc([sys.executable, "-c", code, *args], env, cwd)
