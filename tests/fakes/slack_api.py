"""A local fake of Slack's Web API for ``slack_sdk.WebClient(base_url=fake.url)``.

Accepts ``POST`` (or ``GET``) ``/api/<method>`` with form-encoded, multipart or
JSON bodies, records every call, and answers from a small in-memory store of
conversations.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from tests.fakes import Headers, LocalHTTPFake, QuietHandler
from tests.waiting import wait_until

JSON_FIELDS = frozenset({"blocks", "attachments", "metadata", "view", "prompts", "unfurls"})
DEFAULT_SCOPES = [
    "app_mentions:read",
    "assistant:write",
    "channels:history",
    "chat:write",
    "commands",
    "groups:history",
    "im:history",
    "im:write",
    "metadata.message:read",
    "mpim:history",
    "reactions:read",
    "reactions:write",
    "users:read",
]

# A JSON answer, or bytes sent as an HTML page (what a proxy in the way answers).
Responder = dict[str, Any] | bytes | Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Call:
    """One Web API call: method name, parsed arguments, bearer token, arrival time."""

    method: str
    args: dict[str, Any]
    token: str | None
    at: float
    headers: Headers | None = None


@dataclass
class _Override:
    payload: Responder
    status: int = 200
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class _Failure:
    status: int
    retry_after: str | None


@dataclass(frozen=True)
class Hold:
    """A call held unanswered: `arrived` once it came in, answered once `released` is set."""

    arrived: threading.Event
    released: threading.Event


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _block_text(block: Any) -> str:
    """A block's own text (a section's or a context's), '' for others."""
    if not isinstance(block, dict):
        return ""
    text = block.get("text")
    parts = [text] if isinstance(text, dict) else []
    parts += [e for e in block.get("elements") or [] if isinstance(e, dict) and "text" in e]
    return "".join(str(p.get("text") or "") for p in parts)


def _ts_key(ts: Any) -> Decimal:
    try:
        return Decimal(str(ts))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def _parse_multipart(body: bytes, content_type: str) -> dict[str, Any]:
    boundary = ""
    for param in content_type.split(";"):
        key, _, pval = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = pval.strip('"')
    if not boundary:
        return {}
    args: dict[str, Any] = {}
    for segment in body.split(b"--" + boundary.encode())[1:]:
        if segment.startswith(b"--"):
            break
        segment = segment.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, _, content = segment.partition(b"\r\n\r\n")
        name = ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if line.lower().startswith("content-disposition"):
                for piece in line.split(";"):
                    k, _, v = piece.strip().partition("=")
                    if k == "name":
                        name = v.strip('"')
        if name:
            args[name] = content.decode("utf-8", "replace")
    return args


# The method name the calls to a response_url are recorded under.
RESPONSE_URL = "response_url"


class _SlackHandler(QuietHandler):
    server: Any

    def handle_any(self) -> None:
        fake: FakeSlackAPI = self.server.owner
        body, _ = self.read_body(None)
        split = urlsplit(self.path)
        if split.path.startswith("/response/"):  # an interaction's response_url
            try:
                posted = json.loads(body or b"{}")
            except ValueError:
                posted = {}
            sent = posted if isinstance(posted, dict) else {}
            fake._record(Call(RESPONSE_URL, sent, None, time.time(), Headers(self.headers.items())))
            self.send_raw(200, b"ok", "text/html")
            return
        if not split.path.startswith("/api/"):
            self.send_raw(404, b'{"ok":false,"error":"not_found"}', "application/json")
            return
        method = split.path[len("/api/") :]
        args: dict[str, Any] = dict(parse_qsl(split.query, keep_blank_values=True))
        ctype = self.headers.get("Content-Type", "")
        if body:
            if ctype.startswith("application/json"):
                try:
                    loaded = json.loads(body)
                except ValueError:
                    loaded = {}
                if isinstance(loaded, dict):
                    args.update(loaded)
            elif ctype.startswith("multipart/form-data"):
                args.update(_parse_multipart(body, ctype))
            else:
                args.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        args = {k: (_maybe_json(v) if k in JSON_FIELDS else v) for k, v in args.items()}
        auth = self.headers.get("Authorization", "")
        token: str | None = auth[7:] if auth.startswith("Bearer ") else None
        if token is None and isinstance(args.get("token"), str):
            token = args["token"]
        call = Call(method, args, token, time.time(), Headers(self.headers.items()))
        if fake._dropped(method):
            fake._record(call)
            self.close_connection = True  # no answer at all: the client sees it closed
            return
        status, payload, headers = fake._answer(call)
        fake._record(call)
        if isinstance(payload, bytes):
            self.send_raw(status, payload, "text/html; charset=utf-8", headers)
            return
        self.send_raw(
            status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers
        )


class FakeSlackAPI(LocalHTTPFake):
    """Fake Slack Web API; ``url`` ends with ``/api/`` like ``SLACK_API_URL``."""

    handler_class: ClassVar[type[QuietHandler]] = _SlackHandler

    def __init__(
        self,
        team_id: str = "T1",
        bot_user_id: str = "UBOT",
        bot_id: str = "BRELAY",
        app_id: str = "A1",
        port: int = 0,
    ) -> None:
        super().__init__(port)
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.scopes: list[str] = list(DEFAULT_SCOPES)
        # conversations.replies' page when no limit is asked for (Slack's is larger, but some
        # apps get 15).
        self.replies_page = 1000
        self.valid_tokens: set[str] = set()
        # Block types chat.postMessage refuses with invalid_blocks (e.g. "context_actions").
        self.refused_blocks: set[str] = set()
        # Users that users.info reports as bots (besides the app's own).
        self.bot_users: set[str] = set()
        self.oauth_response: dict[str, Any] = {
            "ok": True,
            "app_id": app_id,
            "authed_user": {"id": "U1"},
            "scope": ",".join(DEFAULT_SCOPES),
            "token_type": "bot",
            "access_token": "xoxb-installed-T9",
            "bot_user_id": "UBOT9",
            "team": {"id": "T9", "name": "Nine"},
            "enterprise": None,
            "is_enterprise_install": False,
        }
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._overrides: dict[str, _Override] = {}
        self._failures: dict[str, deque[_Failure]] = {}
        self._delays: dict[str, deque[float]] = {}
        self._drops: dict[str, int] = {}
        self._holds: dict[str, deque[Hold]] = {}
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._ts_counter = itertools.count(1)
        self._view_counter = itertools.count(1)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/api/`` (the WebClient ``base_url``)."""
        return f"{self.base_url}/api/"

    def response_url(self, name: str = "r1") -> str:
        """A ``response_url`` for an interaction payload; posts to it are calls of RESPONSE_URL."""
        return f"{self.base_url}/response/{name}"

    # -- recording -----------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """A snapshot of every call, oldest first."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        """Calls of one API method."""
        return [c for c in self.calls if c.method == method]

    def wait_for_call(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        """Wait until ``method`` was called at least ``count`` times; return those calls."""
        return wait_until(
            lambda: (lambda cs: cs if len(cs) >= count else None)(self.calls_to(method)),
            timeout=timeout,
            message=f"Slack method {method} not called {count} time(s); "
            f"calls: {[c.method for c in self.calls][-20:]}",
        )

    def clear(self) -> None:
        """Forget recorded calls (the message store stays)."""
        with self._lock:
            self._calls.clear()

    def _record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    # -- configuration -------------------------------------------------------

    def respond(
        self,
        method: str,
        payload: Responder,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer ``method`` with ``payload`` (a dict, or a callable of the args) from now on."""
        with self._lock:
            self._overrides[method] = _Override(payload, status, headers)

    def reset_response(self, method: str) -> None:
        """Drop a ``respond()`` override."""
        with self._lock:
            self._overrides.pop(method, None)

    def fail_next(
        self, method: str, n: int = 1, status: int = 429, retry_after: str | None = "1"
    ) -> None:
        """Answer the next ``n`` calls of ``method`` with HTTP ``status`` (429 -> ratelimited)."""
        with self._lock:
            self._failures.setdefault(method, deque()).extend([_Failure(status, retry_after)] * n)

    def delay_next(self, method: str, seconds: float, n: int = 1) -> None:
        """Answer the next ``n`` calls of ``method`` only after ``seconds`` (a slow Slack)."""
        with self._lock:
            self._delays.setdefault(method, deque()).extend([seconds] * n)

    def hold_next(self, method: str) -> Hold:
        """Hold the next call of ``method`` unanswered until the test releases it."""
        hold = Hold(threading.Event(), threading.Event())
        with self._lock:
            self._holds.setdefault(method, deque()).append(hold)
        return hold

    def drop_next(self, method: str, n: int = 1) -> None:
        """Close the connection of the next ``n`` calls of ``method`` without an answer."""
        with self._lock:
            self._drops[method] = self._drops.get(method, 0) + n

    def _dropped(self, method: str) -> bool:
        with self._lock:
            left = self._drops.get(method, 0)
            if left:
                self._drops[method] = left - 1
            return bool(left)

    # -- message store ---------------------------------------------------------

    def next_ts(self) -> str:
        """A fresh, increasing message ts."""
        n = next(self._ts_counter)
        return f"{1700000100 + n}.{100 + n:06d}"

    def add_message(
        self,
        channel: str,
        ts: str,
        text: str = "",
        user: str | None = None,
        bot_id: str | None = None,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
        team: str = "T1",
        **extra: Any,
    ) -> dict[str, Any]:
        """Seed a message into the conversation store and return it."""
        message: dict[str, Any] = {"type": "message", "ts": ts, "text": text, "team": team}
        for key, value in (
            ("user", user),
            ("bot_id", bot_id),
            ("thread_ts", thread_ts),
            ("metadata", metadata),
        ):
            if value is not None:
                message[key] = value
        message.update(extra)
        with self._lock:
            if bot_id and user:
                self.bot_users.add(user)  # an app's bot user: users.info says is_bot
            msgs = self._messages.setdefault(channel, [])
            msgs[:] = [m for m in msgs if m["ts"] != ts]
            msgs.append(message)
            msgs.sort(key=lambda m: _ts_key(m["ts"]))
        return message

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Stored messages of ``channel``, oldest first (copies)."""
        with self._lock:
            return [dict(m) for m in self._messages.get(channel, [])]

    def find_message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The stored message ``ts`` in ``channel`` (a copy), if any."""
        with self._lock:
            for m in self._messages.get(channel, []):
                if m["ts"] == ts:
                    return dict(m)
        return None

    # -- answering -------------------------------------------------------------

    def _answer(self, call: Call) -> tuple[int, dict[str, Any] | bytes, dict[str, str]]:
        with self._lock:
            queue = self._failures.get(call.method)
            failure = queue.popleft() if queue else None
            override = self._overrides.get(call.method)
            delays = self._delays.get(call.method)
            delay = delays.popleft() if delays else 0.0
            holds = self._holds.get(call.method)
            hold = holds.popleft() if holds else None
        if hold is not None:
            hold.arrived.set()
            hold.released.wait(30)
        time.sleep(delay)  # the slow Slack being played, not a wait in a test
        if failure is not None:
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            error = "ratelimited" if failure.status == 429 else "fatal_error"
            return failure.status, {"ok": False, "error": error}, headers
        if (
            self.valid_tokens
            and call.method != "oauth.v2.access"
            and call.token not in self.valid_tokens
        ):
            return (
                200,
                {"ok": False, "error": "not_authed" if call.token is None else "invalid_auth"},
                {},
            )
        if override is not None:
            payload = override.payload
            if isinstance(payload, bytes):
                return override.status, payload, dict(override.headers or {})
            body = payload(call.args) if callable(payload) else dict(payload)
            return override.status, body, dict(override.headers or {})
        handler = self._handlers.get(call.method)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        headers = {}
        if call.method == "auth.test":
            headers["x-oauth-scopes"] = ",".join(self.scopes)
        return 200, handler(self, call.args), headers

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://example.slack.com/",
            "team": "Example",
            "user": "relay",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("user") or "")
        if not user.startswith(("U", "W")):
            return {"ok": False, "error": "user_not_found"}
        bot = user == self.bot_user_id or user in self.bot_users
        return {"ok": True, "user": {"id": user, "team_id": self.team_id, "is_bot": bot}}

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks") and not args.get("attachments"):
            return {"ok": False, "error": "no_text"}
        blocks = args.get("blocks")
        if isinstance(blocks, list) and any(
            isinstance(b, dict) and b.get("type") in self.refused_blocks for b in blocks
        ):
            return {"ok": False, "error": "invalid_blocks"}
        if isinstance(blocks, list):  # Slack's limits: 3,000 a section, about 12,000 in all
            texts = [_block_text(b) for b in blocks]
            if any(len(t) > 3000 for t in texts):
                return {"ok": False, "error": "invalid_blocks"}
            if sum(map(len, texts)) > 12_000:
                return {"ok": False, "error": "msg_blocks_too_long"}
        ts = self.next_ts()
        extra: dict[str, Any] = {"app_id": self.app_id}
        for key in ("blocks", "attachments"):
            if args.get(key) is not None:
                extra[key] = args[key]
        metadata = args.get("metadata")
        message = self.add_message(
            str(channel),
            ts,
            text=str(args.get("text") or ""),
            user=self.bot_user_id,
            bot_id=self.bot_id,
            thread_ts=args.get("thread_ts") or None,
            metadata=metadata if isinstance(metadata, dict) else None,
            team=self.team_id,
            **extra,
        )
        return {"ok": True, "channel": channel, "ts": ts, "message": dict(message)}

    def _connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        # A Socket Mode URL nothing listens on (the Socket Mode tests serve their own).
        return {"ok": True, "url": "wss://127.0.0.1:9/link"}

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "message_ts": self.next_ts()}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        with self._lock:
            for m in self._messages.get(channel, []):
                if m["ts"] == ts:
                    for key in ("text", "blocks", "attachments", "metadata"):
                        if key in args:
                            m[key] = args[key]
        return {"ok": True, "channel": channel, "ts": ts, "text": args.get("text", "")}

    def _ok(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    def _view(self, args: dict[str, Any]) -> dict[str, Any]:
        view = args.get("view")
        view = dict(view) if isinstance(view, dict) else {}
        view_id = args.get("view_id") or f"V{next(self._view_counter):08d}"
        view.update(
            {
                "id": view_id,
                "team_id": self.team_id,
                "app_id": self.app_id,
                "bot_id": self.bot_id,
                "hash": f"{int(time.time())}.hash",
                "state": {"values": {}},
                "root_view_id": view_id,
            }
        )
        view.setdefault("private_metadata", "")
        view.setdefault("callback_id", "")
        return {"ok": True, "view": view}

    def _render(self, message: dict[str, Any], with_metadata: bool) -> dict[str, Any]:
        out = dict(message)
        if not with_metadata:
            out.pop("metadata", None)
        return out

    def _replies(self, args: dict[str, Any]) -> dict[str, Any]:
        """Like Slack: the thread holding `ts` (a reply's ts gives its whole thread), parent
        first, then replies between `oldest` and `latest`, at most `limit` (else a page)."""
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        with_meta = _truthy(args.get("include_all_metadata", False))
        inclusive = _truthy(args.get("inclusive", False))
        oldest = _ts_key(args.get("oldest") or 0)
        latest = _ts_key(args["latest"]) if args.get("latest") else None
        with self._lock:
            found = [m for m in self._messages.get(channel, []) if m["ts"] == ts]
            root = str(found[0].get("thread_ts") or ts) if found else ts
            msgs = [
                m
                for m in self._messages.get(channel, [])
                if m["ts"] == root or m.get("thread_ts") == root
            ]
        if not found:
            return {"ok": False, "error": "thread_not_found"}
        msgs.sort(key=lambda m: (m["ts"] != root, _ts_key(m["ts"])))
        replies = [m for m in msgs if m["ts"] != root]

        def in_range(m: dict[str, Any]) -> bool:
            key = _ts_key(m["ts"])
            after = key > oldest or (inclusive and key == oldest)
            before = latest is None or key < latest or (inclusive and key == latest)
            return after and before

        picked = [m for m in msgs if in_range(m)]
        limit = int(args.get("limit") or 0) or self.replies_page
        rendered = [self._render(m, with_meta) for m in picked[:limit]]
        if replies and rendered and rendered[0]["ts"] == root:
            rendered[0].setdefault("thread_ts", root)
            rendered[0]["reply_count"] = len(replies)
        return {
            "ok": True,
            "messages": rendered,
            "has_more": limit < len(picked),
            "response_metadata": {"next_cursor": ""},
        }

    def _history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        with_meta = _truthy(args.get("include_all_metadata", False))
        inclusive = _truthy(args.get("inclusive", False))
        latest = _ts_key(args["latest"]) if args.get("latest") else None
        oldest = _ts_key(args.get("oldest") or 0)
        limit = int(args.get("limit") or 100)
        with self._lock:
            msgs = list(self._messages.get(channel, []))
        picked = []
        for m in reversed(msgs):  # newest first
            if m.get("thread_ts") and m["thread_ts"] != m["ts"]:
                continue  # thread replies are not part of channel history
            key = _ts_key(m["ts"])
            if latest is not None and (key > latest or (key == latest and not inclusive)):
                continue
            if key < oldest or (key == oldest and not inclusive and oldest != 0):
                continue
            picked.append(self._render(m, with_meta))
        return {
            "ok": True,
            "messages": picked[:limit],
            "has_more": len(picked) > limit,
            "pin_count": 0,
            "response_metadata": {"next_cursor": ""},
        }

    def _oauth(self, args: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps(self.oauth_response))

    _handlers: ClassVar[dict[str, Callable[[FakeSlackAPI, dict[str, Any]], dict[str, Any]]]] = {
        "auth.test": _auth_test,
        "apps.connections.open": _connections_open,
        "users.info": _users_info,
        "chat.postMessage": _post_message,
        "chat.postEphemeral": _post_ephemeral,
        "chat.update": _update,
        "reactions.add": _ok,
        "reactions.remove": _ok,
        "views.open": _view,
        "views.update": _view,
        "views.push": _view,
        "assistant.threads.setStatus": _ok,
        "assistant.threads.setSuggestedPrompts": _ok,
        "assistant.threads.setTitle": _ok,
        "conversations.replies": _replies,
        "conversations.history": _history,
        "oauth.v2.access": _oauth,
    }
