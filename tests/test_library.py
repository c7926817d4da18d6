"""Library mode: a team's own Bolt app, written here the way the README shows, with the relay.

Each test builds its own `App` (its own listeners and middleware), attaches a `FeedbackRelay`,
serves the app over HTTP like Slack would reach it, and checks what reaches the strict Brixo
stand-in, and that the app's own listeners keep working beside the relay's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from time import time
from typing import Any
from wsgiref.simple_server import make_server

import pytest
from slack_bolt import App, Assistant, BoltResponse, Say
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.oauth.oauth_settings import OAuthSettings
from slack_sdk import WebClient

from bot import FeedbackRelay, RelaySetupError, SettingsError
from bot.core.settings import SETTING_NAMES
from bot.library.setup import manifest_fragment, required_events, required_scopes
from bot.slack.manifest import (
    BOT_EVENTS,
    BOT_SCOPES,
    METADATA_EVENT_TYPE,
    SHORTCUT_CALLBACK_ID,
    build_manifest,
)
from tests.chaos import free_port
from tests.conftest import BRIXO_KEY
from tests.fakes import FakeBrixo, FakeSlackAPI, SlackSender
from tests.fakes import slack_requests as sr
from tests.slack_harness import BOT_TOKEN, SIGNING_SECRET, _QuietHandler, _ThreadedWSGIServer
from tests.test_manifest import METHOD_SCOPES
from tests.waiting import wait_until

ROOT = "1700000000.000100"  # a person's message in C1 that starts the thread


@dataclass
class TheirApp:
    """The team's app as it runs: their App, the relay attached to it, and what they saw."""

    app: App
    client: WebClient
    relay: FeedbackRelay
    sender: SlackSender
    slack: FakeSlackAPI
    brixo: FakeBrixo
    seen: list[str] = field(default_factory=list)

    def saw(self, item: str) -> bool:
        return item in list(self.seen)

    def settled(self, count: int) -> dict[str, Any] | None:
        """Outbox counts once exactly `count` acts exist and all were delivered."""
        counts = self.relay.core.outbox.counts(time())
        done = counts["delivered"] == count and counts["pending"] == 0
        return counts if done and counts["awaiting_comment"] == 0 else None


@pytest.fixture
def slack_api() -> Iterator[FakeSlackAPI]:
    """The fake Slack Web API, every scope of the manifest granted."""
    with FakeSlackAPI() as fake:
        fake.scopes = list(BOT_SCOPES)
        yield fake


def serve(app: App) -> tuple[str, Callable[[], None]]:
    """Serve a Bolt app's WSGI adapter on 127.0.0.1; returns (base URL, stop)."""
    server = make_server(
        "127.0.0.1",
        0,
        SlackRequestHandler(app),
        server_class=_ThreadedWSGIServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return f"http://127.0.0.1:{server.server_port}", stop


@pytest.fixture
def their_app(
    brixo: FakeBrixo, slack_api: FakeSlackAPI, tmp_path: Path
) -> Iterator[Callable[..., TheirApp]]:
    """`their_app(process_before_response=…, **relay_settings)`: the README's app, running."""
    started: list[tuple[FeedbackRelay, Callable[[], None], SlackSender]] = []

    def build(
        process_before_response: bool = False,
        ignore_self_events: bool = True,
        error_handler: Callable[..., Any] | None = None,
        **settings: Any,
    ) -> TheirApp:
        # --- what a team writes (README, "Library") ---------------------------------------
        client = WebClient(token=BOT_TOKEN, base_url=slack_api.url)
        app = App(
            signing_secret=SIGNING_SECRET,
            client=client,
            process_before_response=process_before_response,
            ignoring_self_events_enabled=ignore_self_events,
        )
        seen: list[str] = []

        @app.middleware
        def their_middleware(body: dict[str, Any], next: Callable[[], None]) -> None:
            seen.append(f"middleware:{body.get('type')}")
            next()

        if error_handler:
            app.error(error_handler)

        relay = FeedbackRelay(
            brixo_api_key=BRIXO_KEY,
            brixo_api_url=brixo.url,
            database_url=f"sqlite:///{tmp_path}/their-app.db",
            client=client,
            **{"ask_comment": "never", **settings},
        )
        relay.attach(app)

        @app.middleware
        def their_later_middleware(body: dict[str, Any], next: Callable[[], None]) -> None:
            seen.append(f"later middleware:{body.get('type')}")
            next()

        @app.message("hello")
        def hello(message: dict[str, Any], say: Say) -> None:
            seen.append("hello")
            relay.say(
                say,
                "Hi! Here is my answer.",
                message_id="m-say",
                conversation_id="c-thread",
                thread_ts=message.get("thread_ts") or message["ts"],
            )

        @app.event("app_mention")
        def mentioned(event: dict[str, Any]) -> None:
            seen.append("mention")

        @app.event("reaction_added")
        def their_reactions(event: dict[str, Any]) -> None:
            seen.append(f"reaction:{event['reaction']}")

        @app.action("their_button")
        def their_button(ack: Callable[[], None]) -> None:
            ack()
            seen.append("their_button")

        assistant = Assistant()

        @assistant.user_message
        def answer(payload: dict[str, Any], say: Say) -> None:
            seen.append("assistant")
            relay.say(say, "An assistant answer", message_id="m-assistant", conversation_id="c-dm")

        app.assistant(assistant)
        relay.start()
        # --- end of the team's code --------------------------------------------------------
        url, stop = serve(app)
        sender = SlackSender(url, SIGNING_SECRET)
        started.append((relay, stop, sender))
        return TheirApp(app, client, relay, sender, slack_api, brixo, seen)

    yield build
    for relay, stop, sender in started:
        stop()
        sender.close()
        relay.close()


def click(app: TheirApp, channel: str, ts: str, value: str, thread_ts: str | None = None) -> None:
    action = sr.feedback_button_action(value)
    payload = sr.block_action("U2", "T1", channel, ts, action, thread_ts=thread_ts)
    assert app.sender.interaction(payload).status_code == 200


def reply_ts(app: TheirApp, channel: str, text: str) -> str:
    """The ts of the reply with `text` in the fake Slack's store (waits for it)."""

    def find() -> str | None:
        return next((m["ts"] for m in app.slack.messages(channel) if m["text"] == text), None)

    return wait_until(find, message=f"no reply {text!r} in {channel}")


@pytest.mark.parametrize("process_before_response", [False, True], ids=["default", "faas"])
def test_every_posting_path_and_every_vote_reaches_brixo_once(
    their_app: Callable[..., TheirApp], process_before_response: bool
) -> None:
    app = their_app(process_before_response=process_before_response)
    slack = app.slack

    # 1. Bolt's `say`, in the app's own app.message("hello") listener.
    assert app.sender.event(sr.message("C1", "U1", "hello", ROOT, channel_type="channel")).ok
    said = reply_ts(app, "C1", "Hi! Here is my answer.")
    post = next(c for c in slack.calls_to("chat.postMessage") if c.args.get("thread_ts") == ROOT)
    assert post.args["metadata"]["event_type"] == METADATA_EVENT_TYPE
    assert post.args["blocks"][-1]["block_id"] == "brixo_feedback"

    # 2. A WebClient, outside any listener.
    posted = app.relay.post(
        app.client,
        channel="C1",
        thread_ts=ROOT,
        text="Posted with the WebClient",
        message_id="m-post",
        conversation_id="c-thread",
    )["ts"]

    # 3. The pieces, in the app's own chat.postMessage, then recorded.
    own = app.client.chat_postMessage(
        channel="C1",
        thread_ts=ROOT,
        text="Their own message",
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "Their own"}}]
        + app.relay.feedback_blocks(),
        metadata=app.relay.metadata("m-own", "c-thread"),
    )
    app.relay.record("T1", "C1", own["ts"], ROOT, "m-own", "c-thread")

    # 4. The `say` of Bolt's Assistant, in an assistant thread (a DM).
    slack.add_message("D1", "1700000000.000200", text="Hi, how can I help?", user="UBOT")
    question = sr.message("D1", "U1", "What is Brixo?", "1700000000.000300", "1700000000.000200")
    assert app.sender.event(question).ok
    assisted = reply_ts(app, "D1", "An assistant answer")

    # Votes: buttons, a reaction (redelivered by Slack), and the conversation shortcut.
    click(app, "C1", said, "up", thread_ts=ROOT)
    click(app, "C1", own["ts"], "down", thread_ts=ROOT)
    click(app, "D1", assisted, "up", thread_ts="1700000000.000200")
    reaction = sr.reaction_added("U2", "-1::skin-tone-3", "C1", posted)
    assert app.sender.event(reaction, event_id="EvREACT1").ok
    assert app.sender.event(reaction, event_id="EvREACT1", retry_num=1).ok
    shortcut = sr.message_shortcut("U2", "T1", "D1", assisted, thread_ts="1700000000.000200")
    assert app.sender.interaction(shortcut).status_code == 200
    view = slack.wait_for_call("views.open")[0].args["view"]
    assert view["callback_id"] == "brixo_rate_conversation"
    empty = app.sender.interaction(sr.view_submission("U2", "T1", view, {}))
    assert empty.json()["response_action"] == "errors"  # the relay's answer, through the app
    values = {
        "vote": {"vote_input": {"type": "radio_buttons", "selected_option": {"value": "down"}}},
        "comment": {"comment_input": {"type": "plain_text_input", "value": "Too vague"}},
    }
    assert app.sender.interaction(sr.view_submission("U2", "T1", view, values)).status_code == 200

    # Their own listeners beside the relay's.
    their = sr.block_action("U2", "T1", "C1", said, sr.button_action("their_button", "x"))
    assert app.sender.interaction(their).status_code == 200
    mention = sr.app_mention("C1", "U1", "<@UBOT> hi", "1700000000.000400")
    assert app.sender.event(mention).ok

    counts = wait_until(lambda: app.settled(5), message="5 acts delivered, nothing else")
    assert counts["dead"] == 0
    got = Counter((r.kind, r.id, r.attributes["value"]) for r in app.brixo.accepted)
    assert got == {
        ("messages", "m-say", "thumbs_up"): 1,
        ("messages", "m-own", "thumbs_down"): 1,
        ("messages", "m-assistant", "thumbs_up"): 1,
        ("messages", "m-post", "thumbs_down"): 1,
        ("conversations", "c-dm", "thumbs_down"): 1,
    }
    rating = app.brixo.accepted_for("c-dm")[0]
    assert rating.attributes["user_message"] == "Too vague"
    for item in ("hello", "assistant", "their_button", "mention", "reaction:-1::skin-tone-3"):
        wait_until(partial(app.saw, item), message=f"their app never saw {item}")
    assert app.seen.count("hello") == 1
    for kind in ("event_callback", "block_actions", "message_action", "view_submission"):
        assert app.saw(f"middleware:{kind}")
    # A middleware added after attach() sees what the relay leaves to the app: its events and
    # its own button, not the relay's shortcut and modal, which the relay answered.
    assert app.saw("later middleware:event_callback") and app.saw("later middleware:block_actions")
    assert not app.saw("later middleware:message_action")
    assert not app.saw("later middleware:view_submission")
    # The follow-ups (thanks) ran after the ack: one per act at least.
    slack.wait_for_call("chat.postEphemeral", count=5)


def test_comment_modal_works_with_the_apps_default_ack_behaviour(
    their_app: Callable[..., TheirApp],
) -> None:
    """process_before_response=False (Bolt's default): 👎 opens the modal; the comment goes."""
    app = their_app(ask_comment="negative")
    posted = app.relay.post(
        app.client, channel="C1", text="An answer", message_id="m-1", conversation_id="c-1"
    )["ts"]
    click(app, "C1", posted, "down")
    view = app.slack.wait_for_call("views.open")[0].args["view"]
    assert view["callback_id"] == "brixo_comment"
    values = {"comment": {"comment_input": {"type": "plain_text_input", "value": "Wrong year"}}}
    assert app.sender.interaction(sr.view_submission("U2", "T1", view, values)).status_code == 200
    wait_until(lambda: app.settled(1), message="the vote was delivered")
    got = app.brixo.accepted_for("m-1")
    assert [(r.attributes["value"], r.attributes.get("user_message")) for r in got] == [
        ("thumbs_down", "Wrong year")
    ]


def test_watched_bot_replies_are_mapped_seeded_and_rated(
    their_app: Callable[..., TheirApp],
) -> None:
    app = their_app(assistant_bot_ids="BOTHER")
    reply = sr.message(
        "C2",
        None,
        "Another bot's answer",
        "1700000000.000500",
        channel_type="channel",
        bot_id="BOTHER",
        metadata={"event_type": METADATA_EVENT_TYPE, "event_payload": {"message_id": "m-other"}},
    )
    assert app.sender.event(reply).ok
    seeded = app.slack.wait_for_call("reactions.add", count=2)
    assert {c.args["name"] for c in seeded} == {"+1", "-1"}
    reaction = sr.reaction_added("U3", "+1", "C2", "1700000000.000500", item_user="UOTHER")
    assert app.sender.event(reaction).ok
    wait_until(lambda: app.settled(1), message="the vote was delivered")
    assert [r.id for r in app.brixo.accepted] == ["m-other"]
    # Watching messages doesn't take them from the app's own message listeners.
    assert app.sender.event(
        sr.message("C2", "U3", "hello", "1700000000.000600", channel_type="channel")
    ).ok
    wait_until(lambda: app.saw("hello"), message="their app.message('hello') never ran")


def test_the_relays_own_reactions_are_no_votes_in_an_app_that_hears_its_own_events(
    their_app: Callable[..., TheirApp],
) -> None:
    """An App built with ignoring_self_events_enabled=False hears its own seeded reactions:
    they are still no votes, also where users.info can't say who reacted (no users:read)."""
    # process_before_response: each event's act is stored (or not) before its request ends.
    app = their_app(True, assistant_bot_ids="BOTHER", ignore_self_events=False)
    app.slack.respond("users.info", {"ok": False, "error": "missing_scope"})
    ts = "1700000000.000700"
    reply = sr.message(
        "C2",
        None,
        "Another bot's answer",
        ts,
        channel_type="channel",
        bot_id="BOTHER",
        metadata={"event_type": METADATA_EVENT_TYPE, "event_payload": {"message_id": "m-own"}},
    )
    assert app.sender.event(reply).ok
    app.slack.wait_for_call("reactions.add", count=2)
    for user, name in (("UBOT", "+1"), ("U3", "-1")):  # the relay's own, then a person's
        reaction = sr.reaction_added(user, name, "C2", ts, item_user="UOTHER")
        assert app.sender.event(reaction).ok
    wait_until(lambda: app.settled(1), message="the person's vote was delivered")
    assert [(r.id, r.attributes["value"]) for r in app.brixo.accepted] == [("m-own", "thumbs_down")]


def test_the_apps_own_replies_map_by_template_even_with_agent_url_set(
    their_app: Callable[..., TheirApp],
) -> None:
    """AGENT_URL (a shared `.env`) means nothing to a library app: its replies are the
    assistant's, not the agent bridge's error replies."""
    app = their_app(message_id_template="m-{channel}-{ts}", agent_url="http://127.0.0.1:9/")
    ts = "1700000000.000700"
    app.slack.add_message("C2", ts, "answer", user="UBOT", bot_id="BRELAY")
    assert app.sender.event(sr.reaction_added("U3", "+1", "C2", ts)).ok
    wait_until(lambda: app.settled(1), message="the vote was delivered")
    assert [r.id for r in app.brixo.accepted] == [f"m-C2-{ts}"]


def test_a_vote_not_stored_is_answered_500_and_taken_on_slacks_retry(
    their_app: Callable[..., TheirApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = their_app()
    posted = app.relay.post(channel="C1", text="An answer", message_id="m-retry")["ts"]
    record = app.relay.core.outbox.record
    failures = iter([RuntimeError("database unavailable")])

    def flaky(*args: Any, **kwargs: Any) -> Any:
        error = next(failures, None)
        if error:
            raise error
        return record(*args, **kwargs)

    monkeypatch.setattr(app.relay.core.outbox, "record", flaky)
    reaction = sr.reaction_added("U2", "+1", "C1", posted)
    assert app.sender.event(reaction, event_id="EvFLAKY").status_code == 500
    assert not app.saw("reaction:+1")  # Slack will send it again: the app gets it then
    assert app.sender.event(reaction, event_id="EvFLAKY", retry_num=1).status_code == 200
    wait_until(lambda: app.settled(1), message="the retried vote was delivered")
    assert [r.id for r in app.brixo.accepted] == ["m-retry"]
    assert app.seen.count("reaction:+1") == 1


def test_an_app_error_handler_that_acks_cannot_drop_a_vote_slack_must_send_again(
    their_app: Callable[..., TheirApp], caplog: pytest.LogCaptureFixture
) -> None:
    """A team's `@app.error` that answers 200 (to stop Slack's retries of their own errors) is
    not asked about the relay's: a reaction whose reply Slack couldn't be asked about is still a
    500 with one WARNING line, so Slack sends it again and the vote counts."""
    handled: list[str] = []

    def their_errors(error: Exception) -> BoltResponse:
        handled.append(type(error).__name__)
        return BoltResponse(status=200, body="")

    app = their_app(error_handler=their_errors, assistant_bot_ids="BASSIST")
    ts = "1700000000.000900"
    metadata = {"event_type": "brixo_message", "event_payload": {"message_id": "m-unseen"}}
    app.slack.add_message(
        "C1", ts, "an answer", user="UASSIST", bot_id="BASSIST", metadata=metadata
    )
    app.slack.respond("conversations.replies", {"ok": False, "error": "fatal_error"}, status=500)
    reaction = sr.reaction_added("U2", "+1", "C1", ts)
    assert app.sender.event(reaction, event_id="EvTHEIRS").status_code == 500
    said = [r for r in caplog.records if "before the ack" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in said] == [("WARNING", None)], said
    assert handled == []
    app.slack.reset_response("conversations.replies")
    assert app.sender.event(reaction, event_id="EvTHEIRS", retry_num=1).status_code == 200
    wait_until(lambda: app.settled(1), message="the retried vote was delivered")
    assert [r.id for r in app.brixo.accepted] == ["m-unseen"]


def test_relay_events_are_acknowledged_without_unhandled_warnings(
    brixo: FakeBrixo, slack_api: FakeSlackAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An app with no listener of its own for the relay's events: Slack still gets 200."""
    app = App(
        signing_secret=SIGNING_SECRET, client=WebClient(token=BOT_TOKEN, base_url=slack_api.url)
    )
    relay = FeedbackRelay(
        brixo_api_key=BRIXO_KEY,
        brixo_api_url=brixo.url,
        database_url=f"sqlite:///{tmp_path}/r.db",
        client=app.client,
    ).attach(app)
    url, stop = serve(app)
    sender = SlackSender(url, SIGNING_SECRET)
    try:
        caplog.set_level(logging.WARNING)
        reaction = sr.reaction_added("U2", "+1", "C1", "1700000000.000900")
        assert sender.event(reaction).status_code == 200
        metadata = sr.message_metadata_posted(
            "C1", "1700000000.000901", METADATA_EVENT_TYPE, {"message_id": "m-9"}
        )
        assert sender.event(metadata).status_code == 200
        assert relay.core.mappings.message("T1", "C1", "1700000000.000901") is not None
        assert "Unhandled request" not in caplog.text
        # Events the relay doesn't handle stay the app's business: unhandled, as Bolt says.
        other = sender.event({"type": "app_home_opened", "user": "U1", "tab": "home"})
        assert other.status_code == 404 and "Unhandled request" in caplog.text
    finally:
        stop()
        sender.close()
        relay.close()


# --- setup errors ------------------------------------------------------------------------


def relay_for(brixo: FakeBrixo, tmp_path: Path, **options: Any) -> FeedbackRelay:
    return FeedbackRelay(
        brixo_api_key=BRIXO_KEY,
        brixo_api_url=brixo.url,
        database_url=f"sqlite:///{tmp_path}/setup.db",
        **options,
    )


def test_missing_scopes_fail_at_attach_with_the_list(
    brixo: FakeBrixo, slack_api: FakeSlackAPI, tmp_path: Path
) -> None:
    slack_api.scopes = ["chat:write", "app_mentions:read"]
    client = WebClient(token=BOT_TOKEN, base_url=slack_api.url)
    app = App(signing_secret=SIGNING_SECRET, client=client)
    relay = relay_for(brixo, tmp_path, client=client)
    with pytest.raises(RelaySetupError) as error:
        relay.attach(app)
    message = str(error.value)
    for scope in ("reactions:read", "metadata.message:read", "commands", "im:history"):
        assert scope in message
    assert "chat:write (" not in message and "manifest_fragment" in message
    slack_api.scopes = list(required_scopes(relay.settings))
    relay.attach(app)  # all granted now
    relay.close()


def test_an_observer_that_seeds_no_reactions_is_attached_without_reactions_write(
    brixo: FakeBrixo, slack_api: FakeSlackAPI, tmp_path: Path
) -> None:
    """With SEED_REACTIONS off nothing adds reactions: attach doesn't ask for reactions:write."""
    client = WebClient(token=BOT_TOKEN, base_url=slack_api.url)
    relay = relay_for(brixo, tmp_path, client=client, assistant_bot_ids="B1", seed_reactions=False)
    slack_api.scopes = [s for s in BOT_SCOPES if s != "reactions:write"]
    relay.attach(App(signing_secret=SIGNING_SECRET, client=client))
    assert "reactions:write" not in relay.required_scopes()
    relay.close()


def test_slack_unreachable_at_attach_is_a_warning_not_a_failed_start(
    brixo: FakeBrixo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The scope check can't reach Slack (a network blip at boot): the app still starts, and
    the log says the scopes went unchecked."""
    client = WebClient(token=BOT_TOKEN, base_url=f"http://127.0.0.1:{free_port()}/api/")
    relay = relay_for(brixo, tmp_path, client=client)
    with caplog.at_level(logging.WARNING, logger="bot.library"):
        # (Bolt's own auth.test at App() is turned off here, as the team may do.)
        app = App(signing_secret=SIGNING_SECRET, client=client, token_verification_enabled=False)
        relay.attach(app)
    assert "could not check the bot token's scopes" in caplog.text
    relay.close()


def test_oauth_app_scopes_checked_from_its_settings(brixo: FakeBrixo, tmp_path: Path) -> None:
    oauth = OAuthSettings(
        client_id="111.222", client_secret="secret", scopes=["chat:write", "commands"]
    )
    app = App(signing_secret=SIGNING_SECRET, oauth_settings=oauth)
    relay = relay_for(brixo, tmp_path)
    with pytest.raises(RelaySetupError, match="reactions:read.*OAuthSettings"):
        relay.attach(app)
    relay.close()


def test_an_oauth_apps_client_is_not_taken_for_post(brixo: FakeBrixo, tmp_path: Path) -> None:
    """An OAuth app's own client has no token (each workspace has its own): post() without
    client= says so, instead of calling Slack with no token."""
    relay = relay_for(brixo, tmp_path)
    oauth = OAuthSettings(
        client_id="111.222", client_secret="secret", scopes=list(relay.required_scopes())
    )
    relay.attach(App(signing_secret=SIGNING_SECRET, oauth_settings=oauth))
    assert relay.client is None
    with pytest.raises(RelaySetupError, match="no WebClient"):
        relay.post(channel="C1", text="An answer", message_id="m-1")
    relay.close()


def test_attach_twice_and_unverified_apps_are_reported(
    brixo: FakeBrixo, slack_api: FakeSlackAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = WebClient(token=BOT_TOKEN, base_url=slack_api.url)
    app = App(client=client, request_verification_enabled=False)
    relay = relay_for(brixo, tmp_path)
    with caplog.at_level(logging.WARNING, logger="bot.library"):
        relay.attach(app)
    assert "does not verify Slack's request signatures" in caplog.text
    with pytest.raises(RelaySetupError, match="already attached"):
        relay.attach(app)
    relay.close()


def test_settings_as_keywords_are_validated_like_the_environment(
    brixo: FakeBrixo, tmp_path: Path
) -> None:
    relay = relay_for(
        brixo,
        tmp_path,
        comment_wait=90,
        positive_reactions=["heart", "+1"],
        seed_reactions=False,
        ack_message="",
    )
    assert relay.settings.comment_wait == 90.0
    assert relay.settings.positive_reactions == ("heart", "+1")
    assert relay.settings.seed_reactions is False and relay.settings.ack_message == ""
    relay.close()
    with pytest.raises(SettingsError, match="ASK_COMMENT"):
        relay_for(brixo, tmp_path, ask_comment="sometimes")
    with pytest.raises(SettingsError, match="^POSITIVE_REACTIONS: expected Slack's names .*'👍'"):
        relay_for(brixo, tmp_path, positive_reactions=["heart", "👍"])
    with pytest.raises(SettingsError, match="COMMENT_WAIT"):
        relay_for(brixo, tmp_path, comment_wait="soon")
    with pytest.raises(TypeError, match="ask_coment"):
        relay_for(brixo, tmp_path, ask_coment="never")
    with pytest.raises(SettingsError, match="BRIXO_API_KEY"):
        FeedbackRelay(database_url=f"sqlite:///{tmp_path}/x.db")


def test_from_env_with_keyword_overrides(brixo: FakeBrixo, tmp_path: Path) -> None:
    environ = {
        "BRIXO_API_KEY": BRIXO_KEY,
        "BRIXO_API_URL": brixo.url,
        "DATABASE_URL": f"sqlite:///{tmp_path}/env.db",
        "ASK_COMMENT": "always",
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_API_URL": "http://127.0.0.1:9/api/",
    }
    relay = FeedbackRelay.from_env(environ, dotenv=None, ask_comment="never")
    assert relay.settings.ask_comment == "never"
    assert relay.settings.brixo_api_url == brixo.url
    assert relay.client is not None and relay.client.token == BOT_TOKEN
    assert relay.client.base_url == "http://127.0.0.1:9/api/"
    relay.close()
    # A keyword given as None drops the environment's value: the setting's default applies.
    relay = FeedbackRelay.from_env(environ, dotenv=None, ask_comment=None)
    assert relay.settings.ask_comment == "negative"
    relay.close()
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        FeedbackRelay.from_env({**environ, "DATABASE_URL": "mysql://x"}, dotenv=None)


def test_from_env_leaves_the_apps_own_oauth_settings_alone(
    brixo: FakeBrixo, tmp_path: Path
) -> None:
    """An app doing its own multi-workspace install (Bolt reads SLACK_CLIENT_ID and
    SLACK_CLIENT_SECRET itself, no state secret) builds the relay from the same environment."""
    environ = {
        "BRIXO_API_KEY": BRIXO_KEY,
        "BRIXO_API_URL": brixo.url,
        "DATABASE_URL": f"sqlite:///{tmp_path}/env.db",
        "SLACK_CLIENT_ID": "1.2",
        "SLACK_CLIENT_SECRET": "app-secret",
        "SLACK_BOT_TOKEN": BOT_TOKEN,
    }
    relay = FeedbackRelay.from_env(environ, dotenv=None)
    assert relay.settings.slack_client_id is None
    relay.close()


def test_settings_and_keyword_settings_together_are_refused(
    brixo: FakeBrixo, tmp_path: Path
) -> None:
    """A keyword beside settings= would be dropped without a word: refused instead."""
    relay = relay_for(brixo, tmp_path)
    with pytest.raises(TypeError, match="either settings= or keyword settings"):
        FeedbackRelay(settings=relay.settings, ask_comment="never")
    relay.close()


def test_replies_need_an_id(brixo: FakeBrixo, tmp_path: Path) -> None:
    relay = relay_for(brixo, tmp_path)
    with pytest.raises(ValueError, match="message_id or conversation_id"):
        relay.metadata(None, None)
    with pytest.raises(ValueError, match="message_id or conversation_id"):
        relay.say(Say(client=None, channel="C1"), "text")
    with pytest.raises(TypeError, match="say: expected a listener's or an Assistant's say"):
        relay.say(print, "text", message_id="m1")  # type: ignore[arg-type]
    for team, channel, ts in ((None, "C1", "1.2"), ("T1", " ", "1.2"), ("T1", "C1", "")):
        with pytest.raises(ValueError, match="expected Slack's (team|channel|ts) ID"):
            relay.record(team, channel, ts, None, "m1")  # type: ignore[arg-type]
    # Either one is enough: a reply may be rated as part of its conversation only.
    assert relay.metadata(None, "c-only")["event_payload"] == {"conversation_id": "c-only"}
    assert relay.metadata("m-only")["event_payload"] == {"message_id": "m-only"}
    relay.close()


def test_start_stop_and_context_manager(
    brixo: FakeBrixo, slack_api: FakeSlackAPI, tmp_path: Path
) -> None:
    """Votes are stored whether or not delivery runs; `with relay:` delivers, then stops;
    `close()` leaves none of the relay's threads behind."""
    earlier = set(threading.enumerate())
    client = WebClient(token=BOT_TOKEN, base_url=slack_api.url)
    app = App(signing_secret=SIGNING_SECRET, client=client)
    relay = relay_for(brixo, tmp_path).attach(app)
    assert relay.client is app.client  # taken from the single-workspace app, for post()
    url, stop = serve(app)
    sender = SlackSender(url, SIGNING_SECRET)
    try:
        posted = relay.post(channel="C1", text="An answer", message_id="m-life")["ts"]
        assert sender.event(sr.reaction_added("U2", "+1", "C1", posted)).ok
        assert relay.core.outbox.counts(time())["pending"] == 1  # stored, nothing delivers yet
        assert relay.health()[1]["delivery"] == "stopped"  # a forgotten start() shows
        with relay:
            assert relay.health()[1]["delivery"] == "running"
            brixo.wait_for_accepted(1)
            wait_until(lambda: relay.core.outbox.counts(time())["delivered"] == 1)
        assert not any(t.name == "brixo-delivery" for t in threading.enumerate())
        assert relay.health()[1]["delivery"] == "stopped"
        assert [r.id for r in brixo.accepted] == ["m-life"]
        slack_api.wait_for_call("chat.postEphemeral")  # the thanks, from a follow-up thread
    finally:
        stop()
        sender.close()
        relay.close()
    wait_until(
        lambda: not [t for t in set(threading.enumerate()) - earlier if t.name.startswith("slack")],
        message="the relay's follow-up threads outlived close()",
    )


def test_workspace_of_a_reply_without_team_comes_from_auth_test(
    brixo: FakeBrixo, slack_api: FakeSlackAPI, tmp_path: Path
) -> None:
    slack_api.respond(
        "chat.postMessage",
        lambda args: {"ok": True, "channel": args["channel"], "ts": "1700000001.000100"},
    )
    client = WebClient(token=BOT_TOKEN, base_url=slack_api.url)
    relay = relay_for(brixo, tmp_path, client=client)
    relay.post(channel="C1", text="An answer", message_id="m-1", thread_ts=ROOT)
    mapping = relay.core.mappings.message("T1", "C1", "1700000001.000100")
    assert mapping is not None and mapping.message_id == "m-1" and mapping.thread_ts == ROOT
    relay.post(channel="C1", text="Another answer", message_id="m-2", thread_ts=ROOT)
    assert len(slack_api.calls_to("auth.test")) == 1  # once per token, not once per reply
    with pytest.raises(RelaySetupError, match="slack_bolt.App"):
        relay.attach(object())  # type: ignore[arg-type]
    relay.close()


# --- the manifest fragment -----------------------------------------------------------------


def test_manifest_fragment_is_a_subset_of_the_standalone_manifest(
    brixo: FakeBrixo, tmp_path: Path
) -> None:
    relay = relay_for(brixo, tmp_path)
    fragment = relay.manifest_fragment("https://their.app/slack/events")
    full = build_manifest()
    scopes = fragment["oauth_config"]["scopes"]["bot"]
    events = fragment["settings"]["event_subscriptions"]["bot_events"]
    assert set(scopes) <= set(BOT_SCOPES) and set(events) <= set(BOT_EVENTS)
    assert {"reactions:read", "metadata.message:read", "commands", "chat:write"} <= set(scopes)
    assert "assistant:write" not in scopes and "app_mention" not in events
    assert set(events) == {
        "reaction_added",
        "reaction_removed",
        "message_metadata_posted",
        "message_metadata_updated",
    }
    subscriptions = fragment["settings"]["event_subscriptions"]
    assert (
        subscriptions["metadata_subscriptions"]
        == (full["settings"]["event_subscriptions"]["metadata_subscriptions"])
    )
    assert subscriptions["request_url"] == "https://their.app/slack/events"
    assert fragment["settings"]["interactivity"]["is_enabled"] is True
    assert fragment["features"]["shortcuts"] == full["features"]["shortcuts"]
    assert fragment["features"]["shortcuts"][0]["callback_id"] == SHORTCUT_CALLBACK_ID
    relay.close()
    observer = relay_for(brixo, tmp_path, assistant_bot_ids="B1")
    granted = set(required_scopes(observer.settings))
    for method, scopes in METHOD_SCOPES.items():  # all but the agent bridge's own
        if method != "assistant.threads.setStatus":
            assert not scopes or scopes & granted, f"{method} needs one of {scopes}"
    assert "reactions:write" in granted
    assert "message.channels" in required_events(observer.settings)
    assert "request_url" not in manifest_fragment(observer.settings)["settings"]["interactivity"]
    observer.close()


def test_readmes_manifest_one_liner_reads_the_environment_and_dotenv(tmp_path: Path) -> None:
    """The README's command prints the fragment for the settings in use, observer ones too."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    command = re.search(r'`python -c "(.*manifest_fragment.*)"`', readme)
    assert command is not None
    (tmp_path / ".env").write_text("SEED_REACTIONS=true\n")
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    run = partial(subprocess.run, [sys.executable, "-c", command.group(1)], cwd=tmp_path)
    plain = json.loads(run(env=env, capture_output=True, check=True).stdout)
    observer = run(env={**env, "ASSISTANT_BOT_IDS": "B1"}, capture_output=True, check=True)
    fragment = json.loads(observer.stdout)
    assert "reactions:write" not in plain["oauth_config"]["scopes"]["bot"]
    assert "message.channels" not in plain["settings"]["event_subscriptions"]["bot_events"]
    assert "reactions:write" in fragment["oauth_config"]["scopes"]["bot"]
    assert "message.channels" in fragment["settings"]["event_subscriptions"]["bot_events"]
    (tmp_path / ".env").write_text("SEED_REACTIONS=false\nASSISTANT_BOT_IDS=B1\n")
    quiet = json.loads(run(env=env, capture_output=True, check=True).stdout)
    assert "reactions:write" not in quiet["oauth_config"]["scopes"]["bot"]
    assert "message.channels" in quiet["settings"]["event_subscriptions"]["bot_events"]


def test_metadata_leaves_out_an_id_not_given() -> None:
    """Slack's metadata values are strings, numbers or booleans: no nulls."""
    from bot.slack.blocks import brixo_metadata

    assert brixo_metadata(None, "conv-1")["event_payload"] == {"conversation_id": "conv-1"}
    assert brixo_metadata("m-1", None)["event_payload"] == {"message_id": "m-1"}


def test_posted_replies_carry_their_metadata_and_map_their_thread(
    their_app: Callable[..., TheirApp],
) -> None:
    """`post()` adds `brixo_message` metadata; Bolt's Assistant `say` keeps its own; either
    way the reply's thread is mapped, so any message of it rates the conversation."""
    app = their_app()
    app.relay.post(
        app.client, channel="C1", text="Posted", message_id="m-post", conversation_id="c-post"
    )
    posted = app.slack.wait_for_call("chat.postMessage")[0].args
    assert posted["metadata"] == app.relay.metadata("m-post", "c-post")

    root, asked = "1700000000.000200", "1700000000.000300"
    # The thread's context, kept by Bolt in its first reply's metadata (the channel the person
    # opened the assistant from).
    context = {"event_type": "assistant_thread_context", "event_payload": {"channel_id": "C9"}}
    app.slack.add_message("D1", root, text="Hi, how can I help?", user="UBOT")
    app.slack.add_message("D1", "1700000000.000250", user="UBOT", thread_ts=root, metadata=context)
    assert app.sender.event(sr.message("D1", "U1", "What is Brixo?", asked, root)).ok
    reply_ts(app, "D1", "An assistant answer")
    said = next(c.args for c in app.slack.calls_to("chat.postMessage") if c.args["channel"] == "D1")
    assert said["metadata"] == context  # Bolt's Assistant `say` keeps it
    # The person's own question, in the answered thread, rates the conversation.
    shortcut = sr.message_shortcut("U2", "T1", "D1", asked, thread_ts=root)
    assert app.sender.interaction(shortcut).status_code == 200
    view = app.slack.wait_for_call("views.open")[0].args["view"]
    values = {"vote": {"vote_input": {"type": "radio_buttons", "selected_option": {"value": "up"}}}}
    assert app.sender.interaction(sr.view_submission("U2", "T1", view, values)).status_code == 200
    wait_until(lambda: app.settled(1), message="the rating was delivered")
    assert [(r.kind, r.id) for r in app.brixo.accepted] == [("conversations", "c-dm")]


def test_a_posted_reply_is_keyed_by_the_workspace_slack_posted_it_in(
    their_app: Callable[..., TheirApp],
) -> None:
    """The token's workspace (auth.test) can differ from the reply's (an org-wide install, a
    Slack Connect channel): `post()` keys the reply by the team Slack stamps on the posted
    message, where votes on it come from, and asks auth.test nothing."""
    app = their_app()
    org = {**app.slack._auth_test({}), "team_id": "TORG", "is_enterprise_install": True}
    app.slack.respond("auth.test", org)
    asked = len(app.slack.calls_to("auth.test"))
    app.relay.post(app.client, channel="C1", text="Posted", message_id="m-team")
    click(app, "C1", reply_ts(app, "C1", "Posted"), "up")
    wait_until(lambda: app.settled(1), message="the vote on the posted reply was delivered")
    assert [(r.kind, r.id) for r in app.brixo.accepted] == [("messages", "m-team")]
    assert len(app.slack.calls_to("auth.test")) == asked


def test_metadata_given_to_post_is_posted_and_the_reply_still_mapped(
    brixo: FakeBrixo, slack_api: FakeSlackAPI, tmp_path: Path
) -> None:
    """`post(…, metadata=…)`: the app's own metadata is posted as given (not replaced by the
    relay's), and the reply is mapped all the same."""
    client = WebClient(token=BOT_TOKEN, base_url=slack_api.url)
    relay = relay_for(brixo, tmp_path, client=client)
    theirs = {"event_type": "their_event", "event_payload": {"order": "o-7"}}
    ts = relay.post(channel="C1", text="An answer", message_id="m-1", team="T1", metadata=theirs)
    assert slack_api.calls_to("chat.postMessage")[0].args["metadata"] == theirs
    mapping = relay.core.mappings.message("T1", "C1", ts["ts"])
    assert mapping is not None and mapping.message_id == "m-1"
    relay.close()


def test_a_team_given_to_post_is_the_replys_workspace(
    brixo: FakeBrixo, slack_api: FakeSlackAPI, tmp_path: Path
) -> None:
    client = WebClient(token=BOT_TOKEN, base_url=slack_api.url)
    relay = relay_for(brixo, tmp_path, client=client)
    ts = relay.post(channel="C1", text="An answer", message_id="m-1", team="T2")["ts"]
    assert relay.core.mappings.message("T2", "C1", ts) is not None
    assert relay.core.mappings.message("T1", "C1", ts) is None
    relay.close()
