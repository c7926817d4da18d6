"""Observer mode end to end: watched bots' replies mapped, seeded with 👍/👎, never edited."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from time import monotonic
from typing import Any

import pytest

from bot.core.relay import UNMAPPED_CONVERSATION, UNMAPPED_NOTE
from bot.slack.feedback import UNAVAILABLE_NOTE
from bot.slack.listeners.shortcuts import NOT_OPENED, UNAVAILABLE_THREAD
from bot.slack.lookups import LOOKUP_BUDGET, LOOKUP_TIMEOUT
from tests.fakes import slack_requests as sr
from tests.fakes.slack_api import RESPONSE_URL
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
    settled,
    values_of,
)
from tests.waiting import wait_until

WATCH = {"ASSISTANT_BOT_IDS": "BASSIST,UHELPER", "ASK_COMMENT": "never", "AGENT_URL": None}


def meta(message_id: str, conversation_id: str | None = None) -> dict[str, Any]:
    """brixo_message metadata as the watched bot attaches it."""
    payload = {"message_id": message_id}
    if conversation_id:
        payload["conversation_id"] = conversation_id
    return {"event_type": "brixo_message", "event_payload": payload}


def watched_reply(
    ts: str,
    metadata: dict[str, Any] | None = None,
    thread_ts: str | None = "1700000000.000001",
    bot_id: str = "BASSIST",
) -> dict[str, Any]:
    """A watched bot's reply in channel C1, as a message event."""
    return sr.message(
        "C1",
        "UASSIST",
        "bot answer",
        ts,
        thread_ts=thread_ts,
        channel_type="channel",
        bot_id=bot_id,
        metadata=metadata,
    )


def test_reply_mapped_from_metadata_posted_event(start_relay: StartRelay) -> None:
    app = start_relay(**WATCH, ACK_MESSAGE="")
    ts = map_by_metadata(app, "cust-msg-1", "cust-conv-1", channel="C1")
    react(app, ts, "+1", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-msg-1", "thumbs_up")]
    assert app.slack.calls_to("conversations.replies") == []


def test_an_unusable_message_id_is_logged_and_the_reply_rates_its_conversation(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    app = start_relay(ACK_MESSAGE="")
    ts = map_by_metadata(app, "x" * 1025, "conv-long")
    react(app, ts, "+1", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("conversations", "conv-long", "thumbs_up")]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"ignored the message_id of brixo_message metadata on {ts}:" in m for m in warned)


def test_thanks_find_the_thread_of_a_reply_mapped_by_its_metadata_event(
    start_relay: StartRelay,
) -> None:
    app = start_relay(**WATCH)
    root, ts = "1700000000.000001", "1700000000.000002"
    app.slack.add_message("C1", root, "question", user="U1")
    reply = {"user": "UASSIST", "bot_id": "BASSIST", "thread_ts": root}
    app.slack.add_message("C1", ts, "answer", **reply, metadata=meta("m-1", "conv-1"))
    map_by_metadata(app, "m-1", "conv-1", channel="C1", ts=ts)  # the event has no thread
    app.slack.fail_next("conversations.replies", 3, status=503, retry_after=None)
    react(app, ts, "+1", channel="C1")
    thanks = app.slack.wait_for_call("chat.postEphemeral", 1)[0]
    assert thanks.args.get("thread_ts") is None  # Slack couldn't say: in the channel
    react(app, ts, "+1", channel="C1", user="U2")  # asked again, and answered
    second = app.slack.wait_for_call("chat.postEphemeral", 2)[1]
    assert second.args["thread_ts"] == root
    # The thread is kept, for the next vote and the thread's conversation.
    react(app, ts, "-1", channel="C1", user="U3")
    third = app.slack.wait_for_call("chat.postEphemeral", 3)[2]
    assert third.args["thread_ts"] == root
    assert len(app.slack.calls_to("conversations.replies")) == 3 + 1
    assert app.relay.mappings.conversation("T1", "C1", root) == "conv-1"


def test_thanks_for_a_reaction_on_a_top_level_reply_stay_in_the_channel(
    start_relay: StartRelay,
) -> None:
    """A watched reply that starts no thread roots its own conversation: the thanks for a
    reaction on it go to the channel, not into a thread opened under the reply."""
    app = start_relay(**WATCH, SEED_REACTIONS="false")
    ts = "1700000000.000300"
    ok(app.sender.event(watched_reply(ts, meta("m-top", "conv-top"), thread_ts=None)))
    wait_until(lambda: app.relay.mappings.message("T1", "C1", ts), message="never mapped")
    react(app, ts, "+1", channel="C1")
    thanks = app.slack.wait_for_call("chat.postEphemeral")[0]
    assert (thanks.args["channel"], thanks.args["user"]) == ("C1", "U1")
    assert thanks.args.get("thread_ts") is None, thanks.args
    settled(app, 1)


def test_thanks_for_a_top_level_reply_mapped_by_its_metadata_event_stay_in_the_channel(
    start_relay: StartRelay,
) -> None:
    """The metadata event carries no thread: Slack, asked where the reply is, says it starts
    none, so the thanks go to the channel, not into a thread under the reply."""
    app = start_relay(**WATCH)
    ts = "1700000000.000310"
    reply = {"user": "UASSIST", "bot_id": "BASSIST", "metadata": meta("m-top", "conv-top")}
    app.slack.add_message("C1", ts, "answer", **reply)  # top-level: no thread_ts
    map_by_metadata(app, "m-top", "conv-top", channel="C1", ts=ts)
    react(app, ts, "+1", channel="C1")
    thanks = app.slack.wait_for_call("chat.postEphemeral")[0]
    assert app.slack.calls_to("conversations.replies"), "Slack was never asked for the thread"
    assert (thanks.args["channel"], thanks.args["user"]) == ("C1", "U1")
    assert thanks.args.get("thread_ts") is None, thanks.args
    settled(app, 1)


def test_reply_mapped_from_message_event_metadata_and_seeded_once(
    start_relay: StartRelay,
) -> None:

    app = start_relay(**WATCH)
    ts = "1700000000.000100"
    event = watched_reply(ts, meta("cust-msg-2"))
    for retry in (None, 1, 2):
        ok(app.sender.event(event, event_id="EvWATCH001", retry_num=retry))
    # The same reply seen again as a new event (e.g. message.channels and message.groups).
    ok(app.sender.event(event))
    adds = app.slack.wait_for_call("reactions.add", 2)
    assert sorted(c.args["name"] for c in adds) == ["+1", "-1"]
    assert {(c.args["channel"], c.args["timestamp"]) for c in adds} == {("C1", ts)}
    react(app, ts, "thumbsdown", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-msg-2", "thumbs_down")]
    # Seeding happened once: a second watched reply is seeded, the first is not again.
    ok(app.sender.event(watched_reply("1700000000.000200", meta("cust-msg-3"))))
    adds = app.slack.wait_for_call("reactions.add", 4)
    assert len(app.slack.calls_to("reactions.add")) == 4
    assert [c.args["timestamp"] for c in adds[2:]] == ["1700000000.000200"] * 2
    assert app.slack.calls_to("chat.update") == []
    assert app.slack.calls_to("chat.postMessage") == []


def test_a_watched_reply_is_seeded_once_it_can_be_rated_not_before(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """Its message event carries no metadata and no template maps it: a vote on it would send
    nothing, so no 👍/👎 invites one. Its `message_metadata_posted` (the metadata in an event of
    its own) maps it, and it is seeded then, once; another app's metadata seeds nothing."""
    caplog.set_level(logging.INFO, logger="bot")
    app = start_relay(**WATCH)
    ts, mapped, other = "1700000000.000150", "1700000000.000155", "1700000000.000160"
    ok(app.sender.event(watched_reply(ts)))
    assert any("not seeded (until its metadata comes)" in m for m in caplog.messages)
    ok(app.sender.event(watched_reply(mapped, meta("cust-mapped"))))  # seeded after `ts` was
    ok(app.sender.event(watched_reply(other, bot_id="BOTHER")))  # not watched: never seeded
    adds = app.slack.wait_for_call("reactions.add", 2)
    assert {c.args["timestamp"] for c in adds} == {mapped}
    posted = sr.message_metadata_posted(
        "C1", ts, "brixo_message", {"message_id": "cust-late"}, bot_id="BASSIST", user_id="UA"
    )
    for retry in (None, 1):
        ok(app.sender.event(posted, event_id="EvMETA150", retry_num=retry))
    unwatched = {"message_id": "cust-other"}  # mapped, but posted by a bot not watched
    ok(app.sender.event(sr.message_metadata_posted("C1", other, "brixo_message", unwatched)))
    adds = app.slack.wait_for_call("reactions.add", 4)[2:]
    assert sorted((c.args["timestamp"], c.args["name"]) for c in adds) == [(ts, "+1"), (ts, "-1")]
    ok(app.sender.event(watched_reply(ts)))  # the same reply seen again: seeded already
    react(app, ts, "+1", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-late", "thumbs_up")]
    assert len(app.slack.calls_to("reactions.add")) == 4


def test_rate_limited_seeding_holds_up_no_modal(start_relay: StartRelay) -> None:
    """Seeding waits out Slack's Retry-After; a click's modal and the shortcut's can't wait
    (trigger IDs lapse after 3 s)."""
    app = start_relay(**{**WATCH, "ASK_COMMENT": "negative"})
    app.slack.fail_next("reactions.add", n=100, status=429, retry_after="2")
    replies = [f"1700000000.{n:06d}" for n in range(500, 512)]
    for ts in replies:  # more than there are threads for the work after the ack
        ok(app.sender.event(watched_reply(ts, meta(f"cust-seed-{ts}", "cust-conv-seed"))))
    app.slack.wait_for_call("reactions.add", 10)
    clicked = time.time()
    click(app, replies[0], "down", channel="C1")
    ok(app.sender.interaction(sr.message_shortcut("U2", "T1", "C1", replies[1])))
    opened = app.slack.wait_for_call("views.open", 2, timeout=30)
    assert [call.at - clicked < 2 for call in opened] == [True, True]
    assert outbox(app)["awaiting_comment"] == 1


def test_a_seeding_reaction_slack_does_not_answer_leaves_the_other_one_seeded(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    app = start_relay(**WATCH)
    app.slack.drop_next("reactions.add", 3)  # the first try and the client's two retries
    ok(app.sender.event(watched_reply("1700000000.000250", meta("cust-msg-slow"))))
    adds = app.slack.wait_for_call("reactions.add", 4)
    assert [c.args["name"] for c in adds] == ["+1", "+1", "+1", "-1"]
    assert [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("bot") and r.levelno >= logging.ERROR
    ] == []


def test_watched_user_id_reply_is_seeded(start_relay: StartRelay) -> None:
    app = start_relay(**WATCH)
    event = sr.message("C1", "UHELPER", "hi", "1700000000.000300", channel_type="channel")
    event["metadata"] = meta("cust-msg-4")
    ok(app.sender.event(event))
    app.slack.wait_for_call("reactions.add", 2)
    react(app, "1700000000.000300", "+1::skin-tone-3", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-msg-4", "thumbs_up")]


def test_vote_before_reply_seen_fetches_metadata_via_replies(start_relay: StartRelay) -> None:
    app = start_relay(**WATCH)
    root, ts = "1700000000.000001", "1700000000.000400"
    app.slack.add_message("C1", root, "question", user="U1")
    app.slack.add_message(
        "C1",
        ts,
        "answer",
        user="UASSIST",
        bot_id="BASSIST",
        thread_ts=root,
        metadata=meta("cust-msg-5", "cust-conv-5"),
    )
    react(app, ts, "-1", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-msg-5", "thumbs_down")]
    fetch = app.slack.calls_to("conversations.replies")[0]
    assert fetch.args["ts"] == ts and str(fetch.args["include_all_metadata"]) in (
        "1",
        "True",
        "true",
    )


def test_vote_on_an_unseen_thread_reply_maps_to_that_reply_not_its_parent(
    start_relay: StartRelay,
) -> None:
    """Slack answers conversations.replies for a reply's ts with the thread's parent first,
    whatever `oldest` and `latest` say: a reaction on an unseen reply takes that reply's
    metadata, not the parent's."""
    app = start_relay(**WATCH)
    root, ts = "1700000000.000410", "1700000000.000420"
    bot = {"user": "UASSIST", "bot_id": "BASSIST"}
    app.slack.add_message("C1", root, "answer", **bot, metadata=meta("m-parent", "conv-41"))
    app.slack.add_message(
        "C1", ts, "follow-up", **bot, thread_ts=root, metadata=meta("m-reply", "conv-41")
    )

    def parent_first(args: dict[str, Any]) -> dict[str, Any]:
        """The thread's parent, then the reply asked for (as Slack answers oldest=latest=ts)."""
        asked = dict.fromkeys((root, str(args.get("ts"))))
        found = [app.slack.find_message("C1", m) for m in asked]
        return {"ok": True, "messages": [m for m in found if m]}

    app.slack.respond("conversations.replies", parent_first)
    react(app, ts, "-1", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", "m-reply", "thumbs_down")]


def test_reactions_on_peoples_messages_fetch_nothing(start_relay: StartRelay) -> None:
    """Apps post replies: a person's message (Slack says so, asked once per person) is not
    fetched; an app's unseen reply still is."""
    app = start_relay(**WATCH)
    for n in (1, 2):
        ts = f"1700000000.00010{n}"
        app.slack.add_message("C1", ts, f"lunch {n}?", user="U5")
        reaction = sr.reaction_added(f"U{n}", "+1", "C1", ts, item_user="U5")
        ok(app.sender.event(reaction))
    reply = "1700000000.000200"
    app.slack.add_message(
        "C1", reply, "answer", user="UASSIST", bot_id="BASSIST", metadata=meta("m-2")
    )
    ok(app.sender.event(sr.reaction_added("U1", "+1", "C1", reply, item_user="UASSIST")))
    other_app = "1700000000.000300"
    app.slack.add_message(
        "C1", other_app, "hi", user="UOTHER", bot_id="BOTHER", metadata=meta("m-3")
    )
    ok(app.sender.event(sr.reaction_added("U1", "+1", "C1", other_app, item_user="UOTHER")))
    settled(app, 2)
    assert sorted(values_of(app)) == [
        ("messages", "m-2", "thumbs_up"),
        ("messages", "m-3", "thumbs_up"),
    ]
    asked = [c.args["user"] for c in app.slack.calls_to("users.info")]
    assert asked.count("U5") == 1
    # Another app's message without metadata (a CI bot's, say) is fetched once: no reply.
    ci = "1700000000.000400"
    app.slack.add_message("C1", ci, "build passed", user="UCI", bot_id="BCI")
    for n in (1, 2):
        ok(app.sender.event(sr.reaction_added(f"U{n}", "+1", "C1", ci, item_user="UCI")))
    fetched = [c.args["ts"] for c in app.slack.calls_to("conversations.replies")]
    assert fetched == [reply, other_app, ci]
    assert outbox(app)["pending"] == 0


def test_a_message_found_no_reply_is_fetched_again_once_its_minute_is_over(
    start_relay: StartRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app may add its metadata in an update that an older install hears nothing of."""
    monkeypatch.setattr("bot.slack.feedback.NOT_REPLY_FOR", 0.0)  # the minute is over at once
    app = start_relay(ACK_MESSAGE="")
    ts = "1700000000.000500"
    app.slack.add_message("C1", ts, "thinking…", user="UAPP", bot_id="BAPP")
    ok(app.sender.event(sr.reaction_added("U1", "+1", "C1", ts, item_user="UAPP")))
    app.slack.add_message("C1", ts, "the answer", user="UAPP", bot_id="BAPP", metadata=meta("m-5"))
    ok(app.sender.event(sr.reaction_added("U2", "+1", "C1", ts, item_user="UAPP")))
    settled(app, 1)
    assert values_of(app) == [("messages", "m-5", "thumbs_up")]


def test_vote_on_a_reply_deep_in_a_long_thread_fetches_that_reply(
    start_relay: StartRelay,
) -> None:
    app = start_relay(**WATCH)
    app.slack.replies_page = 15  # what some apps get from Slack
    root = "1700000000.000001"
    app.slack.add_message("C1", root, "question", user="U1")
    for n in range(2, 40):
        app.slack.add_message("C1", f"1700000000.{n:06d}", f"chat {n}", user="U1", thread_ts=root)
    ts = "1700000000.000040"
    app.slack.add_message(
        "C1", ts, "answer", user="UASSIST", bot_id="BASSIST", thread_ts=root, metadata=meta("m-40")
    )
    react(app, ts, "+1", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", "m-40", "thumbs_up")]


def test_vote_before_reply_seen_fetches_metadata_via_history(start_relay: StartRelay) -> None:
    app = start_relay(**WATCH)
    ts = "1700000000.000500"
    app.slack.add_message(
        "C1", ts, "answer", user="UASSIST", bot_id="BASSIST", metadata=meta("cust-msg-6")
    )
    # Top-level message: Slack's conversations.replies answers with just it, or not at all.
    app.slack.respond("conversations.replies", {"ok": False, "error": "thread_not_found"})
    react(app, ts, "+1", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-msg-6", "thumbs_up")]
    assert app.slack.calls_to("conversations.history")


def test_reply_without_metadata_mapped_from_templates(start_relay: StartRelay) -> None:
    app = start_relay(
        **WATCH,
        MESSAGE_ID_TEMPLATE="{team}-{channel}-{ts}",
        CONVERSATION_ID_TEMPLATE="conv-{channel}-{thread_ts}",
    )
    ts = "1700000000.000600"
    ok(app.sender.event(watched_reply(ts)))
    app.slack.wait_for_call("reactions.add", 2)
    react(app, ts, "+1", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", f"T1-C1-{ts}", "thumbs_up")]


def test_a_changed_template_applies_to_replies_seen_before(start_relay: StartRelay) -> None:
    """Templates are a rule: a reply mapped from them before MESSAGE_ID_TEMPLATE or
    CONVERSATION_ID_TEMPLATE changed is rated with the IDs the new ones give."""
    root = "1700000000.000001"  # watched_reply's thread
    old = {"MESSAGE_ID_TEMPLATE": "old-{ts}", "CONVERSATION_ID_TEMPLATE": "old-{thread_ts}"}
    first = start_relay(**WATCH, **old)
    seen, rated = "1700000000.000610", "1700000000.000620"
    for ts in (seen, rated):
        ok(first.sender.event(watched_reply(ts)))
    first.slack.wait_for_call("reactions.add", 4)
    react(first, rated, "+1", channel="C1")
    settled(first, 1)
    first.stop()
    new = {"MESSAGE_ID_TEMPLATE": "new-{ts}", "CONVERSATION_ID_TEMPLATE": "new-{thread_ts}"}
    later = start_relay(**WATCH, **new)
    react(later, seen, "+1", channel="C1")
    react(later, rated, "-1", user="U2", channel="C1")
    _rate_conversation(later, seen, root, 1)  # "Rate this conversation" on the thread
    settled(later, 4)
    assert sorted(values_of(later)) == [
        ("conversations", f"new-{root}", "thumbs_up"),
        ("messages", f"new-{seen}", "thumbs_up"),
        ("messages", f"new-{rated}", "thumbs_down"),
        ("messages", f"old-{rated}", "thumbs_up"),
    ]


@pytest.mark.parametrize(
    "template", [{"MESSAGE_ID_TEMPLATE": "old-{ts}"}, {"CONVERSATION_ID_TEMPLATE": "old-{ts}"}]
)
def test_a_removed_template_maps_nothing_it_mapped_before(
    start_relay: StartRelay, template: dict[str, str]
) -> None:
    root = "1700000000.000001"  # watched_reply's thread
    first = start_relay(**WATCH, **template)
    ts = "1700000000.000630"
    ok(first.sender.event(watched_reply(ts)))
    first.slack.wait_for_call("reactions.add", 2)
    first.stop()
    later = start_relay(**WATCH)
    later.slack.add_message("C1", root, "question", user="U1")
    reply = {"user": "UASSIST", "bot_id": "BASSIST", "thread_ts": root}
    later.slack.add_message("C1", ts, "bot answer", **reply)
    react(later, ts, "+1", channel="C1")  # no metadata, no template: no signal
    ok(later.sender.interaction(sr.message_shortcut("U1", "T1", "C1", ts, thread_ts=root)))
    wait_until(lambda: ephemerals(later, UNMAPPED_CONVERSATION), message="no note")
    assert later.slack.calls_to("views.open") == []
    sentinel = map_by_metadata(later, "m-sentinel", channel="C1")
    react(later, sentinel, "+1", channel="C1")
    settled(later, 1)
    assert values_of(later) == [("messages", "m-sentinel", "thumbs_up")]


@pytest.mark.parametrize("template", ["conv-{thread_ts}", "conv-{ts}"])
def test_the_conversation_template_names_a_thread_by_its_root(
    start_relay: StartRelay, template: str
) -> None:
    """A conversation is its thread: a vote on a reply in it and Rate this conversation give
    the same conversation ID, the root's, whether the template says {thread_ts} or {ts}."""
    root = "1700000000.000001"  # watched_reply's thread
    app = start_relay(**WATCH, CONVERSATION_ID_TEMPLATE=template)
    ts = "1700000000.000640"
    ok(app.sender.event(watched_reply(ts)))
    app.slack.wait_for_call("reactions.add", 2)
    react(app, ts, "-1", user="U2", channel="C1")
    _rate_conversation(app, ts, root, 1)
    settled(app, 2)
    assert sorted(values_of(app)) == [
        ("conversations", f"conv-{root}", "thumbs_down"),
        ("conversations", f"conv-{root}", "thumbs_up"),
    ]


def test_unwatched_bot_is_not_mapped_by_templates(start_relay: StartRelay) -> None:
    app = start_relay(**WATCH, MESSAGE_ID_TEMPLATE="{team}-{channel}-{ts}")
    other = "1700000000.000700"
    ok(app.sender.event(watched_reply(other, bot_id="BOTHER")))
    app.slack.add_message("C1", other, "x", user="UOTHER", bot_id="BOTHER")
    react(app, other, "+1", channel="C1")
    # A later watched reply's vote arrives; the unwatched one never did.
    ts = "1700000000.000800"
    ok(app.sender.event(watched_reply(ts)))
    react(app, ts, "+1", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", f"T1-C1-{ts}", "thumbs_up")]
    assert [c.args["timestamp"] for c in app.slack.wait_for_call("reactions.add", 2)] == [ts, ts]


def test_a_template_giving_an_id_over_1024_characters_maps_nothing(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    app = start_relay(**WATCH, MESSAGE_ID_TEMPLATE="x" * 1010 + "-{channel}-{ts}")
    ts = "1700000000.000650"
    ok(app.sender.event(watched_reply(ts)))
    react(app, ts, "+1", channel="C1")  # acked with 200 (not a 400 Slack would resend)
    click(app, ts, channel="C1", user="U2")
    note = wait_until(lambda: ephemerals(app), message="no note for the click")[0]
    assert note.args["user"] == "U2" and note.args["text"].startswith("I can't link")
    sentinel = map_by_metadata(app, "m-1", channel="C1")
    react(app, sentinel, "+1", user="U3", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", "m-1", "thumbs_up")]
    assert any("MESSAGE_ID_TEMPLATE gave" in r.getMessage() for r in caplog.records)


def test_a_reaction_set_with_a_skin_tone_is_seeded_as_given_and_counts(
    start_relay: StartRelay,
) -> None:
    app = start_relay(
        **WATCH, POSITIVE_REACTIONS="thumbsup::skin-tone-2,+1", NEGATIVE_REACTIONS="-1"
    )
    ts = "1700000000.000660"
    ok(app.sender.event(watched_reply(ts, meta("cust-msg-66"))))
    seeded = app.slack.wait_for_call("reactions.add", 2)
    assert [c.args["name"] for c in seeded] == ["thumbsup::skin-tone-2", "-1"]
    react(app, ts, "thumbsup::skin-tone-2", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-msg-66", "thumbs_up")]


def test_seed_reactions_off_adds_none(start_relay: StartRelay) -> None:
    app = start_relay(**WATCH, SEED_REACTIONS="off")
    ts = "1700000000.000900"
    ok(app.sender.event(watched_reply(ts, meta("cust-msg-7"))))
    posted = sr.message_metadata_posted(
        "C1", ts, "brixo_message", {"message_id": "cust-msg-7"}, bot_id="BASSIST"
    )
    ok(app.sender.event(posted))  # its metadata event seeds nothing either
    react(app, ts, "+1", channel="C1")
    settled(app, 1)
    # The vote's mapping came from that event, so it was handled; its follow-up too.
    app.slack.wait_for_call("chat.postEphemeral")
    assert app.slack.calls_to("reactions.add") == []
    assert app.slack.calls_to("chat.update") == []


def test_bot_reactions_give_nothing(start_relay: StartRelay) -> None:
    app = start_relay(**WATCH)
    ts = "1700000000.001000"
    ok(app.sender.event(watched_reply(ts, meta("cust-msg-8"))))
    react(app, ts, "+1", user="UBOT", channel="C1")  # the relay's own seeded reaction
    react(app, ts, "-1", user="UHELPER", channel="C1")  # a watched bot (by user ID)
    react(app, ts, "-1", user="UASSIST", channel="C1")  # the watched bot BASSIST's user
    react(app, ts, "+1", user="U7", channel="C1")  # a person: the sentinel
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-msg-8", "thumbs_up")]
    assert app.brixo.accepted[0].attributes["value"] == "thumbs_up"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, "fatal_error"),
        (500, None),  # a 500 without Slack's error code
        (200, "internal_error"),
        (200, "service_unavailable"),
        (429, None),  # a 429 without Slack's error code
        (200, b"<html>Bad gateway</html>"),  # a page that isn't JSON, from a proxy in the way
        (503, b"<html>Service unavailable</html>"),
    ],
)
def test_vote_while_slack_fails_is_redelivered_not_dropped(
    start_relay: StartRelay, status: int, error: str | bytes | None
) -> None:
    """Slack's 429 or 5xx, or an error on its side in a 200, or an answer that isn't JSON, on
    the lookup fails the event (Slack redelivers it) instead of dropping it."""
    app = start_relay(**WATCH)
    ts = "1700000000.000550"
    app.slack.add_message(
        "C1", ts, "answer", user="UASSIST", bot_id="BASSIST", metadata=meta("cust-msg-7")
    )
    answer = error if isinstance(error, bytes) else {"ok": False, "error": error}
    app.slack.respond("conversations.replies", answer, status=status)
    first = app.sender.event(sr.reaction_added("U1", "+1", "C1", ts), event_id="Ev-slack-down")
    assert first.status_code >= 500, first.status_code
    assert app.relay.outbox.counts(0)["pending"] + app.relay.outbox.counts(0)["delivered"] == 0
    app.slack.reset_response("conversations.replies")
    ok(react(app, ts, "+1", channel="C1", event_id="Ev-slack-down", retry_num=1))
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-msg-7", "thumbs_up")]


def _metadata_event(ts: str, message_id: str, conversation_id: str) -> dict[str, Any]:
    """The watched bot's `message_metadata_posted` event for its reply `ts`."""
    payload = {"message_id": message_id, "conversation_id": conversation_id}
    return sr.message_metadata_posted(
        "C1", ts, "brixo_message", payload, bot_id="BASSIST", user_id="UASSIST"
    )


def _rate_conversation(
    app: RunningRelay, ts: str, root: str, count: int, channel: str = "C1"
) -> None:
    """👍 on the thread through the shortcut on reply `ts` (the `count`-th modal opened)."""
    ok(app.sender.interaction(sr.message_shortcut("U1", "T1", channel, ts, thread_ts=root)))
    view = opened_view(app, count)
    up = rating_values("up")
    ok(app.sender.interaction(sr.view_submission("U1", "T1", view, up)))


def test_metadata_added_by_an_update_maps_a_placeholder_reply(start_relay: StartRelay) -> None:
    """An assistant posts "thinking…", then updates it with the answer and its IDs."""
    app = start_relay(ACK_MESSAGE="")  # metadata only: no watched bots, no templates
    ts = "1700000000.001000"
    updated = {
        **_metadata_event(ts, "m-final", "c-final"),
        "type": "message_metadata_updated",
        "previous_metadata": None,
    }
    ok(app.sender.event(updated))
    react(app, ts, "+1", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", "m-final", "thumbs_up")]


def test_metadata_replaces_a_template_mapping_and_never_the_reverse(
    start_relay: StartRelay,
) -> None:
    app = start_relay(
        **WATCH, MESSAGE_ID_TEMPLATE="tpl-{ts}", CONVERSATION_ID_TEMPLATE="tpl-conv-{thread_ts}"
    )
    root, ts = "1700000000.000001", "1700000000.001100"
    ok(app.sender.event(watched_reply(ts, thread_ts=root)))  # no metadata: the templates
    ok(app.sender.event(_metadata_event(ts, "real-mid", "real-conv")))
    react(app, ts, "+1", channel="C1")
    settled(app, 1)
    _rate_conversation(app, ts, root, 1)
    settled(app, 2)
    # Seen again without metadata (another event for the same reply): the metadata stays.
    ok(app.sender.event(watched_reply(ts, thread_ts=root)))
    react(app, ts, "-1", user="U2", channel="C1")
    settled(app, 3)
    # The other order: metadata first, then the reply's own event (its thread comes with it).
    other_root, other = "1700000000.002000", "1700000000.002100"
    ok(app.sender.event(_metadata_event(other, "real-mid-2", "real-conv-2")))
    ok(app.sender.event(watched_reply(other, thread_ts=other_root)))
    react(app, other, "+1", channel="C1")
    settled(app, 4)
    _rate_conversation(app, other, other_root, 2)
    settled(app, 5)
    assert values_of(app) == [
        ("messages", "real-mid", "thumbs_up"),
        ("conversations", "real-conv", "thumbs_up"),
        ("messages", "real-mid", "thumbs_down"),
        ("messages", "real-mid-2", "thumbs_up"),
        ("conversations", "real-conv-2", "thumbs_up"),
    ]


def test_posted_mapping_outranks_metadata_seen_later(start_relay: StartRelay) -> None:
    app = start_relay(ASK_COMMENT="never", ASSISTANT_BOT_IDS="BASSIST")
    root = "1700000000.003000"
    reply = ask_agent(app, "hi", ts=root)
    event = sr.message_metadata_posted(
        "D1", reply, "brixo_message", {"message_id": "other", "conversation_id": "other-conv"}
    )
    ok(app.sender.event(event))
    click(app, reply, "up", thread_ts=root)
    settled(app, 1)
    _rate_conversation(app, reply, root, 1, channel="D1")
    settled(app, 2)
    assert values_of(app) == [
        ("messages", "msg-1", "thumbs_up"),
        ("conversations", f"conv-{root}", "thumbs_up"),
    ]


def test_rate_limited_lookup_before_the_ack_fails_fast(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """A 429 on the first vote's lookup is not waited out (Retry-After 2 s would hold the ack
    past Slack's 3 s): the request fails at once and Slack's redelivery is taken."""
    app = start_relay(**WATCH)
    ts = "1700000000.000560"
    app.slack.add_message(
        "C1", ts, "answer", user="UASSIST", bot_id="BASSIST", metadata=meta("cust-msg-9")
    )
    app.slack.fail_next("conversations.replies", 1, status=429, retry_after="2")
    started = monotonic()
    first = app.sender.event(sr.reaction_added("U1", "+1", "C1", ts), event_id="Ev-limited")
    assert monotonic() - started < 1.5
    assert first.status_code >= 500, first.status_code
    assert len(app.slack.calls_to("conversations.replies")) == 1
    said = [r for r in caplog.records if "before the ack" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in said] == [("WARNING", None)], said  # no traceback
    ok(react(app, ts, "+1", channel="C1", event_id="Ev-limited", retry_num=1))
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-msg-9", "thumbs_up")]


def test_slow_lookup_before_the_ack_fails_with_a_warning_and_the_redelivery_counts(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack slower than the lookup's timeout is Slack's trouble, not the relay's: one WARNING
    without a traceback, a 500 so that Slack redelivers, and the redelivery's one signal."""
    app = start_relay(**WATCH)
    ts = "1700000000.000570"
    app.slack.add_message(
        "C1", ts, "answer", user="UASSIST", bot_id="BASSIST", metadata=meta("cust-msg-10")
    )
    app.slack.delay_next("conversations.replies", LOOKUP_TIMEOUT + 0.5)
    first = app.sender.event(sr.reaction_added("U1", "+1", "C1", ts), event_id="Ev-slow")
    assert first.status_code >= 500, first.status_code
    said = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "bot.slack"]
    assert [(r.levelname, r.exc_info) for r in said] == [("WARNING", None)], said
    assert "before the ack" in said[0].getMessage()
    ok(react(app, ts, "+1", channel="C1", event_id="Ev-slow", retry_num=1))
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-msg-10", "thumbs_up")]


def test_a_reactions_lookups_before_the_ack_end_within_one_budget(start_relay: StartRelay) -> None:
    """A reaction on another app's top-level message not seen yet may need three calls
    (users.info, conversations.replies, conversations.history): each slow but within its own
    timeout, together they would keep Slack waiting past its 3 s. They end within
    LOOKUP_BUDGET instead, with a 500, and Slack's redelivery counts."""
    app = start_relay(**WATCH)
    ts = "1700000000.000572"
    app.slack.add_message("C1", ts, "answer", user="UAPP", bot_id="BAPP", metadata=meta("m-72"))
    app.slack.respond("conversations.replies", {"ok": True, "messages": []})  # history then
    for method in ("users.info", "conversations.replies", "conversations.history"):
        app.slack.delay_next(method, LOOKUP_TIMEOUT - 0.1)
    reaction = sr.reaction_added("U1", "+1", "C1", ts, item_user="UAPP")
    started = monotonic()
    first = app.sender.event(reaction, event_id="Ev-budget")
    assert monotonic() - started < LOOKUP_BUDGET + 0.6
    assert first.status_code >= 500, first.status_code
    ok(app.sender.event(reaction, event_id="Ev-budget", retry_num=1))
    settled(app, 1)
    assert values_of(app) == [("messages", "m-72", "thumbs_up")]


def test_slacks_last_delivery_of_a_reaction_is_acked_and_looked_up_after_the_ack(
    start_relay: StartRelay,
) -> None:
    """Slack sends a failed event three times more, then never again: on its last retry a
    lookup refused before the ack is no 500 (a lost vote) but a 200, and the reply is looked up
    again after the ack, with the client's retries."""
    app = start_relay(**WATCH)
    ts = "1700000000.000575"
    app.slack.add_message(
        "C1", ts, "answer", user="UASSIST", bot_id="BASSIST", metadata=meta("cust-msg-11")
    )
    app.slack.fail_next("conversations.replies", 3, status=429, retry_after="0")
    reaction = sr.reaction_added("U1", "+1", "C1", ts)
    for retry in (None, 1, 2):  # Slack sends these again
        answer = app.sender.event(reaction, event_id="Ev-last", retry_num=retry)
        assert answer.status_code >= 500, (retry, answer.status_code)
    app.slack.fail_next("conversations.replies", 1, status=429, retry_after="0")
    ok(app.sender.event(reaction, event_id="Ev-last", retry_num=3))
    app.brixo.wait_for_accepted(1)  # recorded after the ack
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-msg-11", "thumbs_up")]


def test_a_reaction_slack_never_lets_the_relay_look_up_is_logged_with_its_reply(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """When Slack still fails after the ack of its last delivery, the lost vote is one ERROR
    line naming the reply and the person, so that it can be sent by hand."""
    app = start_relay(**WATCH)
    ts = "1700000000.000576"
    app.slack.add_message(
        "C1", ts, "answer", user="UASSIST", bot_id="BASSIST", metadata=meta("cust-msg-12")
    )
    app.slack.respond("conversations.replies", {"ok": False, "error": "fatal_error"}, status=500)
    reaction = sr.reaction_added("U1", "-1", "C1", ts)
    ok(app.sender.event(reaction, event_id="Ev-lost", retry_num=3))

    def lost() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "reaction not recorded" in r.getMessage()]

    said = wait_until(lost, message="the lost reaction was never logged")
    assert said[0].levelname == "ERROR"
    assert all(part in said[0].getMessage() for part in ("user=U1", "channel=C1", f"ts={ts}"))
    assert app.relay.outbox.counts(0)["pending"] + app.relay.outbox.counts(0)["delivered"] == 0
    assert not app.brixo.accepted


def test_watched_bots_users_are_known_to_every_process_and_the_next_start(
    start_relay: StartRelay,
) -> None:
    """Users of bots listed by bot ID, learnt from a metadata event and from a fetched reply,
    are kept: a relay started later on the same database ignores their reactions."""
    watch = {**WATCH, "ASSISTANT_BOT_IDS": "BASSIST,BSECOND"}
    first = start_relay(**watch)
    ok(first.sender.event(_metadata_event("1700000000.004000", "m-first", "c-first")))
    fetched = "1700000000.004100"
    first.slack.add_message(
        "C1", fetched, "answer", user="USECOND", bot_id="BSECOND", metadata=meta("m-fetched")
    )
    react(first, fetched, "+1", channel="C1")  # a person's first vote: the reply is fetched
    settled(first, 1)
    later = start_relay(**watch)
    ts = map_by_metadata(later, "m-later")
    react(later, ts, "-1", user="UASSIST", channel="C1")
    react(later, ts, "-1", user="USECOND", channel="C1")
    react(later, ts, "+1", user="U7", channel="C1")  # a person: the sentinel
    settled(later, 2)
    assert values_of(later) == [
        ("messages", "m-fetched", "thumbs_up"),
        ("messages", "m-later", "thumbs_up"),
    ]


def _click_on_unseen_reply(app: RunningRelay, ts: str, message_id: str) -> float:
    """👍 click on a reply with metadata that the relay hasn't seen; returns the ack's time."""
    app.slack.add_message(
        "C1", ts, "answer", user="UASSIST", bot_id="BASSIST", metadata=meta(message_id)
    )
    started = monotonic()
    click(app, ts, "up", channel="C1")  # asserts the 200
    return monotonic() - started


def test_a_click_whose_lookup_is_refused_before_the_ack_is_recorded_after_it(
    start_relay: StartRelay,
) -> None:
    """Slack never sends a click again: a 429 on the lookup before the ack is not a 500 (a lost
    vote) but a 200, and the lookup is made again after the ack, with the client's retries."""
    app = start_relay(**WATCH)
    app.slack.fail_next("conversations.replies", 1, status=429, retry_after="2")
    assert _click_on_unseen_reply(app, "1700000000.000610", "cust-click-1") < 1.5
    app.brixo.wait_for_accepted(1)  # recorded after the ack
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-click-1", "thumbs_up")]
    assert len(app.slack.calls_to("conversations.replies")) == 2
    wait_until(lambda: ephemerals(app, "Thanks for your feedback!"), message="no thanks")


def test_a_click_whose_lookup_is_too_slow_before_the_ack_is_recorded_after_it(
    start_relay: StartRelay,
) -> None:
    app = start_relay(**WATCH)
    slow = {"left": 1}

    def replies(args: dict[str, Any]) -> dict[str, Any]:
        if slow["left"]:
            slow["left"] -= 1
            time.sleep(1.6)  # the stand-in answers late: past the 1 s lookup timeout
        found = app.slack.find_message("C1", str(args.get("ts")))
        return {"ok": True, "messages": [found] if found else []}

    app.slack.respond("conversations.replies", replies)
    assert _click_on_unseen_reply(app, "1700000000.000620", "cust-click-2") < 1.5
    app.brixo.wait_for_accepted(1)  # recorded after the ack
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-click-2", "thumbs_up")]


def test_a_click_whose_lookup_slack_fails_in_a_200_is_recorded_after_the_ack(
    start_relay: StartRelay,
) -> None:
    """Slack's `internal_error` (HTTP 200) on the lookup before the ack is a failure for now,
    not an unknown message: the lookup is made again after the ack."""
    app = start_relay(**WATCH)
    failed: set[str] = set()

    def failing_once(method: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def answer(args: dict[str, Any]) -> dict[str, Any]:
            if method not in failed:
                failed.add(method)
                return {"ok": False, "error": "internal_error"}
            found = app.slack.find_message("C1", str(args.get("ts") or args.get("latest")))
            return {"ok": True, "messages": [found] if found else []}

        return answer

    for method in ("conversations.replies", "conversations.history"):
        app.slack.respond(method, failing_once(method))
    _click_on_unseen_reply(app, "1700000000.000615", "cust-click-4")
    app.brixo.wait_for_accepted(1)  # recorded after the ack
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-click-4", "thumbs_up")]
    assert ephemerals(app, UNMAPPED_NOTE) == []


def test_a_click_slack_cannot_look_up_even_after_the_ack_gets_a_note(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    app = start_relay(**WATCH)
    app.slack.fail_next("conversations.replies", 10, status=503)
    _click_on_unseen_reply(app, "1700000000.000630", "cust-click-3")
    note = wait_until(lambda: ephemerals(app, UNAVAILABLE_NOTE), message="no note")
    assert note[0].args["user"] == "U1"
    assert app.brixo.accepted == [] and outbox(app)["pending"] == 0
    assert any("vote click not recorded" in r.getMessage() for r in caplog.records)


def test_the_conversation_template_rates_only_threads_an_assistant_replied_in(
    start_relay: StartRelay,
) -> None:
    app = start_relay(**WATCH, CONVERSATION_ID_TEMPLATE="conv-{channel}-{thread_ts}")
    people, answered = "1700000000.000100", "1700000000.000200"
    app.slack.add_message("C1", people, "lunch?", user="U1")
    app.slack.add_message("C1", "1700000000.000101", "sure", user="U2", thread_ts=people)
    app.slack.add_message("C1", answered, "how?", user="U1")
    reply = {"user": "UASSIST", "bot_id": "BASSIST", "thread_ts": answered}
    app.slack.add_message("C1", "1700000000.000201", "like this", **reply)
    # A thread of people only is no assistant conversation: a note, no modal.
    ok(app.sender.interaction(sr.message_shortcut("U1", "T1", "C1", people, thread_ts=people)))
    wait_until(lambda: ephemerals(app, UNMAPPED_CONVERSATION), message="no note")
    assert app.slack.calls_to("views.open") == []
    # The watched bot replied in the other thread (unseen by the relay): the template rates it.
    _rate_conversation(app, answered, answered, 1)
    settled(app, 1)
    assert values_of(app) == [("conversations", f"conv-C1-{answered}", "thumbs_up")]


def test_rating_an_unseen_thread_takes_its_conversation_from_the_threads_metadata(
    start_relay: StartRelay,
) -> None:
    """Without templates, "Rate this conversation" on a thread whose replies the relay never
    saw fetches the thread with its metadata: a reply's brixo_message conversation_id rates
    it."""
    app = start_relay(**WATCH)
    root, ts = "1700000000.000730", "1700000000.000740"
    app.slack.add_message("C1", root, "question", user="U1")
    reply = {"user": "UASSIST", "bot_id": "BASSIST", "thread_ts": root}
    app.slack.add_message("C1", ts, "answer", **reply, metadata=meta("m-73", "conv-73"))
    _rate_conversation(app, root, root, 1)
    settled(app, 1)
    assert values_of(app) == [("conversations", "conv-73", "thumbs_up")]
    assert ephemerals(app, UNMAPPED_CONVERSATION) == []


def test_a_shortcut_slack_cannot_look_up_gets_a_note(start_relay: StartRelay) -> None:
    app = start_relay(**WATCH)
    root = "1700000000.000700"
    app.slack.add_message("C1", root, "question", user="U1")
    app.slack.fail_next("conversations.replies", 10, status=503)
    ok(app.sender.interaction(sr.message_shortcut("U1", "T1", "C1", root, thread_ts=root)))
    wait_until(lambda: ephemerals(app, UNAVAILABLE_THREAD), message="no note")
    assert app.slack.calls_to("views.open") == []


def test_a_shortcut_from_a_conversation_the_app_is_not_in_gets_its_note_by_response_url(
    start_relay: StartRelay,
) -> None:
    """chat.postEphemeral can't reach a DM between people; the shortcut's response_url can."""
    app = start_relay(**WATCH)
    root = "1700000000.000710"
    app.slack.respond("chat.postEphemeral", {"ok": False, "error": "channel_not_found"})
    shortcut = sr.message_shortcut(
        "U1", "T1", "DPEOPLE", root, thread_ts=root, response_url=app.slack.response_url()
    )
    ok(app.sender.interaction(shortcut))
    posted = app.slack.wait_for_call(RESPONSE_URL)
    assert posted[0].args == {
        "text": UNMAPPED_CONVERSATION,
        "response_type": "ephemeral",
        "replace_original": False,
    }
    assert app.slack.calls_to("views.open") == []


def test_a_rating_slack_refuses_to_open_gets_a_note(start_relay: StartRelay) -> None:
    app = start_relay(**WATCH)
    root = map_by_metadata(app, "m-1", channel="C1", conversation_id="c-1")
    app.slack.respond("views.open", {"ok": False, "error": "expired_trigger_id"})
    ok(app.sender.interaction(sr.message_shortcut("U1", "T1", "C1", root, thread_ts=root)))
    note = wait_until(lambda: ephemerals(app, NOT_OPENED), message="no note")
    assert note[0].args["user"] == "U1"


def test_a_rate_limited_shortcut_lookup_is_not_waited_out(start_relay: StartRelay) -> None:
    """The modal's trigger_id lapses 3 s after the shortcut: a 429 on the thread's lookup
    gets the note at once instead of a modal Slack would refuse after Retry-After."""
    app = start_relay(**WATCH)
    root = "1700000000.000720"
    app.slack.add_message("C1", root, "question", user="U1")
    app.slack.fail_next("conversations.replies", 1, status=429, retry_after="5")
    started = monotonic()
    ok(app.sender.interaction(sr.message_shortcut("U1", "T1", "C1", root, thread_ts=root)))
    wait_until(lambda: ephemerals(app, UNAVAILABLE_THREAD), message="no note")
    assert monotonic() - started < 3
    assert len(app.slack.calls_to("conversations.replies")) == 1
    assert app.slack.calls_to("views.open") == []


def test_reactions_by_other_apps_bots_are_no_votes(start_relay: StartRelay) -> None:
    """Slack says who is a bot (users.info), asked once per user after the ack: a reacji
    bot's 👍 on a mapped reply is no vote; a person's are, and their second asks nothing."""
    app = start_relay(**WATCH)
    app.slack.bot_users.add("UREACJI")
    ts = map_by_metadata(app, "m-bots")
    react(app, ts, "+1", user="UREACJI", channel="C1")
    react(app, ts, "+1", user="U7", channel="C1")
    app.brixo.wait_for_accepted(1)
    react(app, ts, "-1", user="U7", channel="C1", event_ts="1700000001.000001")
    settled(app, 2)
    assert values_of(app) == [
        ("messages", "m-bots", "thumbs_up"),
        ("messages", "m-bots", "thumbs_down"),
    ]
    asked = [c.args["user"] for c in app.slack.calls_to("users.info")]
    assert sorted(asked) == ["U7", "UREACJI"]
    assert ephemerals(app, "Thanks for your feedback!")[0].args["user"] == "U7"  # not the bot
    react(app, ts, "-1", user="UREACJI", channel="C1", event_ts="1700000001.000002")
    settled(app, 2)  # a bot already known is turned away before anything is stored
    assert outbox(app)["pending"] == 0 and len(app.slack.calls_to("users.info")) == 2


def test_a_new_users_reaction_is_acked_at_once_and_held_until_slack_says_who_it_is(
    start_relay: StartRelay,
) -> None:
    """Slack is asked after the ack, never before it; the act waits for the answer."""
    app = start_relay(**WATCH)
    ts = map_by_metadata(app, "m-later")
    asked, answer = threading.Event(), threading.Event()

    def users_info(args: dict[str, Any]) -> dict[str, Any]:
        asked.set()
        answer.wait(10)
        return {"ok": True, "user": {"id": args.get("user"), "is_bot": False}}

    app.slack.respond("users.info", users_info)
    started = monotonic()
    react(app, ts, "+1", user="U8", channel="C1")
    assert monotonic() - started < 1.0  # acked while users.info is still unanswered
    assert asked.wait(10), "Slack was never asked who U8 is"
    assert app.brixo.accepted == [] and outbox(app)["pending"] == 1  # stored, held
    answer.set()
    app.brixo.wait_for_accepted(1)
    settled(app, 1)
    assert values_of(app) == [("messages", "m-later", "thumbs_up")]


def test_without_users_read_a_reaction_counts_as_a_persons(start_relay: StartRelay) -> None:
    """An install from before the relay asked for users:read keeps working."""
    app = start_relay(**WATCH)
    app.slack.respond("users.info", {"ok": False, "error": "missing_scope"})
    ts = map_by_metadata(app, "m-old-install")
    react(app, ts, "+1", user="U9", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", "m-old-install", "thumbs_up")]


def test_a_vote_on_an_unseen_reply_counts_while_slack_cannot_say_who_wrote_it(
    start_relay: StartRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While users.info fails, the reply's author is not taken for a person (whose messages
    are never fetched): the unseen reply is fetched, and once Slack still can't say who
    reacted after the retries, the reaction counts."""
    monkeypatch.setattr("bot.slack.listeners.events.USER_CHECK_RETRIES", (0.05, 0.05, 0.05))
    app = start_relay(**WATCH)
    app.slack.respond("users.info", {"ok": False, "error": "internal_error"})  # no client retry
    ts = "1700000000.001150"
    app.slack.add_message(
        "C1", ts, "answer", user="UASSIST", bot_id="BASSIST", metadata=meta("m-unsure")
    )
    ok(app.sender.event(sr.reaction_added("U1", "+1", "C1", ts, item_user="UASSIST")))
    settled(app, 1)
    assert values_of(app) == [("messages", "m-unsure", "thumbs_up")]
    asked = [c.args["user"] for c in app.slack.calls_to("users.info")]
    assert asked[0] == "UASSIST"
    assert asked.count("U1") == 4  # the first try and USER_CHECK_RETRIES


@pytest.mark.parametrize("failure", ["internal_error", "ratelimited"])
def test_a_bots_reaction_is_no_vote_when_slack_says_who_it_is_only_on_a_later_try(
    start_relay: StartRelay, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """Slack failing to say whether a new user is a bot (an error on its side, a 429 through
    the client's retries) is asked again after a wait, the act's hold stretched meanwhile
    (each wait here is longer than the first hold): a bot's reaction never becomes a vote,
    nor gets thanks."""
    monkeypatch.setattr("bot.slack.listeners.events.USER_CHECK_HOLD", 1.5)
    monkeypatch.setattr("bot.slack.listeners.events.USER_CHECK_RETRIES", (2.0, 2.0, 2.0))
    app = start_relay(**WATCH)
    failing = [2 if failure == "internal_error" else 0]

    def users_info(args: dict[str, Any]) -> dict[str, Any]:
        if failing[0] > 0:
            failing[0] -= 1
            return {"ok": False, "error": "internal_error"}
        user = str(args.get("user"))
        return {"ok": True, "user": {"id": user, "is_bot": user == "UOTHERBOT"}}

    app.slack.respond("users.info", users_info)
    if failure == "ratelimited":  # the client's two retries included: one try fails
        app.slack.fail_next("users.info", 3, status=429, retry_after="0")
    ts = map_by_metadata(app, "m-retry-who")
    react(app, ts, "+1", user="UOTHERBOT", channel="C1")
    tries = 3 if failure == "internal_error" else 4  # HTTP calls until Slack answers
    wait_until(lambda: len(app.slack.calls_to("users.info")) >= tries, message="not asked again")
    wait_until(lambda: outbox(app)["pending"] == 0, message="the bot's act was not discarded")
    react(app, ts, "-1", user="U7", channel="C1")  # a person: the sentinel
    settled(app, 1)
    assert values_of(app) == [("messages", "m-retry-who", "thumbs_down")]
    assert [e.args["user"] for e in ephemerals(app, "Thanks for your feedback!")] == ["U7"]


def test_slackbots_reactions_are_no_votes(start_relay: StartRelay) -> None:
    """Slackbot is no person, though users.info says `is_bot: false` for USLACKBOT."""
    app = start_relay(**WATCH)
    ts = map_by_metadata(app, "m-slackbot")
    react(app, ts, "+1", user="USLACKBOT", channel="C1")
    react(app, ts, "-1", user="U7", channel="C1")  # a person: the sentinel
    settled(app, 1)
    assert values_of(app) == [("messages", "m-slackbot", "thumbs_down")]
    assert "USLACKBOT" in [c.args["user"] for c in app.slack.calls_to("users.info")]


def test_metadata_of_another_event_type_maps_nothing(start_relay: StartRelay) -> None:
    """Only `brixo_message` metadata carries the customer's IDs: another app's metadata with
    a message_id field, in a message event, a metadata event or a fetched reply, is none."""
    app = start_relay(**WATCH)
    other = {"event_type": "ticket_created", "event_payload": {"message_id": "not-brixo"}}
    in_event, by_metadata_event, fetched = (
        "1700000000.001200",
        "1700000000.001300",
        "1700000000.001400",
    )
    ok(app.sender.event(watched_reply(in_event, other)))
    ok(
        app.sender.event(
            sr.message_metadata_posted(
                "C1", by_metadata_event, "ticket_created", {"message_id": "not-brixo"}
            )
        )
    )
    app.slack.add_message("C1", fetched, "answer", user="UASSIST", bot_id="BASSIST", metadata=other)
    for ts in (in_event, by_metadata_event, fetched):
        react(app, ts, "+1", user="U7", channel="C1")
    sentinel = map_by_metadata(app, "cust-msg-sentinel")
    react(app, sentinel, "-1", user="U7", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-msg-sentinel", "thumbs_down")]


def test_a_watched_bots_bot_message_is_mapped_and_seeded(start_relay: StartRelay) -> None:
    """Watched bots posting with the `bot_message` subtype (legacy bots, webhooks) are
    observed as they post: mapped from their metadata and seeded with 👍/👎."""
    app = start_relay(**WATCH)
    ts = "1700000000.001500"
    event = watched_reply(ts, meta("cust-msg-legacy"))
    event["subtype"] = "bot_message"
    ok(app.sender.event(event))
    adds = app.slack.wait_for_call("reactions.add", 2)
    assert sorted(c.args["name"] for c in adds) == ["+1", "-1"]
    assert {(c.args["channel"], c.args["timestamp"]) for c in adds} == {("C1", ts)}
    react(app, ts, "+1", user="U7", channel="C1")
    settled(app, 1)
    assert values_of(app) == [("messages", "cust-msg-legacy", "thumbs_up")]
    assert app.slack.calls_to("conversations.replies") == []  # mapped as it was posted
