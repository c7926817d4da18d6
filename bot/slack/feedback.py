"""Slack votes turned into acts: mapping replies to the customer's IDs and recording votes."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from time import monotonic, time
from typing import Any

from slack_sdk import WebClient
from slack_sdk.webhook import WebhookClient

from bot.core.acts import Act, ReactionVotes, Value
from bot.core.mapping import METADATA, POSTED, USABLE_ID, Mapping, customer_id
from bot.core.outbox import Recorded
from bot.core.relay import Relay
from bot.core.settings import Settings, SettingsError, reaction_name
from bot.slack.bot_users import BotUsers
from bot.slack.follow_ups import FollowUps
from bot.slack.lookups import (
    SLACK_UNAVAILABLE,
    SlackUsers,
    fetch_message,
    fetch_thread,
    lookup_client,
    remember,
    unavailable_reason,
)
from bot.slack.manifest import METADATA_EVENT_TYPE

log = logging.getLogger("bot.slack")

# Messages fetched and found to be no reply, kept in memory (per process) for a minute, so a
# burst of reactions on one asks Slack once; not longer, since an app may add its metadata
# in an update (an app made from an older manifest gets no event for that).
NOT_REPLIES_KEPT = 10_000
NOT_REPLY_FOR = 60.0

# What a Slack reaction's name never holds: capitals, emoji characters (Slack sends names,
# `+1`, `thumbsup`, `white_check_mark`, in lowercase).
_NOT_IN_SLACK_NAMES = re.compile(r"[A-Z]|[^\w+'.:-]")


def check_reaction_names(settings: Settings) -> None:
    """SettingsError when POSITIVE_ or NEGATIVE_REACTIONS holds a name Slack never sends: its
    votes would go uncounted without a word (an emoji character is a Discord-only name)."""
    for name, given in (
        ("POSITIVE_REACTIONS", settings.positive_reactions),
        ("NEGATIVE_REACTIONS", settings.negative_reactions),
    ):
        for reaction in given:
            if _NOT_IN_SLACK_NAMES.search(reaction):
                raise SettingsError(
                    f"{name}: expected Slack's names of reactions, in lowercase, like "
                    f"+1,thumbsup (Discord reads them as the emoji they name), got {reaction!r}"
                )


UNAVAILABLE_NOTE = (
    "Slack didn't answer in time, so this vote wasn't recorded. Please try again in a moment."
)


@dataclass(frozen=True)
class Vote:
    """A person's 👍/👎 as Slack reported it, before it is mapped."""

    workspace: str
    user_id: str
    channel: str
    ts: str
    value: Value
    occurred_at: float
    source: str


def workspace_of(context: Any) -> str:
    """The workspace key of a request: its team, or its enterprise for org-wide installs."""
    return str(context.team_id or context.enterprise_id or "")


def metadata_ids(message: dict[str, Any]) -> tuple[str | None, str | None] | None:
    """(message_id, conversation_id) from a message's `brixo_message` metadata."""
    metadata = message.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("event_type") != METADATA_EVENT_TYPE:
        return None
    payload = metadata.get("event_payload")
    if not isinstance(payload, dict):
        return None
    ids = []
    for field in ("message_id", "conversation_id"):
        raw = payload.get(field)
        ids.append(customer_id(raw))
        if raw is not None and ids[-1] is None:
            log.warning(
                "ignored the %s of brixo_message metadata on %s: not %s",
                field,
                message.get("ts") or message.get("message_ts"),  # a fetched message, or an event
                USABLE_ID,
            )
    message_id, conversation_id = ids
    if not message_id and not conversation_id:
        return None
    return message_id, conversation_id


def same_workspace(message: dict[str, Any], workspace: str) -> bool:
    """False for a fetched message posted in another workspace than the voter's.

    Keys include the workspace: a vote from T2 may never map a T1 reply. Enterprise-wide
    keys (E…) can't be compared with a message's team and are let through.
    """
    team = message.get("team")
    if not isinstance(team, str) or not team or workspace.startswith("E") or team == workspace:
        return True
    log.info("vote from workspace %s on a message of workspace %s: no signal", workspace, team)
    return False


def root_of(message: dict[str, Any], ts: str) -> str:
    """The root of the thread message `ts` is in: a top-level message roots its own."""
    thread_ts = message.get("thread_ts")
    return thread_ts if isinstance(thread_ts, str) and thread_ts else ts


class SlackFeedback:
    """What Slack listeners share: the relay, the settings and the mapping rules."""

    def __init__(self, relay: Relay, *, agent_bridge: bool) -> None:
        self.relay = relay
        self.settings: Settings = relay.settings
        self.agent_bridge = agent_bridge  # the app's own messages are the bridge's
        self.watched = frozenset(relay.settings.assistant_bot_ids)
        self.bot_users = BotUsers(relay.db)
        self.slack_users = SlackUsers()
        # Every skin tone and both of Slack's names count, also of a name configured with a
        # skin tone (seeded as given).
        self.reactions = ReactionVotes(
            relay.settings.positive_reactions, relay.settings.negative_reactions, reaction_name
        )
        self.follow_ups = FollowUps()
        # Clicks' and the shortcut's: threads of their own, so that their modals (trigger IDs
        # lapse after 3 s) never queue behind work waiting out a 429's Retry-After (seeding).
        self.interactions = FollowUps()
        self.not_replies: dict[tuple[str, str, str], float] = {}  # key -> until, see resolve

    # --- mapping -------------------------------------------------------------------------

    def record_reply(
        self,
        workspace: str,
        channel: str,
        ts: str,
        thread_ts: str | None,
        message_id: str | None,
        conversation_id: str | None,
        source: str = POSTED,
    ) -> Mapping:
        """Remember a reply's IDs (a higher-ranked source's stay); returns the mapping in force."""
        return self.relay.mappings.record(
            workspace,
            channel,
            ts,
            message_id=message_id,
            conversation_id=conversation_id,
            thread_ts=thread_ts,
            source=source,
            now=time(),
        )

    def is_watched(self, message: dict[str, Any], own_bot_id: str | None) -> bool:
        """True for replies of ASSISTANT_BOT_IDS, or of this app itself."""
        authors = {message.get("bot_id"), message.get("user")} - {None}
        return bool(authors & self.watched) or (own_bot_id is not None and own_bot_id in authors)

    def is_bridge_note(self, message: dict[str, Any], own_bot_id: str | None) -> bool:
        """True for this app's own messages that the agent bridge didn't map when it posted
        them (its error replies): they are no assistant replies, whatever the templates say."""
        authors = {message.get("bot_id"), message.get("user")}
        own = own_bot_id is not None and own_bot_id in authors
        return own and self.agent_bridge and not authors & self.watched

    def answered(
        self, workspace: str, channel: str, message: dict[str, Any], own_bot_id: str | None
    ) -> bool:
        """True for an assistant's reply: a watched bot's, or this app's own (with the agent
        bridge, only an answer it recorded as it posted it, never an error reply)."""
        if not self.is_watched(message, own_bot_id):
            return False
        if not self.is_bridge_note(message, own_bot_id):
            return True
        ts = message.get("ts")
        return (
            isinstance(ts, str) and self.relay.mappings.message(workspace, channel, ts) is not None
        )

    def learn_bot_user(self, bot_id: Any, user_id: Any) -> None:
        """A watched bot's user ID, from a message or metadata event: its reactions aren't votes."""
        if bot_id in self.watched and isinstance(user_id, str) and user_id:
            self.bot_users.learn(str(bot_id), user_id)

    def is_bot_user(self, user: str, own_user_id: str | None) -> bool:
        """True for the relay's own user and watched bots (by user ID, or as seen posting)."""
        return user == own_user_id or user in self.watched or user in self.bot_users

    def map_message(
        self, workspace: str, channel: str, message: dict[str, Any], own_bot_id: str | None
    ) -> Mapping | None:
        """Map a message from its metadata, else (watched authors only) from the templates."""
        ts = message.get("ts")
        if not isinstance(ts, str):
            return None
        self.learn_bot_user(message.get("bot_id"), message.get("user"))
        thread_ts = root_of(message, ts)
        ids = metadata_ids(message)
        if ids:
            return self.record_reply(workspace, channel, ts, thread_ts, *ids, source=METADATA)
        if not self.is_watched(message, own_bot_id) or self.is_bridge_note(message, own_bot_id):
            return None
        mapping = self.relay.templates.mapping(workspace, channel, ts, thread_ts)
        if not mapping:
            return None
        return self.record_reply(
            workspace,
            channel,
            ts,
            thread_ts,
            mapping.message_id,
            mapping.conversation_id,
            source=mapping.source,
        )

    def resolve(
        self,
        client: WebClient,
        workspace: str,
        channel: str,
        ts: str,
        own_bot_id: str | None,
        *,
        before_ack: bool = True,
        author: str | None = None,
    ) -> Mapping | None:
        """A reply's IDs: recorded, else from its metadata or the templates (fetched once).

        A message Slack says a person wrote (`author`, checked once per person) is no reply:
        it isn't fetched, nor is a message fetched within the last minute that turned out no
        reply. Raises one of SLACK_UNAVAILABLE when the fetch fails for now;
        `before_ack` asks with `lookup_client` (fail fast), else with `client` and its retries.
        """
        mapping = self.relay.mappings.message(workspace, channel, ts)
        if mapping or self.not_replies.get((workspace, channel, ts), 0.0) > monotonic():
            return mapping
        lookups = lookup_client(client) if before_ack else client
        if author and self.written_by_a_person(lookups, author):
            return None
        message = fetch_message(lookups, channel, ts)
        if not message or not same_workspace(message, workspace):
            return None
        mapping = self.map_message(workspace, channel, message, own_bot_id)
        if mapping is None:
            until = monotonic() + NOT_REPLY_FOR
            remember(self.not_replies, (workspace, channel, ts), until, NOT_REPLIES_KEPT)
        return mapping

    def written_by_a_person(self, client: WebClient, author: str) -> bool:
        """True when Slack says `author` is a person (apps post replies and their metadata);
        False for bots, and when Slack can't say now."""
        try:
            return self.slack_users.is_person(client, author)
        except SLACK_UNAVAILABLE:
            return False

    def thread_of(self, client: WebClient, workspace: str, channel: str, ts: str) -> str | None:
        """The thread of a reply mapped without one (metadata events carry none), asked of
        Slack and kept (asked again next time if Slack couldn't say); None outside threads."""
        try:
            message = fetch_message(client, channel, ts)
        except SLACK_UNAVAILABLE as error:
            log.info(
                "can't find the thread of %s in %s: %s", ts, channel, unavailable_reason(error)
            )
            return None
        if not message or not same_workspace(message, workspace):
            return None
        thread_ts = root_of(message, ts)
        ids = metadata_ids(message)
        if ids:
            self.record_reply(workspace, channel, ts, thread_ts, *ids, source=METADATA)
        return thread_ts if thread_ts != ts else None

    def resolve_conversation(
        self,
        client: WebClient,
        workspace: str,
        channel: str,
        ts: str,
        thread_ts: str | None,
        own_bot_id: str | None,
    ) -> str | None:
        """The conversation ID of the thread holding message `ts`: recorded, else from the
        thread's metadata, else from the templates when an assistant replied in the thread."""
        root = thread_ts or ts

        def from_thread() -> str | None:
            assistant_replied = False
            for message in fetch_thread(client, channel, root):
                if not same_workspace(message, workspace):
                    continue
                self.learn_bot_user(message.get("bot_id"), message.get("user"))
                ids = metadata_ids(message)
                if ids and ids[1]:
                    self.record_reply(
                        workspace, channel, message["ts"], root, *ids, source=METADATA
                    )
                    return ids[1]
                assistant_replied = assistant_replied or self.answered(
                    workspace, channel, message, own_bot_id
                )
            mapping = self.relay.templates.mapping(workspace, channel, ts, root)
            return mapping.conversation_id if mapping and assistant_replied else None

        return self.relay.conversation_of(
            workspace, channel, ts, root, from_thread, templates=False
        )

    # --- votes ---------------------------------------------------------------------------

    def record_vote(
        self,
        vote: Vote,
        mapping: Mapping,
        *,
        ask_comment: bool,
        seen_key: str | None = None,
        comment: str | None = None,
        hold_for: float | None = None,
    ) -> Recorded:
        """Store the act for a mapped vote; with `ask_comment` it waits for the comment, with
        `hold_for` it is due only that many seconds later (unless released sooner)."""
        act = Act(
            platform="slack",
            workspace=vote.workspace,
            user_id=vote.user_id,
            source=vote.source,
            target=mapping.target,
            value=vote.value,
            occurred_at=vote.occurred_at,
            comment=comment,
            channel=vote.channel,
            ts=vote.ts,
        )
        return self.relay.record_act(
            act, ask_comment=ask_comment, seen_key=seen_key, hold_for=hold_for
        )


def ephemeral(
    client: WebClient,
    channel: str,
    user: str,
    text: str,
    *,
    response_url: str | None = None,
    **extra: Any,
) -> None:
    """A short note only `user` sees; failures are logged, never raised.

    Where the app can't post (a conversation it isn't in, which a shortcut can come from),
    the interaction's `response_url`, when given, still reaches the person.
    """
    try:
        client.chat_postEphemeral(channel=channel, user=user, text=text, **extra)
        return
    except SLACK_UNAVAILABLE as error:
        reason = unavailable_reason(error)
    if response_url:
        try:
            webhook = WebhookClient(
                response_url, timeout=client.timeout, ssl=client.ssl, proxy=client.proxy
            )
            sent = webhook.send(text=text, response_type="ephemeral", replace_original=False)
            if sent.status_code == 200:
                return
            reason += f"; response_url: HTTP {sent.status_code}"
        except SLACK_UNAVAILABLE as error:
            reason += f"; response_url: {unavailable_reason(error)}"
    log.info("can't post an ephemeral note in %s: %s", channel, reason)
