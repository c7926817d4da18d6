"""Discord's bad days: interaction responses refused, events replayed, debug logging."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Any

import pytest

from bot.core.logs import setup_logging
from bot.discord.components import ADD_COMMENT_ID
from tests import discord_fakes as df
from tests.discord_fakes import Call, FakeDiscordAPI
from tests.fakes import FakeBrixo
from tests.test_discord import StartBot, agent, api, ask, callback, in_thread, start  # noqa: F401

CALLBACK = re.compile(r"/interactions/(\d+)/[^/]+/callback")


def answer_callbacks_like_discord(api: FakeDiscordAPI, expired: bool = False) -> None:
    """Interaction responses as Discord answers them: a second response to the same
    interaction gets 400 code 40060; with `expired`, every one gets 404 code 10062."""
    answered: set[str] = set()
    plain = api._answer

    def _answer(call: Call) -> tuple[int, Any]:
        match = CALLBACK.fullmatch(call.path) if call.method == "POST" else None
        if match and expired:
            with api._lock:
                api._calls.append(call)
            return 404, {"message": "Unknown interaction", "code": 10062}
        if match and match[1] in answered:
            with api._lock:
                api._calls.append(call)
            return 400, {"message": "Interaction has already been acknowledged.", "code": 40060}
        if match:
            answered.add(match[1])
        return plain(call)

    api._answer = _answer  # type: ignore[method-assign]


def test_an_expired_interaction_gives_one_line_not_a_traceback(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bot = start()
    _, reply = ask(bot, api)
    answer_callbacks_like_discord(api, expired=True)  # answered after Discord's 3 s
    bot.feed("INTERACTION_CREATE", df.click(reply, "up", channel=in_thread(reply)))
    brixo.wait_for_accepted(1)  # the vote is stored and sent once
    api.wait_for_callbacks(1)
    bot.loop.settle()
    assert bot.acts() == 1
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert tracebacks == [], [f"{r.name}: {r.getMessage()}" for r in tracebacks]


def test_an_act_id_too_large_for_the_database_is_no_traceback(
    start: StartBot, api: FakeDiscordAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """custom_ids are the relay's own, but one naming an act past 64 bits (forged, or
    garbled) matches no handler: no database error, no traceback, no act."""
    caplog.set_level(logging.INFO)
    bot = start()
    huge = "9" * 23
    bot.feed("INTERACTION_CREATE", df.modal_submit(f"brixo:comment:{df.GUILD}:{huge}", "hi"))
    assert re.fullmatch(ADD_COMMENT_ID, f"brixo:add-comment:dm:{huge}") is None  # the button's
    bot.feed("INTERACTION_CREATE", df.modal_submit(f"brixo:comment:{df.GUILD}:123", "hi"))
    assert api.wait_for_callbacks(1)  # the second, an ordinary late comment, is answered
    bot.loop.settle()
    assert bot.acts() == 0
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert tracebacks == [], [f"{r.name}: {r.getMessage()}" for r in tracebacks]


def test_a_replayed_add_comment_press_keeps_the_comment(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo
) -> None:
    answer_callbacks_like_discord(api)
    bot = start(MESSAGE_ID_TEMPLATE="m-{ts}", SEED_REACTIONS="false")
    watched = df.message("an answer", author=df.WATCHED_BOT, bot=True)
    bot.feed("MESSAGE_CREATE", watched)
    bot.feed("MESSAGE_REACTION_ADD", df.reaction_add(watched["id"], "👎", author=df.WATCHED_BOT))
    offer = api.wait_for_sent(df.DM_CHANNEL)[0]
    button = offer["components"][0]["components"][0]
    press = df.click(offer, button["custom_id"], guild_id=None)
    bot.feed("INTERACTION_CREATE", press)
    modal = callback(api, 1)
    assert modal["type"] == 9
    # The gateway delivers the same INTERACTION_CREATE again (a RESUME replay): Discord
    # refuses a second response to it (40060) while the person types in the open modal.
    bot.feed("INTERACTION_CREATE", press)
    api.wait_for_callbacks(2)
    bot.loop.settle()
    submit = df.modal_submit(
        modal["data"]["custom_id"], "meh", guild_id=None, channel_id=df.DM_CHANNEL
    )
    bot.feed("INTERACTION_CREATE", submit)
    got = brixo.wait_for_accepted(1)[0]
    assert got.attributes.get("user_message") == "meh"
    assert callback(api, 3)["data"]["content"] == "Thanks for your feedback!"


def test_comments_never_reach_the_log_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    """README: "people's comments never appear in the logs, even at LOG_LEVEL=debug"."""
    from discord.gateway import DiscordWebSocket

    comment = "my private comment 7f3a"
    submit = df.modal_submit("brixo:comment:dm:1", comment, guild_id=None)
    event = json.dumps({"op": 0, "t": "INTERACTION_CREATE", "s": 5, "d": submit})
    ws = DiscordWebSocket.__new__(DiscordWebSocket)
    ws.shard_id, ws.sequence, ws._keep_alive = None, None, None
    ws._dispatch = lambda *args: None  # type: ignore[method-assign]
    ws._discord_parsers = {"INTERACTION_CREATE": lambda data: None}
    ws._connection = type("State", (), {"_get_websocket": None})()  # unused here

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("DEBUG", "plain", [df.TOKEN])
        with contextlib.suppress(Exception):  # only its debug line matters here
            asyncio.run(ws.received_message(event))  # as the gateway reads every event
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    assert comment not in err
    assert submit["token"] not in err  # the interaction's token answers for the bot


def test_seed_network_error_is_one_line(
    start: StartBot, api: FakeDiscordAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection dropped while seeding: a line, no traceback (the reply stays mapped)."""
    caplog.set_level(logging.INFO)
    bot = start(MESSAGE_ID_TEMPLATE="m-{ts}")

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise ConnectionResetError("Connection reset by peer")

    bot.client.http.add_reaction = broken
    watched = df.message("an answer", author=df.WATCHED_BOT, bot=True)
    bot.feed("MESSAGE_CREATE", watched)
    bot.loop.settle()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert tracebacks == [], [f"{r.name}: {r.getMessage()}" for r in tracebacks]


def test_agent_answer_lost_to_the_network_is_one_line(
    start: StartBot, api: FakeDiscordAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """discord.py re-raises a reset connection (ECONNRESET is errno 104 on Linux, not the
    54/10054 it retries): the answer can't be posted, said in a line, not a traceback."""
    caplog.set_level(logging.INFO)
    bot = start()

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise ConnectionResetError("Connection reset by peer")

    bot.client.http.send_message = broken
    question = df.message(f"<@{df.BOT_ID}> hi", mentions=(df.BOT_ID,))
    bot.feed("MESSAGE_CREATE", question)
    bot.loop.settle()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert tracebacks == [], [f"{r.name}: {r.getMessage()}" for r in tracebacks]
    assert any("can't post the agent's reply" in r.getMessage() for r in caplog.records)


def test_add_comment_dm_lost_to_the_network_is_one_line(
    start: StartBot, api: FakeDiscordAPI, brixo: FakeBrixo, caplog: pytest.LogCaptureFixture
) -> None:
    """The vote is stored and, the DM's fate unknown, goes at COMMENT_WAIT; one line."""
    caplog.set_level(logging.INFO)
    bot = start(MESSAGE_ID_TEMPLATE="m-{ts}", SEED_REACTIONS="false", COMMENT_WAIT="1s")

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise ConnectionResetError("Connection reset by peer")

    bot.client.http.start_private_message = broken
    watched = df.message("an answer", author=df.WATCHED_BOT, bot=True)
    bot.feed("MESSAGE_CREATE", watched)
    bot.feed("MESSAGE_REACTION_ADD", df.reaction_add(watched["id"], "👎", author=df.WATCHED_BOT))
    got = brixo.wait_for_accepted(1)[0]
    assert "user_message" not in got.attributes
    bot.loop.settle()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert tracebacks == [], [f"{r.name}: {r.getMessage()}" for r in tracebacks]
