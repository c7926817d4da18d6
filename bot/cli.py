"""`python -m bot …` / `brixo-relay …`: serve, socket, discord, manifest, check, send, outbox."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from time import time

from bot.core.settings import Settings, SettingsError, load_settings
from bot.slack.checks import SlackTokenError

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
        "print Brixo's answer. Exit 0 when delivered, 1 otherwise.",
    )
    target = send.add_mutually_exclusive_group(required=True)
    target.add_argument("--message", metavar="ID", help="the customer's message ID")
    target.add_argument("--conversation", metavar="ID", help="the customer's conversation ID")
    send.add_argument("--value", required=True, choices=("up", "down"), help="👍 or 👎")
    send.add_argument("--comment", metavar="TEXT", help="the person's comment (user_message)")

    outbox = commands.add_parser(
        "outbox",
        help="list, retry or purge pending signals and dead letters",
        description="Show and handle the outbox: pending signals and dead letters.",
    )
    actions = outbox.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser(
        "list", help="pending signals and dead letters with their last error (the default)"
    )
    listing.add_argument("--dead", action="store_true", help="dead letters only")
    listing.add_argument("--limit", type=int, default=100, help="at most this many rows")
    retry = actions.add_parser("retry", help="put dead letters back in line (all, or these IDs)")
    retry.add_argument("ids", nargs="*", type=int, metavar="ID")
    purge = actions.add_parser("purge", help="delete delivered signals (and dead ones with --dead)")
    purge.add_argument("--dead", action="store_true", help="delete dead letters too")
    return parser


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
    from bot.core.acts import VALUES, Signal, Target, TargetKind, clean_comment
    from bot.core.brixo import BrixoClient, Outcome

    settings.require("brixo_api_key")
    assert settings.brixo_api_key
    kind: TargetKind = "message" if args.message is not None else "conversation"
    try:
        target = Target(kind, args.message if args.message is not None else args.conversation)
    except ValueError as error:
        print(f"error: --{kind}: {error}", file=sys.stderr)
        return 2
    signal = Signal(target, VALUES[args.value], time(), clean_comment(args.comment))
    client = BrixoClient(settings.brixo_api_key, settings.brixo_api_url, pool_size=1)
    answer = client.send(signal)
    client.close()
    print(f"{answer.outcome.value}: {answer.describe()}")
    return 0 if answer.outcome is Outcome.DELIVERED else 1


def _outbox(args: argparse.Namespace, settings: Settings) -> int:
    from bot.core.db import Database
    from bot.core.outbox import AWAITING_COMMENT, DEAD, PENDING, Outbox

    database = Database(settings.database_url, pool_size=1)
    database.migrate(time())
    outbox = Outbox(database)
    action = args.action or "list"
    if action == "retry":
        count = outbox.retry_dead(time(), args.ids)
        print(f"{count} dead letter(s) put back in line")
        return 0 if count or not args.ids else 1
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
        print(
            f"{entry.id}\t{entry.state}\t{entry.workspace}\t{entry.target.kind}:{entry.target.id}"
            f"\t{entry.value}\t{entry.attempts}\t{created}\t{entry.last_error or '-'}"
        )
    return 0
