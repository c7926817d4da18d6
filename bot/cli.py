"""`python -m bot …` / `brixo-relay …`: serve, socket, discord, manifest, check, send, outbox."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from bot.core.acts import MAX_COMMENT_CHARS
from bot.core.settings import OAUTH_SETTINGS, Settings, SettingsError, load_settings
from bot.slack.checks import SlackUnusable

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
        help="check settings, database, Brixo key and the Slack/Discord tokens, one line each",
        description="Check the configuration, the database and its schema, the Brixo key and "
        "URL, the Slack token and scopes (unless only Discord is set up) and the Discord token "
        "(when DISCORD_TOKEN is set), one line each; exit 1 when a check fails (a malformed "
        "setting stops it first, as every command: one line, exit 2). "
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
        "retried, except that a 413 with a comment is sent once more with the comment cut "
        "down, as delivery does. The signal isn't stored; a 429's hold is, where the relay's "
        "database exists, so that running relays wait too. "
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
    settings: Settings | None = None
    try:
        if args.command == "manifest":
            return _manifest(args)
        library = args.command == "check" and args.library
        settings = load_settings(ignore=OAUTH_SETTINGS if library else ())
        return _dispatch(args, settings)
    except SettingsError as error:
        return _fail(settings, str(error), 2)
    except SlackUnusable as error:
        return _fail(settings, f"{error.setting}: {error}", 1)
    except KeyboardInterrupt:  # Ctrl-C on a command that runs and ends
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # its reader went away (`outbox list | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at exit's flush
        return 1


def _fail(settings: Settings | None, message: str, status: int) -> int:
    """`error: message` on stderr, or, once the settings asked for JSON logs, a log line in
    JSON (a log drain parses every line); then `status`."""
    if settings is not None and settings.log_format == "json":
        logging.getLogger("bot").error("%s", message)  # through setup_logging's handler
    else:
        print(f"error: {message}", file=sys.stderr)
    return status


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
        from bot.commands.check import run_checks

        return run_checks(settings, library=args.library)
    if args.command == "send":
        from bot.commands.send import send

        return send(args, settings)
    from bot.commands.outbox import run_outbox

    return run_outbox(args, settings)


def _manifest(args: argparse.Namespace) -> int:
    from bot.slack.manifest import build_manifest, render

    if args.socket and args.url is not None:
        print("error: --url: a Socket Mode manifest has no URLs; leave --url out", file=sys.stderr)
        return 2
    try:
        print(render(build_manifest(args.url, socket=args.socket)), end="")
    except ValueError as error:
        print(f"error: --url: {error}", file=sys.stderr)
        return 2
    return 0
