"""An AI assistant on Bolt for Python, with Brixo 👍/👎 feedback on every answer.

    pip install /path/to/relay                # this repository (it isn't on PyPI)
    export SLACK_BOT_TOKEN=xoxb-… SLACK_SIGNING_SECRET=… BRIXO_API_KEY=…
    python examples/my_assistant.py           # HTTP on $PORT (3000) at /slack/events
    SLACK_APP_TOKEN=xapp-… python examples/my_assistant.py   # or Socket Mode

Everything about Brixo is the `relay` lines; the rest is an ordinary Bolt app. The relay
reads its settings as the standalone app does (BRIXO_API_KEY, DATABASE_URL, ASK_COMMENT, …,
also from `.env`); SLACK_API_URL is only for pointing the app at a local fake Slack.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable
from typing import Any

from slack_bolt import App, Assistant, Say, SetStatus
from slack_sdk import WebClient

from bot import FeedbackRelay

log = logging.getLogger("my_assistant")


def ask_my_model(question: str, conversation_id: str) -> tuple[str, str]:
    """Your LLM call. Returns the answer and the message ID your tracing sent to Brixo."""
    message_id = f"msg-{uuid.uuid4().hex[:12]}"
    return f"You asked: {question.strip() or '…'}. Here is my best answer.", message_id


def conversation_of(channel: str, thread_ts: str) -> str:
    """Your conversation ID for a Slack thread (the one your tracing sent to Brixo)."""
    return f"conv-{channel}-{thread_ts}"


def build_app(relay: FeedbackRelay, client: WebClient) -> App:
    """The assistant: mentions in channels, Slack's assistant threads, and a `ping` command."""
    app = App(client=client, signing_secret=os.environ.get("SLACK_SIGNING_SECRET"))

    @app.middleware  # before attach(): it sees the relay's clicks and modals too
    def log_requests(body: dict[str, Any], next: Callable[[], None]) -> None:
        log.debug("request %s", body.get("type"))
        next()

    relay.attach(app)  # 👍/👎 buttons, reactions, comment modals, "Rate this conversation"

    @app.message("ping")
    def pong(say: Say) -> None:
        say("pong")  # an ordinary reply: no feedback asked

    @app.event("app_mention")
    def answer_mention(event: dict[str, Any], say: Say) -> None:
        thread = event.get("thread_ts") or event["ts"]
        conversation_id = conversation_of(event["channel"], thread)
        text, message_id = ask_my_model(event.get("text", ""), conversation_id)
        relay.say(
            say, text, message_id=message_id, conversation_id=conversation_id, thread_ts=thread
        )

    assistant = Assistant()

    @assistant.thread_started
    def greet(say: Say) -> None:
        say("Hi! Ask me anything, then rate my answers with 👍 or 👎.")

    @assistant.user_message
    def answer_in_thread(payload: dict[str, Any], say: Say, set_status: SetStatus) -> None:
        set_status("is thinking…")
        conversation_id = conversation_of(payload["channel"], payload["thread_ts"])
        text, message_id = ask_my_model(payload.get("text", ""), conversation_id)
        relay.say(say, text, message_id=message_id, conversation_id=conversation_id)

    app.assistant(assistant)
    return app


def main() -> None:
    """Run over HTTP on $PORT, or Socket Mode with SLACK_APP_TOKEN; SIGTERM stops cleanly."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    client = WebClient(
        token=os.environ["SLACK_BOT_TOKEN"],
        base_url=os.environ.get("SLACK_API_URL", "https://slack.com/api/"),
    )
    relay = FeedbackRelay.from_env(client=client)
    app = build_app(relay, client)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with relay:  # delivers to Brixo while the app runs; stops with it
            if os.environ.get("SLACK_APP_TOKEN"):
                from slack_bolt.adapter.socket_mode import SocketModeHandler

                SocketModeHandler(app, os.environ["SLACK_APP_TOKEN"]).start()
            else:
                app.start(port=int(os.environ.get("PORT", "3000")))
    finally:
        log.info("stopped (votes not yet delivered stay stored for the next start)")


if __name__ == "__main__":
    main()
