"""`send`: one signal to Brixo now, without a server, delivered as the worker would.

It needs no database; where the relay's exists, it honours and stores the relays' 429 hold.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from time import time
from typing import Any

from bot.commands.holds import hold_sends, seconds_held
from bot.core.acts import MAX_COMMENT_CHARS, VALUES, Target, TargetKind, clean_comment
from bot.core.brixo import Answer, BrixoClient
from bot.core.delivery import RetryPolicy, Sender, cut_comment, signal_of
from bot.core.outbox import DELIVERED, Claimed
from bot.core.settings import Settings

# Why `send` did not deliver, by Outcome value.
WHY_NOT = {
    "retry": "not delivered; the relay would retry this, send does not",
    "not_found": "Brixo doesn't know this ID, or not yet; the relay would retry for a while",
    "unauthorized": "Brixo refused the API key",
    "rejected": "Brixo rejected it",
    "too_large": "too large for Brixo",
}
# ... when Ctrl-C came while it was being sent.
INTERRUPTED = (
    "if the request went out, Brixo may have the signal, and sending it again may count it twice"
)
# ... when the request went out but no answer came back.
UNANSWERED = (
    "sent, but Brixo didn't answer: it may have the signal, and sending it again may count it "
    "twice; the relay would retry this, send does not"
)


def send(args: argparse.Namespace, settings: Settings) -> int:
    """Send the signal that `args` describe; print one line; 0 when delivered."""
    settings.require("brixo_api_key")
    assert settings.brixo_api_key
    kind: TargetKind = "message" if args.message is not None else "conversation"
    try:
        target = Target(kind, utf8(getattr(args, kind)))
    except ValueError as error:
        print(f"error: --{kind}: {error}", file=sys.stderr)
        return 2
    now = time()
    try:
        comment = stored_comment(None if args.comment is None else utf8(args.comment))
    except ValueError as error:
        print(f"error: --comment: {error}", file=sys.stderr)
        return 2
    held = seconds_held(settings, say_why=True)
    if held > 0:  # a relay on this database was asked to wait (429): so is every request
        print(f"not sent: Brixo asked to wait (Retry-After); try again in {held:.0f} s")
        return 1
    act = Claimed(0, "", target, VALUES[args.value], now, comment, False, 0, None, now)
    client = BrixoClient(settings.brixo_api_key, settings.brixo_api_url, pool_size=1)
    try:
        answer, row = deliver_once(client, RetryPolicy.from_settings(settings), act, lambda _: True)
    except KeyboardInterrupt:
        print(f"interrupted: {INTERRUPTED}", file=sys.stderr)
        return 130
    finally:
        client.close()
    assert row is not None
    held_note = ""
    if answer.retry_after and hold_sends(settings, time() + answer.retry_after):
        held_note = (
            f"; every relay on this database now holds its sends for {answer.retry_after:.0f} s"
            " (Retry-After)"
        )
    if row["state"] == DELIVERED:
        print(f"delivered: {answer.describe()}{cut_note(act, row)}")
        return 0
    why = UNANSWERED if answer.unanswered else WHY_NOT[answer.outcome.value]
    print(f"failed ({why}): {answer.describe()}{cut_note(act, row)}{held_note}")
    return 1


def utf8(text: str) -> str:
    """`text` when it is valid UTF-8 (argv that isn't arrives with surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid UTF-8") from None
    return text


def stored_comment(text: str | None) -> str | None:
    """The comment as stored (`clean_comment`), saying on stderr when it had to be cut."""
    comment = clean_comment(text, limit=None)
    if comment is not None and len(comment) > MAX_COMMENT_CHARS:
        print(f"note: comment cut to {MAX_COMMENT_CHARS} characters", file=sys.stderr)
    return None if comment is None else comment[:MAX_COMMENT_CHARS]


def deliver_once(
    sender: Sender, policy: RetryPolicy, act: Claimed, record: Callable[[dict[str, Any]], bool]
) -> tuple[Answer, dict[str, Any] | None]:
    """Send `act` as the delivery worker does, and `record` the outcome row it would write.

    When that row says to send again at once with the comment cut (a 413), that is done first,
    still under this lease, and only the last row is recorded. Returns the last answer and its
    row; no row when `record` refused it (the lease was lost).
    """
    while True:
        answer = sender.send(signal_of(act))
        row = policy.settle(act, answer, time())
        if row["comment_cut"] == act.comment_cut:
            return answer, row if record(row) else None
        act = replace(
            act,
            comment_cut=row["comment_cut"],
            attempts=row["attempts"],
            not_found_since=row["not_found_since"],
            first_tried_at=row["first_tried_at"],
        )


def cut_note(act: Claimed, row: dict[str, Any]) -> str:
    """What an outcome line adds when the comment was cut after a 413."""
    if not (row["comment_cut"] and act.comment):
        return ""
    return f" (comment cut to {len(cut_comment(act.comment))} characters after HTTP 413)"
