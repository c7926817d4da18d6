"""Events API: reactions, watched replies, metadata, and messages for the agent."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from time import time
from typing import Any

from slack_bolt import App, BoltContext, BoltRequest
from slack_sdk import WebClient

from bot.core.acts import Value
from bot.core.mapping import METADATA
from bot.slack.agent import AgentBridge, Question
from bot.slack.blocks import add_comment_blocks
from bot.slack.feedback import SlackFeedback, Vote, ephemeral, metadata_ids, workspace_of
from bot.slack.listeners.common import dig, slack_time, text_field
from bot.slack.lookups import SLACK_UNAVAILABLE, unavailable_reason

log = logging.getLogger("bot.slack")

# Message subtypes a person's message to the agent may carry.
PERSON_SUBTYPES = (None, "file_share", "thread_broadcast", "me_message")


@dataclass(frozen=True)
class Reacted:
    """A reaction's act, recorded on the ack path, and what its follow-up needs."""

    act_id: int | None  # None: the same vote again, thanked but not sent
    user: str
    channel: str
    value: Value
    ask: bool  # the act waits for a comment: the thanks offers "Add a comment"
    check_user: bool  # a user not seen before: is it a bot? (the act is held meanwhile)
    thread_ts: str | None  # where the thanks goes
    thread_unknown: tuple[str, str, str] | None  # (workspace, channel, ts) to ask Slack about


def register(app: App, feedback: SlackFeedback, agent: AgentBridge | None) -> None:
    """Attach the event listeners."""

    def record_reaction(
        body: dict[str, Any],
        event: dict[str, Any],
        context: BoltContext,
        client: WebClient,
        request: BoltRequest,
    ) -> None:
        """Ack path: a 👍/👎 reaction on a mapped reply becomes an act.

        When Slack can't be asked about an unseen reply, the event fails (a 500) and Slack sends
        it again, but not after its last retry: that one is acked and looked up after the ack.
        """
        try:
            reacted = reaction_act(feedback, body, event, context, client)
        except SLACK_UNAVAILABLE as error:
            if retry_num(request) < SLACK_LAST_RETRY:
                raise
            log.warning(
                "Slack failed a lookup on its last delivery of a reaction (%s): "
                "looked up again after the ack",
                unavailable_reason(error),
            )
            feedback.follow_ups.submit(record_reaction_late, feedback, body, event, context, client)
            return
        if has_follow_up(feedback, reacted):
            feedback.follow_ups.submit(follow_up_reaction, feedback, reacted, client)

    def record_metadata(event: dict[str, Any], context: BoltContext, client: WebClient) -> None:
        """A `brixo_message` posted by any app: remember its IDs (and a watched bot's user);
        a watched bot's reply, now rateable, gets its 👍/👎 after the ack."""
        feedback.learn_bot_user(event.get("bot_id"), event.get("user_id"))
        ids = metadata_ids(event)
        channel, ts = text_field(event, "channel_id"), text_field(event, "message_ts")
        workspace = workspace_of(context)
        if not (ids and channel and ts and workspace):
            return
        feedback.record_reply(workspace, channel, ts, None, *ids, source=METADATA)
        poster = {"bot_id": event.get("bot_id"), "user": event.get("user_id")}
        if feedback.settings.seed_reactions and feedback.is_watched(poster, None):
            feedback.follow_ups.submit(seed_reactions, feedback, client, workspace, channel, ts)

    def observe_message(event: dict[str, Any], context: BoltContext, client: WebClient) -> None:
        """Ack path: map a watched bot's reply; after the ack, seed 👍/👎 or ask the agent."""
        handoff = message_handoff(feedback, agent, event, context)
        if isinstance(handoff, Question):
            assert agent  # only asked for with one
            agent.answer_later(client, handoff)
        elif handoff:
            feedback.follow_ups.submit(seed_reactions, feedback, client, *handoff)

    def answer_mention(event: dict[str, Any], context: BoltContext, client: WebClient) -> None:
        """A mention in a channel goes to the agent (once, even if a message event carries it)."""
        question = person_question(event, context, mention=True)
        if question and agent:
            agent.answer_later(client, question)

    app.event("reaction_added")(record_reaction)
    app.event("reaction_removed")(log_reaction_removed)
    app.event("message_metadata_posted")(record_metadata)
    app.event("message_metadata_updated")(record_metadata)  # a placeholder given its IDs later
    app.event("message")(observe_message)
    app.event("app_mention")(answer_mention)
    app.event("assistant_thread_started")(nothing)
    app.event("assistant_thread_context_changed")(nothing)


def log_reaction_removed(event: dict[str, Any], context: BoltContext) -> None:
    """The API has no retraction: a removed reaction is logged and sends nothing."""
    log.info(
        "reaction removed workspace=%s user=%s reaction=%s channel=%s ts=%s: no signal",
        workspace_of(context),
        event.get("user"),
        event.get("reaction"),
        dig(event, "item", "channel"),
        dig(event, "item", "ts"),
    )


def nothing(event: dict[str, Any]) -> None:
    """Acknowledged; nothing to do."""


# Slack sends an event that failed three times more, the last with X-Slack-Retry-Num: 3.
SLACK_LAST_RETRY = 3


def has_follow_up(feedback: SlackFeedback, reacted: Reacted | None) -> bool:
    """Whether a recorded reaction's act has work left after the ack."""
    follows = reacted and (reacted.ask or reacted.check_user or feedback.settings.ack_message)
    return bool(follows)


def record_reaction_late(
    feedback: SlackFeedback,
    body: dict[str, Any],
    event: dict[str, Any],
    context: BoltContext,
    client: WebClient,
) -> None:
    """After the ack of Slack's last delivery: the reaction, looked up with the client's
    retries; when Slack still can't say, the vote is logged as lost, with its reply."""
    try:
        reacted = reaction_act(feedback, body, event, context, client, before_ack=False)
    except SLACK_UNAVAILABLE as error:
        log.error(
            "reaction not recorded, Slack's lookups failed (%s): workspace=%s user=%s "
            "reaction=%s channel=%s ts=%s (python -m bot send can send it by hand)",
            unavailable_reason(error),
            workspace_of(context),
            event.get("user"),
            event.get("reaction"),
            dig(event, "item", "channel"),
            dig(event, "item", "ts"),
        )
        return
    if has_follow_up(feedback, reacted):
        assert reacted
        follow_up_reaction(feedback, reacted, client)


def follow_up_reaction(
    feedback: SlackFeedback, reacted: Reacted, client: WebClient, tries: int = 0
) -> None:
    """After the ack: whether a user not seen before is a bot (its act is then discarded;
    asked again later while Slack can't say), then thanks, with an "Add a comment" button
    when a comment is asked for."""
    text, act_id = feedback.settings.ack_message, reacted.act_id
    if reacted.check_user and act_id is not None:
        last_try = tries >= len(USER_CHECK_RETRIES)
        person = settle_unknown_user(feedback, reacted, act_id, client, last_try)
        if person is None:
            wait = USER_CHECK_RETRIES[tries]
            if not reacted.ask:  # (one waiting for its comment is held that long anyway)
                hold = time() + wait + USER_CHECK_HOLD
                feedback.relay.outbox.hold_until(act_id, hold)
            feedback.follow_ups.submit_later(
                wait, follow_up_reaction, feedback, reacted, client, tries + 1
            )
        if not person:
            return
    if not (reacted.ask or text):
        return
    thread_ts = reacted.thread_ts
    if reacted.thread_unknown:
        thread_ts = feedback.thread_of(client, *reacted.thread_unknown)
    if reacted.ask and act_id is not None:
        ephemeral(
            client,
            reacted.channel,
            reacted.user,
            text or "Add a comment?",
            blocks=add_comment_blocks(text, act_id, reacted.value),
            thread_ts=thread_ts,
        )
    else:
        ephemeral(client, reacted.channel, reacted.user, text, thread_ts=thread_ts)


def retry_num(request: BoltRequest) -> int:
    """Which of Slack's retries this request is (0: the first delivery)."""
    values = request.headers.get("x-slack-retry-num") or ["0"]
    raw = values[0] if isinstance(values, (list, tuple)) else str(values)
    return int(raw) if raw.isascii() and raw.isdigit() else 0


# How long a reaction by a user not seen before waits for Slack to say whether it is a bot's
# (the act is due then anyway, should the answer never come: the process stopped, say).
USER_CHECK_HOLD = 10.0
# When Slack can't say (a 429, a 5xx, a timeout, left after the client's own retries), it is
# asked again after these waits, the hold stretched to each try's USER_CHECK_HOLD; then the
# reaction counts as a person's.
USER_CHECK_RETRIES = (2.0, 10.0, 30.0)


def settle_unknown_user(
    feedback: SlackFeedback, reacted: Reacted, act_id: int, client: WebClient, last_try: bool
) -> bool | None:
    """After the ack: is the user of a held reaction a bot? A bot's act is discarded (False);
    a person's is due at once, unless it waits for a comment (True). None: Slack couldn't say,
    ask again (unless `last_try`: the reaction then counts)."""
    user = reacted.user
    try:
        bot = feedback.slack_users.is_bot(client, user)
    except SLACK_UNAVAILABLE as error:
        reason = unavailable_reason(error)
        if not last_try:
            log.info(
                "can't ask Slack whether %s is a bot yet (%s): act=%s held", user, reason, act_id
            )
            return None
        log.warning("can't ask Slack whether %s is a bot (%s): counting the reaction", user, reason)
        bot = False
    outbox = feedback.relay.outbox
    if not bot:
        if not reacted.ask:
            outbox.release_now(act_id, time())
        return True
    if outbox.discard(act_id):
        log.info("reaction by bot user %s: act=%s discarded, no signal", user, act_id)
    else:
        log.warning("reaction by bot user %s: act=%s was already being sent", user, act_id)
    return False


def reaction_act(
    feedback: SlackFeedback,
    body: dict[str, Any],
    event: dict[str, Any],
    context: BoltContext,
    client: WebClient,
    *,
    before_ack: bool = True,
) -> Reacted | None:
    """Record the act a reaction stands for; None when there is none (no vote, a bot's, an
    unmapped reply, already recorded).

    Raises one of SLACK_UNAVAILABLE when Slack can't be asked about an unseen reply.
    """
    user = text_field(event, "user")
    value = feedback.reactions.value(str(event.get("reaction") or ""))
    channel, ts = text_field(event, "item", "channel"), text_field(event, "item", "ts")
    workspace = workspace_of(context)
    if not value:
        return None  # no 👍/👎
    if dig(event, "item", "type") != "message" or not (user and channel and ts):
        log.debug(
            "reaction without a person, or not on a message (item type %s): no vote",
            dig(event, "item", "type"),
        )
        return None
    if feedback.is_bot_user(user, context.bot_user_id) or feedback.slack_users.is_bot_known(user):
        return None  # a bot's reaction, the relay's own seeded ones included
    author = text_field(event, "item_user")
    if author and feedback.is_bot_user(author, context.bot_user_id):
        author = None  # the relay's or a watched bot's message: looked up in any case
    mapping = feedback.resolve(
        client, workspace, channel, ts, context.bot_id, before_ack=before_ack, author=author
    )
    if not mapping:
        log.info(
            "reaction on unmapped message workspace=%s channel=%s ts=%s: no signal",
            workspace,
            channel,
            ts,
        )
        return None
    event_id = text_field(body, "event_id")
    vote = Vote(
        workspace,
        user,
        channel,
        ts,
        value,
        slack_time(event.get("event_ts"), slack_time(body.get("event_time"), time())),
        "reaction",
    )
    ask = feedback.relay.wants_comment(value)
    # A user not seen before may be another app's bot: Slack is asked after the ack, and the
    # act is held meanwhile (due anyway after USER_CHECK_HOLD, should that answer never come).
    check_user = not feedback.slack_users.knows(user)
    recorded = feedback.record_vote(
        vote,
        mapping,
        ask_comment=ask,
        seen_key=f"event:{workspace}:{event_id}" if event_id else None,
        hold_for=USER_CHECK_HOLD if check_user else None,
    )
    if not recorded.stands:
        return None
    return Reacted(
        recorded.act_id,
        user,
        channel,
        value,
        ask and recorded.created,
        check_user and recorded.created,
        thread_ts=mapping.thread_ts if mapping.thread_ts != ts else None,
        # Mapped from metadata with no thread (its event carries none): Slack knows it.
        thread_unknown=(workspace, channel, ts)
        if not mapping.thread_ts and mapping.source == METADATA
        else None,
    )


def message_handoff(
    feedback: SlackFeedback, agent: AgentBridge | None, event: dict[str, Any], context: BoltContext
) -> tuple[str, str, str] | Question | None:
    """Map a watched reply now; what the follow-up does with this message: seed the reply at
    (workspace, channel, ts) with 👍/👎, ask the agent a question, or nothing (None)."""
    workspace, channel = workspace_of(context), text_field(event, "channel")
    ts = text_field(event, "ts")
    if not (workspace and channel and ts) or event.get("subtype") not in (
        *PERSON_SUBTYPES,
        "bot_message",
    ):
        return None
    own = {context.bot_id, context.bot_user_id} - {None}
    authors = {event.get("bot_id"), event.get("user")} - {None}
    if authors & own:
        return None  # the relay's own reply: mapped when it was posted
    if feedback.is_watched(event, None):
        if not feedback.map_message(workspace, channel, event, None):
            # Its metadata may come in an event of its own: seeded then (a vote on it now
            # could send nothing).
            log.info(
                "watched reply without metadata or template workspace=%s channel=%s ts=%s: "
                "not seeded (until its metadata comes)",
                workspace,
                channel,
                ts,
            )
            return None
        return (workspace, channel, ts) if feedback.settings.seed_reactions else None
    if agent and event.get("channel_type") == "im":
        return person_question(event, context, mention=False)
    return None


def person_question(event: dict[str, Any], context: BoltContext, mention: bool) -> Question | None:
    """The agent's question from a person's message, or None for bots and odd messages."""
    user, channel, ts = (
        text_field(event, "user"),
        text_field(event, "channel"),
        text_field(event, "ts"),
    )
    text = str(event.get("text") or "")
    if (
        event.get("bot_id")
        or event.get("subtype") not in PERSON_SUBTYPES
        or not (user and channel and ts)
        or user == context.bot_user_id
    ):
        return None
    if mention and context.bot_user_id:
        text = re.sub(rf"<@{re.escape(context.bot_user_id)}(\|[^>]*)?>", "", text).strip()
    return Question(workspace_of(context), channel, user, text, ts, text_field(event, "thread_ts"))


def seed_reactions(
    feedback: SlackFeedback, client: WebClient, workspace: str, channel: str, ts: str
) -> None:
    """Add 👍 and 👎 to a watched reply once, so people only have to click one."""
    if not feedback.relay.first_time(f"seed:{workspace}:{channel}:{ts}"):
        return
    for name in (feedback.settings.positive_reactions[0], feedback.settings.negative_reactions[0]):
        try:
            client.reactions_add(channel=channel, timestamp=ts, name=name)
        except SLACK_UNAVAILABLE as error:  # a timeout or a network error too: on to the next
            reason = unavailable_reason(error)
            if not reason.endswith(": already_reacted"):
                log.info("can't seed :%s: on %s: %s", name, ts, reason)
