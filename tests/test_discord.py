"""The Discord adapter driven with Discord's own gateway payloads; REST answered locally.

Each test logs a real RelayClient in against FakeDiscordAPI (discord.http.Route.BASE points
at it), feeds it gateway events as the dicts Discord sends, and checks the REST calls it
made and the signals the strict Brixo stand-in accepted.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import discord
import pytest

from bot.core.agent import AGENT_ERROR_REPLY, MAX_ANSWER_BYTES
from bot.core.relay import TOO_LATE, UNMAPPED_CONVERSATION, UNMAPPED_NOTE, Relay
from bot.discord.client import PICK_A_RATING
from tests import discord_fakes as df
from tests.conftest import REPO, Env
from tests.discord_fakes import FakeDiscordAPI, LoopThread, RunningBot
from tests.fakes import FakeAgent, FakeBrixo

StartBot = Callable[..., RunningBot]
EPHEMERAL = 64
REACTION_PUT = r"/channels/\d+/messages/\d+/reactions/[^/]+/@me"


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with FakeAgent() as fake:
        yield fake


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDiscordAPI]:
    with FakeDiscordAPI() as fake:
        monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
        yield fake


@pytest.fixture
def start(env: Env, agent: FakeAgent, api: FakeDiscordAPI) -> Iterator[StartBot]:
    """`start(ASK_COMMENT="never", …)`: a new bot "process" on the same database each call."""
    loop = LoopThread()
    bots: list[RunningBot] = []

    def run(**overrides: str | None) -> RunningBot:
        values: dict[str, str | None] = {
            "AGENT_URL": agent.url,
            "AGENT_TOKEN": "agent-token-1",
            "ASSISTANT_BOT_IDS": df.WATCHED_BOT,
            **overrides,
        }
        bot = df.start_bot(Relay(env.settings(**values)), api, loop)
        bots.append(bot)
        return bot

    yield run
    for bot in bots:
        bot.stop()
    loop.stop()


def callback(api: FakeDiscordAPI, n: int) -> dict[str, Any]:
    """The n-th (1-based) interaction response's JSON."""
    return dict(api.wait_for_callbacks(n)[n - 1].json)


def ask(bot: RunningBot, api: FakeDiscordAPI, text: str = "how?") -> tuple[dict[str, Any], dict]:
    """A mention in the channel; returns (the person's message, the relay's reply)."""
    question = df.message(f"<@{df.BOT_ID}> {text}", mentions=(df.BOT_ID,))
    bot.feed("MESSAGE_CREATE", question)
    reply = api.wait_for_sent(question["id"])[-1]
    bot.loop.settle()  # the mapping is recorded once Discord has answered the post
    return question, reply


def in_thread(reply: dict[str, Any]) -> dict[str, Any]:
    return df.thread_channel(reply["channel_id"])


def test_mention_starts_a_thread_and_its_buttons_vote(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent, brixo: FakeBrixo
) -> None:
    bot = start()
    question, reply = ask(bot, api)
    # The agent got Slack's JSON with Discord's IDs: the new thread is the conversation.
    sent = agent.requests[0]
    assert sent.json == {
        "text": "how?",
        "user_id": df.PERSON,
        "team_id": df.GUILD,
        "channel_id": question["id"],
        "thread_ts": question["id"],
        "conversation_id": None,
    }
    assert sent.headers["authorization"] == "Bearer agent-token-1"
    api.wait_for("POST", rf"/channels/{df.CHANNEL}/messages/{question['id']}/threads")
    buttons = reply["components"][0]["components"]
    assert [b["custom_id"] for b in buttons] == ["brixo:vote:up", "brixo:vote:down"]
    assert reply["content"] == "Answer to: how?"

    bot.feed("INTERACTION_CREATE", df.click(reply, "up", channel=in_thread(reply)))
    thanks = callback(api, 1)
    assert thanks["type"] == 4 and thanks["data"]["flags"] == EPHEMERAL
    assert thanks["data"]["content"] == "Thanks for your feedback!"
    got = brixo.wait_for_accepted(1)[0]
    assert (got.kind, got.id, got.attributes["value"]) == ("messages", "msg-1", "thumbs_up")
    assert got.attributes["occurred_at"].endswith("Z")

    # The same vote again: thanked again (the vote stands), no new act.
    bot.feed("INTERACTION_CREATE", df.click(reply, "up", channel=in_thread(reply)))
    again = callback(api, 2)
    assert again["type"] == 4 and again["data"]["content"] == "Thanks for your feedback!"
    bot.loop.settle()
    assert bot.acts() == 1

    # 👎 asks for a comment (ASK_COMMENT=negative): a modal, then one signal with the comment.
    bot.feed("INTERACTION_CREATE", df.click(reply, "down", channel=in_thread(reply)))
    modal = callback(api, 3)
    assert modal["type"] == 9
    custom_id = modal["data"]["custom_id"]
    assert custom_id.startswith(f"brixo:comment:{df.GUILD}:")
    assert '"max_length": 3000' in str(modal).replace("'", '"')
    bot.feed("INTERACTION_CREATE", df.modal_submit(custom_id, "  too vague  "))
    assert callback(api, 4)["data"]["content"] == "Thanks for your feedback!"
    got = brixo.wait_for_accepted(2)[1]
    assert got.attributes["value"] == "thumbs_down"
    assert got.attributes["user_message"] == "too vague"


def test_buttons_and_modals_work_after_a_restart(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo
) -> None:
    first = start()
    _, reply = ask(first, api)
    first.feed("INTERACTION_CREATE", df.click(reply, "down", channel=in_thread(reply)))
    custom_id = callback(api, 1)["data"]["custom_id"]
    first.stop()

    second = start()  # a new process: nothing in memory, same database
    second.feed("INTERACTION_CREATE", df.modal_submit(custom_id, "wrong answer"))
    got = brixo.wait_for_accepted(1)[0]
    assert got.attributes["user_message"] == "wrong answer"
    second.feed("INTERACTION_CREATE", df.click(reply, "up", channel=in_thread(reply)))
    assert callback(api, 3)["data"]["content"] == "Thanks for your feedback!"
    got = brixo.wait_for_accepted(2)[1]
    assert (got.id, got.attributes["value"]) == ("msg-1", "thumbs_up")


def test_changed_vote_sends_again(start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo) -> None:
    bot = start(ASK_COMMENT="never", ACK_MESSAGE="")
    _, reply = ask(bot, api)
    for n, value in enumerate(["up", "down", "down", "up"], start=1):
        bot.feed("INTERACTION_CREATE", df.click(reply, value, channel=in_thread(reply)))
        assert callback(api, n)["type"] == 6  # no thanks configured: a silent answer
    bot.loop.settle()
    values = [r.attributes["value"] for r in brixo.wait_for_accepted(3)]
    assert values == ["thumbs_up", "thumbs_down", "thumbs_up"]
    assert bot.acts() == 3


def test_dm_is_one_conversation(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent, brixo: FakeBrixo
) -> None:
    bot = start(ASK_COMMENT="never")
    for n in (1, 2):
        bot.feed("MESSAGE_CREATE", df.message(f"q{n}", channel_id=df.DM_CHANNEL, guild_id=None))
        api.wait_for_sent(df.DM_CHANNEL, n)
        bot.loop.settle()
    first, second = (r.json or {} for r in agent.wait_for_requests(2))
    assert (first["team_id"], first["channel_id"], first["thread_ts"]) == (
        "dm",
        df.DM_CHANNEL,
        df.DM_CHANNEL,
    )
    assert first["conversation_id"] is None
    assert second["conversation_id"] == f"conv-{df.DM_CHANNEL}"
    reply = api.sent(df.DM_CHANNEL)[1]
    bot.feed("INTERACTION_CREATE", df.click(reply, "up", guild_id=None))
    assert brixo.wait_for_accepted(1)[0].id == "msg-2"
    # Rated from a message of the person's own: the DM is the conversation.
    asked = df.message("q1", channel_id=df.DM_CHANNEL, guild_id=None)
    bot.feed("INTERACTION_CREATE", df.message_command(asked, guild_id=None))
    custom_id = callback(api, 2)["data"]["custom_id"]
    bot.feed("INTERACTION_CREATE", df.rating_submit(custom_id, "up", guild_id=None))
    got = brixo.wait_for_accepted(2)[1]
    assert (got.kind, got.id) == ("conversations", f"conv-{df.DM_CHANNEL}")


def _two_mentions_in_the_thread(
    bot: RunningBot, api: FakeDiscordAPI, agent: FakeAgent
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two questions mentioning the relay in df.THREAD, one after the other's answer; the
    agent's two requests."""
    for n in (1, 2):
        text = f"<@{df.BOT_ID}> q{n}"
        bot.feed("MESSAGE_CREATE", df.message(text, channel_id=df.THREAD, mentions=(df.BOT_ID,)))
        api.wait_for_sent(df.THREAD, n)
        bot.loop.settle()
    first, second = (r.json or {} for r in agent.wait_for_requests(2))
    return first, second


def test_thread_mentions_share_the_thread_conversation(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent
) -> None:
    bot = start()
    first, second = _two_mentions_in_the_thread(bot, api, agent)
    assert (first["channel_id"], first["thread_ts"]) == (df.THREAD, df.THREAD)
    assert second["conversation_id"] == f"conv-{df.THREAD}"
    assert not api.calls_to("POST", r".*/threads")
    # A message without a mention, and one from another bot, don't reach the agent.
    bot.feed("MESSAGE_CREATE", df.message("chat", channel_id=df.THREAD))
    bot.feed(
        "MESSAGE_CREATE",
        df.message(f"<@{df.BOT_ID}>", author="97", bot=True, mentions=(df.BOT_ID,)),
    )
    bot.loop.settle()
    assert len(agent.requests) == 2


def test_the_agent_gets_only_the_conversation_it_returned_itself(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent
) -> None:
    """A watched bot's reply in the thread maps its conversation from the template: that ID is
    not the agent's, so the agent's first question there carries none, its second the one it
    returned."""
    bot = start(MESSAGE_ID_TEMPLATE="m-{ts}", CONVERSATION_ID_TEMPLATE="c-{thread_ts}")
    watched = df.message("an answer", author=df.WATCHED_BOT, bot=True, channel_id=df.THREAD)
    bot.feed("MESSAGE_CREATE", watched)
    bot.loop.settle()
    first, second = _two_mentions_in_the_thread(bot, api, agent)
    assert first["conversation_id"] is None
    assert second["conversation_id"] == f"conv-{df.THREAD}"


def test_a_replayed_rating_after_the_vote_changed_sends_nothing(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo
) -> None:
    """A "Rate this conversation" submission delivered again (the same interaction ID) after
    the person changed their rating: answered silently, no third signal."""
    bot = start(ASK_COMMENT="never")
    _, reply = ask(bot, api)
    thread = in_thread(reply)
    bot.feed("INTERACTION_CREATE", df.message_command(reply, channel=thread))
    custom_id = callback(api, 1)["data"]["custom_id"]
    first = df.rating_submit(custom_id, "up", channel=thread)
    bot.feed("INTERACTION_CREATE", first)
    callback(api, 2)
    bot.feed("INTERACTION_CREATE", df.rating_submit(custom_id, "down", channel=thread))
    callback(api, 3)
    bot.feed("INTERACTION_CREATE", first)  # the same interaction ID once more
    assert callback(api, 4)["type"] == 6  # answered silently: nothing stored to thank for
    values = [r.attributes["value"] for r in brixo.wait_for_accepted(2)]
    bot.loop.settle()
    assert values == ["thumbs_up", "thumbs_down"]
    assert bot.acts() == 2


def test_a_mention_of_the_bots_role_asks_too(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent
) -> None:
    bot = start()
    text = f"<@&{df.BOT_ROLE}> how?"
    bot.feed("MESSAGE_CREATE", df.message(text, role_mentions=(df.BOT_ROLE,)))
    assert (agent.wait_for_requests(1)[0].json or {})["text"] == "how?"
    # Another role's mention is no question for the bot.
    bot.feed("MESSAGE_CREATE", df.message(f"<@&{df.GUILD}> hi", role_mentions=(df.GUILD,)))
    bot.loop.settle()
    assert len(agent.requests) == 1


def test_the_threads_it_starts_need_no_mention(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent
) -> None:
    bot = start()
    question, reply = ask(bot, api)
    # Discord announces the thread the relay started on the question.
    bot.feed("THREAD_CREATE", df.thread_channel(question["id"], owner=df.BOT_ID))
    bot.feed("MESSAGE_CREATE", df.message("and then?", channel_id=question["id"]))
    api.wait_for_sent(question["id"], 2)
    follow_up = agent.wait_for_requests(2)[1].json or {}
    assert (follow_up["text"], follow_up["thread_ts"]) == ("and then?", question["id"])
    assert follow_up["conversation_id"] == f"conv-{question['id']}"
    assert len(api.calls_to("POST", r".*/threads")) == 1


def test_discords_notices_are_no_questions_nor_replies(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent, brixo: FakeBrixo
) -> None:
    """A pin, a thread renamed or a member added (Discord's system messages, by a person in a
    thread the relay started or in a DM) reaches no agent; a watched bot's notice isn't seeded
    as a reply, its reply to a slash command is."""
    bot = start(MESSAGE_ID_TEMPLATE="m-{ts}")
    question, _reply = ask(bot, api)
    bot.feed("THREAD_CREATE", df.thread_channel(question["id"], owner=df.BOT_ID))
    for kind in (1, 4, 6):  # recipient added, channel name change, pin
        bot.feed("MESSAGE_CREATE", df.message("renamed", channel_id=question["id"], kind=kind))
        bot.feed(
            "MESSAGE_CREATE", df.message("pin", guild_id=None, channel_id=df.DM_CHANNEL, kind=kind)
        )
    notice = df.message("started a thread", author=df.WATCHED_BOT, bot=True, kind=18)
    command_reply = df.message("an answer", author=df.WATCHED_BOT, bot=True, kind=20)
    bot.feed("MESSAGE_CREATE", notice)
    bot.feed("MESSAGE_CREATE", command_reply)
    bot.loop.settle()
    assert len(agent.requests) == 1  # the question only
    seeded = {c.path.split("/")[-4] for c in api.calls_to("PUT", REACTION_PUT)}
    assert seeded == {command_reply["id"]}
    bot.feed(
        "MESSAGE_REACTION_ADD", df.reaction_add(command_reply["id"], "👍", author=df.WATCHED_BOT)
    )
    assert [r.id for r in brixo.wait_for_accepted(1)] == [f"m-{command_reply['id']}"]


def test_without_thread_permission_the_answer_replies_in_the_channel(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent
) -> None:
    api.fail(r"POST /channels/\d+/messages/\d+/threads", 403)
    bot = start()
    question = df.message(f"<@{df.BOT_ID}> hi", mentions=(df.BOT_ID,))
    bot.feed("MESSAGE_CREATE", question)
    post = api.wait_for("POST", rf"/channels/{df.CHANNEL}/messages")[0]
    assert str(post.json["message_reference"]["message_id"]) == question["id"]
    request = agent.requests[0].json or {}
    assert (request["channel_id"], request["thread_ts"]) == (df.CHANNEL, question["id"])


def test_a_long_answer_is_cut_at_a_line_break_with_a_note_of_the_rest(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent
) -> None:
    """As on Slack: not mid-word, and the person is told how much was left out."""
    text = "line one\n" * 300  # 2,700 characters, over Discord's 2,000
    agent.reply_with({"text": text, "message_id": "m-long"})
    bot = start(ASK_COMMENT="never")
    _, reply = ask(bot, api)
    content = reply["content"]
    shown, note = content.rsplit("\n", 1)
    assert len(content) <= 2000 and shown.endswith("line one")
    assert text.startswith(shown)
    left = len(text) - len(shown) - 1  # the line break the cut left out is in the note's count
    assert (
        note == f"_(The answer goes on for {left:,} more characters than a Discord message shows.)_"
    )


def test_agent_failure_gets_a_short_reply_and_records_nothing(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent
) -> None:
    agent.fail_next(1, status=500)
    bot = start(MESSAGE_ID_TEMPLATE="m-{channel}-{ts}", ASK_COMMENT="never")
    _, reply = ask(bot, api)
    assert reply["content"] == AGENT_ERROR_REPLY and not reply["components"]
    # The error reply is no assistant reply: a 👍 on it is no vote, whatever the templates say.
    assert_never_rated(bot, reply)


def assert_never_rated(bot: RunningBot, reply: dict[str, Any]) -> None:
    """`reply` has no mapping, and a 👍 on it records no act."""
    assert bot.relay.mappings.message(df.GUILD, reply["channel_id"], reply["id"]) is None
    vote = df.reaction_add(reply["id"], channel_id=reply["channel_id"], author=df.BOT_ID)
    bot.feed("MESSAGE_REACTION_ADD", vote)
    bot.loop.settle()
    assert bot.acts() == 0


def test_a_redirecting_agent_gets_the_error_reply_not_a_get(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent
) -> None:
    agent.redirect_next(1, status=301)
    bot = start()
    _, reply = ask(bot, api)
    assert reply["content"] == AGENT_ERROR_REPLY
    assert [r.path for r in agent.requests] == ["/"]


def test_an_answer_over_a_megabyte_gets_the_error_reply(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent
) -> None:
    agent.reply_with({"text": "x" * (MAX_ANSWER_BYTES + 1), "message_id": "m-huge"})
    bot = start()
    _, reply = ask(bot, api)
    assert reply["content"] == AGENT_ERROR_REPLY
    assert_never_rated(bot, reply)


def test_an_answer_with_only_a_conversation_id_gets_buttons_for_that_conversation(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent
) -> None:
    agent.reply_with({"text": "an answer", "conversation_id": "conv-only"})
    bot = start(ASK_COMMENT="never")
    _, reply = ask(bot, api)
    assert reply["components"]
    mapping = bot.relay.mappings.message(df.GUILD, reply["channel_id"], reply["id"])
    assert mapping is not None and (mapping.message_id, mapping.conversation_id) == (
        None,
        "conv-only",
    )


def test_observer_maps_seeds_and_counts_reactions(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo
) -> None:
    bot = start(
        MESSAGE_ID_TEMPLATE="{team}/{channel}/{ts}", CONVERSATION_ID_TEMPLATE="c-{thread_ts}"
    )
    watched = df.message("an answer", author=df.WATCHED_BOT, bot=True, channel_id=df.THREAD)
    bot.feed("MESSAGE_CREATE", watched)
    bot.feed("MESSAGE_CREATE", watched)  # the same event twice seeds once
    bot.loop.settle()
    seeded = api.calls_to("PUT", REACTION_PUT)
    assert [c.path.split("/")[-2] for c in seeded] == ["%F0%9F%91%8D", "%F0%9F%91%8E"]

    def react(emoji: str, **kwargs: Any) -> None:
        event = df.reaction_add(
            watched["id"], emoji, channel_id=df.THREAD, author=df.WATCHED_BOT, **kwargs
        )
        bot.feed("MESSAGE_REACTION_ADD", event)

    react("👍", user_id=df.BOT_ID, bot=True)  # the relay's own seeded reaction
    react("👍", user_id="98", bot=True)  # another bot
    react("👎", user_id=df.WATCHED_BOT)  # the watched bot itself, its member not flagged a bot
    react("🎉")  # not a vote
    bot.loop.settle()
    assert bot.acts() == 0
    react("👍🏽")  # skin tone
    got = brixo.wait_for_accepted(1)[0]
    assert (got.kind, got.id) == ("messages", f"{df.GUILD}/{df.THREAD}/{watched['id']}")
    react("👍")
    bot.loop.settle()
    assert bot.acts() == 1

    # 👎 waits for a comment: the voter gets a DM with an "Add a comment" button.
    react("👎🏿")
    offer = api.wait_for_sent(df.DM_CHANNEL)[0]
    button = offer["components"][0]["components"][0]
    assert button["custom_id"].startswith(f"brixo:add-comment:{df.GUILD}:")
    bot.feed("INTERACTION_CREATE", df.click(offer, button["custom_id"], guild_id=None))
    modal = callback(api, 1)
    assert modal["type"] == 9
    submit = df.modal_submit(
        modal["data"]["custom_id"], "meh", guild_id=None, channel_id=df.DM_CHANNEL
    )
    bot.feed("INTERACTION_CREATE", submit)
    got = brixo.wait_for_accepted(2)[1]
    assert (got.attributes["value"], got.attributes["user_message"]) == ("thumbs_down", "meh")

    # The relay's own DM is no assistant reply: a 👍 on it is no vote.
    on_offer = df.reaction_add(
        offer["id"], channel_id=df.DM_CHANNEL, guild_id=None, author=df.BOT_ID
    )
    bot.feed("MESSAGE_REACTION_ADD", on_offer)
    bot.loop.settle()
    assert bot.acts() == 2


def thumbs_down_on_a_watched_reply(bot: RunningBot) -> dict[str, Any]:
    """A watched bot's reply, and a person's 👎 reaction on it; returns the reply."""
    watched = df.message("an answer", author=df.WATCHED_BOT, bot=True)
    bot.feed("MESSAGE_CREATE", watched)
    bot.feed("MESSAGE_REACTION_ADD", df.reaction_add(watched["id"], "👎", author=df.WATCHED_BOT))
    return watched


def test_reaction_comment_goes_without_when_dms_are_closed(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo
) -> None:
    api.fail(r"POST /channels/\d+/messages", 403)
    bot = start(MESSAGE_ID_TEMPLATE="m-{ts}", SEED_REACTIONS="false")
    watched = thumbs_down_on_a_watched_reply(bot)
    got = brixo.wait_for_accepted(1)[0]
    assert got.id == f"m-{watched['id']}" and "user_message" not in got.attributes
    assert not api.calls_to("PUT", REACTION_PUT)


def test_add_comment_pressed_after_the_vote_went_gets_a_note_not_the_modal(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo
) -> None:
    bot = start(MESSAGE_ID_TEMPLATE="m-{ts}", SEED_REACTIONS="false", COMMENT_WAIT="1s")
    thumbs_down_on_a_watched_reply(bot)
    offer = api.wait_for_sent(df.DM_CHANNEL)[0]
    brixo.wait_for_accepted(1)  # COMMENT_WAIT ran out: the vote went without a comment
    button = offer["components"][0]["components"][0]
    bot.feed("INTERACTION_CREATE", df.click(offer, button["custom_id"], guild_id=None))
    answer = callback(api, 1)
    assert answer["type"] == 4 and answer["data"]["content"] == TOO_LATE
    assert answer["data"]["flags"] == 64  # ephemeral


def test_slack_reaction_names_mean_the_same_emoji_on_discord(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo
) -> None:
    bot = start(
        MESSAGE_ID_TEMPLATE="m-{ts}",
        POSITIVE_REACTIONS="white_check_mark,heart",
        NEGATIVE_REACTIONS="x,upvote_no",  # a custom emoji: counted by name, never seeded
        ASK_COMMENT="never",
    )
    watched = df.message("an answer", author=df.WATCHED_BOT, bot=True)
    bot.feed("MESSAGE_CREATE", watched)
    bot.loop.settle()
    seeded = api.calls_to("PUT", REACTION_PUT)
    assert [c.path.split("/")[-2] for c in seeded] == ["%E2%9C%85", "%E2%9D%8C"]  # ✅ ❌
    for emoji, user in (("❤️", "71"), ("❌", "72"), ("upvote_no", "73")):
        bot.feed(
            "MESSAGE_REACTION_ADD",
            df.reaction_add(watched["id"], emoji, author=df.WATCHED_BOT, user_id=user),
        )
    values = [r.attributes["value"] for r in brixo.wait_for_accepted(3)]
    assert sorted(values) == ["thumbs_down", "thumbs_down", "thumbs_up"]


def test_emoji_characters_and_capitals_in_the_sets_are_discord_names_too(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo
) -> None:
    """What Slack never sends (an emoji character, a custom emoji's capitals) stops the Slack
    modes at start; on Discord such names are reactions like any other."""
    bot = start(
        MESSAGE_ID_TEMPLATE="m-{ts}",
        POSITIVE_REACTIONS="🚀",
        NEGATIVE_REACTIONS="PartyBlob",
        ASK_COMMENT="never",
        SEED_REACTIONS="false",
    )
    watched = df.message("an answer", author=df.WATCHED_BOT, bot=True)
    bot.feed("MESSAGE_CREATE", watched)
    for emoji, user in (("🚀", "71"), ("PartyBlob", "72")):
        bot.feed(
            "MESSAGE_REACTION_ADD",
            df.reaction_add(watched["id"], emoji, author=df.WATCHED_BOT, user_id=user),
        )
    values = [r.attributes["value"] for r in brixo.wait_for_accepted(2)]
    assert sorted(values) == ["thumbs_down", "thumbs_up"]


COMMANDS = r"/applications/\d+/commands"


def test_rate_this_conversation_gives_one_conversation_signal(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo
) -> None:
    bot = start()
    assert [(c["name"], c["type"]) for c in api.commands] == [("Rate this conversation", 3)]
    question, reply = ask(bot, api)
    thread = in_thread(reply)
    bot.feed("INTERACTION_CREATE", df.message_command(reply, channel=thread))
    modal = callback(api, 1)
    assert modal["type"] == 9
    custom_id = modal["data"]["custom_id"]
    assert custom_id == f"brixo:rate:{reply['id']}"
    fields = [c["component"] for c in modal["data"]["components"]]
    assert [(f["custom_id"], f.get("required")) for f in fields] == [
        ("rating", True),
        ("comment", False),
    ]
    assert [o["value"] for o in fields[0]["options"]] == ["up", "down"]

    bot.feed("INTERACTION_CREATE", df.rating_submit(custom_id, "down", " lost me ", channel=thread))
    thanks = callback(api, 2)
    assert thanks["data"]["content"] == "Thanks for your feedback!"
    assert thanks["data"]["flags"] == EPHEMERAL
    got = brixo.wait_for_accepted(1)[0]
    assert (got.kind, got.id) == ("conversations", f"conv-{question['id']}")
    assert got.attributes["value"] == "thumbs_down"
    assert got.attributes["user_message"] == "lost me"
    assert got.attributes["occurred_at"].endswith("Z")

    # The same rating again within 24 h: thanked again, nothing more sent.
    bot.feed("INTERACTION_CREATE", df.rating_submit(custom_id, "down", channel=thread))
    assert callback(api, 3)["data"]["content"] == "Thanks for your feedback!"
    # No rating picked (Discord requires one; a forged submission): asked to pick, no act.
    bot.feed("INTERACTION_CREATE", df.rating_submit(custom_id, None, channel=thread))
    assert callback(api, 4)["data"]["content"] == PICK_A_RATING
    bot.loop.settle()
    assert bot.acts() == 1

    # The person's question, in the channel, starts the thread: it rates the same conversation.
    bot.feed("INTERACTION_CREATE", df.message_command(question))
    custom_id = callback(api, 5)["data"]["custom_id"]
    assert custom_id == f"brixo:rate:{question['id']}"
    bot.feed("INTERACTION_CREATE", df.rating_submit(custom_id, "up"))
    got = brixo.wait_for_accepted(2)[1]
    assert (got.kind, got.id, got.attributes["value"]) == (
        "conversations",
        f"conv-{question['id']}",
        "thumbs_up",
    )


def test_rate_this_conversation_is_registered_once(start: StartBot, api: FakeDiscordAPI) -> None:
    # The application has a command of its own.
    api.commands = [df.registered_command({"name": "weather", "type": 1})]
    start()
    assert len(api.calls_to("POST", COMMANDS)) == 1
    assert [c["name"] for c in api.commands] == ["weather", "Rate this conversation"]
    start()  # a restart finds the command registered and leaves it
    assert len(api.calls_to("GET", COMMANDS)) == 2
    assert len(api.calls_to("POST", COMMANDS)) == 1
    assert api.calls_to("PUT", COMMANDS) == []  # never an overwrite of every command


def test_rate_this_conversation_uses_the_conversation_template(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo
) -> None:
    bot = start(CONVERSATION_ID_TEMPLATE="conv-{team}-{thread_ts}", AGENT_URL=None)
    watched = df.message("an answer", author=df.WATCHED_BOT, bot=True, channel_id=df.THREAD)
    thread = df.thread_channel()
    bot.feed("INTERACTION_CREATE", df.message_command(watched, channel=thread))
    custom_id = callback(api, 1)["data"]["custom_id"]
    bot.feed("INTERACTION_CREATE", df.rating_submit(custom_id, "up", channel=thread))
    got = brixo.wait_for_accepted(1)[0]
    assert (got.kind, got.id) == ("conversations", f"conv-{df.GUILD}-{df.THREAD}")
    assert "user_message" not in got.attributes
    # A person's message in that thread rates it too; a thread of people only is no
    # assistant conversation.
    person = df.message("thanks", channel_id=df.THREAD)
    bot.feed("INTERACTION_CREATE", df.message_command(person, channel=thread))
    assert callback(api, 3)["type"] == 9
    people = df.thread_channel("930000000000000002")
    chat = df.message("lunch?", channel_id=people["id"])
    bot.feed("INTERACTION_CREATE", df.message_command(chat, channel=people))
    assert callback(api, 4)["data"]["content"] == UNMAPPED_CONVERSATION


def test_rate_this_conversation_on_an_answer_without_a_conversation_uses_the_template(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent, brixo: FakeBrixo
) -> None:
    bot = start(CONVERSATION_ID_TEMPLATE="conv-{team}-{thread_ts}")
    agent.reply_with({"text": "An answer", "message_id": "msg-A"})
    question, reply = ask(bot, api)
    thread = in_thread(reply)
    bot.feed("INTERACTION_CREATE", df.message_command(reply, channel=thread))
    custom_id = callback(api, 1)["data"]["custom_id"]
    bot.feed("INTERACTION_CREATE", df.rating_submit(custom_id, "up", channel=thread))
    got = brixo.wait_for_accepted(1)[0]
    assert (got.kind, got.id) == ("conversations", f"conv-{df.GUILD}-{question['id']}")


def test_rate_this_conversation_refuses_unmapped_and_foreign_conversations(
    start: StartBot, api: FakeDiscordAPI
) -> None:
    bot = start()
    stranger = df.message("not a reply", author=df.OTHER_PERSON)
    bot.feed("INTERACTION_CREATE", df.message_command(stranger))
    note = callback(api, 1)
    assert note["data"]["content"] == UNMAPPED_CONVERSATION
    assert note["data"]["flags"] == EPHEMERAL
    _, reply = ask(bot, api)
    other = df.thread_channel(reply["channel_id"], guild_id=df.OTHER_GUILD)
    command = df.message_command(reply, guild_id=df.OTHER_GUILD, channel=other)
    bot.feed("INTERACTION_CREATE", command)
    assert callback(api, 2)["data"]["content"] == UNMAPPED_CONVERSATION
    # A submission made up for the other guild is refused the same way.
    forged = df.rating_submit(f"brixo:rate:{reply['id']}", "up", guild_id=df.OTHER_GUILD)
    bot.feed("INTERACTION_CREATE", {**forged, "channel": other, "channel_id": other["id"]})
    assert callback(api, 3)["data"]["content"] == UNMAPPED_CONVERSATION
    bot.loop.settle()
    assert bot.acts() == 0


def test_unmapped_messages_note_clicks_and_ignore_reactions(
    start: StartBot, api: FakeDiscordAPI
) -> None:
    bot = start()
    # Buttons on a message the relay has no mapping for (e.g. its database was replaced).
    stranger = df.message("not a reply", author=df.OTHER_PERSON, components=df.vote_buttons())
    bot.feed("INTERACTION_CREATE", df.click(stranger, "up"))
    note = callback(api, 1)
    assert note["data"]["content"] == UNMAPPED_NOTE and note["data"]["flags"] == EPHEMERAL
    api.clear()
    bot.feed("MESSAGE_REACTION_ADD", df.reaction_add(stranger["id"], "👍", author=df.OTHER_PERSON))
    bot.loop.settle()
    assert api.calls == [] and bot.acts() == 0


def test_a_reply_cannot_be_rated_from_another_guild(start: StartBot, api: FakeDiscordAPI) -> None:
    bot = start()
    _, reply = ask(bot, api)
    other = df.thread_channel(reply["channel_id"], guild_id=df.OTHER_GUILD)
    bot.feed("INTERACTION_CREATE", df.click(reply, "up", guild_id=df.OTHER_GUILD, channel=other))
    assert callback(api, 1)["data"]["content"] == UNMAPPED_NOTE
    assert bot.acts() == 0


def test_the_same_click_reopens_a_dismissed_comment_modal(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo
) -> None:
    """Discord says nothing when a modal is dismissed: 👎 again while that vote waits for its
    comment opens its modal again (the same act), instead of a thanks and the whole wait."""
    bot = start(COMMENT_WAIT="10m")
    _, reply = ask(bot, api)
    bot.feed("INTERACTION_CREATE", df.click(reply, "down", channel=in_thread(reply)))
    first = callback(api, 1)
    bot.feed("INTERACTION_CREATE", df.click(reply, "down", channel=in_thread(reply)))
    again = callback(api, 2)
    assert (first["type"], again["type"]) == (9, 9)
    assert again["data"]["custom_id"] == first["data"]["custom_id"]
    bot.feed("INTERACTION_CREATE", df.modal_submit(again["data"]["custom_id"], "off topic"))
    got = brixo.wait_for_accepted(1)[0]
    assert (got.attributes["value"], got.attributes["user_message"]) == ("thumbs_down", "off topic")
    bot.feed("INTERACTION_CREATE", df.click(reply, "down", channel=in_thread(reply)))
    assert callback(api, 4)["data"]["content"] == "Thanks for your feedback!"  # sent: thanks
    bot.loop.settle()
    assert bot.acts() == 1 and len(brixo.accepted) == 1


def test_unanswered_modal_sends_without_comment_after_comment_wait(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo
) -> None:
    bot = start(COMMENT_WAIT="1s")
    _, reply = ask(bot, api)
    bot.feed("INTERACTION_CREATE", df.click(reply, "down", channel=in_thread(reply)))
    custom_id = callback(api, 1)["data"]["custom_id"]
    got = brixo.wait_for_accepted(1)[0]
    assert got.attributes["value"] == "thumbs_down" and "user_message" not in got.attributes
    bot.feed("INTERACTION_CREATE", df.modal_submit(custom_id, "late words"))
    assert callback(api, 2)["data"]["content"] == TOO_LATE
    bot.loop.settle()
    assert len(brixo.accepted) == 1


def test_watching_bots_without_a_template_stops_with_one_line(env: Env) -> None:
    """Discord has no message metadata: watched replies are mapped only by the templates, so
    without one the observer would seed 👍/👎 that never count."""
    environ = env.process(DISCORD_TOKEN="discord-token", ASSISTANT_BOT_IDS=df.WATCHED_BOT)
    done = subprocess.run(
        [sys.executable, "-m", "bot", "discord"],
        env=environ,
        cwd=REPO / "tests",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: ASSISTANT_BOT_IDS: on Discord, watched bots' replies are mapped only by "
        "MESSAGE_ID_TEMPLATE or CONVERSATION_ID_TEMPLATE; set one of them"
    ]


def test_cli_without_token_stops_with_one_line(env: Env) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot", "discord"],
        env=env.process(),
        cwd=REPO / "tests",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: DISCORD_TOKEN: required here, the Discord bot token from the Developer Portal"
    ]


def test_agent_timeout_gets_the_error_reply(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent
) -> None:
    agent.stall_next(1, seconds=3)
    bot = start(AGENT_TIMEOUT="300ms")
    _, reply = ask(bot, api)
    assert reply["content"] == AGENT_ERROR_REPLY


def test_emoji_times_and_modal_values() -> None:
    from bot.discord.client import relay_intents
    from bot.discord.components import submitted_value
    from bot.discord.feedback import emoji_key, snowflake_time

    assert {
        emoji_key(e) for e in ("👍", "👍🏻", "👍🏿", "+1", ":thumbsup:", "+1::skin-tone-3")
    } == {"👍"}
    assert {emoji_key(e) for e in ("👎", "👎🏽", "-1", "thumbsdown")} == {"👎"}
    assert emoji_key("upvote") == "upvote"  # a custom emoji keeps its name
    names = ("white_check_mark", "heart", "x", "✅")
    assert [emoji_key(n) for n in names] == ["✅", "❤", "❌", "✅"]
    assert snowflake_time("175928847299117063") == pytest.approx(1462015105.796)
    label = [{"type": 18, "id": 1, "component": {"type": 4, "custom_id": "comment", "value": "x"}}]
    row = [{"type": 1, "components": [{"type": 4, "custom_id": "comment", "value": "y"}]}]
    assert (submitted_value(label, "comment"), submitted_value(row, "comment")) == ("x", "y")
    assert submitted_value([], "comment") is None
    intents = relay_intents()
    assert intents.guilds and intents.guild_messages and intents.dm_messages
    assert intents.guild_reactions and intents.dm_reactions and intents.message_content
    assert not intents.members and not intents.presences


def test_a_message_delivered_twice_reaches_the_agent_once(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent
) -> None:
    """The gateway may replay an event (a resumed session): the person is answered once."""
    bot = start()
    question = df.message(f"<@{df.BOT_ID}> how?", channel_id=df.THREAD, mentions=(df.BOT_ID,))
    bot.feed("MESSAGE_CREATE", question)
    bot.feed("MESSAGE_CREATE", question)
    api.wait_for_sent(df.THREAD)
    bot.loop.settle()
    assert len(agent.requests) == 1
    assert len(api.sent(df.THREAD)) == 1


def test_an_answer_without_ids_is_posted_but_never_rated(
    start: StartBot, api: FakeDiscordAPI, agent: FakeAgent
) -> None:
    agent.reply_with({"text": "an answer"})
    bot = start(ASK_COMMENT="never")
    _, reply = ask(bot, api)
    assert not reply.get("components")
    assert_never_rated(bot, reply)


def test_a_reaction_in_a_thread_on_a_reply_not_seen_posted_rates_the_thread(
    start: StartBot, brixo: FakeBrixo
) -> None:
    """A watched bot's reply posted while the relay was away: the templates still get the
    thread it is in (reaction events carry only its channel)."""
    bot = start(CONVERSATION_ID_TEMPLATE="c-{thread_ts}", ASK_COMMENT="never")
    unseen = df.message("an answer", author=df.WATCHED_BOT, bot=True, channel_id=df.THREAD)
    reaction = df.reaction_add(unseen["id"], channel_id=df.THREAD, author=df.WATCHED_BOT)
    bot.feed("MESSAGE_REACTION_ADD", reaction)
    got = brixo.wait_for_accepted(1)[0]
    assert (got.kind, got.id) == ("conversations", f"c-{df.THREAD}")


def test_a_watched_webhooks_replies_are_mapped_seeded_and_counted(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo
) -> None:
    """An assistant posting through a webhook is watched by the webhook's ID."""
    bot = start(MESSAGE_ID_TEMPLATE="m-{ts}", ASK_COMMENT="never")
    hooked = {**df.message("an answer", author="96", bot=True), "webhook_id": df.WATCHED_BOT}
    bot.feed("MESSAGE_CREATE", hooked)
    bot.loop.settle()
    assert len(api.calls_to("PUT", REACTION_PUT)) == 2
    bot.feed("MESSAGE_REACTION_ADD", df.reaction_add(hooked["id"], author="96"))
    assert brixo.wait_for_accepted(1)[0].id == f"m-{hooked['id']}"


def test_a_reactions_comment_offer_says_the_ack_message(
    start: StartBot, api: FakeDiscordAPI
) -> None:
    """With ACK_MESSAGE set, the DM offering "Add a comment" after a 👎 reaction says it."""
    bot = start(MESSAGE_ID_TEMPLATE="m-{ts}", SEED_REACTIONS="false", ACK_MESSAGE="Noted, thanks!")
    thumbs_down_on_a_watched_reply(bot)
    offer = api.wait_for_sent(df.DM_CHANNEL)[0]
    assert offer["content"] == "Noted, thanks!"
    button = offer["components"][0]["components"][0]
    assert button["label"] == "Add a comment"
    assert button["custom_id"].startswith(f"brixo:add-comment:{df.GUILD}:")


def test_a_replayed_click_after_the_vote_changed_sends_nothing(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo
) -> None:
    """👍, then 👎 (a new interaction), then the 👍 interaction delivered again: no new act, and
    the person's latest vote stays 👎, so a fresh 👍 afterwards is sent as a change."""
    bot = start(ASK_COMMENT="never")
    _, reply = ask(bot, api)
    first = df.click(reply, "up", channel=in_thread(reply))
    bot.feed("INTERACTION_CREATE", first)
    callback(api, 1)
    bot.feed("INTERACTION_CREATE", df.click(reply, "down", channel=in_thread(reply)))
    callback(api, 2)
    bot.feed("INTERACTION_CREATE", first)  # the same interaction ID once more
    assert callback(api, 3)["type"] == 6  # answered silently: nothing stored to thank for
    bot.feed("INTERACTION_CREATE", df.click(reply, "up", channel=in_thread(reply)))
    assert callback(api, 4)["data"]["content"] == "Thanks for your feedback!"
    values = [r.attributes["value"] for r in brixo.wait_for_accepted(3)]
    assert values == ["thumbs_up", "thumbs_down", "thumbs_up"]
    assert bot.acts() == 3


def test_an_empty_comment_after_the_vote_went_gets_no_too_late_note(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo
) -> None:
    """The modal submitted blank after COMMENT_WAIT ran out loses nothing: answered silently,
    not told its comment came too late."""
    bot = start(COMMENT_WAIT="1s")
    _, reply = ask(bot, api)
    bot.feed("INTERACTION_CREATE", df.click(reply, "down", channel=in_thread(reply)))
    custom_id = callback(api, 1)["data"]["custom_id"]
    brixo.wait_for_accepted(1)  # the vote went without a comment
    for n, blank in enumerate(("", "   "), start=2):
        bot.feed("INTERACTION_CREATE", df.modal_submit(custom_id, blank))
        assert callback(api, n)["type"] == 6
    bot.loop.settle()
    assert len(brixo.accepted) == 1 and bot.acts() == 1
