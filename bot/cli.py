"""`python -m bot …` / `brixo-relay …`: serve, socket, discord, manifest, check, send, outbox."""

from __future__ import annotations

import argparse
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from time import time
from typing import TYPE_CHECKING, Any

from bot.core.acts import MAX_COMMENT_CHARS
from bot.core.settings import Settings, SettingsError, load_settings
from bot.slack.checks import SlackTokenError

if TYPE_CHECKING:
    from bot.core.brixo import Answer
    from bot.core.delivery import RetryPolicy, Sender
    from bot.core.outbox import Claimed, Outbox

DESCRIPTION = "Relays 👍/👎 feedback on an AI assistant's chat replies to Brixo's Signals API."


def build_parser() -> argparse.ArgumentParser:
    """The command line, with `--help` on every command."""
    parser = argparse.ArgumentParser(prog="brixo-relay", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser(
        "serve",
        help="HTTP mode: Slack events at POST /slack/events, GET /healthz, on $PORT",
        description="Serve Slack's Events API, interactivity and shortcuts at POST /slack/events "
        "(OAuth at /slack/install and /slack/oauth_redirect when SLACK_CLIENT_ID is set) and "
        "GET /healthz on $PORT (default 3000) under gunicorn, delivering to Brixo meanwhile.",
    )
    commands.add_parser(
        "socket",
        help="Socket Mode (SLACK_APP_TOKEN): no public URL needed",
        description="Connect to Slack over Socket Mode with SLACK_APP_TOKEN and deliver to Brixo.",
    )
    commands.add_parser(
        "discord",
        help="run the Discord adapter (DISCORD_TOKEN; needs the 'discord' extra)",
        description="Run the same relay on Discord with DISCORD_TOKEN.",
    )

    manifest = commands.add_parser(
        "manifest",
        help="print the Slack app manifest to create the app from",
        description="Print the Slack app manifest (JSON) to paste at api.slack.com/apps.",
    )
    manifest.add_argument("--url", help="public base URL of the relay, e.g. https://relay.example")
    manifest.add_argument("--socket", action="store_true", help="a manifest for Socket Mode")

    check = commands.add_parser(
        "check",
        help="check settings, database, Brixo key and Slack token, one line each",
        description="Check the configuration, the database and its schema, the Brixo key and "
        "the Slack token and scopes, one line each; exit 1 when something is wrong. "
        "Never sends a signal.",
    )
    check.add_argument(
        "--library",
        action="store_true",
        help="check the Slack token against library mode's scopes (your own Bolt app)",
    )

    send = commands.add_parser(
        "send",
        help="send one signal to Brixo now and print its answer",
        description="Send one feedback signal to Brixo now, without a running server, and "
        "print one line: 'delivered: …' or 'failed (why): …' with Brixo's answer. Nothing is "
        "stored and nothing retried, except that a 413 with a comment is sent once more with "
        "the comment cut down, as delivery does. "
        "Exit 0 when delivered, 1 otherwise.",
    )
    target = send.add_mutually_exclusive_group(required=True)
    target.add_argument("--message", metavar="ID", help="the customer's message ID")
    target.add_argument("--conversation", metavar="ID", help="the customer's conversation ID")
    send.add_argument("--value", required=True, choices=("up", "down"), help="👍 or 👎")
    send.add_argument(
        "--comment",
        metavar="TEXT",
        help=f"the person's comment (user_message), at most {MAX_COMMENT_CHARS} characters",
    )

    outbox = commands.add_parser(
        "outbox",
        help="list, retry or purge pending signals and dead letters",
        description="Show and handle the outbox: pending signals and dead letters.",
    )
    actions = outbox.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="pending signals and dead letters with their last error (the default)",
        description="List pending signals and dead letters, oldest first, one tab-separated "
        "line each with its last error; tabs, newlines and other control characters in a "
        "field are shown escaped (\\t, \\n, \\x1b), and so is a backslash (\\\\).",
    )
    listing.add_argument("--dead", action="store_true", help="dead letters only")
    listing.add_argument(
        "--limit", type=_positive, default=100, metavar="N", help="at most N rows (default 100)"
    )
    retry = actions.add_parser(
        "retry",
        help="put dead letters back in line and send each once now (all, or these IDs)",
        description="Put dead letters back in line (all of them, or those with the IDs given) "
        "and send each once now from this process, under a lease that keeps a running relay "
        "off them, with delivery's rules (a 413 with a comment: once more with the comment "
        "cut). One line per act: delivered; dead, with Brixo's error; or pending, for the relay "
        "to retry (no answer, 5xx, 429, 401, 404 within NOT_FOUND_GRACE). Exit 0 when every "
        "one was delivered, 1 otherwise, or when an ID is not a dead letter.",
    )
    retry.add_argument("ids", nargs="*", type=_positive, metavar="ID", help="an act's ID")
    purge = actions.add_parser(
        "purge",
        help="delete delivered signals (and dead ones with --dead)",
        description="Delete delivered signals, and dead letters too with --dead.",
    )
    purge.add_argument("--dead", action="store_true", help="delete dead letters too")
    return parser


def _positive(text: str) -> int:
    """An argparse type: a whole number from 1 up (a row count or an act's ID)."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 0 < number < 2**63:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, not {text!r}")
    return number


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; settings errors print one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "manifest":
            return _manifest(args)
        settings = load_settings()
        return _dispatch(args, settings)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SlackTokenError as error:
        print(f"error: SLACK_BOT_TOKEN: {error}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from bot.core.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format, settings.secrets)
    if args.command == "serve":
        from bot.slack.server import serve

        return serve(settings)
    if args.command == "socket":
        from bot.slack.socket import run_socket_mode

        return run_socket_mode(settings)
    if args.command == "discord":
        from bot.discord.runner import run_discord

        return run_discord(settings)
    if args.command == "check":
        from bot.checks import run_checks

        return run_checks(settings, library=args.library)
    if args.command == "send":
        return _send(args, settings)
    return _outbox(args, settings)


def _manifest(args: argparse.Namespace) -> int:
    from bot.slack.manifest import build_manifest, render

    try:
        print(render(build_manifest(args.url, socket=args.socket)), end="")
    except ValueError as error:
        print(f"error: --url: {error}", file=sys.stderr)
        return 2
    return 0


def _send(args: argparse.Namespace, settings: Settings) -> int:
    from bot.core.acts import VALUES, Target, TargetKind
    from bot.core.brixo import BrixoClient
    from bot.core.outbox import DELIVERED, Claimed

    settings.require("brixo_api_key")
    assert settings.brixo_api_key
    kind: TargetKind = "message" if args.message is not None else "conversation"
    try:
        target = Target(kind, _utf8(getattr(args, kind)))
    except ValueError as error:
        print(f"error: --{kind}: {error}", file=sys.stderr)
        return 2
    now = time()
    comment = _comment(args.comment)
    act = Claimed(0, "", target, VALUES[args.value], now, comment, False, 0, None, now)
    client = BrixoClient(settings.brixo_api_key, settings.brixo_api_url, pool_size=1)
    answer, row = _deliver_once(client, _policy(settings), act, lambda row: True)
    client.close()
    assert row is not None
    if row["state"] == DELIVERED:
        print(f"delivered: {answer.describe()}{_cut_note(row)}")
        return 0
    print(f"failed ({_WHY_NOT[answer.outcome.value]}): {answer.describe()}{_cut_note(row)}")
    return 1


def _utf8(text: str) -> str:
    """`text` when it is valid UTF-8 (argv that isn't arrives with surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid UTF-8") from None
    return text


def _comment(text: str | None) -> str | None:
    """The comment as stored (`clean_comment`), saying on stderr when it had to be cut."""
    from bot.core.acts import clean_comment

    if text is not None and len(text.replace("\x00", "").strip()) > MAX_COMMENT_CHARS:
        print(f"note: comment cut to {MAX_COMMENT_CHARS} characters", file=sys.stderr)
    return clean_comment(text)


def _policy(settings: Settings) -> RetryPolicy:
    """The delivery worker's retry rules, from the same settings."""
    from bot.core.delivery import RetryPolicy

    return RetryPolicy(settings.delivery_max_age, settings.not_found_grace)


def _deliver_once(
    sender: Sender, policy: RetryPolicy, act: Claimed, record: Callable[[dict[str, Any]], bool]
) -> tuple[Answer, dict[str, Any] | None]:
    """Send `act` as the delivery worker does, and `record` the outcome row it would write.

    When that row says to send again at once with the comment cut (a 413), that is done first,
    still under this lease, and only the last row is recorded. Returns the last answer and its
    row; no row when `record` refused it (the lease was lost).
    """
    from bot.core.delivery import signal_of

    while True:
        answer = sender.send(signal_of(act))
        row = policy.settle(act, answer, time())
        if row["comment_cut"] == act.comment_cut:
            return answer, row if record(row) else None
        act = replace(
            act,
            comment=row["comment"],
            comment_cut=row["comment_cut"],
            attempts=row["attempts"],
            not_found_since=row["not_found_since"],
        )


def _cut_note(row: dict[str, Any]) -> str:
    """What an outcome line adds when the comment was cut after a 413."""
    from bot.core.delivery import CUT_COMMENT_CHARS

    cut = f" (comment cut to {CUT_COMMENT_CHARS} characters after HTTP 413)"
    return cut if row["comment_cut"] else ""


def _outbox(args: argparse.Namespace, settings: Settings) -> int:
    from bot.core.db import Database
    from bot.core.outbox import AWAITING_COMMENT, DEAD, PENDING, Outbox

    database = Database(settings.database_url, pool_size=1)
    database.migrate(time())
    outbox = Outbox(database)
    action = args.action or "list"
    if action == "retry":
        return _retry(outbox, settings, sorted(set(args.ids)))
    if action == "purge":
        count = outbox.purge(dead=args.dead)
        print(f"{count} signal(s) deleted")
        return 0
    states = (DEAD,) if getattr(args, "dead", False) else (PENDING, AWAITING_COMMENT, DEAD)
    entries = outbox.entries(states, limit=getattr(args, "limit", 100))
    if not entries:
        print("outbox empty: nothing pending, no dead letters")
        return 0
    print("ID\tSTATE\tWORKSPACE\tTARGET\tVALUE\tATTEMPTS\tCREATED\tLAST ERROR")
    for entry in entries:
        created = datetime.fromtimestamp(entry.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fields = (entry.workspace, f"{entry.target.kind}:{entry.target.id}", entry.value)
        workspace, target, value = (_field(f) for f in fields)
        print(
            f"{entry.id}\t{entry.state}\t{workspace}\t{target}\t{value}\t{entry.attempts}"
            f"\t{created}\t{_field(entry.last_error or '-')}"
        )
    return 0


def _field(text: str) -> str:
    """`text` on one line of one column: control characters and backslashes escaped."""
    return _UNSAFE.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)


def _retry(outbox: Outbox, settings: Settings, act_ids: list[int]) -> int:
    """Put dead letters back in line and send each once now, under this process's lease."""
    from bot.core.brixo import BrixoClient
    from bot.core.outbox import DELIVERED

    settings.require("brixo_api_key")
    assert settings.brixo_api_key
    client = BrixoClient(settings.brixo_api_key, settings.brixo_api_url, pool_size=1)
    lease = 3 * sum(client.timeout)  # renewed before each act: room for its two sends (a 413)
    owner = f"cli-{uuid.uuid4().hex[:12]}"
    taken = outbox.take_dead(owner, lease, time(), act_ids)
    ok = _report_not_dead(outbox, [i for i in act_ids if i not in {act.id for act in taken}])
    if not taken and not act_ids:
        print("no dead letters to retry")
    policy = _policy(settings)
    try:
        while taken:
            act = taken.pop(0)  # not released if this fails: its lease lapses, as a relay's would
            outbox.renew(owner, lease, time())
            answer, row = _deliver_once(client, policy, act, partial(outbox.settle_one, owner))
            ok = ok and row is not None and row["state"] == DELIVERED
            print(f"act {act.id}: {_retried(answer, row)}", flush=True)
    finally:
        outbox.release(owner, [act.id for act in taken])
        client.close()
    return 0 if ok else 1


def _report_not_dead(outbox: Outbox, act_ids: list[int]) -> bool:
    """One line for each of these IDs, which name no dead letter; True when there are none."""
    if not act_ids:
        return True
    states = outbox.states_of(act_ids, time())
    for act_id in act_ids:
        state, leased = states.get(act_id, ("", False))
        why = "a running relay is delivering it" if leased else f"it is {state}" if state else ""
        print(f"no dead letter with ID {act_id}" + (f": {why}" if why else ""))
    return False


def _retried(answer: Answer, row: dict[str, Any] | None) -> str:
    """What became of a retried act, after its `answer` and outcome `row`."""
    from bot.core.outbox import DEAD, DELIVERED

    if row is None:
        return f"taken by a running relay meanwhile (the lease here lapsed): {answer.describe()}"
    if row["state"] == DELIVERED:
        return f"delivered: {answer.describe()}{_cut_note(row)}"
    if row["state"] == DEAD:
        return f"dead: {row['last_error']}{_cut_note(row)}"
    return f"pending, for the relay to retry: {row['last_error']}{_cut_note(row)}"


# Why `send` did not deliver, by Outcome value.
_WHY_NOT = {
    "retry": "not delivered; the relay would retry this, send does not",
    "not_found": "Brixo doesn't know this ID, or not yet; the relay would retry for a while",
    "unauthorized": "Brixo refused the API key",
    "rejected": "Brixo rejected it",
    "too_large": "too large for Brixo",
}
# What `outbox list` shows escaped: control characters, line separators and the backslash.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")
