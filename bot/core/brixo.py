"""Brixo's Signals API over one keep-alive `requests.Session`."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import Enum
from time import time
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3 import connectionpool

from bot import __version__
from bot.core.acts import Signal, Target
from bot.core.deadlines import Deadlines, WatchedConnection

log = logging.getLogger(__name__)

# JSON:API's media type: the requests' Content-Type, and that of Brixo's error answers.
MEDIA_TYPE = "application/vnd.api+json"


# The message ID of the key check: an empty body to it is refused after auth, never a signal.
KEY_CHECK_ID = "brixo-relay-key-check"
# Left out of Brixo's error details.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The longest hold a Retry-After can ask for (a longer one is taken as this): a proxy's
# mistaken Retry-After can't stop delivery for long, and a Brixo still busy answers 429 again.
MAX_RETRY_AFTER = 3600.0


class Outcome(Enum):
    """How Brixo answered, as far as delivery is concerned."""

    DELIVERED = "delivered"
    RETRY = "retry"  # network error, timeout, 408, 429, 5xx
    NOT_FOUND = "not_found"  # 404: the trace may not be ingested yet
    UNAUTHORIZED = "unauthorized"  # 401: the key is wrong; pause
    REJECTED = "rejected"  # 400 and other 4xx: never as it is
    TOO_LARGE = "too_large"  # 413


@dataclass(frozen=True)
class Answer:
    """One request's outcome, with Brixo's error detail when it gave one."""

    outcome: Outcome
    status: int | None
    detail: str = ""
    retry_after: float | None = None
    jsonapi: bool = False  # the answer was a JSON:API error document, as Brixo's are
    unanswered: bool = False  # sent, but no answer came (timed out, dropped): Brixo may have it

    def describe(self) -> str:
        """`HTTP 404: detail` or the network error, for logs and the outbox."""
        head = f"HTTP {self.status}" if self.status else "no answer"
        return f"{head}: {self.detail}" if self.detail else head


def signal_path(target: Target) -> str:
    """`/v1/messages/<id>/signals` with the ID percent-encoded as one path segment.

    Dots stay as they are (`quote` leaves unreserved characters alone, as RFC 3986 asks), but
    in an ID that is only `.` or `..`: that would be a dot-segment, which URL normalisation (in
    clients, proxies and servers) resolves away.
    """
    segment = quote(target.id, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return f"/v1/{target.kind}s/{segment}/signals"


class OneHostAdapter(HTTPAdapter):
    """An `HTTPAdapter` for one host, with the same TLS and proxy settings on every request.

    `HTTPAdapter` works out the connection pool for each request (proxy choice, TLS pool key,
    pool manager lookup); for one host that answer never changes, so it is kept.
    """

    _pool: connectionpool.ConnectionPool | None = None

    def __init__(self, deadlines: Deadlines, **options: Any) -> None:
        super().__init__(**options)
        self.deadlines = deadlines

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: bool | str | None,
        proxies: Mapping[str, str] | None = None,
        cert: tuple[str, str] | str | None = None,
    ) -> connectionpool.ConnectionPool:
        pool = self._pool
        if pool is None:  # two threads may both look it up: they get the same pool
            pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
            connection_class = pool.ConnectionCls  # type: ignore[attr-defined]
            if not issubclass(connection_class, WatchedConnection):
                pool.ConnectionCls = self.deadlines.watched(connection_class)  # type: ignore[attr-defined]
            self._pool = pool
        return pool

    def close(self) -> None:
        self._pool = None
        super().close()


class BrixoClient:
    """Sends signals; classifies every answer. The key never appears in its repr or errors."""

    def __init__(
        self,
        api_key: str,
        base_url: str = "https://api.brixo.com",
        pool_size: int = 32,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self.timeout = (connect_timeout, read_timeout)
        self._deadlines = Deadlines(connect_timeout + read_timeout)
        self._session = requests.Session()
        adapter = OneHostAdapter(
            self._deadlines, pool_connections=1, pool_maxsize=pool_size, max_retries=0
        )
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update(
            {
                "Authorization": f"Bearer {api_key}",
                "Content-Type": MEDIA_TYPE,
                "Accept": MEDIA_TYPE,
                "User-Agent": f"brixo-feedback-relay/{__version__}",
            }
        )
        # Proxy and CA settings from the environment, looked up once instead of per request.
        environment = self._session.merge_environment_settings(self.base_url, {}, None, None, None)
        self._send_options: dict[str, Any] = {
            k: environment[k] for k in ("proxies", "verify", "cert")
        }
        self._adapter = adapter
        # Every request is this one with another URL and body: preparing each from scratch
        # (session settings, URL parsing, hooks) would cost more CPU than sending it.
        template = self._session.prepare_request(
            requests.Request("POST", self.base_url + "/v1/", data=b"{}")
        )
        self._headers = dict(template.headers)

    def __repr__(self) -> str:
        return f"BrixoClient(base_url={self.base_url!r})"

    def send(self, signal: Signal) -> Answer:
        """POST one signal and classify the answer; never raises for HTTP or network trouble."""
        data = json.dumps(signal.body(), ensure_ascii=False).encode("utf-8")
        return self._post(self.base_url + signal_path(signal.target), data)

    def _post(self, url: str, data: bytes) -> Answer:
        prepared = requests.PreparedRequest()
        prepared.method = "POST"
        prepared.url = url  # as built: requests would turn an encoded "%2E" into a dot-segment
        prepared.headers = CaseInsensitiveDict(self._headers)
        prepared.headers["Content-Length"] = str(len(data))
        prepared.body = data
        with self._deadlines.watch() as watch:
            try:
                response = self._adapter.send(prepared, timeout=self.timeout, **self._send_options)
                _ = response.content  # read it all, so the connection goes back to the pool
            except requests.Timeout as error:
                sent = not isinstance(error, requests.ConnectTimeout)
                return Answer(Outcome.RETRY, None, "timed out", unanswered=sent)
            except requests.RequestException as error:
                if not watch.cut:
                    detail = _network_error(error)
                    return Answer(Outcome.RETRY, None, detail, unanswered=detail.endswith(DROPPED))
        if watch.cut:  # what was read of the answer (its headers, say) may be partial
            return Answer(Outcome.RETRY, None, "timed out", unanswered=True)
        return classify(response, self._key)

    def probe(self) -> Answer:
        """Test the key without sending a signal: an empty body is refused after auth.

        UNAUTHORIZED means the key is wrong. Brixo refuses the body (400) or finds no such
        message (404) with a JSON:API error once the key is accepted.
        """
        url = self.base_url + signal_path(Target("message", KEY_CHECK_ID))
        return self._post(url, b"{}")

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()


def classify(response: requests.Response, key: str = "") -> Answer:
    """Map an HTTP answer to an Outcome, keeping JSON:API `detail` (without `key`, should it
    echo the key: it is stored and logged) and `Retry-After`."""
    status = response.status_code
    if 200 <= status < 300:
        return Answer(Outcome.DELIVERED, status)
    detail, jsonapi = _error_detail(response, key)
    if status == 401:
        return Answer(Outcome.UNAUTHORIZED, status, detail, jsonapi=jsonapi)
    if status == 404:
        return Answer(Outcome.NOT_FOUND, status, detail, jsonapi=jsonapi)
    if status == 413:
        return Answer(Outcome.TOO_LARGE, status, detail, jsonapi=jsonapi)
    if status in (408, 429) or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return Answer(Outcome.RETRY, status, detail, retry_after, jsonapi)
    return Answer(Outcome.REJECTED, status, detail, jsonapi=jsonapi)


def parse_retry_after(raw: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` of seconds (digits only) or an HTTP date in any of
    its three forms (always GMT), at most MAX_RETRY_AFTER; None when absent or malformed."""
    if not raw:
        return None
    raw = raw.strip()
    if raw.isascii() and raw.isdigit():
        return min(float(raw), MAX_RETRY_AFTER)
    try:
        moment = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # asctime and "-0000" dates: HTTP dates are GMT, never local
        moment = moment.replace(tzinfo=UTC)
    wait = moment.timestamp() - (time() if now is None else now)
    return min(max(0.0, wait), MAX_RETRY_AFTER)


def _error_detail(response: requests.Response, key: str) -> tuple[str, bool]:
    """The JSON:API errors' details (else the body's text) with `key` masked, cut to 500
    characters (after masking: a cut key would show in part), and whether it was JSON:API."""
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        errors = None
    jsonapi = isinstance(errors, list)
    if jsonapi:
        parts = [
            str(e.get("detail") or e.get("title") or "") for e in errors if isinstance(e, dict)
        ]
        detail = "; ".join(p for p in parts if p)
    else:
        detail = response.text.strip()
    # One line, without control characters: it is logged and stored (PostgreSQL refuses NUL).
    text = CONTROL_CHARS.sub("", " ".join((detail or response.reason or "").split()))
    if key:
        text = text.replace(key, "***")
    return text[:500], jsonapi


DROPPED = "connection dropped"


def _network_error(error: requests.RequestException) -> str:
    # The exception text can hold the URL but never the headers, so the key stays out.
    name = type(error).__name__
    reason = str(error.args[0]) if error.args else ""
    if "Connection aborted" in reason or "RemoteDisconnected" in reason:
        return f"{name}: {DROPPED}"
    if "Connection refused" in reason or "Failed to establish" in reason:
        return f"{name}: connection refused"
    return f"{name}: {reason[:200]}"
