"""Discord votes turned into acts: plain dataclasses in, core calls out; no discord.py here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from time import time

import emoji

from bot.core.acts import Act, ReactionVotes, Value, clean_comment
from bot.core.mapping import POSTED, Mapping
from bot.core.outbox import SAME_VOTE, Recorded
from bot.core.relay import Relay
from bot.core.settings import reaction_name

log = logging.getLogger("bot.discord")

PLATFORM = "discord"
# Workspace key of direct messages, which belong to no guild. DM channel IDs are global
# snowflakes, so (DM, channel, message) is still unique, and no guild can reach a DM's reply.
DM = "dm"
DISCORD_EPOCH_MS = 1420070400000


# Skin tones (U+1F3FB..U+1F3FF) and the emoji variation selector, dropped before matching.
_MODIFIERS = {chr(c) for c in range(0x1F3FB, 0x1F400)} | {"\ufe0f"}


def emoji_key(name: str) -> str:
    """A reaction's emoji without skin tone: `👍🏽` → `👍`.

    Slack's names (`+1`, `white_check_mark`, `+1::skin-tone-3`) become the emoji they name,
    so POSITIVE/NEGATIVE_REACTIONS mean the same on both platforms; custom emoji keep their name.
    """
    name = reaction_name(name.strip(":"))
    named = emoji.emojize(f":{name}:", language="alias")
    if named != f":{name}:":
        name = named
    return "".join(ch for ch in name if ch not in _MODIFIERS)


def snowflake_time(snowflake: int | str) -> float:
    """When a Discord ID was created, in epoch seconds (an interaction's ID: when it happened)."""
    return ((int(snowflake) >> 22) + DISCORD_EPOCH_MS) / 1000


@dataclass(frozen=True)
class Place:
    """Where a message is: guild (or DM), channel (a thread is a channel) and message ID."""

    workspace: str
    channel: str
    message: str
    thread: str | None = None  # the thread's ID when the channel is a thread


@dataclass(frozen=True)
class Click:
    """A 👍/👎 button click on a message."""

    place: Place
    user: str
    value: Value
    author: str | None
    occurred_at: float
    interaction_id: str


@dataclass(frozen=True)
class Reaction:
    """A reaction added to a message (Discord reports no time: the time it arrived)."""

    place: Place
    user: str
    emoji: str
    author: str | None
    occurred_at: float


@dataclass(frozen=True)
class Rating:
    """A conversation rated from the "Rate this conversation" modal, opened on one message."""

    place: Place
    user: str
    value: Value
    comment: str | None
    occurred_at: float
    interaction_id: str


@dataclass(frozen=True)
class VoteResult:
    """What a click or reaction did, for the reply to the person."""

    act_id: int | None = None
    ask: bool = False
    unmapped: bool = False
    stands: bool = False  # the vote is on record: new, or the same again (thanked again)

    @classmethod
    def of(cls, recorded: Recorded, ask: bool = False) -> VoteResult:
        """What storing the vote did; `ask` when its act (a new one) waits for a comment."""
        return cls(recorded.act_id, ask and recorded.created, stands=recorded.stands)


class DiscordFeedback:
    """Maps Discord messages to the customer's IDs and records votes, through the relay."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.settings = relay.settings
        self.own_id: str | None = None  # the relay bot's user ID, once logged in
        self.watched = frozenset(relay.settings.assistant_bot_ids)
        self.reactions = ReactionVotes(
            relay.settings.positive_reactions, relay.settings.negative_reactions, emoji_key
        )

    # --- mapping -------------------------------------------------------------------------

    def record_reply(
        self,
        place: Place,
        root: str | None,
        message_id: str | None,
        conversation_id: str | None,
        source: str = POSTED,
    ) -> None:
        """Remember a reply's IDs; `root` is its conversation's root (thread or message ID)."""
        self.relay.mappings.record(
            place.workspace,
            place.channel,
            place.message,
            message_id=message_id,
            conversation_id=conversation_id,
            thread_ts=root,
            source=source,
            now=time(),
        )

    def conversation(self, workspace: str, channel: str, root: str) -> str | None:
        """The conversation ID the agent returned last for this root, if any."""
        return self.relay.mappings.conversation(workspace, channel, root, source=POSTED)

    def resolve_conversation(self, place: Place, author: str | None = None) -> str | None:
        """The conversation ID of the conversation holding a message (see `Relay`).

        A channel message may also start a thread (the thread's ID is the message's): the
        conversation the agent bridge recorded there counts as this message's too.
        CONVERSATION_ID_TEMPLATE maps conversations a watched bot replied in (seen replying,
        or the message rated, `author`, is its), and the agent bridge's answer rated (recorded
        as it was posted, so never an error reply).
        """
        if self.is_watched(author):
            self.resolve(place, author)  # a watched bot's reply: mapped, conversation included
        recorded = self.relay.mappings.message(place.workspace, place.channel, place.message)
        return self.relay.conversation_of(
            place.workspace,
            place.channel,
            place.message,
            self.root_of(place),
            discover=lambda: self.thread_started_on(place),
            templates=recorded is not None and recorded.source == POSTED,
        )

    def thread_started_on(self, place: Place) -> str | None:
        """The conversation recorded for the thread started on a channel message, if any."""
        if place.thread or place.workspace == DM:
            return None
        return self.relay.mappings.conversation(place.workspace, place.message, place.message)

    @staticmethod
    def root_of(place: Place) -> str:
        """A conversation's root as the agent bridge keys it: thread, DM channel, else message."""
        if place.thread or place.workspace == DM:
            return place.channel
        return place.message

    def is_watched(self, author: str | None) -> bool:
        """True for ASSISTANT_BOT_IDS."""
        return author is not None and author in self.watched

    def resolve(self, place: Place, author: str | None) -> Mapping | None:
        """A reply's IDs: recorded, else (watched bots' replies only) from the templates.

        The relay's own messages that it didn't record when posting them (the agent bridge's
        error replies, "Add a comment" DMs) are no assistant replies, whatever the templates say.
        """
        mapping = self.relay.mappings.message(place.workspace, place.channel, place.message)
        if mapping or not self.is_watched(author):
            return mapping
        mapping = self.relay.templates.mapping(
            place.workspace, place.channel, place.message, place.thread
        )
        if mapping:
            self.record_reply(
                place, place.thread, mapping.message_id, mapping.conversation_id, mapping.source
            )
        return mapping

    def observe(self, place: Place, author: str) -> bool:
        """A watched bot's reply: map it now; True when 👍/👎 should be seeded on it (once)."""
        if not self.is_watched(author):
            return False
        if not self.resolve(place, author):
            log.info(
                "watched reply without a mapping or template workspace=%s channel=%s message=%s",
                place.workspace,
                place.channel,
                place.message,
            )
        return self.settings.seed_reactions and self.relay.first_time(
            f"discord:seed:{place.workspace}:{place.channel}:{place.message}"
        )

    def seed_emoji(self) -> list[str]:
        """The 👍 and 👎 to seed: the first name of each reaction set, as an emoji.

        A custom emoji can't be added by its name alone: such a set is not seeded.
        """
        firsts = (self.settings.positive_reactions[0], self.settings.negative_reactions[0])
        return [key for key in map(emoji_key, firsts) if emoji.is_emoji(key)]

    # --- votes ---------------------------------------------------------------------------

    def click(self, click: Click) -> VoteResult:
        """A button click: the act, waiting for a comment when one is asked for."""
        mapping = self.resolve(click.place, click.author)
        if not mapping:
            self._unmapped("button", click.place)
            return VoteResult(unmapped=True)
        ask = self.relay.wants_comment(click.value)
        recorded = self._record(
            click.place,
            click.user,
            click.value,
            click.occurred_at,
            "button",
            mapping,
            ask,
            seen_key=f"discord:interaction:{click.interaction_id}",
        )
        if ask and recorded.reason == SAME_VOTE:
            # Discord says nothing when a modal is dismissed: the same click again, while the
            # vote still waits, opens its comment modal again instead of a second wait.
            waiting = self.relay.outbox.waiting_for_comment(
                click.place.workspace, click.user, mapping.target
            )
            if waiting is not None:
                return VoteResult(waiting, ask=True, stands=True)
        return VoteResult.of(recorded, ask)

    def reaction(self, reaction: Reaction) -> VoteResult | None:
        """A reaction: None when it is no vote (other emoji, a bot's, an unmapped message)."""
        value = self.reactions.value(reaction.emoji)
        if not value or reaction.user == self.own_id or self.is_watched(reaction.user):
            return None
        mapping = self.resolve(reaction.place, reaction.author)
        if not mapping:
            self._unmapped("reaction", reaction.place)
            return None
        ask = self.relay.wants_comment(value)
        recorded = self._record(
            reaction.place, reaction.user, value, reaction.occurred_at, "reaction", mapping, ask
        )
        return VoteResult.of(recorded, ask)

    def rate_conversation(self, rating: Rating) -> VoteResult:
        """A conversation's 👍/👎 with its optional comment, sent as it is (no comment wait)."""
        conversation_id = self.resolve_conversation(rating.place)
        if not conversation_id:
            log.info(
                "conversation rating on unmapped conversation workspace=%s channel=%s "
                "message=%s: no signal",
                rating.place.workspace,
                rating.place.channel,
                rating.place.message,
            )
            return VoteResult(unmapped=True)
        root = self.root_of(rating.place)
        recorded = self._record(
            rating.place,
            rating.user,
            rating.value,
            rating.occurred_at,
            "shortcut",
            Mapping(None, conversation_id, root, POSTED),
            ask=False,
            seen_key=f"discord:interaction:{rating.interaction_id}",
            comment=rating.comment,  # cleaned (trimmed, cut) when stored
        )
        return VoteResult.of(recorded)

    def finish_comment(self, act_id: int, workspace: str, user: str, text: str | None) -> bool:
        """Release an act waiting for its comment (None: without one); False when too late."""
        comment = clean_comment(text)
        return self.relay.outbox.finish_comment(act_id, workspace, user, comment, time())

    def _record(
        self,
        place: Place,
        user: str,
        value: Value,
        occurred_at: float,
        source: str,
        mapping: Mapping,
        ask: bool,
        seen_key: str | None = None,
        comment: str | None = None,
    ) -> Recorded:
        act = Act(
            platform=PLATFORM,
            workspace=place.workspace,
            user_id=user,
            source=source,
            target=mapping.target,
            value=value,
            occurred_at=occurred_at,
            channel=place.channel,
            ts=place.message,
            comment=comment,
        )
        return self.relay.record_act(act, ask_comment=ask, seen_key=seen_key)

    def _unmapped(self, source: str, place: Place) -> None:
        log.info(
            "%s on unmapped message workspace=%s channel=%s message=%s: no signal",
            source,
            place.workspace,
            place.channel,
            place.message,
        )
