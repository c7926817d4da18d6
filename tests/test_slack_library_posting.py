"""Library posting (`post`, `say`) where Slack refuses the native feedback block."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from slack_bolt import Say
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import FeedbackRelay
from tests.conftest import BRIXO_KEY
from tests.fakes import FakeBrixo, FakeSlackAPI
from tests.slack_harness import BOT_TOKEN

ROOT = "1700000000.000100"


@pytest.fixture
def relay(brixo: FakeBrixo, fake_slack: FakeSlackAPI, tmp_path: Path) -> Iterator[FeedbackRelay]:
    """A FeedbackRelay posting through the fake Slack, which refuses `context_actions`."""
    fake_slack.refused_blocks = {"context_actions"}
    client = WebClient(token=BOT_TOKEN, base_url=fake_slack.url)
    relay = FeedbackRelay(
        brixo_api_key=BRIXO_KEY,
        brixo_api_url=brixo.url,
        database_url=f"sqlite:///{tmp_path}/library.db",
        client=client,
    )
    yield relay
    relay.close()


def _classic(blocks: list[dict[str, object]]) -> list[object]:
    return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]  # type: ignore[index, union-attr]


def test_post_and_say_fall_back_to_classic_buttons(
    relay: FeedbackRelay, fake_slack: FakeSlackAPI
) -> None:
    posted = relay.post(channel="C1", text="An answer", message_id="m-post", thread_ts=ROOT)
    said = relay.say(
        Say(client=relay.client, channel="C1"), "Said", message_id="m-say", thread_ts=ROOT
    )
    calls = fake_slack.calls_to("chat.postMessage")
    assert [c.args["blocks"][-1]["type"] for c in calls] == [
        "context_actions",
        "actions",
        "context_actions",
        "actions",
    ]
    assert _classic(calls[1].args["blocks"]) == ["brixo_vote_up", "brixo_vote_down"]
    for response, message_id in ((posted, "m-post"), (said, "m-say")):
        mapping = relay.core.mappings.message("T1", "C1", response["ts"])
        assert mapping is not None and mapping.message_id == message_id


def test_post_refused_with_classic_buttons_too_raises(
    relay: FeedbackRelay, fake_slack: FakeSlackAPI
) -> None:
    fake_slack.refused_blocks.add("actions")
    with pytest.raises(SlackApiError, match="invalid_blocks"):
        relay.post(channel="C1", text="An answer", message_id="m-post")
    assert len(fake_slack.calls_to("chat.postMessage")) == 2
    assert fake_slack.messages("C1") == []


def test_post_refused_for_another_reason_raises_without_a_second_try(
    relay: FeedbackRelay, fake_slack: FakeSlackAPI
) -> None:
    """Only invalid_blocks (no feedback_buttons there) is tried again with classic buttons."""
    fake_slack.respond("chat.postMessage", {"ok": False, "error": "channel_not_found"})
    with pytest.raises(SlackApiError, match="channel_not_found"):
        relay.post(channel="C9", text="An answer", message_id="m-post")
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


@pytest.mark.parametrize(
    ("ids", "named"),
    [
        ({"message_id": "   "}, "message_id"),
        ({"message_id": ""}, "message_id"),
        ({"message_id": "m" * 1025, "conversation_id": "c-ok"}, "message_id"),
        ({"message_id": "m-ok", "conversation_id": " \t"}, "conversation_id"),
    ],
)
def test_an_id_brixo_cant_take_is_refused_before_anything_is_posted_or_recorded(
    relay: FeedbackRelay, fake_slack: FakeSlackAPI, ids: dict[str, str], named: str
) -> None:
    """A blank or overlong ID would make every vote on the reply fail: `post`, `say`,
    `record` and `metadata` refuse it at once, naming it."""
    fake_slack.clear()
    calls: list[Callable[[], object]] = [
        lambda: relay.post(channel="C1", text="An answer", **ids),
        lambda: relay.say(Say(client=relay.client, channel="C1"), "An answer", **ids),
        lambda: relay.record("T1", "C1", ROOT, **ids),
        lambda: relay.metadata(ids["message_id"], ids.get("conversation_id")),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=f"^{named}: expected text of 1 to 1024 characters"):
            call()
    assert fake_slack.calls_to("chat.postMessage") == []
    assert relay.core.mappings.message("T1", "C1", ROOT) is None
