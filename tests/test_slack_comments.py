"""ASK_COMMENT end to end: the act waits for the modal, and gives exactly one signal."""

from __future__ import annotations

from typing import Any

import pytest

from bot.core.relay import TOO_LATE
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
    outbox,
    react,
    settled,
    values_of,
)
from tests.waiting import wait_until

ROOT = "1700000000.000100"


def _down_click_waiting(
    app_settings: dict[str, str], start_relay: StartRelay
) -> tuple[RunningRelay, dict[str, Any]]:
    """A 👎 click on an agent reply; returns (app, modal view) with the act waiting."""
    app = start_relay(**app_settings)
    reply = ask_agent(app, "hi", ts=ROOT)
    click(app, reply, "down", thread_ts=ROOT)
    view = opened_view(app)
    assert outbox(app)["awaiting_comment"] == 1
    return app, view


def test_a_click_without_a_trigger_id_goes_at_once_without_a_modal(
    start_relay: StartRelay,
) -> None:
    """No trigger_id, no modal (Slack opens one only with it): the vote isn't held for a
    comment it can't ask for, but sent at once, with the thanks."""
    app = start_relay(ASK_COMMENT="always", ACK_MESSAGE="Thanks, noted!")
    reply = ask_agent(app, "hi", ts=ROOT)
    click(app, reply, "down", thread_ts=ROOT, trigger_id="")
    settled(app, 1)
    assert values_of(app) == [("messages", "msg-1", "thumbs_down")]
    wait_until(lambda: ephemerals(app, "Thanks, noted!"), message="no thanks")
    assert app.slack.calls_to("views.open") == []


def test_down_click_waits_for_the_modal_submission(start_relay: StartRelay) -> None:
    app, view = _down_click_waiting({"ASK_COMMENT": "negative"}, start_relay)
    opened = app.slack.calls_to("views.open")[0]
    assert opened.args["trigger_id"] == "trig-1"
    assert view["notify_on_close"] is True
    inputs = [b for b in view["blocks"] if b["type"] == "input"]
    assert [b["element"]["max_length"] for b in inputs] == [3000]
    assert inputs[0]["optional"] is True
    # The modal thanks nobody (ACK_MESSAGE does, when set): it says the vote already counts.
    sections = [b["text"]["text"] for b in view["blocks"] if b["type"] == "section"]
    assert sections == ["👎 Your vote is recorded. Anything to add? (optional)"]
    # Nothing is sent while the person types: a later vote gets through first.
    react(app, map_by_metadata(app, "m-sentinel"), "+1", user="U2", channel="C1")
    settled(app, 1, awaiting=1)
    assert values_of(app) == [("messages", "m-sentinel", "thumbs_up")]

    ok(app.sender.interaction(sr.view_submission("U1", "T1", view, comment_values(" too vague "))))
    settled(app, 2)
    got = app.brixo.accepted_for("msg-1")
    assert len(got) == 1
    assert got[0].attributes["value"] == "thumbs_down"
    assert got[0].attributes["user_message"] == "too vague"
    # Closing the same modal afterwards (or COMMENT_WAIT passing) adds nothing.
    ok(app.sender.interaction(sr.view_closed("U1", "T1", view)))
    settled(app, 2)


def test_closed_modal_sends_one_signal_without_comment(start_relay: StartRelay) -> None:
    app, view = _down_click_waiting({"ASK_COMMENT": "negative"}, start_relay)
    ok(app.sender.interaction(sr.view_closed("U1", "T1", view)))
    settled(app, 1)
    assert "user_message" not in app.brixo.accepted[0].attributes
    ok(app.sender.interaction(sr.view_closed("U1", "T1", view)))
    ok(app.sender.interaction(sr.view_submission("U1", "T1", view, comment_values(None))))
    settled(app, 1)


def test_the_same_click_again_opens_no_second_modal(start_relay: StartRelay) -> None:
    """👎 clicked twice: the second click is the same vote again, so no act and no modal (a
    modal for no act would only refuse the comment typed into it), only the thanks."""
    app = start_relay(ASK_COMMENT="negative", ACK_MESSAGE="Thanks, noted!")
    reply = ask_agent(app, "hi", ts=ROOT)
    click(app, reply, "down", thread_ts=ROOT)
    view = opened_view(app)
    click(app, reply, "down", thread_ts=ROOT, trigger_id="trig-2")
    wait_until(lambda: ephemerals(app, "Thanks, noted!"), message="no thanks for the repeat")
    click(app, map_by_metadata(app, "m-sentinel"), "up", channel="C1")
    wait_until(lambda: len(ephemerals(app)) == 2, message="no thanks for the sentinel")
    assert [c.args["trigger_id"] for c in app.slack.calls_to("views.open")] == ["trig-1"]
    ok(app.sender.interaction(sr.view_submission("U1", "T1", view, comment_values("vague"))))
    settled(app, 2)
    assert app.brixo.accepted_for("msg-1")[0].attributes["user_message"] == "vague"


def test_someone_else_cannot_finish_the_act(start_relay: StartRelay) -> None:
    app, view = _down_click_waiting({"ASK_COMMENT": "negative"}, start_relay)
    ok(app.sender.interaction(sr.view_closed("U2", "T1", view)))
    ok(app.sender.interaction(sr.view_closed("U1", "T2", view)))
    assert outbox(app)["awaiting_comment"] == 1
    ok(app.sender.interaction(sr.view_submission("U1", "T1", view, comment_values("mine"))))
    settled(app, 1)
    assert app.brixo.accepted[0].attributes["user_message"] == "mine"


def test_no_answer_within_comment_wait_sends_without_comment(start_relay: StartRelay) -> None:
    app, view = _down_click_waiting({"ASK_COMMENT": "negative", "COMMENT_WAIT": "1s"}, start_relay)
    app.brixo.wait_for_accepted(1)
    settled(app, 1)
    assert app.brixo.accepted[0].attributes == {
        "name": "feedback",
        "value": "thumbs_down",
        "occurred_at": app.brixo.accepted[0].attributes["occurred_at"],
    }
    # A comment typed too late is refused in the modal rather than sent as a second signal.
    late = ok(app.sender.interaction(sr.view_submission("U1", "T1", view, comment_values("late"))))
    assert late.json()["response_action"] == "errors"
    settled(app, 1)


def test_an_empty_submission_after_the_vote_went_just_closes_the_modal(
    start_relay: StartRelay,
) -> None:
    """Nothing typed, and the act went meanwhile: nothing is lost, so the modal closes (only
    a comment typed too late is refused in the modal)."""
    app, view = _down_click_waiting({"ASK_COMMENT": "negative", "COMMENT_WAIT": "1s"}, start_relay)
    app.brixo.wait_for_accepted(1)
    settled(app, 1)
    empty = ok(app.sender.interaction(sr.view_submission("U1", "T1", view, comment_values(None))))
    assert "errors" not in (empty.json() if empty.text else {}), empty.text
    settled(app, 1)


def test_huge_comment_is_cut_to_3000(start_relay: StartRelay) -> None:
    app, view = _down_click_waiting({"ASK_COMMENT": "negative"}, start_relay)
    text = "é" + "x" * 4999
    ok(app.sender.interaction(sr.view_submission("U1", "T1", view, comment_values(text))))
    settled(app, 1)
    assert app.brixo.accepted[0].attributes["user_message"] == text[:3000]


@pytest.mark.parametrize(
    ("typed", "sent"),
    [
        ("\u200b\u2060 \u200b", None),  # nothing that shows: no comment
        ("\u00ad\u200e \u2061", None),  # format characters alone show nothing either
        ("too slow\x07\x1b[31m!\r\n\tfix it", "too slow[31m!\n\tfix it"),
        (
            "\ufeff wrong\u200d\u200banswer\n\tline2\u200b\u2060 ",
            "wrong\u200d\u200banswer\n\tline2",
        ),
    ],
    ids=["invisible", "invisible format", "control characters", "zero-width around"],
)
def test_comments_keep_only_what_shows(
    start_relay: StartRelay, typed: str, sent: str | None
) -> None:
    app, view = _down_click_waiting({"ASK_COMMENT": "negative"}, start_relay)
    ok(app.sender.interaction(sr.view_submission("U1", "T1", view, comment_values(typed))))
    settled(app, 1)
    assert app.brixo.accepted[0].attributes.get("user_message") == sent


def test_never_sends_a_down_click_at_once(start_relay: StartRelay) -> None:
    app = start_relay(ASK_COMMENT="never")
    reply = ask_agent(app, "hi", ts=ROOT)
    click(app, reply, "down", thread_ts=ROOT)
    settled(app, 1)
    app.slack.wait_for_call("chat.postEphemeral")  # the thanks: the follow-up ran
    assert app.slack.calls_to("views.open") == []


def test_negative_does_not_ask_on_up(start_relay: StartRelay) -> None:
    app = start_relay(ASK_COMMENT="negative", AGENT_URL=None)
    click(app, map_by_metadata(app, "m-up"), "up", channel="C1")
    settled(app, 1)
    app.slack.wait_for_call("chat.postEphemeral")
    assert app.slack.calls_to("views.open") == []


def test_always_asks_on_up_too(start_relay: StartRelay) -> None:
    """The modal after a 👍 shows the 👍 recorded, and its comment goes with thumbs_up."""
    app = start_relay(ASK_COMMENT="always")
    reply = ask_agent(app, "hi", ts=ROOT)
    click(app, reply, "up", thread_ts=ROOT)
    view = opened_view(app)
    assert outbox(app)["awaiting_comment"] == 1
    sections = [b["text"]["text"] for b in view["blocks"] if b["type"] == "section"]
    assert sections == ["👍 Your vote is recorded. Anything to add? (optional)"]
    ok(app.sender.interaction(sr.view_submission("U1", "T1", view, comment_values("great"))))
    settled(app, 1)
    assert app.brixo.accepted[0].attributes["user_message"] == "great"
    assert app.brixo.accepted[0].attributes["value"] == "thumbs_up"


def test_reaction_gets_add_a_comment_button_that_opens_the_modal(start_relay: StartRelay) -> None:
    app = start_relay(ASK_COMMENT="negative", ACK_MESSAGE="Thanks!")
    ts = map_by_metadata(app, "m-1", channel="C1")
    react(app, ts, "-1::skin-tone-2", channel="C1")
    note = app.slack.wait_for_call("chat.postEphemeral")[0]
    assert (note.args["channel"], note.args["user"]) == ("C1", "U1")
    buttons = [e for b in note.args["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [b["action_id"] for b in buttons] == ["brixo_add_comment"]
    assert outbox(app)["awaiting_comment"] == 1

    action = sr.button_action("brixo_add_comment", buttons[0]["value"], text="Add a comment")
    payload = sr.block_action("U1", "T1", "C1", ts, action, trigger_id="trig-9", is_ephemeral=True)
    ok(app.sender.interaction(payload))
    view = opened_view(app)
    assert app.slack.calls_to("views.open")[0].args["trigger_id"] == "trig-9"
    assert view["notify_on_close"] is True
    ok(app.sender.interaction(sr.view_submission("U1", "T1", view, comment_values("wrong"))))
    settled(app, 1)
    assert values_of(app) == [("messages", "m-1", "thumbs_down")]
    assert app.brixo.accepted[0].attributes["user_message"] == "wrong"


def test_without_an_ack_message_the_comment_offer_still_has_text(
    start_relay: StartRelay,
) -> None:
    """ACK_MESSAGE empty turns the thanks off, not the offer: its section keeps a text (Slack
    refuses a section without one), and its button opens the modal."""
    app = start_relay(ASK_COMMENT="negative", ACK_MESSAGE="")
    ts = map_by_metadata(app, "m-1", channel="C1")
    react(app, ts, "-1", channel="C1")
    note = app.slack.wait_for_call("chat.postEphemeral")[0]
    sections = [b for b in note.args["blocks"] if b["type"] == "section"]
    assert sections and all(b["text"]["text"].strip() for b in sections)
    buttons = [e for b in note.args["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [b["action_id"] for b in buttons] == ["brixo_add_comment"]
    action = sr.button_action("brixo_add_comment", buttons[0]["value"], text="Add a comment")
    ok(app.sender.interaction(sr.block_action("U1", "T1", "C1", ts, action, is_ephemeral=True)))
    assert opened_view(app)["notify_on_close"] is True


def test_the_longest_ack_message_still_offers_the_comment(start_relay: StartRelay) -> None:
    """ACK_MESSAGE at its limit (2,000 characters) fits the note's section (Slack: 3,000)."""
    app = start_relay(ASK_COMMENT="negative", ACK_MESSAGE="é" * 2000)
    ts = map_by_metadata(app, "m-1", channel="C1")
    react(app, ts, "-1", channel="C1")
    note = app.slack.wait_for_call("chat.postEphemeral")[0]
    assert note.args["blocks"][0]["text"]["text"] == "é" * 2000


def test_reaction_without_comment_goes_after_comment_wait(start_relay: StartRelay) -> None:
    app = start_relay(ASK_COMMENT="negative", COMMENT_WAIT="1s")
    ts = map_by_metadata(app, "m-1", channel="C1")
    react(app, ts, "thumbsdown", channel="C1")
    app.slack.wait_for_call("chat.postEphemeral")
    app.brixo.wait_for_accepted(1)
    settled(app, 1)
    assert "user_message" not in app.brixo.accepted[0].attributes


def test_modal_refused_by_slack_sends_without_comment_and_thanks(start_relay: StartRelay) -> None:
    app = start_relay(ASK_COMMENT="negative", ACK_MESSAGE="Thanks!")
    app.slack.respond("views.open", {"ok": False, "error": "expired_trigger_id"})
    reply = ask_agent(app, "hi", ts=ROOT)
    click(app, reply, "down", thread_ts=ROOT)
    app.brixo.wait_for_accepted(1)
    settled(app, 1)
    assert app.slack.calls_to("views.open")
    thanks = wait_until(lambda: ephemerals(app, "Thanks!"), message="no thanks")
    assert (thanks[0].args["user"], thanks[0].args["thread_ts"]) == ("U1", ROOT)


def test_add_a_comment_after_the_vote_went_says_so_instead_of_opening_the_modal(
    start_relay: StartRelay,
) -> None:
    app = start_relay(ASK_COMMENT="negative", COMMENT_WAIT="1s")
    ts = map_by_metadata(app, "m-1", channel="C1")
    react(app, ts, "-1", channel="C1")
    offer = app.slack.wait_for_call("chat.postEphemeral")[0]
    buttons = [e for b in offer.args["blocks"] if b["type"] == "actions" for e in b["elements"]]
    app.brixo.wait_for_accepted(1)  # COMMENT_WAIT ran out: the vote went without a comment
    settled(app, 1)
    action = sr.button_action("brixo_add_comment", buttons[0]["value"], text="Add a comment")
    payload = sr.block_action("U1", "T1", "C1", ts, action, trigger_id="trig-9", is_ephemeral=True)
    ok(app.sender.interaction(payload))
    note = wait_until(lambda: ephemerals(app, TOO_LATE), message="no note")
    assert note[0].args["user"] == "U1"
    assert app.slack.calls_to("views.open") == []


def test_add_a_comment_naming_no_act_is_ignored(start_relay: StartRelay) -> None:
    """An "Add a comment" button whose value names no act (foreign, or beyond 64 bits): no
    modal, and no note that the vote went, since there was no vote."""
    app = start_relay(ASK_COMMENT="negative")
    ts = map_by_metadata(app, "m-1", channel="C1")
    for value in ("x:thumbs_down", f"{2**64}:thumbs_down"):
        action = sr.button_action("brixo_add_comment", value, text="Add a comment")
        ok(app.sender.interaction(sr.block_action("U1", "T1", "C1", ts, action)))
    click(app, "1.000001", channel="C1")  # unmapped: its note is the sentinel
    wait_until(lambda: ephemerals(app), message="no note for the sentinel")
    assert ephemerals(app, TOO_LATE) == []
    assert app.slack.calls_to("views.open") == []
    settled(app, 0)


def test_thanks_after_the_modal_lands_in_the_votes_thread(start_relay: StartRelay) -> None:
    settings = {"ASK_COMMENT": "negative", "ACK_MESSAGE": "Thanks!"}
    app, view = _down_click_waiting(settings, start_relay)
    ok(app.sender.interaction(sr.view_submission("U1", "T1", view, comment_values("vague"))))
    thanks = app.slack.wait_for_call("chat.postEphemeral")[0]
    assert (thanks.args["text"], thanks.args["user"]) == ("Thanks!", "U1")
    assert (thanks.args["channel"], thanks.args["thread_ts"]) == ("D1", ROOT)
    settled(app, 1)


def test_skipping_the_modal_sends_the_vote_and_thanks_in_the_thread(
    start_relay: StartRelay,
) -> None:
    settings = {"ASK_COMMENT": "negative", "ACK_MESSAGE": "Thanks!"}
    app, view = _down_click_waiting(settings, start_relay)
    ok(app.sender.interaction(sr.view_closed("U1", "T1", view)))
    thanks = app.slack.wait_for_call("chat.postEphemeral")[0]
    assert (thanks.args["text"], thanks.args["thread_ts"]) == ("Thanks!", ROOT)
    settled(app, 1)
    ok(app.sender.interaction(sr.view_closed("U1", "T1", view)))  # again: no second thanks
    click(app, "1.000001", channel="C1")  # unmapped: its note is the sentinel
    notes = app.slack.wait_for_call("chat.postEphemeral", 2)
    assert notes[1].args["text"].startswith("I can't link this message")
    assert len(ephemerals(app)) == 2


def test_skipping_the_modal_thanks_nobody_when_ack_message_is_empty(
    start_relay: StartRelay,
) -> None:
    app, view = _down_click_waiting({"ASK_COMMENT": "negative", "ACK_MESSAGE": ""}, start_relay)
    ok(app.sender.interaction(sr.view_closed("U1", "T1", view)))
    settled(app, 1)
    click(app, "1.000001", channel="C1")  # unmapped: its note is the sentinel
    note = app.slack.wait_for_call("chat.postEphemeral")[0]
    assert note.args["text"].startswith("I can't link this message")
    assert len(ephemerals(app)) == 1


@pytest.mark.parametrize("how", ["reaction", "click"])
def test_a_changed_vote_sends_the_one_waiting_for_its_comment_first(
    how: str, start_relay: StartRelay
) -> None:
    """👎 (waiting up to COMMENT_WAIT for a comment), then 👍: the 👎 goes now, without a comment,
    not ten minutes after the person's latest vote, and reaches Brixo before the 👍."""
    app = start_relay(ASK_COMMENT="negative", COMMENT_WAIT="10m")
    app.brixo.set_latency(0.3)
    if how == "reaction":
        message_id, ts = "m-1", map_by_metadata(app, "m-1", channel="C1")
        react(app, ts, "-1", channel="C1", event_ts="1700000001.000000")
        app.slack.wait_for_call("chat.postEphemeral")
    else:
        message_id, ts = "msg-1", ask_agent(app, "hi", ts=ROOT)
        click(app, ts, "down", thread_ts=ROOT)
        opened_view(app)
    assert outbox(app)["awaiting_comment"] == 1
    if how == "reaction":
        react(app, ts, "+1", channel="C1", event_ts="1700000002.000000")
    else:
        click(app, ts, "up", thread_ts=ROOT)
    down, up = app.brixo.wait_for_accepted(2)
    settled(app, 2)
    assert values_of(app) == [
        ("messages", message_id, "thumbs_down"),
        ("messages", message_id, "thumbs_up"),
    ]
    assert up.at - down.at >= 0.3  # the 👍 was sent once the 👎 had its answer
    assert all("user_message" not in r.attributes for r in app.brixo.accepted)


def test_an_empty_submission_after_the_vote_went_thanks_nobody(start_relay: StartRelay) -> None:
    """The modal's thanks come with the act it releases: when COMMENT_WAIT already sent the
    vote, an empty submission releases nothing and thanks nobody."""
    settings = {"ASK_COMMENT": "negative", "COMMENT_WAIT": "1s", "ACK_MESSAGE": "Thanks!"}
    app, view = _down_click_waiting(settings, start_relay)
    app.brixo.wait_for_accepted(1)
    settled(app, 1)
    ok(app.sender.interaction(sr.view_submission("U1", "T1", view, comment_values(None))))
    click(app, "1.000001", channel="C1")  # unmapped: its note is the sentinel
    note = app.slack.wait_for_call("chat.postEphemeral")[0]
    assert note.args["text"].startswith("I can't link this message")
    assert ephemerals(app, "Thanks!") == []
    settled(app, 1)


def test_a_modal_failing_after_the_vote_went_thanks_nobody(
    start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """views.open answers only after COMMENT_WAIT sent the vote, and refuses: the modal's
    thanks stand in for the act the failure releases, and there is none left to release."""
    app = start_relay(ASK_COMMENT="negative", COMMENT_WAIT="1s", ACK_MESSAGE="Thanks!")
    hold = app.slack.hold_next("views.open")
    app.slack.respond("views.open", {"ok": False, "error": "expired_trigger_id"})
    reply = ask_agent(app, "hi", ts=ROOT)
    click(app, reply, "down", thread_ts=ROOT)
    assert hold.arrived.wait(10)
    app.brixo.wait_for_accepted(1)  # COMMENT_WAIT ran out while Slack held the modal
    settled(app, 1)
    hold.released.set()
    wait_until(lambda: "can't open the comment modal" in caplog.text, message="no failure")
    click(app, "1.000001", channel="C1")  # unmapped: its note is the sentinel
    note = app.slack.wait_for_call("chat.postEphemeral")[0]
    assert note.args["text"].startswith("I can't link this message")
    assert ephemerals(app, "Thanks!") == []
    settled(app, 1)
