"""Votes end to end: buttons, reactions, the conversation shortcut, and what reaches Brixo."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import BRIXO_KEY
from tests.fakes import slack_requests as sr
from tests.slack_harness import RunningRelay, StartRelay
from tests.test_slack_support import (
    ask_agent,
    click,
    comment_values,
    ephemerals,
    map_by_metadata,
    ok,
    opened_view,
    rating_values,
    react,
    settled,
    values_of,
)
from tests.waiting import wait_until

NEVER = {"ASK_COMMENT": "never"}
UNMAPPED_NOTE_START = "I can't link this message"


def test_click_signal_is_exactly_the_reference_request(start_relay: StartRelay) -> None:
    app = start_relay(**NEVER)
    reply = ask_agent(app, "hi", ts="1700000000.000100")
    action = sr.feedback_button_action("up")
    action["action_ts"] = "1700000000.123456"
    click(app, reply, action=action, thread_ts="1700000000.000100")
    settled(app, 1)
    got = app.brixo.accepted[0]
    assert got.raw_path == "/v1/messages/msg-1/signals"
    assert got.method == "POST"
    assert got.headers["content-type"] == "application/vnd.api+json"
    assert got.headers["authorization"] == f"Bearer {BRIXO_KEY}"
    # Exactly these members, in this order, nothing else (no user_message without a comment).
    assert json.loads(got.body, object_pairs_hook=list) == [
        (
            "data",
            [
                ("type", "signals"),
                (
                    "attributes",
                    [
                        ("name", "feedback"),
                        ("value", "thumbs_up"),
                        ("occurred_at", "2023-11-14T22:13:20.123Z"),
                    ],
                ),
            ],
        )
    ]


@pytest.mark.parametrize(
    "action_ts",
    # The last two: in the future (the year 5138, and an hour ahead), no time a person acted.
    ["0", "-1", "1e13", "inf", "nan", "99999999999.0", "in an hour"],
)
def test_a_click_time_slack_could_not_have_sent_is_taken_as_now(
    start_relay: StartRelay, action_ts: str
) -> None:
    """occurred_at is always sent, RFC 3339: an action_ts that is no plausible epoch time
    gives the time the click arrived, never 1970, a year beyond 9999, or an act that can't go."""
    app = start_relay(**NEVER)
    ts = map_by_metadata(app, "m-1")
    action = sr.feedback_button_action("up")
    action["action_ts"] = f"{time.time() + 3600:.6f}" if action_ts == "in an hour" else action_ts
    before = time.time()
    click(app, ts, channel="C1", action=action)
    settled(app, 1)
    sent = app.brixo.accepted[0].attributes["occurred_at"]
    when = datetime.fromisoformat(sent.replace("Z", "+00:00")).timestamp()
    assert before - 1 <= when <= time.time() + 1, sent


ODD_IDS = [
    "a/b c",
    "ünï cödé ✓",
    "what?#frag",
    "100%",
    "..",
    ".",
    "../../v1/conversations/x",
]


@pytest.mark.parametrize("odd", [pytest.param(odd, id=repr(odd)) for odd in ODD_IDS])
def test_odd_customer_ids_arrive_intact(start_relay: StartRelay, odd: str) -> None:
    app = start_relay(**NEVER)
    ts = map_by_metadata(app, odd, f"conv {odd}")
    react(app, ts, "+1", channel="C1")
    settled(app, 1)
    got = app.brixo.accepted[0]
    assert (got.kind, got.id) == ("messages", odd)
    assert got.raw_path.count("/") == 4


def test_classic_buttons(start_relay: StartRelay) -> None:
    app = start_relay(**NEVER)
    up = map_by_metadata(app, "m-up")
    down = map_by_metadata(app, "m-down")
    click(app, up, channel="C1", action=sr.button_action("brixo_vote_up", "up"))
    click(app, down, channel="C1", action=sr.button_action("brixo_vote_down", "down"))
    settled(app, 2)
    assert sorted(values_of(app)) == [
        ("messages", "m-down", "thumbs_down"),
        ("messages", "m-up", "thumbs_up"),
    ]


@pytest.mark.parametrize(
    ("reaction", "value"),
    [
        ("+1", "thumbs_up"),
        ("thumbsup", "thumbs_up"),
        ("+1::skin-tone-3", "thumbs_up"),
        ("-1", "thumbs_down"),
        ("thumbsdown::skin-tone-6", "thumbs_down"),
    ],
)
def test_default_reactions(start_relay: StartRelay, reaction: str, value: str) -> None:
    app = start_relay(**NEVER)
    ts = map_by_metadata(app, "m-1")
    react(app, "9.9", "+1", channel="C1")  # unmapped: silent
    react(app, ts, "heart", channel="C1")  # not a vote
    react(app, ts, reaction, channel="C1", event_ts="1700000001.500000")
    settled(app, 1)
    assert values_of(app) == [("messages", "m-1", value)]
    assert app.brixo.accepted[0].attributes["occurred_at"] == "2023-11-14T22:13:21.500Z"


def test_custom_reaction_sets_replace_the_defaults(start_relay: StartRelay) -> None:
    app = start_relay(**NEVER, POSITIVE_REACTIONS="rocket,:tada:", NEGATIVE_REACTIONS="poop")
    one, two, three, four = (map_by_metadata(app, f"m-{n}") for n in (1, 2, 3, 4))
    react(app, four, "+1", channel="C1")  # no longer a vote, on a reply of its own
    react(app, four, "thumbsdown::skin-tone-3", channel="C1")
    react(app, one, "rocket", channel="C1")
    react(app, two, "tada::skin-tone-2", channel="C1")
    react(app, three, "poop", channel="C1")
    settled(app, 3)
    assert sorted(values_of(app)) == [
        ("messages", "m-1", "thumbs_up"),
        ("messages", "m-2", "thumbs_up"),
        ("messages", "m-3", "thumbs_down"),
    ]


def test_a_reaction_set_with_a_skin_tone_counts_that_reaction_in_every_tone(
    start_relay: StartRelay,
) -> None:
    app = start_relay(**NEVER, POSITIVE_REACTIONS="+1::skin-tone-3", NEGATIVE_REACTIONS="-1")
    one, two = map_by_metadata(app, "m-1"), map_by_metadata(app, "m-2")
    react(app, one, "+1::skin-tone-3", channel="C1")  # the reaction exactly as configured
    react(app, two, "+1", channel="C1")
    settled(app, 2)
    assert sorted(values_of(app)) == [
        ("messages", "m-1", "thumbs_up"),
        ("messages", "m-2", "thumbs_up"),
    ]


def test_a_reaction_set_counts_both_of_slacks_names_for_a_thumb(start_relay: StartRelay) -> None:
    """Slack's events may name 👍 `+1` or `thumbsup`: a set listing one counts the other."""
    app = start_relay(**NEVER, POSITIVE_REACTIONS="thumbsup", NEGATIVE_REACTIONS="-1::skin-tone-2")
    one, two = map_by_metadata(app, "m-1"), map_by_metadata(app, "m-2")
    react(app, one, "+1::skin-tone-4", channel="C1")
    react(app, two, "thumbsdown", channel="C1")
    settled(app, 2)
    assert sorted(values_of(app)) == [
        ("messages", "m-1", "thumbs_up"),
        ("messages", "m-2", "thumbs_down"),
    ]


@pytest.mark.parametrize(
    "conversation", ["💬" * 1024, "c" + "\x01" * 1023], ids=["emoji", "control characters"]
)
def test_a_conversation_id_of_1024_characters_is_rated_through_the_shortcut(
    start_relay: StartRelay, conversation: str
) -> None:
    """The modal's private_metadata stays within Slack's 3000 characters, whatever the ID
    (JSON writes a control character in six)."""
    app = start_relay(**NEVER)
    root = "1700000000.000210"
    app.slack.add_message("C1", root, "question", user="U1")
    ts = map_by_metadata(app, "m-1", conversation, channel="C1")
    ok(app.sender.interaction(sr.message_shortcut("U1", "T1", "C1", ts, thread_ts=root)))
    view = opened_view(app)
    assert len(view["private_metadata"]) <= 3000
    values = rating_values("up")
    ok(app.sender.interaction(sr.view_submission("U1", "T1", view, values)))
    settled(app, 1)
    assert values_of(app) == [("conversations", conversation, "thumbs_up")]


def rate_an_answer(app: RunningRelay, root: str) -> dict[str, Any]:
    """Ask the agent in a thread, then use the shortcut on its answer; returns the shortcut."""
    reply = ask_agent(app, "hi", ts=root)
    shortcut = sr.message_shortcut("U1", "T1", "D1", reply, thread_ts=root)
    ok(app.sender.interaction(shortcut))
    return shortcut


def test_rate_conversation_shortcut(start_relay: StartRelay) -> None:
    app = start_relay()
    root = "1700000000.000200"
    rate_an_answer(app, root)
    view = opened_view(app)
    assert app.slack.calls_to("views.open")[0].args["trigger_id"] == "trig-2"
    assert view["callback_id"] == "brixo_rate_conversation"
    values = {**rating_values("down"), **comment_values("  went in circles ")}
    ok(app.sender.interaction(sr.view_submission("U1", "T1", view, values)))
    settled(app, 1)
    got = app.brixo.accepted[0]
    assert (got.kind, got.id) == ("conversations", f"conv-{root}")
    assert got.attributes["value"] == "thumbs_down"
    assert got.attributes["user_message"] == "went in circles"
    # Without a comment: no user_message; and a shortcut on the root finds the same thread.
    ok(app.sender.interaction(sr.message_shortcut("U2", "T1", "D1", root, thread_ts=root)))
    view = opened_view(app, 2)
    ok(app.sender.interaction(sr.view_submission("U2", "T1", view, rating_values("up"))))
    settled(app, 2)
    assert "user_message" not in app.brixo.accepted[1].attributes
    assert app.brixo.accepted[1].id == f"conv-{root}"


def test_a_replayed_rating_submission_gives_no_second_signal(start_relay: StartRelay) -> None:
    app = start_relay()
    shortcut = rate_an_answer(app, "1700000000.000250")
    down = sr.view_submission("U1", "T1", opened_view(app), rating_values("down"))
    ok(app.sender.interaction(down))
    ok(app.sender.interaction(shortcut))  # changed their mind, in a new modal
    up = rating_values("up")
    ok(app.sender.interaction(sr.view_submission("U1", "T1", opened_view(app, 2), up)))
    ok(app.sender.interaction(down))  # the first submission once more, as captured
    settled(app, 2)
    assert [v for _, _, v in values_of(app)] == ["thumbs_down", "thumbs_up"]


def test_the_same_rating_again_is_thanked_again_but_gives_no_second_signal(
    start_relay: StartRelay,
) -> None:
    """👍 on a conversation, then 👍 again from a new modal within a day: nothing more is sent,
    but the person, whose vote stands, is thanked again."""
    app = start_relay(ACK_MESSAGE="Thanks, noted!")
    shortcut = rate_an_answer(app, "1700000000.000260")
    up = rating_values("up")
    ok(app.sender.interaction(sr.view_submission("U1", "T1", opened_view(app), up)))
    wait_until(lambda: ephemerals(app, "Thanks, noted!"), message="no thanks")
    ok(app.sender.interaction(shortcut))
    ok(app.sender.interaction(sr.view_submission("U1", "T1", opened_view(app, 2), up)))
    app.slack.add_message("C1", "1700000000.000270", "just people", user="U3")
    ok(app.sender.interaction(sr.message_shortcut("U1", "T1", "C1", "1700000000.000270")))
    wait_until(lambda: len(ephemerals(app)) >= 3, message="no note for the sentinel")
    settled(app, 1)
    assert len(ephemerals(app, "Thanks, noted!")) == 2


def test_shortcut_without_a_vote_is_asked_again(start_relay: StartRelay) -> None:
    app = start_relay()
    root = "1700000000.000300"
    reply = ask_agent(app, "hi", ts=root)
    ok(app.sender.interaction(sr.message_shortcut("U1", "T1", "D1", reply, thread_ts=root)))
    view = opened_view(app)
    answer = ok(app.sender.interaction(sr.view_submission("U1", "T1", view, {})))
    assert answer.json()["response_action"] == "errors"
    settled(app, 0)


def test_shortcut_on_unmapped_thread_gives_a_note(start_relay: StartRelay) -> None:
    app = start_relay()
    app.slack.add_message("C1", "1700000000.000400", "just people", user="U3")
    ok(app.sender.interaction(sr.message_shortcut("U1", "T1", "C1", "1700000000.000400")))
    note = app.slack.wait_for_call("chat.postEphemeral")[0]
    assert note.args["user"] == "U1" and "can't be rated" in note.args["text"]
    assert app.slack.calls_to("views.open") == []


def test_shortcut_notes_and_thanks_go_in_the_thread_only_when_there_is_one(
    start_relay: StartRelay,
) -> None:
    """Slack shows an ephemeral message in a thread only when the thread exists: on a message
    outside any thread, the note and the thanks go beside it, in the channel."""
    app = start_relay(ACK_MESSAGE="Thanks, noted!")
    app.slack.add_message("C1", "1700000000.000410", "just people", user="U3")
    ok(app.sender.interaction(sr.message_shortcut("U1", "T1", "C1", "1700000000.000410")))
    note = app.slack.wait_for_call("chat.postEphemeral")[0]
    assert "can't be rated" in note.args["text"]
    assert "thread_ts" not in note.args
    ts = map_by_metadata(app, "m-top", "conv-top", channel="C1")  # a reply outside threads
    ok(app.sender.interaction(sr.message_shortcut("U1", "T1", "C1", ts)))
    up = rating_values("up")
    ok(app.sender.interaction(sr.view_submission("U1", "T1", opened_view(app), up)))
    thanks = wait_until(lambda: ephemerals(app, "Thanks, noted!"), message="no thanks")
    assert "thread_ts" not in thanks[0].args
    root = "1700000000.000420"
    shortcut = rate_an_answer(app, root)  # in a thread: the thanks go there
    down = rating_values("down")
    ok(app.sender.interaction(sr.view_submission("U1", "T1", opened_view(app, 2), down)))
    thanks = wait_until(lambda: ephemerals(app, "Thanks, noted!")[1:], message="no thanks")
    assert thanks[0].args["thread_ts"] == root
    # A modal an older relay opened (no "in_thread" in its metadata): the thanks go in the thread.
    ok(app.sender.interaction(shortcut))
    older = opened_view(app, 3)
    meta = json.loads(older["private_metadata"])
    del meta["in_thread"]
    older = {**older, "private_metadata": json.dumps(meta)}
    ok(app.sender.interaction(sr.view_submission("U1", "T1", older, rating_values("up"))))
    thanks = wait_until(lambda: ephemerals(app, "Thanks, noted!")[2:], message="no thanks")
    assert thanks[0].args["thread_ts"] == root
    settled(app, 3)
    assert values_of(app) == [
        ("conversations", "conv-top", "thumbs_up"),
        ("conversations", f"conv-{root}", "thumbs_down"),
        ("conversations", f"conv-{root}", "thumbs_up"),
    ]


def test_votes_on_unmapped_messages(start_relay: StartRelay) -> None:
    app = start_relay(**NEVER)
    root = "1700000000.000450"
    app.slack.add_message("C1", "1700000000.000500", "a person's message", user="U3")
    click(app, "1700000000.000500", channel="C1", thread_ts=root)
    note = app.slack.wait_for_call("chat.postEphemeral")[0]
    assert note.args["user"] == "U1" and note.args["text"].startswith(UNMAPPED_NOTE_START)
    assert note.args["thread_ts"] == root  # in the thread where the person clicked
    react(app, "1700000000.000500", "+1", channel="C1")  # silent
    ts = map_by_metadata(app, "m-1")
    react(app, ts, "+1", user="U2", channel="C1")  # the sentinel: its thanks comes later
    settled(app, 1)
    thanks = app.slack.wait_for_call("chat.postEphemeral", 2)[1]
    assert thanks.args["user"] == "U2"
    assert len(ephemerals(app)) == 2


def test_vote_from_another_workspace_gives_nothing(start_relay: StartRelay) -> None:
    app = start_relay(**NEVER)
    root = "1700000000.000600"
    reply = ask_agent(app, "hi", ts=root)
    click(app, reply, team="T2", user="U9", thread_ts=root)
    react(app, reply, "+1", team="T2", user="U9")
    ok(app.sender.interaction(sr.message_shortcut("U9", "T2", "D1", reply, thread_ts=root)))
    click(app, reply, "down", thread_ts=root)  # the sentinel, from T1
    settled(app, 1)
    assert values_of(app) == [("messages", "msg-1", "thumbs_down")]
    assert app.brixo.accepted[0].attributes["value"] == "thumbs_down"
    notes = [c for c in ephemerals(app) if c.args["user"] == "U9"]
    assert notes and all("can't" in c.args["text"] for c in notes)
    assert app.slack.calls_to("views.open") == []


def test_same_event_three_times_gives_one_signal(start_relay: StartRelay) -> None:
    app = start_relay(**NEVER)
    ts = map_by_metadata(app, "m-1")
    for retry in (None, 1, 2):
        react(app, ts, "+1", channel="C1", event_id="EvREACT0001", retry_num=retry)
    settled(app, 1)
    wait_until(lambda: ephemerals(app), message="no thanks")
    assert len(ephemerals(app)) == 1


def test_a_reaction_redelivered_after_the_vote_changed_sends_nothing(
    start_relay: StartRelay,
) -> None:
    """👍 (EvA), then 👎 (EvB), then Slack sends EvA again: that is no new act (a late older
    vote of a new event would be sent, so only the event ID can tell)."""
    app = start_relay(**NEVER)
    ts = map_by_metadata(app, "m-1")
    react(app, ts, "+1", channel="C1", event_id="EvChangeA", event_ts="1700000001.000000")
    react(app, ts, "-1", channel="C1", event_id="EvChangeB", event_ts="1700000002.000000")
    settled(app, 2)
    react(
        app, ts, "+1", channel="C1", event_id="EvChangeA", event_ts="1700000001.000000", retry_num=1
    )
    settled(app, 2)
    assert sorted(values_of(app)) == [
        ("messages", "m-1", "thumbs_down"),
        ("messages", "m-1", "thumbs_up"),
    ]


def test_a_click_replayed_after_the_vote_changed_sends_nothing(start_relay: StartRelay) -> None:
    """👎 (action_ts A), then 👍 (B), then the click A again: no new act, so the vote the
    person has now (👍) stays the last one Brixo got."""
    app = start_relay(**NEVER, ACK_MESSAGE="Thanks, noted!")
    ts = map_by_metadata(app, "m-1")
    first = sr.feedback_button_action("down")
    first["action_ts"] = "1700000001.000000"
    click(app, ts, channel="C1", action=first)
    settled(app, 1)
    second = sr.feedback_button_action("up")
    second["action_ts"] = "1700000002.000000"
    click(app, ts, channel="C1", action=second)
    settled(app, 2)
    wait_until(lambda: len(ephemerals(app, "Thanks, noted!")) == 2, message="no thanks")
    click(app, ts, channel="C1", action=first)
    sentinel = map_by_metadata(app, "m-sentinel")
    click(app, sentinel, channel="C1")
    settled(app, 3)
    assert values_of(app) == [
        ("messages", "m-1", "thumbs_down"),
        ("messages", "m-1", "thumbs_up"),
        ("messages", "m-sentinel", "thumbs_up"),
    ]
    # The replay is no vote of the person's: not thanked (the sentinel's thanks is the third).
    wait_until(lambda: len(ephemerals(app, "Thanks, noted!")) >= 3, message="no sentinel thanks")
    assert len(ephemerals(app, "Thanks, noted!")) == 3


def test_repeated_clicks_and_same_vote_within_a_day_give_one(start_relay: StartRelay) -> None:
    app = start_relay(**NEVER)
    root = "1700000000.000700"
    reply = ask_agent(app, "hi", ts=root)
    for _ in range(3):
        click(app, reply, "up", thread_ts=root)
    react(app, reply, "thumbsup")  # the same vote again, by reaction
    map_id = map_by_metadata(app, "m-sentinel")
    click(app, map_id, "up", channel="C1")
    settled(app, 2)
    assert sorted(values_of(app)) == [
        ("messages", "m-sentinel", "thumbs_up"),
        ("messages", "msg-1", "thumbs_up"),
    ]


def test_the_same_vote_again_is_thanked_again_a_redelivery_is_not(
    start_relay: StartRelay,
) -> None:
    """The person's vote stands, so a repeated click or the same vote by reaction gets the
    thanks again, with no second signal; Slack's redelivery of a reaction is thanked once."""
    app = start_relay(**NEVER, ACK_MESSAGE="Thanks, noted!")
    root = "1700000000.000750"
    reply = ask_agent(app, "hi", ts=root)
    click(app, reply, "up", thread_ts=root)
    click(app, reply, "up", thread_ts=root)
    react(app, reply, "thumbsup", event_id="Ev-same")
    wait_until(lambda: len(ephemerals(app, "Thanks, noted!")) == 3, message="not thanked thrice")
    react(app, reply, "thumbsup", event_id="Ev-same", retry_num=1)
    map_id = map_by_metadata(app, "m-sentinel")
    react(app, map_id, "+1", channel="C1", event_id="Ev-sentinel")
    wait_until(lambda: len(ephemerals(app, "Thanks, noted!")) == 4, message="no sentinel thanks")
    settled(app, 2)
    assert len(ephemerals(app, "Thanks, noted!")) == 4
    assert sorted(values_of(app)) == [
        ("messages", "m-sentinel", "thumbs_up"),
        ("messages", "msg-1", "thumbs_up"),
    ]


def test_changed_vote_sends_the_new_one(start_relay: StartRelay) -> None:
    app = start_relay(**NEVER)
    root = "1700000000.000800"
    reply = ask_agent(app, "hi", ts=root)
    click(app, reply, "up", thread_ts=root)
    settled(app, 1)
    click(app, reply, "down", thread_ts=root)
    settled(app, 2)
    assert values_of(app) == [
        ("messages", "msg-1", "thumbs_up"),
        ("messages", "msg-1", "thumbs_down"),
    ]


def test_reaction_removed_sends_nothing_and_is_logged(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:

    caplog.set_level(logging.INFO, logger="bot.slack")
    app = start_relay(**NEVER)
    ts = map_by_metadata(app, "m-1")
    react(app, ts, "+1", channel="C1")
    settled(app, 1)
    ok(app.sender.event(sr.reaction_removed("U1", "+1", "C1", ts)))
    react(app, ts, "-1", channel="C1")  # the sentinel
    settled(app, 2)
    assert [v for _, _, v in values_of(app)] == ["thumbs_up", "thumbs_down"]
    assert any("reaction removed" in r.getMessage() for r in caplog.records)


def test_thanks_is_ack_message(start_relay: StartRelay) -> None:
    app = start_relay(**NEVER, ACK_MESSAGE="Thanks, noted!")
    root = "1700000000.000900"
    reply = ask_agent(app, "hi", ts=root)
    click(app, reply, "up", thread_ts=root)
    thanks = app.slack.wait_for_call("chat.postEphemeral")[0]
    assert thanks.args["text"] == "Thanks, noted!"
    assert (thanks.args["channel"], thanks.args["user"]) == ("D1", "U1")
    settled(app, 1)


def test_no_thanks_when_ack_message_is_empty(start_relay: StartRelay) -> None:
    app = start_relay(**NEVER, ACK_MESSAGE="")
    root = "1700000000.001000"
    reply = ask_agent(app, "hi", ts=root)
    click(app, reply, "up", thread_ts=root)
    react(app, map_by_metadata(app, "m-2"), "+1", channel="C1")
    settled(app, 2)
    click(app, "1.000001", channel="C1")  # unmapped: its note is the sentinel
    note = app.slack.wait_for_call("chat.postEphemeral")[0]
    assert note.args["text"].startswith(UNMAPPED_NOTE_START)
    assert len(ephemerals(app)) == 1


def test_a_vote_from_another_workspace_of_the_same_org_gives_nothing(
    start_relay: StartRelay,
) -> None:
    """Enterprise Grid: keys are the workspace's (team), not the org's, so a reply of T1
    can't be rated from T2 of the same enterprise (a shared channel)."""
    app = start_relay(**NEVER)
    root = "1700000000.000700"
    reply = ask_agent(app, "hi", ts=root)
    grid = {"enterprise_id": "E1", "user_id": "UBOT", "is_bot": True}
    from_t2 = [{**grid, "team_id": "T2", "is_enterprise_install": False}]
    event = sr.reaction_added("U9", "+1", "D1", reply)
    ok(app.sender.event(event, team_id="T2", authorizations=from_t2))
    click(app, reply, "down", thread_ts=root)  # the sentinel, from T1
    settled(app, 1)
    assert values_of(app) == [("messages", "msg-1", "thumbs_down")]


def test_a_known_persons_second_reaction_is_thanked_too(start_relay: StartRelay) -> None:
    """ACK_MESSAGE thanks every vote: also a reaction by someone Slack was already asked
    about (no bot check left to do) when no comment is asked for."""
    app = start_relay(**NEVER, ACK_MESSAGE="Thanks, noted!")
    first, second = map_by_metadata(app, "m-1"), map_by_metadata(app, "m-2")
    react(app, first, "+1", channel="C1")
    wait_until(lambda: ephemerals(app, "Thanks, noted!"), message="no thanks for the first")
    assert app.slack.calls_to("users.info")  # U1 is now known: no check for the second
    react(app, second, "-1", channel="C1")
    thanks = wait_until(
        lambda: ephemerals(app, "Thanks, noted!")[1:], message="no thanks for the second"
    )
    assert (thanks[0].args["channel"], thanks[0].args["user"]) == ("C1", "U1")
    settled(app, 2)
    assert len(app.slack.calls_to("users.info")) == 1


def test_an_org_wide_install_rates_a_reply_it_has_to_fetch(start_relay: StartRelay) -> None:
    """Enterprise Grid, installed org-wide: Bolt gives the enterprise (E…) as the workspace,
    which a fetched reply's team (T…) can't be compared with, so the vote still counts."""
    app = start_relay(**NEVER)
    ts = "1700000000.001100"
    metadata = {"event_type": "brixo_message", "event_payload": {"message_id": "m-grid"}}
    app.slack.add_message("C1", ts, "an answer", bot_id="BOTHER", metadata=metadata, team="T1")
    org_wide = [
        {
            "enterprise_id": "E1",
            "team_id": None,
            "user_id": "UBOT",
            "is_bot": True,
            "is_enterprise_install": True,
        }
    ]
    event = sr.reaction_added("U1", "+1", "C1", ts)
    ok(app.sender.event(event, team_id="T1", authorizations=org_wide))
    settled(app, 1)
    assert values_of(app) == [("messages", "m-grid", "thumbs_up")]
