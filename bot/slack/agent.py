"""The agent bridge: a person's message goes to AGENT_URL; its answer is posted with feedback."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any, TypeVar, cast

import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.core.agent import (
    AGENT_ERROR_REPLY,
    MAX_ANSWER_BYTES,
    AgentError,
    parse_answer,
    redirected,
)
from bot.core.agent import (
    question as agent_question,
)
from bot.core.forks import at_fork
from bot.core.mapping import POSTED, USABLE_ID
from bot.slack.blocks import brixo_metadata, post_with_feedback
from bot.slack.feedback import SlackFeedback
from bot.slack.follow_ups import FollowUps
from bot.slack.lookups import SLACK_UNAVAILABLE, unavailable_reason

T = TypeVar("T")

# Requests at the agent at once, at most: one past AGENT_TIMEOUT whose answer is still arriving
# (its caller has moved on) counts until it ends.
AGENT_CALLS = 10

log = logging.getLogger("bot.agent")


@dataclass(frozen=True)
class Question:
    """A person's message for the agent."""

    workspace: str
    channel: str
    user: str
    text: str
    ts: str
    thread_ts: str | None


class AgentBridge:
    """Calls the agent over one keep-alive session and posts its answers."""

    def __init__(self, feedback: SlackFeedback) -> None:
        settings = feedback.settings
        assert settings.agent_url
        self.feedback = feedback
        self.url = settings.agent_url
        self.timeout = settings.agent_timeout
        self.session = requests.Session()
        # Its own threads: a slow agent must not hold up thanks and modals (trigger IDs expire).
        self.follow_ups = FollowUps(AGENT_CALLS)
        self._renew_calls()
        at_fork(in_child=self._renew_calls)
        if settings.agent_token:
            self.session.headers["Authorization"] = f"Bearer {settings.agent_token}"

    def __repr__(self) -> str:
        return f"AgentBridge(url={self.url!r})"

    def _renew_calls(self) -> None:
        """Every call free (in a forked child, the parent's requests are gone)."""
        self._calls = threading.BoundedSemaphore(AGENT_CALLS)

    def answer_later(self, client: WebClient, question: Question) -> None:
        """Ask and answer after the ack, on the bridge's own threads."""
        self.follow_ups.submit(self.handle, client, question, monotonic())

    def handle(self, client: WebClient, question: Question, asked_at: float | None = None) -> None:
        """Ask once per message (however many events carry it) and post the answer.

        AGENT_TIMEOUT counts from `asked_at` (when the message came): time spent waiting for
        one of the bridge's threads counts too, so a busy agent can't make anyone wait longer.
        """
        key = f"agent:{question.workspace}:{question.channel}:{question.ts}"
        if not self.feedback.relay.first_time(key):
            return
        root = question.thread_ts or question.ts
        deadline = (monotonic() if asked_at is None else asked_at) + self.timeout
        try:
            answer = self.ask(question, root, deadline)
        except AgentError as error:
            log.warning(
                "agent failed for workspace=%s channel=%s: %s",
                question.workspace,
                question.channel,
                error,
            )
            self._post(client, channel=question.channel, thread_ts=root, text=AGENT_ERROR_REPLY)
            return
        text, message_id, conversation_id = answer
        if not (message_id or conversation_id):
            log.warning(
                "agent answered without a usable message_id or conversation_id (%s): "
                "reply posted without feedback",
                USABLE_ID,
            )
            self._post(client, channel=question.channel, thread_ts=root, text=text)
            return
        try:
            posted = post_with_feedback(
                client.chat_postMessage,
                text,
                channel=question.channel,
                thread_ts=root,
                metadata=brixo_metadata(message_id, conversation_id),
            )
        except SlackApiError as error:
            log.warning("can't post the agent's reply: %s", unavailable_reason(error))
            self._post(client, channel=question.channel, thread_ts=root, text=AGENT_ERROR_REPLY)
            return
        except SLACK_UNAVAILABLE as error:  # the reply may be there: its metadata maps it
            log.warning(
                "no answer from Slack posting the agent's reply: %s", unavailable_reason(error)
            )
            return
        self.feedback.record_reply(
            question.workspace,
            question.channel,
            str(posted["ts"]),
            root,
            message_id,
            conversation_id,
        )

    def ask(
        self, question: Question, root: str, deadline: float
    ) -> tuple[str, str | None, str | None]:
        """POST the question; (text, message_id, conversation_id) from a 200 answer by
        `deadline` (monotonic)."""
        # The conversation the agent itself returned last in this thread (not another app's).
        conversation_id = self.feedback.relay.mappings.conversation(
            question.workspace, question.channel, root, source=POSTED
        )
        payload = agent_question(
            question.text,
            question.user,
            question.workspace,
            question.channel,
            root,
            conversation_id,
        )
        left = deadline - monotonic()
        if left <= 0:
            raise AgentError("timed out waiting for a free agent call (the agent is busy)")
        return parse_answer(within(left, lambda: self._fetch(payload, deadline)))

    def _fetch(self, payload: dict[str, Any], deadline: float) -> bytes:
        """The agent's 200 answer's body, or AgentError."""
        if not self._calls.acquire(timeout=max(0.0, deadline - monotonic())):
            raise AgentError("timed out waiting for a free agent call (the agent is busy)")
        try:
            with self.session.post(
                self.url, json=payload, timeout=self.timeout, stream=True, allow_redirects=False
            ) as response:
                if response.is_redirect:
                    raise redirected(response.status_code, response.headers.get("Location", ""))
                if response.status_code != 200:
                    raise AgentError(f"HTTP {response.status_code}")
                return read_by(response, deadline)
        except requests.RequestException as error:
            raise AgentError(type(error).__name__) from None
        finally:
            self._calls.release()

    def _post(self, client: WebClient, **message: Any) -> None:
        try:
            client.chat_postMessage(**message)
        except SLACK_UNAVAILABLE as error:
            log.warning("can't post to %s: %s", message["channel"], unavailable_reason(error))


def within(seconds: float, call: Callable[[], T]) -> T:
    """`call()`'s result if it comes within `seconds`, else AgentError: AGENT_TIMEOUT is the
    time for the whole answer, while requests' timeout bounds each read. A late call goes on
    in its own thread until its next read, and its answer is dropped."""
    done: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            done.put((True, call()))
        except Exception as error:  # handed to the caller
            done.put((False, error))

    threading.Thread(target=run, name="agent-request", daemon=True).start()
    try:
        ok, value = done.get(timeout=seconds)
    except queue.Empty:
        raise AgentError("timed out") from None
    if not ok:
        raise value
    return cast(T, value)


def read_by(response: requests.Response, deadline: float) -> bytes:
    """The whole body, unless it is still arriving at `deadline` or exceeds
    MAX_ANSWER_BYTES."""
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):
        body += chunk
        if monotonic() > deadline:
            raise AgentError("timed out")
        if len(body) > MAX_ANSWER_BYTES:
            raise AgentError("answer too large")
    return bytes(body)
