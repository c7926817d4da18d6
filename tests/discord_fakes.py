"""A local stand-in for Discord's REST API, gateway payload builders, and a running client.

Nothing here touches the network: discord.py's REST base (`discord.http.Route.BASE`) points
at `FakeDiscordAPI`, and gateway events are fed to the client's own parsers as the payload
dicts Discord sends (GUILD_CREATE, MESSAGE_CREATE, INTERACTION_CREATE, MESSAGE_REACTION_ADD).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from tests.fakes import Headers, LocalHTTPFake, QuietHandler
from tests.waiting import wait_until

T = TypeVar("T")

DISCORD_EPOCH_MS = 1420070400000
BOT_ID = "900000000000000001"
APP_ID = BOT_ID
GUILD = "910000000000000001"
OTHER_GUILD = "910000000000000002"
CHANNEL = "920000000000000001"
THREAD = "930000000000000001"
DM_CHANNEL = "940000000000000001"
PERSON = "950000000000000001"
OTHER_PERSON = "950000000000000002"
WATCHED_BOT = "960000000000000001"
BOT_ROLE = "970000000000000001"  # the role Discord gives the relay's bot in a guild
STAMP = "2026-01-01T00:00:00.000000+00:00"

_counter = itertools.count(1)


def snowflake() -> str:
    """A fresh Discord ID made now, as Discord makes them."""
    return str(((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) + next(_counter) % 4096)


def user(user_id: str = PERSON, bot: bool = False) -> dict[str, Any]:
    """A user object."""
    name = "relay" if user_id == BOT_ID else f"user{user_id[-3:]}"
    return {
        "id": user_id,
        "username": name,
        "global_name": None,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
    }


def member(user_id: str = PERSON, bot: bool = False) -> dict[str, Any]:
    """A guild member object with its user."""
    return {
        "user": user(user_id, bot),
        "roles": [],
        "joined_at": STAMP,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "permissions": "2147483647",
    }


def text_channel(channel_id: str = CHANNEL, guild_id: str = GUILD) -> dict[str, Any]:
    """A guild text channel object."""
    return {
        "id": channel_id,
        "guild_id": guild_id,
        "type": 0,
        "name": "general",
        "position": 0,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
        "rate_limit_per_user": 0,
    }


def thread_channel(
    thread_id: str = THREAD, parent_id: str = CHANNEL, guild_id: str = GUILD, owner: str = PERSON
) -> dict[str, Any]:
    """A public thread object, started by `owner`."""
    return {
        "id": thread_id,
        "guild_id": guild_id,
        "parent_id": parent_id,
        "owner_id": owner,
        "name": "a thread",
        "type": 11,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": 0,
        "member_count": 1,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": STAMP,
            "locked": False,
        },
    }


def guild_create(guild_id: str = GUILD) -> dict[str, Any]:
    """GUILD_CREATE as the gateway sends it after READY: the channel and a thread in it."""
    return {
        "id": guild_id,
        "name": f"guild {guild_id[-3:]}",
        "icon": None,
        "owner_id": PERSON,
        "roles": [
            {
                "id": guild_id,
                "name": "@everyone",
                "permissions": "2147483647",
                "position": 0,
                "color": 0,
                "hoist": False,
                "managed": False,
                "mentionable": False,
                "flags": 0,
            },
            {
                "id": BOT_ROLE,
                "name": "Relay",
                "permissions": "0",
                "position": 1,
                "color": 0,
                "hoist": False,
                "managed": True,
                "mentionable": True,
                "flags": 0,
                "tags": {"bot_id": BOT_ID},
            },
        ],
        "emojis": [],
        "stickers": [],
        "features": [],
        "channels": [text_channel(CHANNEL, guild_id)],
        "threads": [thread_channel(THREAD, CHANNEL, guild_id)],
        "members": [member(BOT_ID, bot=True)],
        "member_count": 2,
        "large": False,
        "unavailable": False,
        "joined_at": STAMP,
        "voice_states": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "premium_tier": 0,
        "preferred_locale": "en-US",
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "system_channel_flags": 0,
    }


def message(
    content: str = "hello",
    *,
    author: str = PERSON,
    bot: bool = False,
    channel_id: str = CHANNEL,
    guild_id: str | None = GUILD,
    message_id: str | None = None,
    mentions: tuple[str, ...] = (),
    role_mentions: tuple[str, ...] = (),
    components: list[dict[str, Any]] | None = None,
    kind: int = 0,
) -> dict[str, Any]:
    """A message object (also MESSAGE_CREATE's payload); `kind` is its type (0: written)."""
    data: dict[str, Any] = {
        "id": message_id or snowflake(),
        "channel_id": channel_id,
        "author": user(author, bot),
        "content": content,
        "timestamp": STAMP,
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [user(m, m == BOT_ID) for m in mentions],
        "mention_roles": list(role_mentions),
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": kind,
        "flags": 0,
        "components": components or [],
    }
    if guild_id:
        data["guild_id"] = guild_id
        data["member"] = {k: v for k, v in member(author, bot).items() if k != "user"}
    return data


def vote_buttons() -> list[dict[str, Any]]:
    """The 👍/👎 action row the relay puts under its replies."""
    buttons = [
        {"type": 2, "style": 2, "custom_id": f"brixo:vote:{v}", "emoji": {"id": None, "name": e}}
        for v, e in (("up", "👍"), ("down", "👎"))
    ]
    return [{"type": 1, "components": buttons}]


def _interaction(
    kind: int,
    data: dict[str, Any],
    *,
    user_id: str,
    guild_id: str | None,
    channel: dict[str, Any],
    message_data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": snowflake(),
        "application_id": APP_ID,
        "type": kind,
        "token": f"token-{next(_counter)}",
        "version": 1,
        "channel_id": channel["id"],
        "channel": channel,
        "data": data,
        "app_permissions": "2147483647",
        "locale": "en-US",
        "attachment_size_limit": 8388608,
        "entitlements": [],
        "authorizing_integration_owners": {},
        "context": 0 if guild_id else 1,
    }
    if guild_id:
        payload["guild_id"] = guild_id
        payload["guild_locale"] = "en-US"
        payload["member"] = member(user_id)
    else:
        payload["user"] = user(user_id)
    if message_data is not None:
        payload["message"] = message_data
    return payload


def _channel(channel_id: str, guild_id: str | None, user_id: str) -> dict[str, Any]:
    """A guild text channel, or the DM channel with `user_id` when there is no guild."""
    if guild_id:
        return text_channel(channel_id, guild_id)
    return {"id": channel_id, "type": 1, "recipients": [user(user_id)]}


def click(
    message_data: dict[str, Any],
    value: str = "up",
    *,
    user_id: str = PERSON,
    guild_id: str | None = GUILD,
    channel: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """INTERACTION_CREATE for a 👍/👎 button click on `message_data`."""
    custom_id = value if value.startswith("brixo:") else f"brixo:vote:{value}"
    where = channel or _channel(message_data["channel_id"], guild_id, user_id)
    return _interaction(
        3,
        {"custom_id": custom_id, "component_type": 2},
        user_id=user_id,
        guild_id=guild_id,
        channel=where,
        message_data=message_data,
    )


def modal_submit(
    custom_id: str,
    comment: str | None,
    *,
    user_id: str = PERSON,
    guild_id: str | None = GUILD,
    channel_id: str = CHANNEL,
) -> dict[str, Any]:
    """INTERACTION_CREATE for the comment modal's submission."""
    components = [
        {"type": 1, "components": [{"type": 4, "custom_id": "comment", "value": comment or ""}]}
    ]
    return _submission(
        custom_id, components, user_id, guild_id, _channel(channel_id, guild_id, user_id)
    )


def _submission(
    custom_id: str,
    components: list[dict[str, Any]],
    user_id: str,
    guild_id: str | None,
    channel: dict[str, Any],
) -> dict[str, Any]:
    return _interaction(
        5,
        {"custom_id": custom_id, "components": components},
        user_id=user_id,
        guild_id=guild_id,
        channel=channel,
    )


def message_command(
    message_data: dict[str, Any],
    name: str = "Rate this conversation",
    *,
    user_id: str = PERSON,
    guild_id: str | None = GUILD,
    channel: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """INTERACTION_CREATE for a message command (context menu) on `message_data`."""
    where = channel or _channel(message_data["channel_id"], guild_id, user_id)
    data = {
        "id": snowflake(),
        "name": name,
        "type": 3,
        "target_id": message_data["id"],
        "resolved": {"messages": {message_data["id"]: message_data}},
    }
    return _interaction(2, data, user_id=user_id, guild_id=guild_id, channel=where)


def rating_submit(
    custom_id: str,
    rating: str | None,
    comment: str | None = None,
    *,
    user_id: str = PERSON,
    guild_id: str | None = GUILD,
    channel: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """INTERACTION_CREATE for the "Rate this conversation" modal's submission (labels)."""
    select = {"type": 3, "id": 2, "custom_id": "rating", "values": [rating] if rating else []}
    text = {"type": 4, "id": 4, "custom_id": "comment", "value": comment or ""}
    components = [{"type": 18, "id": 1, "component": select}]
    components.append({"type": 18, "id": 3, "component": text})
    where = channel or _channel(CHANNEL if guild_id else DM_CHANNEL, guild_id, user_id)
    return _submission(custom_id, components, user_id, guild_id, where)


def reaction_add(
    message_id: str,
    emoji: str = "👍",
    *,
    user_id: str = PERSON,
    bot: bool = False,
    channel_id: str = CHANNEL,
    guild_id: str | None = GUILD,
    author: str | None = None,
) -> dict[str, Any]:
    """MESSAGE_REACTION_ADD (also _REMOVE without member/author)."""
    data: dict[str, Any] = {
        "user_id": user_id,
        "channel_id": channel_id,
        "message_id": message_id,
        "emoji": {"id": None, "name": emoji},
        "burst": False,
        "type": 0,
    }
    if guild_id:
        data["guild_id"] = guild_id
        data["member"] = member(user_id, bot)
    if author:
        data["message_author_id"] = author
    return data


# --- the fake REST API --------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One REST request the client made."""

    method: str
    path: str
    json: Any
    headers: Headers


class _DiscordHandler(QuietHandler):
    server: Any

    def handle_any(self) -> None:
        fake: FakeDiscordAPI = self.server.owner
        body, _ = self.read_body(None)
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            doc = None
        path = self.path.split("?", 1)[0].removeprefix("/api/v10")
        call = Call(self.command, path, doc, Headers(self.headers.items()))
        status, answer = fake._answer(call)
        payload = json.dumps(answer).encode() if answer is not None else b""
        self.send_raw(status, payload, "application/json" if answer is not None else None)


class FakeDiscordAPI(LocalHTTPFake):
    """Answers the REST calls the relay makes; records every call."""

    handler_class: ClassVar[type[QuietHandler]] = _DiscordHandler

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._failures: list[tuple[re.Pattern[str], int]] = []
        self._sent: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []  # the application's registered commands
        self.application_flags = 1 << 19  # GATEWAY_MESSAGE_CONTENT_LIMITED: the intent is on

    @property
    def api_base(self) -> str:
        """What `discord.http.Route.BASE` should be."""
        return f"{self.base_url}/api/v10"

    @property
    def calls(self) -> list[Call]:
        """A snapshot of every call, oldest first."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str, pattern: str) -> list[Call]:
        """Calls whose path fully matches `pattern`."""
        return [c for c in self.calls if c.method == method and re.fullmatch(pattern, c.path)]

    def wait_for(self, method: str, pattern: str, count: int = 1) -> list[Call]:
        """Wait until at least `count` calls match; return them."""
        return wait_until(
            lambda: (lambda cs: cs if len(cs) >= count else None)(self.calls_to(method, pattern)),
            message=f"no {count} {method} {pattern} call(s); calls: {self.calls}",
        )

    def callbacks(self) -> list[Call]:
        """Interaction responses, oldest first."""
        return self.calls_to("POST", r"/interactions/\d+/[^/]+/callback")

    def wait_for_callbacks(self, count: int) -> list[Call]:
        """Wait for `count` interaction responses."""
        return self.wait_for("POST", r"/interactions/\d+/[^/]+/callback", count)

    def sent(self, channel_id: str | None = None) -> list[dict[str, Any]]:
        """Messages the client created (as returned to it), in `channel_id` or anywhere."""
        with self._lock:
            return [m for m in self._sent if channel_id in (None, m["channel_id"])]

    def wait_for_sent(self, channel_id: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait until `count` messages were created in `channel_id`."""
        return wait_until(
            lambda: (lambda ms: ms if len(ms) >= count else None)(self.sent(channel_id)),
            message=f"no {count} message(s) in {channel_id}; calls: {self.calls}",
        )

    def fail(self, method_path: str, status: int = 403) -> None:
        """Answer calls matching `"METHOD /path-regex"` with `status` from now on."""
        with self._lock:
            self._failures.append((re.compile(method_path), status))

    def clear(self) -> None:
        """Forget recorded calls."""
        with self._lock:
            self._calls.clear()

    def _answer(self, call: Call) -> tuple[int, Any]:
        with self._lock:
            self._calls.append(call)
            for pattern, status in self._failures:
                if pattern.fullmatch(f"{call.method} {call.path}"):
                    return status, {"message": "Missing Permissions", "code": 50013}
        method, path, doc = call.method, call.path, call.json if isinstance(call.json, dict) else {}
        if method == "GET" and path == "/users/@me":
            return 200, user(BOT_ID, bot=True)
        if method == "GET" and path == "/oauth2/applications/@me":
            return 200, _application(self.application_flags)
        if match := re.fullmatch(r"/users/(\d+)", path):
            return 200, user(match[1])
        if method == "POST" and path == "/users/@me/channels":
            recipient = user(str(doc.get("recipient_id", PERSON)))
            return 200, {"id": DM_CHANNEL, "type": 1, "recipients": [recipient]}
        if match := re.fullmatch(r"/channels/(\d+)/messages/(\d+)/threads", path):
            thread = thread_channel(match[2], match[1], owner=BOT_ID)
            return 200, {**thread, "name": doc.get("name", "")}
        if method == "POST" and (match := re.fullmatch(r"/channels/(\d+)/messages", path)):
            guild = None if match[1] == DM_CHANNEL else GUILD
            sent = message(
                doc.get("content", ""),
                author=BOT_ID,
                bot=True,
                channel_id=match[1],
                guild_id=guild,
                components=doc.get("components"),
            )
            with self._lock:
                self._sent.append(sent)
            return 200, sent
        if re.fullmatch(r"/applications/\d+/commands", path):
            with self._lock:
                if method == "PUT":  # a bulk overwrite of every command
                    listed = call.json if isinstance(call.json, list) else []
                    self.commands = [registered_command(c) for c in listed]
                if method == "POST":  # an upsert: replaces the command of that name and type
                    key = (doc.get("name"), doc.get("type", 1))
                    kept = [c for c in self.commands if (c["name"], c.get("type", 1)) != key]
                    self.commands = [*kept, registered_command(doc)]
                    return 201, self.commands[-1]
                return 200, self.commands
        if match := re.fullmatch(r"/interactions/(\d+)/[^/]+/callback", path):
            return 200, {"interaction": {"id": match[1], "type": 3}}
        return 204, None


def registered_command(command: dict[str, Any]) -> dict[str, Any]:
    """An application command as Discord lists it once registered."""
    return {
        "id": snowflake(),
        "application_id": APP_ID,
        "version": snowflake(),
        "default_member_permissions": None,
        "description": "",
        "options": [],
        **command,
    }


def _application(flags: int) -> dict[str, Any]:
    return {
        "id": APP_ID,
        "name": "relay",
        "icon": None,
        "description": "",
        "rpc_origins": [],
        "bot_public": True,
        "bot_require_code_grant": False,
        "owner": user(PERSON),
        "summary": "",
        "verify_key": "0" * 64,
        "flags": flags,
        "team": None,
    }


# --- the client, running on its own event loop ----------------------------------------------


class LoopThread:
    """An asyncio loop in a daemon thread; tests hand it coroutines and wait for results."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run `coro` on the loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call `fn` on the loop's thread (where discord.py's parsers must run)."""

        async def wrapper() -> T:
            return fn(*args)

        return self.run(wrapper())

    def busy(self) -> int:
        """How many discord.py event handlers and UI callbacks are still running."""

        async def count() -> int:
            names = (t.get_name() for t in asyncio.all_tasks() if not t.done())
            return sum(n.startswith(("discord.py: ", "discord-ui-")) for n in names)

        return self.run(count())

    def settle(self) -> None:
        """Wait until every event fed so far was handled."""
        wait_until(lambda: self.busy() == 0, message="discord.py handlers still running")

    def stop(self) -> None:
        """Cancel what still runs (e.g. modal timeouts), then stop the loop and its thread."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


# --- the relay's bot, logged in against the fake, fed gateway events ------------------------

TOKEN = "discord-test-token-5b7e"


@dataclass
class RunningBot:
    """One RelayClient logged in against the fake API (no gateway), and its relay."""

    client: Any
    relay: Any
    api: FakeDiscordAPI
    loop: LoopThread
    stopped: bool = False

    def feed(self, event: str, data: dict[str, Any]) -> None:
        """Hand a gateway event (e.g. "MESSAGE_CREATE") to the client's own parser."""
        self.loop.call(self.client._connection.parsers[event], data)

    def acts(self) -> int:
        """Acts stored so far, in every state."""
        from bot.core.outbox import STATES

        counts = self.relay.outbox.counts(time.time())
        return sum(counts[state] for state in STATES)

    def stop(self) -> None:
        """Close the client (as a process would on exit) and stop delivering."""
        if self.stopped:
            return
        self.stopped = True
        self.loop.run(self.client.close())
        self.relay.stop(5.0)
        self.relay.db.dispose()


def start_bot(relay: Any, api: FakeDiscordAPI, loop: LoopThread) -> RunningBot:
    """Log a new RelayClient in (GET /users/@me, the application) and send it GUILD_CREATE."""
    from bot.discord.client import RelayClient

    async def login() -> Any:
        client = RelayClient(relay)
        await client.login(TOKEN)
        return client

    relay.start()
    bot = RunningBot(loop.run(login()), relay, api, loop)
    bot.feed("GUILD_CREATE", guild_create(GUILD))
    bot.feed("GUILD_CREATE", guild_create(OTHER_GUILD))
    return bot
