"""The thin discord.py layer: gateway objects in, `feedback` dataclasses out, replies back."""

from __future__ import annotations

import asyncio
import logging
import re
from time import time
from typing import Any

import aiohttp
import discord
from discord import app_commands

from bot.core.acts import VALUES
from bot.core.agent import AGENT_ERROR_REPLY, AgentError, first_part, more_note
from bot.core.relay import TOO_LATE, UNMAPPED_CONVERSATION, UNMAPPED_NOTE, Relay
from bot.discord.agent import AgentClient, Question
from bot.discord.components import (
    COMMENT_ID,
    COMMENT_INPUT,
    RATE_ID,
    RATING_INPUT,
    AddCommentButton,
    CommentModal,
    RatingModal,
    VoteButton,
    add_comment_view,
    reply_view,
    submitted_value,
)
from bot.discord.feedback import (
    DM,
    Click,
    DiscordFeedback,
    Place,
    Rating,
    Reaction,
    snowflake_time,
)

log = logging.getLogger("bot.discord")
discord.VoiceClient.warn_nacl = False  # no voice here: no "PyNaCl is not installed" warning
discord.VoiceClient.warn_dave = False  # nor, from discord.py 2.7, "davey is not installed"

RATE_COMMAND = "Rate this conversation"
# What a call to Discord can fail with: its answer, or the connection (after discord.py's retries).
DISCORD_ERRORS = (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError)
ALREADY_ACKNOWLEDGED = 40060  # the interaction was answered: a replayed event, or a retry
PICK_A_RATING = "Pick 👍 or 👎 to rate the conversation."
MAX_MESSAGE_CHARS = 2000


def relay_intents() -> discord.Intents:
    """Guilds, guild and DM messages (with their content), guild and DM reactions."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.guild_reactions = True
    intents.dm_reactions = True
    intents.message_content = True  # privileged: turn it on in the Developer Portal
    return intents


def place_of(message: discord.Message) -> Place:
    """Where a message is, as the relay keys it."""
    channel = message.channel
    guild_id = message.guild.id if message.guild else getattr(channel, "guild_id", None)
    thread = str(channel.id) if isinstance(channel, discord.Thread) else None
    return Place(str(guild_id) if guild_id else DM, str(channel.id), str(message.id), thread)


def _clip(text: str) -> str:
    """`text` as one Discord message: cut where a break is near, and a note says how much
    was left out."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    room = MAX_MESSAGE_CHARS - len("\n" + more_note(len(text), "Discord"))
    shown = first_part(text, room)
    return f"{shown.rstrip()}\n{more_note(len(text) - len(shown), 'Discord')}"


# Messages someone wrote (a bot's reply to a command included), as against Discord's notices.
WRITTEN = frozenset(
    {
        discord.MessageType.default,
        discord.MessageType.reply,
        discord.MessageType.chat_input_command,
        discord.MessageType.context_menu_command,
    }
)


class RelayClient(discord.Client):
    """A Discord bot that relays 👍/👎 on assistant replies to Brixo."""

    def __init__(self, relay: Relay, **options: Any) -> None:
        super().__init__(
            intents=relay_intents(), allowed_mentions=discord.AllowedMentions.none(), **options
        )
        self.relay = relay
        self.feedback = DiscordFeedback(relay)
        self.agent = AgentClient(relay.settings) if relay.settings.agent_url else None
        self.tree = app_commands.CommandTree(self)
        self.tree.add_command(app_commands.ContextMenu(name=RATE_COMMAND, callback=self.rate_menu))

    async def setup_hook(self) -> None:
        """Buttons answer by custom_id, so clicks on messages posted before a restart work."""
        self.add_dynamic_items(VoteButton, AddCommentButton)
        self.feedback.own_id = str(self.user.id) if self.user else None
        await self.register_commands()

    async def register_commands(self) -> None:
        """Register "Rate this conversation" with Discord, unless it already is.

        Only this command is created (Discord's upsert by name): any other command of the
        application stays. Discord limits command changes, so a restart only looks.
        """
        menu = self.tree.get_command(RATE_COMMAND, type=discord.AppCommandType.message)
        assert menu is not None and self.application_id is not None
        try:
            registered = {(c.name, c.type) for c in await self.tree.fetch_commands()}
            if (menu.name, menu.type) not in registered:
                await self.http.upsert_global_command(self.application_id, menu.to_dict(self.tree))  # type: ignore[arg-type]
                log.info("registered the %r message command", RATE_COMMAND)
        except discord.HTTPException as error:
            log.warning("can't register the %r message command: %s", RATE_COMMAND, error)

    async def close(self) -> None:
        """Close the gateway and the agent's session."""
        if self.agent:
            await self.agent.close()
        await super().close()

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s in %d guild(s)", self.user, len(self.guilds))

    # --- messages: observer and agent bridge ---------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        """Map and seed a watched bot's reply; send a person's DM, mention or message in a
        thread the relay started to the agent."""
        if self.user is None or message.author.id == self.user.id:
            return
        if message.type not in WRITTEN:  # a pin, a rename, a member added: Discord's notices
            return
        authors = [str(message.author.id), str(message.webhook_id or "")]
        watched = next((a for a in authors if self.feedback.is_watched(a)), None)
        if watched:
            if await asyncio.to_thread(self.feedback.observe, place_of(message), watched):
                await self.seed(message)
            return
        if message.author.bot or not self.agent:
            return
        if place_of(message).workspace == DM or self.mentions_me(message):
            await self.answer(message)
        elif (
            isinstance(message.channel, discord.Thread) and message.channel.owner_id == self.user.id
        ):
            await self.answer(message)  # the thread it started for a question: no mention needed

    def own_roles(self, message: discord.Message) -> list[int]:
        """IDs of the bot's own role mentioned in the message (Discord offers it beside the
        bot's user when someone types "@Bot")."""
        assert self.user
        return [r.id for r in message.role_mentions if r.tags and r.tags.bot_id == self.user.id]

    def mentions_me(self, message: discord.Message) -> bool:
        """True when the message mentions the bot or its own role."""
        return self.user in message.mentions or bool(self.own_roles(message))

    async def seed(self, message: discord.Message) -> None:
        """Add 👍 and 👎 so people only have to click one."""
        for emoji in self.feedback.seed_emoji():
            try:
                await message.add_reaction(emoji)
            except DISCORD_ERRORS as error:
                log.info("can't seed %s on %s: %s", emoji, message.id, error)

    async def answer(self, message: discord.Message) -> None:
        """Ask the agent once per message; post its answer with 👍/👎 and record its mapping."""
        assert self.agent and self.user
        place = place_of(message)
        key = f"discord:agent:{place.workspace}:{place.channel}:{place.message}"
        if not await asyncio.to_thread(self.relay.first_time, key):
            return
        mentions = [rf"<@!?{self.user.id}>", *(f"<@&{r}>" for r in self.own_roles(message))]
        text = re.sub("|".join(mentions), "", message.content).strip()
        target, where, root, reference = await self._conversation_of(message, text)
        conversation = await asyncio.to_thread(
            self.feedback.conversation, place.workspace, where, root
        )
        question = Question(
            place.workspace, where, str(message.author.id), text, root, conversation
        )
        try:
            answer = await self.agent.ask(question)
        except AgentError as error:
            log.warning(
                "agent failed for workspace=%s channel=%s: %s", place.workspace, where, error
            )
            await self._post(target, AGENT_ERROR_REPLY, None, reference)
            return
        rated = bool(answer.message_id or answer.conversation_id)  # a reply, or its conversation
        if not rated:
            log.warning(
                "agent answered without a usable message_id or conversation_id: reply posted "
                "without feedback"
            )
        view = reply_view() if rated else None
        sent = await self._post(target, answer.text, view, reference)
        if sent and rated:
            thread = where if isinstance(target, discord.Thread) else None
            reply = Place(place.workspace, where, str(sent.id), thread)
            await asyncio.to_thread(
                self.feedback.record_reply, reply, root, answer.message_id, answer.conversation_id
            )

    async def _conversation_of(
        self, message: discord.Message, text: str
    ) -> tuple[discord.abc.Messageable, str, str, discord.Message | None]:
        """(where to answer, its channel ID, conversation root, message to reply to).

        DM: the DM channel is the conversation. Thread: the thread. Channel: a new thread on
        the person's message (its ID is the message's), else a reply to the message itself.
        """
        channel = message.channel
        if message.guild is None or isinstance(channel, discord.Thread):
            return channel, str(channel.id), str(channel.id), None
        try:
            thread = await message.create_thread(name=(text or "Conversation")[:90])
        except (discord.HTTPException, ValueError) as error:
            log.info("can't start a thread in %s (%s): answering in the channel", channel.id, error)
            return channel, str(channel.id), str(message.id), message
        return thread, str(thread.id), str(thread.id), None

    async def _post(
        self,
        target: discord.abc.Messageable,
        text: str,
        view: discord.ui.View | None,
        reference: discord.Message | None,
    ) -> discord.Message | None:
        try:
            if view is not None:
                return await target.send(_clip(text), view=view, reference=reference)  # type: ignore[arg-type]
            return await target.send(_clip(text), reference=reference)  # type: ignore[arg-type]
        except DISCORD_ERRORS as error:
            log.warning("can't post the agent's reply: %s", error)
            return None

    # --- interactions: buttons and the comment modal -------------------------------------

    async def vote_clicked(self, interaction: discord.Interaction[Any], value: str) -> None:
        """A 👍/👎 click: store the act, then the modal, the thanks or the unmapped note."""
        message = interaction.message
        place = self._place_of(interaction, message.id) if message else None
        if message is None or place is None:
            await interaction.response.defer()
            return
        click = Click(
            place,
            str(interaction.user.id),
            VALUES[value],
            str(message.author.id),
            snowflake_time(interaction.id),
            str(interaction.id),
        )
        outcome = await asyncio.to_thread(self.feedback.click, click)
        if outcome.ask and outcome.act_id is not None:
            await self.open_comment(interaction, place.workspace, outcome.act_id)
        else:
            await self._note(
                interaction, UNMAPPED_NOTE if outcome.unmapped else self._thanks(outcome.stands)
            )

    def _thanks(self, stands: bool) -> str | None:
        """ACK_MESSAGE when the vote is on record (None when empty, or it isn't)."""
        return self.relay.settings.ack_message if stands else None

    @staticmethod
    async def _note(interaction: discord.Interaction[Any], text: str | None) -> None:
        """Answer with an ephemeral note, or silently when there is none; a refused answer
        (the interaction lapsed after 3 s, or was answered already) is one line."""
        try:
            if text:
                await interaction.response.send_message(text, ephemeral=True)
            else:
                await interaction.response.defer()
        except DISCORD_ERRORS as error:
            log.info("can't answer interaction=%s: %s", interaction.id, error)

    async def add_comment_pressed(
        self, interaction: discord.Interaction[Any], workspace: str, act_id: int
    ) -> None:
        """The "Add a comment" button: the modal while the act still waits for its comment,
        else a note that it went (a comment typed into the modal would be refused)."""
        if await asyncio.to_thread(self.relay.awaits_comment, act_id):
            await self.open_comment(interaction, workspace, act_id)
        else:
            await self._note(interaction, TOO_LATE)

    async def open_comment(
        self, interaction: discord.Interaction[Any], workspace: str, act_id: int
    ) -> None:
        """Open the comment modal; if Discord refuses, the act goes without a comment."""
        modal = CommentModal(workspace, act_id, self.relay.settings.comment_wait)
        try:
            await interaction.response.send_modal(modal)
        except discord.HTTPException as error:
            if error.code == ALREADY_ACKNOWLEDGED:  # a modal may be open: the act keeps waiting
                log.info("comment modal for act=%s already answered: %s", act_id, error)
                return
            log.warning("can't open the comment modal for act=%s: %s", act_id, error)
            await asyncio.to_thread(
                self.feedback.finish_comment, act_id, workspace, str(interaction.user.id), None
            )

    # --- "Rate this conversation" ---------------------------------------------------------

    async def rate_menu(
        self, interaction: discord.Interaction[Any], message: discord.Message
    ) -> None:
        """The message command: the rating modal when the conversation is mapped, else a note."""
        place = self._place_of(interaction, message.id)
        if place is None:
            await self._note(interaction, None)
            return
        conversation_id = await asyncio.to_thread(
            self.feedback.resolve_conversation, place, str(message.author.id)
        )
        if not conversation_id:
            log.info(
                "conversation command on unmapped conversation workspace=%s channel=%s message=%s",
                place.workspace,
                place.channel,
                place.message,
            )
            await self._note(interaction, UNMAPPED_CONVERSATION)
            return
        modal = RatingModal(message.id, self.relay.settings.comment_wait)
        try:
            await interaction.response.send_modal(modal)
        except discord.HTTPException as error:
            log.warning("can't open the rating modal: %s", error)

    async def rating_submitted(
        self, interaction: discord.Interaction[Any], data: dict[str, Any], message_id: str
    ) -> None:
        """The rating modal's submission: one conversation signal, comment included."""
        place = self._place_of(interaction, message_id)
        choice = submitted_value(data.get("components"), RATING_INPUT)
        if place is None or choice not in VALUES:
            await self._note(interaction, PICK_A_RATING)
            return
        rating = Rating(
            place,
            str(interaction.user.id),
            VALUES[choice],
            submitted_value(data.get("components"), COMMENT_INPUT),
            snowflake_time(interaction.id),
            str(interaction.id),
        )
        outcome = await asyncio.to_thread(self.feedback.rate_conversation, rating)
        await self._note(
            interaction,
            UNMAPPED_CONVERSATION if outcome.unmapped else self._thanks(outcome.stands),
        )

    @staticmethod
    def _place_of(interaction: discord.Interaction[Any], message_id: int | str) -> Place | None:
        """Where an interaction's message is: its guild (or DM), channel and thread."""
        if interaction.channel_id is None:
            return None
        in_thread = isinstance(interaction.channel, discord.Thread)
        return Place(
            str(interaction.guild_id) if interaction.guild_id else DM,
            str(interaction.channel_id),
            str(message_id),
            str(interaction.channel_id) if in_thread else None,
        )

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """A modal's submission (by custom_id, so it works after a restart too)."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data: dict[str, Any] = dict(interaction.data or {})
        if rate := RATE_ID.fullmatch(str(data.get("custom_id", ""))):
            await self.rating_submitted(interaction, data, rate["message"])
            return
        match = COMMENT_ID.fullmatch(str(data.get("custom_id", "")))
        if not match:
            return
        comment = submitted_value(data.get("components"), COMMENT_INPUT)
        done = await asyncio.to_thread(
            self.feedback.finish_comment,
            int(match["act"]),
            match["workspace"],
            str(interaction.user.id),
            comment,
        )
        too_late = not done and comment and comment.strip()
        await self._note(interaction, TOO_LATE if too_late else self._thanks(done))

    # --- reactions -----------------------------------------------------------------------

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """👍/👎 (any skin tone) on a mapped reply; bots' and the relay's own are ignored."""
        own = self.user and payload.user_id == self.user.id
        if own or (payload.member and payload.member.bot):
            return
        channel = self.get_channel(payload.channel_id)
        place = Place(
            str(payload.guild_id) if payload.guild_id else DM,
            str(payload.channel_id),
            str(payload.message_id),
            str(payload.channel_id) if isinstance(channel, discord.Thread) else None,
        )
        reaction = Reaction(
            place,
            str(payload.user_id),
            payload.emoji.name or "",
            str(payload.message_author_id) if payload.message_author_id else None,
            time(),
        )
        outcome = await asyncio.to_thread(self.feedback.reaction, reaction)
        if outcome and outcome.ask and outcome.act_id is not None:
            await self.offer_comment(payload.user_id, place.workspace, outcome.act_id)

    async def offer_comment(self, user_id: int, workspace: str, act_id: int) -> None:
        """A reaction has no trigger for a modal: DM the voter an "Add a comment" button."""
        text = self.relay.settings.ack_message or "Add a comment?"
        try:
            user = self.get_user(user_id) or await self.fetch_user(user_id)
            await user.send(text, view=add_comment_view(workspace, act_id))
        except discord.HTTPException as error:
            log.info("can't offer a comment to user=%s: %s", user_id, error)
            await asyncio.to_thread(
                self.feedback.finish_comment, act_id, workspace, str(user_id), None
            )
        except DISCORD_ERRORS as error:  # the DM may have gone: the act waits COMMENT_WAIT
            log.info("can't offer a comment to user=%s: %s", user_id, error)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        """The API has no retraction: a removed reaction is logged and sends nothing."""
        log.info(
            "reaction removed workspace=%s user=%s emoji=%s channel=%s message=%s: no signal",
            payload.guild_id or DM,
            payload.user_id,
            payload.emoji,
            payload.channel_id,
            payload.message_id,
        )
