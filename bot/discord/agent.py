"""The agent bridge's HTTP side: a person's question to AGENT_URL, the agent's answer back."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.core.agent import MAX_ANSWER_BYTES, AgentError, parse_answer, question, redirected
from bot.core.settings import Settings

log = logging.getLogger("bot.agent")


@dataclass(frozen=True)
class Question:
    """A person's message for the agent, with Discord's IDs in the Slack-shaped payload."""

    workspace: str  # guild ID, or "dm"
    channel: str  # where the answer goes: the thread, the channel or the DM channel
    user: str
    text: str
    root: str  # the conversation's root: thread ID, DM channel ID, or the person's message ID
    conversation_id: str | None

    def payload(self) -> dict[str, Any]:
        """The JSON the agent gets, the same keys as on Slack."""
        return question(
            self.text, self.user, self.workspace, self.channel, self.root, self.conversation_id
        )


@dataclass(frozen=True)
class Answer:
    """A usable answer: its text and the customer's IDs (neither ID: posted without buttons;
    a conversation_id alone: votes on it rate the conversation)."""

    text: str
    message_id: str | None
    conversation_id: str | None


class AgentClient:
    """POSTs questions to AGENT_URL over one keep-alive session."""

    def __init__(self, settings: Settings) -> None:
        assert settings.agent_url
        self.url = settings.agent_url
        self.timeout = settings.agent_timeout
        self.headers = (
            {"Authorization": f"Bearer {settings.agent_token}"} if settings.agent_token else {}
        )
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"AgentClient(url={self.url!r})"

    async def ask(self, question: Question) -> Answer:
        """The agent's answer to `question`, or AgentError."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self.headers)
        try:
            async with self._session.post(
                self.url,
                json=question.payload(),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,  # followed, the question would be lost in a GET
            ) as response:
                if 300 <= response.status < 400:
                    raise redirected(response.status, response.headers.get("Location", ""))
                if response.status != 200:
                    raise AgentError(f"HTTP {response.status}")
                body = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise AgentError("answer too large")
        except (TimeoutError, aiohttp.ClientError) as error:
            raise AgentError(type(error).__name__) from None
        return Answer(*parse_answer(bytes(body)))

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
