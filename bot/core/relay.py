"""The core relay: database, mappings, outbox and delivery, built from settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import time
from typing import Any

from bot.core.acts import DOWN, Act, Value
from bot.core.brixo import BrixoClient
from bot.core.db import Database
from bot.core.delivery import AcksFirst, DeliveryWorker, RetryPolicy
from bot.core.forks import at_fork
from bot.core.mapping import Mappings, Templates
from bot.core.outbox import AWAITING_COMMENT, Outbox, Recorded, mark_seen
from bot.core.settings import Settings

log = logging.getLogger(__name__)


# What people are told, on every chat platform: a comment after its vote was sent, a vote or
# a conversation rating on something no mapping links to the customer's IDs.
TOO_LATE = "Your vote was already sent, so this comment can't be added; thanks all the same."
UNMAPPED_NOTE = (
    "I can't link this message to an assistant reply that Brixo knows, so this vote wasn't "
    "recorded."
)
UNMAPPED_CONVERSATION = (
    "I can't link this conversation to one that Brixo knows, so it can't be rated here."
)


class Relay:
    """Everything a chat adapter needs to turn votes into delivered signals."""

    def __init__(self, settings: Settings) -> None:
        settings.require("brixo_api_key")
        self.settings = settings
        self.db = Database(settings.database_url)
        self.db.migrate(time())
        self.templates = Templates(settings.message_id_template, settings.conversation_id_template)
        self.mappings = Mappings(self.db, self.templates)
        self.outbox = Outbox(self.db)
        # `relay.acks_first.begin()`/`end()` around each chat request: delivery makes way for it.
        self.acks_first = AcksFirst()
        self.worker = self._new_worker()
        at_fork(in_child=self._renew)

    def _new_worker(self) -> DeliveryWorker:
        """Delivery with a Brixo session of its own."""
        settings = self.settings
        client = BrixoClient(
            settings.brixo_api_key or "",
            settings.brixo_api_url,
            pool_size=settings.delivery_concurrency,
        )
        worker = DeliveryWorker(
            self.outbox,
            client,
            settings.delivery_concurrency,
            RetryPolicy.from_settings(settings),
            acks_first=self.acks_first,
        )
        self.outbox.deliverer = worker
        return worker

    def _renew(self) -> None:
        """In a forked child: a delivery of its own (its own lease owner, threads and Brixo
        connections), started when the parent's was; the parent's goes on in the parent."""
        running = self.worker.running
        self.worker = self._new_worker()
        if running:
            self.start()

    def __repr__(self) -> str:
        return f"Relay(database={self.db.engine.url!r})"

    def start(self) -> None:
        """Start delivering in the background."""
        self.worker.start()

    def stop(self, timeout: float = 25.0) -> None:
        """Stop delivering: requests in flight finish within `timeout`, the rest stays pending."""
        self.worker.stop(timeout)

    def conversation_of(
        self,
        workspace: str,
        channel: str,
        ts: str,
        root: str,
        discover: Callable[[], str | None] | None = None,
        *,
        templates: bool = True,
    ) -> str | None:
        """The conversation ID of message `ts`, whose conversation starts at `root`.

        Recorded for the root, else recorded with the message, else what `discover` finds (a
        platform's own lookup), else (with `templates`) CONVERSATION_ID_TEMPLATE; None when
        nothing gives one.
        """
        found = self.mappings.conversation(workspace, channel, root)
        if found:
            return found
        mapping = self.mappings.message(workspace, channel, ts)
        if mapping and mapping.conversation_id:
            return mapping.conversation_id
        discovered = discover() if discover else None
        if discovered or not templates:
            return discovered
        from_templates = self.templates.mapping(workspace, channel, ts, root)
        return from_templates.conversation_id if from_templates else None

    def wants_comment(self, value: Value) -> bool:
        """Whether ASK_COMMENT asks for a comment on this vote."""
        ask = self.settings.ask_comment
        return ask == "always" or (ask == "negative" and value == DOWN)

    def record_act(
        self,
        act: Act,
        *,
        ask_comment: bool,
        seen_key: str | None = None,
        hold_for: float | None = None,
    ) -> Recorded:
        """Store an act (waiting COMMENT_WAIT for its comment with `ask_comment`, else due in
        `hold_for` seconds when given, else now); log one line."""
        now = time()
        until = now + self.settings.comment_wait if ask_comment else None
        not_before = now + hold_for if hold_for is not None and until is None else None
        recorded = self.outbox.record(
            act, now, comment_until=until, seen_key=seen_key, not_before=not_before
        )
        if not recorded.created:
            outcome = f"skipped ({recorded.reason})"
        else:
            outcome = "waiting for comment" if ask_comment else "queued"
        log.info(
            "act=%s workspace=%s source=%s target=%s:%s value=%s %s",
            recorded.act_id or "-",
            act.workspace,
            act.source,
            act.target.kind,
            act.target.id,
            act.value,
            outcome,
        )
        return recorded

    def awaits_comment(self, act_id: int) -> bool:
        """True while the act still waits for its comment (not yet sent without one)."""
        state = self.outbox.states_of([act_id], time()).get(act_id)
        return state is not None and state[0] == AWAITING_COMMENT

    def first_time(self, key: str) -> bool:
        """True the first time `key` is seen (within a day), across every process."""
        with self.db.write() as conn:
            return mark_seen(self.db, conn, key, time())

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(votes can be stored, the /healthz report); Brixo's state never makes it False."""
        worker = self.worker
        report: dict[str, Any] = {
            "ok": True,
            "database": "ok",
            "brixo": worker.brixo_state,
            "delivery": delivery_state(worker),
        }
        held = worker.held_for()
        if held and worker.running:
            report["sends_held_for"] = round(held, 1)
        problem = self.db.problem()
        if problem is None:
            try:
                report["outbox"] = self.outbox.counts(time())
            except Exception as error:  # the database failed between the two calls
                problem = type(error).__name__
        if problem:
            report.update(ok=False, database="unavailable", database_error=problem)
        return report["ok"], report


def delivery_state(worker: DeliveryWorker) -> str:
    """What /healthz says of delivery: running, paused (Brixo refuses the key) or stopped (not
    started yet, or stopped: library mode outside `with relay:`)."""
    if not worker.running:
        return "stopped"
    return "paused" if worker.paused else "running"
