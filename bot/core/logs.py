"""Logging: one line per event, plain or JSON, with every secret value masked."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

# Slack tokens of any workspace (OAuth installs bring tokens the settings don't know).
SLACK_TOKEN = re.compile(r"\b(xox[a-z]|xapp)-[A-Za-z0-9-]+")
BEARER = re.compile(r"(Bearer\s+)[^\s'\",}]+", re.IGNORECASE)
# Slack's libraries log request payloads (comments people typed) in some messages.
PAYLOAD = re.compile(r"\b(body|body_params|json_body|payload|data)(\s*[:=]\s*)\S.*", re.DOTALL)
PAYLOAD_LOGGERS = ("slack_bolt", "slack_sdk")
# ... and the code of an OAuth redirect (`code: X`, `'code': ['X']`), which Slack trades for a
# workspace's token.
OAUTH_CODE = re.compile(r"""(?<!status )(\bcode['"]?\s*[:=]\s*\[?\s*['"]?)[^\s'",\]&]+""")


class Redactor(logging.Filter):
    """Masks secret values, Slack tokens and bearer credentials; drops Slack payloads."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        forms = {s for s in secrets if s and len(s) >= 4}
        for _ in range(3):  # as %r and JSON write them, nested (a %r of a repr, in JSON)
            forms |= {json.dumps(f)[1:-1] for f in forms} | {repr(f)[1:-1] for f in forms}
        self.secrets = tuple(sorted(forms, key=len, reverse=True))

    def mask(self, text: str) -> str:
        """`text` with every secret, Slack token and bearer credential replaced."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        # The `in` checks skip the regexes on most lines (a line per delivery at full speed).
        if "xox" in text or "xapp" in text:
            text = SLACK_TOKEN.sub(r"\1-***", text)
        if "bearer" in text.lower():
            text = BEARER.sub(r"\1***", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop the payloads and OAuth codes Slack's libraries log; the formatter masks the
        rest."""
        if record.name.startswith(PAYLOAD_LOGGERS):
            message = record.getMessage()
            dropped = OAUTH_CODE.sub(r"\1***", PAYLOAD.sub(r"\1\2(not logged)", message))
            if dropped != message:
                record.msg, record.args = dropped, None
        return True


class MaskingFormatter(logging.Formatter):
    """Masks the whole formatted line, tracebacks included, after another formatter.

    The one place secrets are masked, so every line is masked exactly once.
    """

    def __init__(self, inner: logging.Formatter, redactor: Redactor) -> None:
        super().__init__()
        self.inner, self.redactor = inner, redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.mask(self.inner.format(record))


# Escaped where text from outside is shown on one line: control characters (line breaks,
# terminal escapes), Unicode's line separators and its bidirectional controls (which reorder
# what follows them on screen); in columns, the backslash too.
_UNSAFE_CHARS = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[{_UNSAFE_CHARS}]")
_UNSAFE_IN_COLUMNS = re.compile(f"[{_UNSAFE_CHARS}\\\\]")


def one_line(text: str, *, column: bool = False) -> str:
    """`text` on one line, unsafe characters escaped (`\\n`, `\\x1b`, `\\u2028`); a `column`
    escapes backslashes too, so every escape in it is one."""
    if text.isprintable() and not (column and "\\" in text):
        return text  # the usual line: no regular expression to run
    unsafe = _UNSAFE_IN_COLUMNS if column else _UNSAFE
    return unsafe.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)


class PlainFormatter(logging.Formatter):
    """`time LEVEL logger message`, the message on one line (`one_line`): a value from outside
    (a customer's ID, a Slack field) can't start a line that passes for a log line, nor hide
    one behind terminal escapes. A traceback still follows on lines of its own."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = one_line(record.message)
        return super().formatMessage(record)


# Valid in JSON text, but line breaks to Unicode-aware readers: escaped, one object a line.
_JSON_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message"}` and the exception text, one object a line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False).translate(_JSON_LINE_BREAKS)


@contextmanager
def quiet(*names: str) -> Iterator[None]:
    """These loggers silenced for a while: their failure is reported in one line instead."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def setup_logging(level: str = "INFO", fmt: str = "plain", secrets: Iterable[str] = ()) -> None:
    """Send the relay's logs to stderr in the chosen format, secrets masked."""
    handler = logging.StreamHandler(sys.stderr)
    redactor = Redactor(secrets)
    inner = JsonFormatter() if fmt == "json" else PlainFormatter()
    handler.setFormatter(MaskingFormatter(inner, redactor))
    handler.addFilter(redactor)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # A library's Python warning goes through the same handler: JSON when asked, secrets masked.
    logging.captureWarnings(True)
    for noisy in ("urllib3", "slack_sdk.web.base_client", "slack_bolt.App"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))
    # discord.py's debug lines hold every gateway event and REST call: people's comments and
    # interaction tokens. Its info lines and up (connections, rate limits) stay.
    for noisy in ("discord.gateway", "discord.http", "discord.webhook", "discord.state"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.INFO))
