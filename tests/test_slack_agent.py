"""Agent bridge end to end: DMs, mentions and assistant threads go to AGENT_URL once each."""

from __future__ import annotations

import logging
import time
from typing import ClassVar

import pytest

from bot.core.agent import MAX_ANSWER_BYTES, first_part
from bot.core.relay import UNMAPPED_CONVERSATION
from tests.fakes import LocalHTTPFake, QuietHandler
from tests.fakes import slack_requests as sr
from tests.slack_harness import RunningRelay, StartRelay
from tests.test_slack_support import (
    ask_agent,
    click,
    ephemerals,
    map_by_metadata,
    ok,
    opened_view,
    outbox,
    rating_values,
    react,
    reply_ts,
    settled,
    values_of,
)
from tests.waiting import wait_until

AGENT_KEYS = {"text", "user_id", "team_id", "channel_id", "thread_ts", "conversation_id"}


def test_dm_goes_to_agent_and_reply_carries_buttons_metadata_and_mapping(
    start_relay: StartRelay,
) -> None:
    app = start_relay(ASK_COMMENT="never", AGENT_TOKEN="agent-secret-1")
    reply = ask_agent(app, "what is 2+2?", ts="1700000000.000100")

    request = app.agent.requests[0]
    assert request.json == {
        "text": "what is 2+2?",
        "user_id": "U1",
        "team_id": "T1",
        "channel_id": "D1",
        "thread_ts": "1700000000.000100",
        "conversation_id": None,
    }
    assert request.headers.get("authorization") == "Bearer agent-secret-1"

    post = app.slack.calls_to("chat.postMessage")[0]
    assert post.args["channel"] == "D1" and post.args["thread_ts"] == "1700000000.000100"
    assert post.args["text"] == "Answer to: what is 2+2?"
    assert post.args["metadata"] == {
        "event_type": "brixo_message",
        "event_payload": {"message_id": "msg-1", "conversation_id": "conv-1700000000.000100"},
    }
    actions = [b for b in post.args["blocks"] if b["type"] == "context_actions"]
    assert len(actions) == 1
    buttons = actions[0]["elements"][0]
    assert buttons["type"] == "feedback_buttons"
    assert {buttons["positive_button"]["value"], buttons["negative_button"]["value"]} == {
        "up",
        "down",
    }
    # The mapping was recorded: a click on the reply reaches Brixo as msg-1.
    click(app, reply, "down", thread_ts="1700000000.000100")
    settled(app, 1)
    assert values_of(app) == [("messages", "msg-1", "thumbs_down")]


def test_thread_follow_up_sends_conversation_id_and_no_token_header(
    start_relay: StartRelay,
) -> None:
    app = start_relay()
    root = "1700000000.000200"
    ask_agent(app, "first", ts=root)
    ask_agent(app, "second", ts="1700000000.000300", thread_ts=root)
    first, second = app.agent.requests
    assert first.json and first.json["conversation_id"] is None
    assert second.json == {
        "text": "second",
        "user_id": "U1",
        "team_id": "T1",
        "channel_id": "D1",
        "thread_ts": root,
        "conversation_id": f"conv-{root}",
    }
    assert "authorization" not in second.headers


def test_mention_also_delivered_as_channel_message_gives_one_agent_call(
    start_relay: StartRelay,
) -> None:

    app = start_relay()
    ts = "1700000000.000400"
    text = "<@UBOT> how are you?"
    ok(app.sender.event(sr.message("C1", "U1", text, ts, channel_type="channel")))
    ok(app.sender.event(sr.app_mention("C1", "U1", text, ts)))
    post = app.slack.wait_for_call("chat.postMessage")[0]
    assert post.args["channel"] == "C1" and post.args["thread_ts"] == ts
    # A later DM is answered too; by then the mention's channel copy would have been asked.
    ask_agent(app, "sentinel", ts="1700000000.000500")
    assert [r.json for r in app.agent.requests] == [
        {
            "text": "how are you?",
            "user_id": "U1",
            "team_id": "T1",
            "channel_id": "C1",
            "thread_ts": ts,
            "conversation_id": None,
        },
        {
            "text": "sentinel",
            "user_id": "U1",
            "team_id": "T1",
            "channel_id": "D1",
            "thread_ts": "1700000000.000500",
            "conversation_id": None,
        },
    ]


def test_assistant_thread_message_goes_to_agent(start_relay: StartRelay) -> None:
    app = start_relay()
    root = "1700000000.000600"
    ok(app.sender.event(sr.assistant_thread_started("D9", root, "U1")))
    ask_agent(app, "help me", channel="D9", ts="1700000000.000700", thread_ts=root)
    request = app.agent.requests[0]
    assert request.json is not None and set(request.json) == AGENT_KEYS
    assert request.json["thread_ts"] == root and request.json["channel_id"] == "D9"


def test_same_event_three_times_gives_one_agent_call(start_relay: StartRelay) -> None:
    app = start_relay()
    event = sr.message("D1", "U1", "once please", "1700000000.000800")
    for retry in (None, 1, 2):
        ok(app.sender.event(event, event_id="EvSAME0001", retry_num=retry))
    app.slack.wait_for_call("chat.postMessage")
    ask_agent(app, "sentinel", ts="1700000000.000900")
    assert [r.json["text"] for r in app.agent.requests if r.json] == ["once please", "sentinel"]
    assert len(app.slack.calls_to("chat.postMessage")) == 2


def test_relay_own_messages_never_reach_agent(start_relay: StartRelay) -> None:
    app = start_relay()
    own = sr.message("D1", "UBOT", "my own reply", "1700000000.001000", bot_id="BRELAY")
    ok(app.sender.event(own))
    own_sub = sr.message(
        "D1",
        None,
        "my own bot_message",
        "1700000000.001100",
        bot_id="BRELAY",
        subtype="bot_message",
    )
    ok(app.sender.event(own_sub))
    ok(app.sender.event(sr.message("D1", "UBOT", "as user", "1700000000.001200")))
    ask_agent(app, "sentinel", ts="1700000000.001300")
    assert [r.json["text"] for r in app.agent.requests if r.json] == ["sentinel"]


def _assert_error_reply_records_nothing(app: RunningRelay, thread_ts: str) -> None:
    post = app.slack.wait_for_call("chat.postMessage")[0]
    assert post.args["thread_ts"] == thread_ts
    assert "couldn't get an answer" in post.args["text"]
    assert "metadata" not in post.args
    assert not any(b.get("type") == "context_actions" for b in post.args.get("blocks") or [])
    reply = app.slack.messages("D1")[-1]["ts"]
    assert app.relay.mappings.message("T1", "D1", reply) is None
    assert app.relay.mappings.conversation("T1", "D1", thread_ts) is None
    # A click on the error reply is on an unmapped message: a note, no signal.
    click(app, reply, "up", thread_ts=thread_ts)
    app.slack.wait_for_call("chat.postEphemeral")
    assert "wasn't recorded" in ephemerals(app)[0].args["text"]
    assert outbox(app)["pending"] == 0
    settled(app, 0)


def test_agent_500_gives_error_reply_and_records_nothing(start_relay: StartRelay) -> None:
    app = start_relay()
    app.agent.fail_next(1, status=500)
    ok(app.sender.event(sr.message("D1", "U1", "q", "1700000000.001400")))
    _assert_error_reply_records_nothing(app, "1700000000.001400")


def test_slack_not_answering_the_post_of_the_answer_is_one_warning(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer may have been posted (its metadata maps it then): a warning, no error reply."""
    app = start_relay(ASK_COMMENT="never")
    app.slack.drop_next("chat.postMessage", 3)  # the first try and the client's two retries
    ok(app.sender.event(sr.message("D1", "U1", "q", "1700000000.001450")))
    wait_until(lambda: "no answer from Slack posting the agent's reply" in caplog.text)
    assert [c.args["text"] for c in app.slack.calls_to("chat.postMessage")] == ["Answer to: q"] * 3
    errors = [r for r in caplog.records if r.name.startswith("bot") and r.levelno >= logging.ERROR]
    assert errors == []


def test_slack_not_answering_the_post_of_the_error_reply_is_one_warning(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    app = start_relay()
    app.agent.fail_next(1, status=500)
    app.slack.drop_next("chat.postMessage", 3)
    ok(app.sender.event(sr.message("D1", "U1", "q", "1700000000.001460")))
    wait_until(lambda: "can't post to D1: RemoteDisconnected" in caplog.text)
    errors = [r for r in caplog.records if r.name.startswith("bot") and r.levelno >= logging.ERROR]
    assert errors == []


class _TextHandler(QuietHandler):
    """Answers 200 with an HTML page, as a misconfigured AGENT_URL would."""

    def handle_any(self) -> None:
        self.read_body(None)
        self.send_raw(200, b"<html>not json</html>", "text/html")


class _TextAgent(LocalHTTPFake):
    handler_class: ClassVar[type[QuietHandler]] = _TextHandler


def test_agent_non_json_gives_error_reply(start_relay: StartRelay) -> None:
    with _TextAgent() as html:
        app = start_relay(AGENT_URL=html.base_url + "/agent")
        ok(app.sender.event(sr.message("D1", "U1", "q", "1700000000.001500")))
        _assert_error_reply_records_nothing(app, "1700000000.001500")
    _assert_error_reply_records_nothing(app, "1700000000.001500")


def test_agent_answer_without_text_gives_error_reply(start_relay: StartRelay) -> None:
    app = start_relay()
    app.agent.reply_with({"message_id": "m-1", "conversation_id": "c-1"})
    ok(app.sender.event(sr.message("D1", "U1", "q", "1700000000.001600")))
    _assert_error_reply_records_nothing(app, "1700000000.001600")


def test_agent_timeout_gives_error_reply(start_relay: StartRelay) -> None:
    app = start_relay(AGENT_TIMEOUT="300ms")
    app.agent.stall_next(1, seconds=3)
    ok(app.sender.event(sr.message("D1", "U1", "slow", "1700000000.001700")))
    _assert_error_reply_records_nothing(app, "1700000000.001700")


def test_agent_timeout_bounds_the_whole_answer(start_relay: StartRelay) -> None:
    """An answer that keeps arriving, a byte at a time, is late at AGENT_TIMEOUT: the error
    reply goes then, long before the answer would have ended."""
    app = start_relay(AGENT_TIMEOUT="500ms")
    app.agent.trickle_next(1, seconds=30)
    ok(app.sender.event(sr.message("D1", "U1", "slow", "1700000000.001750")))
    app.slack.wait_for_call("chat.postMessage", timeout=10)
    _assert_error_reply_records_nothing(app, "1700000000.001750")


def test_stalled_agent_never_delays_the_ack(start_relay: StartRelay) -> None:
    app = start_relay()
    app.agent.stall_next(2, seconds=3)
    dm = app.sender.event(sr.message("D1", "U1", "slow dm", "1700000000.001800"))
    mention = app.sender.event(sr.app_mention("C1", "U1", "<@UBOT> slow", "1700000000.001900"))
    assert dm.status_code == 200 and mention.status_code == 200
    # Both acks came back, then both questions reach the stalled agent: still no reply posted,
    # so neither ack waited for the agent.
    app.agent.wait_for_requests(2)
    assert app.slack.calls_to("chat.postMessage") == []
    posts = app.slack.wait_for_call("chat.postMessage", 2)
    assert {p.args["channel"] for p in posts} == {"D1", "C1"}


def test_a_stalled_agent_never_holds_up_a_comment_modal(start_relay: StartRelay) -> None:
    """Agent answers have threads of their own: a 👎's modal opens while every one is busy."""
    app = start_relay(ASK_COMMENT="negative")
    reply = ask_agent(app, "first", ts="1700000000.002000")
    busy = 12  # more than the agent's threads
    app.agent.stall_next(busy, seconds=2)
    for n in range(busy):
        ok(app.sender.event(sr.message("D1", "U1", f"slow {n}", f"1700000000.{2100 + n:06d}")))
    app.agent.wait_for_requests(1 + 10)  # every agent thread is now waiting on the agent
    click(app, reply, "down")
    assert opened_view(app)["callback_id"] == "brixo_comment"
    assert len(app.slack.calls_to("chat.postMessage")) == 1  # no stalled answer came back yet
    app.slack.wait_for_call("chat.postMessage", 1 + busy, timeout=30)  # all answered in the end


def test_each_posted_feedback_button_gives_its_own_vote(start_relay: StartRelay) -> None:
    """Slack sends back the value of the button clicked: the reply's 👍 gives thumbs_up and its
    👎 thumbs_down."""
    app = start_relay(ASK_COMMENT="never")
    root = "1700000000.000300"
    reply = ask_agent(app, "hi", ts=root)
    post = app.slack.calls_to("chat.postMessage")[0]
    actions = [b for b in post.args["blocks"] if b["type"] == "context_actions"]
    element = actions[0]["elements"][0]
    for button, delivered in (("positive_button", 1), ("negative_button", 2)):
        shown = element[button]
        action = sr.feedback_button_action(shown["value"], text=shown["text"]["text"])
        click(app, reply, thread_ts=root, action=action)
        settled(app, delivered)
    assert values_of(app) == [
        ("messages", "msg-1", "thumbs_up"),
        ("messages", "msg-1", "thumbs_down"),
    ]
    assert element["positive_button"]["text"]["text"] == "👍"


def test_answer_refused_with_native_buttons_is_posted_with_classic_ones(
    start_relay: StartRelay,
) -> None:
    app = start_relay(ASK_COMMENT="never")
    app.slack.refused_blocks = {"context_actions"}
    root = "1700000000.002500"
    reply = ask_agent(app, "hi", ts=root)
    refused, posted = app.slack.calls_to("chat.postMessage")
    assert [b["type"] for b in refused.args["blocks"]][-1] == "context_actions"
    buttons = [
        e["action_id"]
        for b in posted.args["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
    ]
    assert buttons == ["brixo_vote_up", "brixo_vote_down"]
    assert posted.args["metadata"] == refused.args["metadata"]
    click(app, reply, thread_ts=root, action=sr.button_action("brixo_vote_down", "down"))
    settled(app, 1)
    assert values_of(app) == [("messages", "msg-1", "thumbs_down")]


def test_answer_refused_with_both_kinds_of_buttons_gives_the_error_reply(
    start_relay: StartRelay,
) -> None:
    app = start_relay(ASK_COMMENT="never")
    app.slack.refused_blocks = {"context_actions", "actions"}
    ok(app.sender.event(sr.message("D1", "U1", "q", "1700000000.002600")))
    posts = app.slack.wait_for_call("chat.postMessage", 3)
    assert "couldn't get an answer" in posts[2].args["text"]
    assert len(app.slack.messages("D1")) == 1  # only the error reply was posted
    assert app.relay.mappings.conversation("T1", "D1", "1700000000.002600") is None


def test_a_vote_on_the_error_reply_sends_nothing_even_with_templates(
    start_relay: StartRelay,
) -> None:
    """The templates map watched bots' replies; the bridge's own error reply is none."""
    app = start_relay(MESSAGE_ID_TEMPLATE="tpl-{ts}", ASK_COMMENT="never")
    app.agent.fail_next(1, status=500)
    ok(app.sender.event(sr.message("D1", "U1", "q", "1700000000.001450")))
    post = app.slack.wait_for_call("chat.postMessage")[0]
    error_reply = reply_ts(app, "D1", post)
    react(app, error_reply, "-1")
    click(app, error_reply, "down", thread_ts="1700000000.001450")
    app.slack.wait_for_call("chat.postEphemeral")  # the click's note: nothing recorded
    settled(app, 0)
    answer = ask_agent(app, "again", ts="1700000000.001460")  # a real answer still maps
    react(app, answer, "+1")
    settled(app, 1)
    [(kind, message_id, value)] = values_of(app)
    assert (kind, value) == ("messages", "thumbs_up") and message_id.startswith("msg-")


def test_the_conversation_template_rates_a_thread_the_agent_answered_without_one(
    start_relay: StartRelay,
) -> None:
    """An agent that traced the conversation as the template says returns only message IDs."""
    app = start_relay(ASK_COMMENT="never", CONVERSATION_ID_TEMPLATE="conv-{channel}-{thread_ts}")
    app.agent.reply_with({"text": "An answer", "message_id": "msg-A"})
    root = "1700000000.002700"
    ask_agent(app, "hi", ts=root)
    up = rating_values("up")
    # On the person's question, the thread's root: the relay answered in this thread.
    ok(app.sender.interaction(sr.message_shortcut("U1", "T1", "D1", root, thread_ts=root)))
    ok(app.sender.interaction(sr.view_submission("U1", "T1", opened_view(app), up)))
    settled(app, 1)
    assert values_of(app) == [("conversations", f"conv-D1-{root}", "thumbs_up")]
    # The agent is still sent only the conversation IDs it returned itself.
    ask_agent(app, "and then?", ts="1700000000.002710", thread_ts=root)
    assert [(r.json or {})["conversation_id"] for r in app.agent.requests] == [None, None]
    # A thread where the bridge posted only its error reply is no assistant conversation.
    app.agent.fail_next(1, status=500)
    failed = "1700000000.002800"
    app.slack.add_message("D1", failed, "q", user="U1")
    ok(app.sender.event(sr.message("D1", "U1", "q", failed)))
    app.slack.wait_for_call("chat.postMessage", 3)  # the error reply
    ok(app.sender.interaction(sr.message_shortcut("U1", "T1", "D1", failed, thread_ts=failed)))
    wait_until(lambda: ephemerals(app, UNMAPPED_CONVERSATION), message="no note")
    assert len(app.slack.calls_to("views.open")) == 1


def test_a_redirecting_agent_gets_the_error_reply_not_a_get(start_relay: StartRelay) -> None:
    """Followed, a 302 would turn the question into a GET without it, and post that answer."""
    app = start_relay()
    app.agent.redirect_next(1, status=302)
    ok(app.sender.event(sr.message("D1", "U1", "q", "1700000000.002600")))
    _assert_error_reply_records_nothing(app, "1700000000.002600")
    assert [r.path for r in app.agent.requests] == ["/"]


def test_an_answer_over_a_megabyte_gets_the_error_reply(start_relay: StartRelay) -> None:
    """The agent's answer is read up to MAX_ANSWER_BYTES: a runaway one is an error, not a
    process holding whatever it sends."""
    app = start_relay()
    app.agent.reply_with({"text": "x" * (MAX_ANSWER_BYTES + 1), "message_id": "m-huge"})
    ok(app.sender.event(sr.message("D1", "U1", "q", "1700000000.002650")))
    _assert_error_reply_records_nothing(app, "1700000000.002650")


def test_the_conversation_sent_is_the_one_the_agent_returned_last_in_the_thread(
    start_relay: StartRelay,
) -> None:
    app = start_relay()
    root = "1700000000.002700"
    answers = iter(["conv-A", "conv-B", "conv-C"])
    app.agent.reply_with(
        lambda doc: {
            "text": "a",
            "message_id": f"m-{doc['text']}",
            "conversation_id": next(answers),
        }
    )
    ask_agent(app, "1", ts=root)
    ask_agent(app, "2", ts="1700000000.002701", thread_ts=root)
    ask_agent(app, "3", ts="1700000000.002702", thread_ts=root)
    sent = [r.json["conversation_id"] for r in app.agent.requests if r.json]
    assert sent == [None, "conv-A", "conv-B"]


def test_another_apps_conversation_in_the_thread_is_not_sent_to_the_agent(
    start_relay: StartRelay,
) -> None:
    app = start_relay()
    root = map_by_metadata(app, "other-msg", "conv-OTHER-APP", channel="C1")
    mention = sr.app_mention("C1", "U1", "<@UBOT> hi", "1700000000.002801", thread_ts=root)
    ok(app.sender.event(mention))
    assert app.agent.wait_for_requests(1)[0].json["conversation_id"] is None


def test_an_answer_with_only_a_conversation_id_is_rated_as_that_conversation(
    start_relay: StartRelay,
) -> None:
    app = start_relay(ASK_COMMENT="never")
    root = "1700000000.002900"
    app.agent.reply_with({"text": "an answer", "conversation_id": "conv-only"})
    reply = ask_agent(app, "q", ts=root)
    post = app.slack.calls_to("chat.postMessage")[0]
    assert any(b["type"] == "context_actions" for b in post.args["blocks"])
    ask_agent(app, "again", ts="1700000000.002901", thread_ts=root)
    assert app.agent.requests[1].json["conversation_id"] == "conv-only"
    click(app, reply, "up", thread_ts=root)
    settled(app, 1)
    assert values_of(app) == [("conversations", "conv-only", "thumbs_up")]


def test_an_answer_with_whole_number_ids_is_rated_on_their_digits(
    start_relay: StartRelay,
) -> None:
    """An agent whose IDs are JSON numbers (a database's keys): its answer gets the buttons,
    and a vote reaches Brixo on the digits; the conversation ID goes back to the agent as
    text."""
    app = start_relay(ASK_COMMENT="never")
    root = "1700000000.002950"
    app.agent.reply_with({"text": "an answer", "message_id": 123, "conversation_id": 45})
    reply = ask_agent(app, "q", ts=root)
    ask_agent(app, "again", ts="1700000000.002951", thread_ts=root)
    assert app.agent.requests[1].json["conversation_id"] == "45"
    click(app, reply, "up", thread_ts=root)
    settled(app, 1)
    assert values_of(app) == [("messages", "123", "thumbs_up")]


def test_a_busy_agent_makes_nobody_wait_past_agent_timeout(start_relay: StartRelay) -> None:
    """More questions than the bridge has threads: AGENT_TIMEOUT counts from each message, so
    those queued behind a stalled agent get the error reply when theirs runs out, not later."""
    app = start_relay(AGENT_TIMEOUT="1s")
    app.agent.stall_next(12, seconds=5)
    sent = time.time()
    for n in range(12):
        ok(app.sender.event(sr.message(f"D{n}", "U1", "q", f"1700000000.0030{n:02d}")))
    app.slack.wait_for_call("chat.postMessage", 12, timeout=10)
    waited = max(c.at for c in app.slack.calls_to("chat.postMessage")) - sent
    assert waited < 1.8, waited  # was 2 × AGENT_TIMEOUT for the 11th and 12th


def test_answers_still_arriving_past_agent_timeout_keep_their_calls(
    start_relay: StartRelay,
) -> None:
    """The bridge has 10 calls to the agent: one whose caller gave up at AGENT_TIMEOUT while
    its answer is still trickling in holds its call until it ends, so the agent never gets
    more than 10 requests at once, and a question that finds no free call gets the error reply."""
    app = start_relay(AGENT_TIMEOUT="500ms")
    app.agent.trickle_next(10, seconds=20)
    for n in range(10):
        ok(app.sender.event(sr.message(f"D{n}", "U1", "q", f"1700000000.0035{n:02d}")))
    app.agent.wait_for_requests(10)
    app.slack.wait_for_call("chat.postMessage", 10, timeout=10)  # ten apologies, at 0.5 s
    ok(app.sender.event(sr.message("D1", "U2", "one more", "1700000000.003600")))
    posts = app.slack.wait_for_call("chat.postMessage", 11, timeout=10)
    late = [p for p in posts if p.args.get("thread_ts") == "1700000000.003600"]
    assert len(late) == 1 and "couldn't get an answer" in late[0].args["text"]
    assert len(app.agent.requests) == 10


def test_an_answer_too_long_for_one_slack_message_is_posted_cut_with_a_note(
    start_relay: StartRelay,
) -> None:
    app = start_relay(ASK_COMMENT="never")
    app.agent.reply_with({"text": "word " * 4000, "message_id": "m-long"})
    reply = ask_agent(app, "tell me everything", ts="1700000000.003100")
    blocks = app.slack.calls_to("chat.postMessage")[0].args["blocks"]
    shown = sum(len(b["text"]["text"]) for b in blocks if b["type"] == "section")
    assert 10_000 < shown <= 11_000
    assert "9,000 more characters" in blocks[-2]["elements"][0]["text"]
    click(app, reply, "up", thread_ts="1700000000.003100")
    settled(app, 1)


def test_an_answer_longer_than_a_section_is_split_between_words_not_inside_a_link(
    start_relay: StartRelay,
) -> None:
    """Over 3,000 characters, the answer goes in several sections, each split at a space where
    one is near: no link or word is cut in two."""
    app = start_relay(ASK_COMMENT="never")
    link = "https://docs.example.com/guide/part"
    app.agent.reply_with({"text": " ".join([link] * 150), "message_id": "m-links"})
    ask_agent(app, "links please", ts="1700000000.003200")
    blocks = app.slack.calls_to("chat.postMessage")[0].args["blocks"]
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert len(sections) == 2 and all(len(text) <= 3000 for text in sections)
    assert [word for text in sections for word in text.split()] == [link] * 150


def test_a_me_message_in_a_dm_goes_to_the_agent(start_relay: StartRelay) -> None:
    app = start_relay()
    event = {**sr.message("D1", "U1", "waves", "1700000000.003200"), "subtype": "me_message"}
    ok(app.sender.event(event))
    assert app.agent.wait_for_requests(1)[0].json["text"] == "waves"


def test_a_thread_reply_also_sent_to_the_dm_goes_to_the_agent(start_relay: StartRelay) -> None:
    """A reply in a DM thread with "Also send to direct message" ticked (subtype
    thread_broadcast) is still the person's message: the agent gets it, in its thread."""
    app = start_relay()
    root = "1700000000.003300"
    message = sr.message("D1", "U1", "and also", "1700000000.003301", thread_ts=root)
    ok(app.sender.event({**message, "subtype": "thread_broadcast"}))
    asked = app.agent.wait_for_requests(1)[0].json
    assert (asked["text"], asked["thread_ts"]) == ("and also", root)


def test_another_bots_mention_never_reaches_the_agent(start_relay: StartRelay) -> None:
    """A bot mentioning the relay (here the watched assistant) is no person asking."""
    app = start_relay(ASSISTANT_BOT_IDS="BASSIST")
    text = "<@UBOT> over to you"
    mention = {**sr.app_mention("C1", "UASSIST", text, "1700000000.003400"), "bot_id": "BASSIST"}
    ok(app.sender.event(mention))
    ok(app.sender.event(sr.app_mention("C1", "U1", "<@UBOT> sentinel", "1700000000.003401")))
    post = app.slack.wait_for_call("chat.postMessage")[0]
    assert post.args["thread_ts"] == "1700000000.003401"
    assert [r.json["text"] for r in app.agent.requests if r.json] == ["sentinel"]


def test_a_dm_with_a_file_goes_to_the_agent(start_relay: StartRelay) -> None:
    """A message with a file attached (subtype file_share) is still the person's question."""
    app = start_relay()
    ts = "1700000000.003500"
    message = sr.message("D1", "U1", "what's in this log?", ts)
    files = [{"id": "F1", "name": "app.log", "mimetype": "text/plain"}]
    ok(app.sender.event({**message, "subtype": "file_share", "files": files}))
    asked = app.agent.wait_for_requests(1)[0].json
    assert asked is not None and asked["text"] == "what's in this log?"
    assert (asked["channel_id"], asked["thread_ts"]) == ("D1", ts)
    post = app.slack.wait_for_call("chat.postMessage")[0]
    assert (post.args["text"], post.args["thread_ts"]) == ("Answer to: what's in this log?", ts)


@pytest.mark.parametrize(
    "answer",
    [{"text": "an answer"}, {"text": "an answer", "message_id": "  ", "conversation_id": ""}],
    ids=["no ids", "blank ids"],
)
def test_an_answer_without_ids_is_posted_but_never_rated(
    start_relay: StartRelay, answer: dict[str, str]
) -> None:
    """The person still gets the agent's answer, in the thread, without feedback buttons;
    nothing maps it, so a vote on it gives a note and no signal."""
    app = start_relay(ASK_COMMENT="never")
    app.agent.reply_with(answer)
    root = "1700000000.003600"
    ok(app.sender.event(sr.message("D1", "U1", "q", root)))
    post = app.slack.wait_for_call("chat.postMessage")[0]
    assert (post.args["text"], post.args["thread_ts"]) == ("an answer", root)
    assert "metadata" not in post.args
    assert not any(b.get("type") == "context_actions" for b in post.args.get("blocks") or [])
    reply = reply_ts(app, "D1", post)
    assert app.relay.mappings.message("T1", "D1", reply) is None
    click(app, reply, "up", thread_ts=root)
    note = app.slack.wait_for_call("chat.postEphemeral")[0]
    assert "wasn't recorded" in note.args["text"]
    settled(app, 0)


def test_an_agent_answer_with_a_status_other_than_200_gives_error_reply(
    start_relay: StartRelay,
) -> None:
    """Only a 200 answer is posted: a 201, however well-formed its body, is an agent error."""
    app = start_relay()
    app.agent.reply_with({"text": "created", "message_id": "m-201"}, status=201)
    ok(app.sender.event(sr.message("D1", "U1", "q", "1700000000.003700")))
    _assert_error_reply_records_nothing(app, "1700000000.003700")


def test_an_answer_is_cut_at_the_last_break_within_500_characters_of_the_room() -> None:
    """Shared by Slack's sections and Discord's one message: at a break near the end, else
    where the room ends (a break further back would drop too much)."""
    near = "a" * 600 + " " + "b" * 1000  # its space 400 characters before the end of 1,000
    assert first_part(near, 1000) == "a" * 600 + " "
    far = "a" * 400 + "\n" + "b" * 1000  # its break 600 characters back
    assert first_part(far, 1000) == far[:1000]
    assert first_part("fits", 4) == "fits"
