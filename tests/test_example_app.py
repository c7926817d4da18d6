"""examples/my_assistant.py runs as its own process against the local fakes.

A signed mention gets an answer with 👍/👎; a signed click on 👍 reaches the strict Brixo
stand-in once, as a signal on the message ID the example's model traced; SIGTERM stops it.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import requests

from bot.slack.manifest import BOT_SCOPES
from tests.conftest import REPO, Env
from tests.fakes import FakeBrixo, FakeSlackAPI, SlackSender
from tests.fakes import slack_requests as sr
from tests.procs import Proc
from tests.slack_harness import BOT_TOKEN, SIGNING_SECRET
from tests.waiting import wait_until

EXAMPLE = REPO / "examples" / "my_assistant.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_example_app_answers_and_relays_a_vote(env: Env, brixo: FakeBrixo, tmp_path: Path) -> None:
    with FakeSlackAPI() as slack_api:
        run_example(env, brixo, slack_api, tmp_path)


def run_example(env: Env, brixo: FakeBrixo, slack_api: FakeSlackAPI, tmp_path: Path) -> None:
    """Start the example, mention it, click 👍 on its answer, stop it."""
    slack_api.scopes = list(BOT_SCOPES)
    port = free_port()
    variables = env.process(
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack_api.url,
        ASK_COMMENT="never",
        PORT=str(port),
    )
    proc = Proc([sys.executable, str(EXAMPLE)], variables, cwd=tmp_path)
    sender = SlackSender(f"http://127.0.0.1:{port}", SIGNING_SECRET)
    try:

        def ready() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"the example exited:\n{proc.describe()}")
            try:
                return sender.url_verification("ready?").json().get("challenge") == "ready?"
            except (requests.RequestException, ValueError):
                return False

        wait_until(ready, timeout=20, message="the example app never answered")

        mention = sr.app_mention("C1", "U1", "<@UBOT> what is Brixo?", "1700000000.000100")
        assert sender.event(mention).status_code == 200
        post = slack_api.wait_for_call("chat.postMessage")[0]
        assert post.args["thread_ts"] == "1700000000.000100"
        assert "what is Brixo?" in post.args["text"]
        message_id = post.args["metadata"]["event_payload"]["message_id"]
        assert message_id.startswith("msg-")
        reply = slack_api.messages("C1")[-1]["ts"]

        action = sr.feedback_button_action("up")
        click = sr.block_action("U2", "T1", "C1", reply, action, thread_ts="1700000000.000100")
        assert sender.interaction(click).status_code == 200
        got = brixo.wait_for_accepted(1)
        assert (got[0].kind, got[0].id, got[0].attributes["value"]) == (
            "messages",
            message_id,
            "thumbs_up",
        )
        assert got[0].attributes["name"] == "feedback"

        ping = sr.message("C1", "U1", "ping", "1700000000.000200", channel_type="channel")
        assert sender.event(ping).status_code == 200
        wait_until(
            lambda: any(m["text"] == "pong" for m in slack_api.messages("C1")),
            message="the example's own `ping` listener never answered",
        )

        proc.terminate()
        assert proc.wait(timeout=20) == 0, proc.describe()
        assert "stopped" in proc.stderr
        assert len(brixo.accepted) == 1
    finally:
        sender.close()
        proc.stop()
