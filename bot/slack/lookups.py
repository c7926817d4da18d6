"""Web API clients, and their lookups: replies and threads with their metadata, which users
are bots."""

from __future__ import annotations

import logging
from http.client import HTTPException
from time import monotonic
from typing import Any, TypeVar

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.core.settings import Settings

log = logging.getLogger("bot.slack")

K = TypeVar("K")
V = TypeVar("V")

# Each Web API lookup made before an ack may take this long, and all of a request's lookups
# together LOOKUP_BUDGET (Slack waits 3 s for the ack; a reaction on a reply not seen yet may
# need three: users.info, conversations.replies, conversations.history).
LOOKUP_TIMEOUT = 1.0
LOOKUP_BUDGET = 1.5

# What a Web API call fails with when Slack can't be reached: a timeout, a refused or dropped
# connection, TLS trouble, a cut-off answer. Anything else is a bug and keeps its traceback.
NETWORK_ERRORS = (OSError, HTTPException)
# ... and while Slack is busy or slow: a 429 or 5xx too (left after any retries of the client's).
SLACK_UNAVAILABLE = (SlackApiError, *NETWORK_ERRORS)


def web_client(settings: Settings, token: str | None = None) -> WebClient:
    """A Web API client on SLACK_API_URL that retries Slack's 429s, 5xx and dropped connections."""
    return WebClient(
        token=token,
        base_url=settings.slack_api_url,
        timeout=10,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=2),
            ServerErrorRetryHandler(max_retry_count=2),
        ],
    )


class BudgetedClient(WebClient):
    """A WebClient whose calls all end within one deadline: each call's timeout is what is
    left of it (at most LOOKUP_TIMEOUT); once it has passed, a call fails with TimeoutError
    without asking Slack."""

    def __init__(self, deadline: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deadline = deadline

    def api_call(self, *args: Any, **kwargs: Any) -> Any:
        left = self.deadline - monotonic()
        if left <= 0:
            raise TimeoutError("the lookups before the ack took their time")
        self.timeout = min(LOOKUP_TIMEOUT, left)  # type: ignore[assignment]  # urllib's: float
        return super().api_call(*args, **kwargs)


def lookup_client(client: WebClient) -> WebClient:
    """`client` for one request's lookups before the ack: no retries (nor waits on
    Retry-After), LOOKUP_TIMEOUT a call and LOOKUP_BUDGET in all. A 429, 5xx or timeout fails
    the lookup: an event's request then fails and Slack redelivers it; a click is looked up
    again after the ack, with `client` itself."""
    return BudgetedClient(
        monotonic() + LOOKUP_BUDGET,
        token=client.token,
        base_url=client.base_url,
        timeout=LOOKUP_TIMEOUT,
        ssl=client.ssl,
        proxy=client.proxy,
        headers=client.headers,
        retry_handlers=[],
    )


def unavailable_reason(error: Exception) -> str:
    """One line on why Slack said no or couldn't be asked: its HTTP status and error code
    (`HTTP 200: channel_not_found`), or the network error."""
    if isinstance(error, SlackApiError):
        data = error.response.data
        code = data.get("error") if isinstance(data, dict) else None
        if not_json(error):
            code = "not JSON"  # not the page itself
        return f"HTTP {error.response.status_code}" + (f": {code}" if code else "")
    return f"{type(error).__name__}: {error}".strip().rstrip(":")


# Errors Slack's Web API documents for a failure on its side, often answered with HTTP 200.
TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"}
)


# How slack-sdk's error code begins for an answer that isn't JSON.
NOT_JSON = "Received a response in a non-JSON format"


def not_json(error: SlackApiError) -> bool:
    """True when the answer wasn't JSON (an HTML page: a proxy's, or not Slack's API at all)."""
    data = error.response.data
    return isinstance(data, dict) and str(data.get("error")).startswith(NOT_JSON)


def raise_if_transient(error: SlackApiError) -> None:
    """Slack's 429, 5xx, failures on its side and answers that aren't JSON (left after the
    client's retries, if it makes any) fail the request, so Slack redelivers the vote later
    instead of it being taken for one on an unknown message."""
    status = error.response.status_code
    transient = error.response.get("error") in TRANSIENT_ERRORS or not_json(error)
    if status == 429 or status >= 500 or transient:
        raise error


def fetch_message(client: WebClient, channel: str, ts: str) -> dict[str, Any] | None:
    """A message with its metadata, whether it is a thread reply or not.

    conversations.replies finds thread replies (and most top-level messages), asked for the
    one message, since a reply's ts gives its whole thread a page at a time; when it can't,
    conversations.history finds a top-level one.
    """
    lookups = (
        (
            "replies",
            lambda: client.conversations_replies(
                channel=channel,
                ts=ts,
                oldest=ts,
                latest=ts,
                inclusive=True,
                include_all_metadata=True,
            ),
        ),
        (
            "history",
            lambda: client.conversations_history(
                channel=channel, latest=ts, inclusive=True, limit=1, include_all_metadata=True
            ),
        ),
    )
    for name, lookup in lookups:
        try:
            messages = lookup().get("messages") or []
        except SlackApiError as error:
            raise_if_transient(error)
            log.info(
                "can't fetch message %s in %s (%s): %s",
                ts,
                channel,
                name,
                error.response.get("error"),
            )
            continue
        for message in messages:
            if isinstance(message, dict) and message.get("ts") == ts:
                return dict(message)
    return None


def fetch_thread(client: WebClient, channel: str, thread_ts: str) -> list[dict[str, Any]]:
    """A thread's messages with their metadata (first page)."""
    try:
        replies = client.conversations_replies(
            channel=channel, ts=thread_ts, include_all_metadata=True, limit=200
        )
    except SlackApiError as error:
        raise_if_transient(error)
        log.info("can't fetch thread %s in %s: %s", thread_ts, channel, error.response.get("error"))
        return []
    return [dict(m) for m in replies.get("messages") or []]


class SlackUsers:
    """Which users are bots, asked of Slack (`users.info`) once per user and process.

    Reactions carry no hint of who made them. Without the `users:read` scope, or for a user
    Slack can't find, a reaction counts as a person's, but its author is no known person.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._bots: dict[str, bool | None] = {}  # None: Slack couldn't say

    def knows(self, user_id: str) -> bool:
        """True when Slack was already asked about this user."""
        return user_id in self._bots

    def is_bot_known(self, user_id: str) -> bool:
        """True for a user Slack already said is a bot (asks nothing)."""
        return self._bots.get(user_id) is True

    def is_bot(self, client: WebClient, user_id: str) -> bool:
        """True for a bot user (or Slackbot); raises one of SLACK_UNAVAILABLE for now."""
        return self._ask(client, user_id) is True

    def is_person(self, client: WebClient, user_id: str) -> bool:
        """True only when Slack says the user is a person; raises one of SLACK_UNAVAILABLE."""
        return self._ask(client, user_id) is False

    def _ask(self, client: WebClient, user_id: str) -> bool | None:
        if user_id in self._bots:
            return self._bots[user_id]
        try:
            user = client.users_info(user=user_id).get("user")
        except SlackApiError as error:
            raise_if_transient(error)
            log.info(
                "can't tell whether user %s is a bot (%s): counting the reaction",
                user_id,
                error.response.get("error"),
            )
            user = None
        bot = None if not isinstance(user, dict) else bool(user.get("is_bot"))
        if user_id == "USLACKBOT":
            bot = True
        remember(self._bots, user_id, bot, self.size)
        return bot


def remember(cache: dict[K, V], key: K, value: V, size: int) -> None:
    """Keep `value` for `key`, forgetting the oldest entry once `cache` holds `size`."""
    if key not in cache and len(cache) >= size:
        cache.pop(next(iter(cache)), None)
    cache[key] = value
