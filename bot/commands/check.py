"""`check`: settings, database, Brixo key, and the Slack and Discord tokens, one line each."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial
from time import time

from bot.commands.holds import database_exists, hold_sends, seconds_held
from bot.core.settings import Settings

Check = Callable[[Settings], tuple[bool, str]]


def check_database(settings: Settings) -> tuple[bool, str]:
    """The database answers and its schema is current (or will be created at start)."""
    from sqlalchemy.engine import make_url

    from bot.core.db import Database

    url = make_url(settings.database_url)
    path = url.database if url.get_backend_name() == "sqlite" else None
    if path and not database_exists(settings):  # don't leave an empty file behind
        folder = os.path.dirname(os.path.abspath(path))
        if not os.access(folder, os.W_OK):
            return False, f"can't create the SQLite file {path}: {folder} is missing or read-only"
        return True, f"ok (SQLite; {path} will be created at start)"
    database = Database(settings.database_url, pool_size=1)
    try:
        database.ping()
        schema = database.schema_state()
    except Exception as error:  # any driver error: report it in one line
        return False, f"cannot connect ({type(error).__name__}: {str(error).splitlines()[0]})"
    finally:
        database.dispose()
    backend = "SQLite" if database.is_sqlite else "PostgreSQL"
    if schema == "ok":
        return True, f"ok ({backend}, schema current)"
    if schema == "missing":
        return True, f"ok ({backend}; the schema will be created at start)"
    if schema == "newer":
        return False, f"{backend} schema is newer than this relay's; upgrade the relay"
    return True, f"ok ({backend}; an older relay's schema, migrated at start)"


def check_brixo(settings: Settings, read_hold: bool = True) -> tuple[bool, str]:
    """The key is accepted, tested with a request that is no signal (unless a relay's stored
    429 hold, read with `read_hold`, asks to wait)."""
    from bot.core.brixo import BrixoClient, Outcome

    if not settings.brixo_api_key:
        return False, "BRIXO_API_KEY is not set"
    held = seconds_held(settings) if read_hold else 0.0
    if held > 0:
        return False, f"not asked: Brixo asked to wait (Retry-After); try again in {held:.0f} s"
    client = BrixoClient(settings.brixo_api_key, settings.brixo_api_url, pool_size=1)
    answer = client.probe()
    client.close()
    if answer.retry_after and answer.status is not None:
        if read_hold:  # the relays on this database hold their sends too
            hold_sends(settings, time() + answer.retry_after)
        wait = f"try again in {answer.retry_after:.0f} s"
        return False, f"Brixo answered {answer.describe()}; {wait}"
    if answer.outcome is Outcome.UNAUTHORIZED:
        return False, f"unauthorized: Brixo refused BRIXO_API_KEY ({answer.describe()})"
    if answer.status is None:
        return False, f"unreachable at {settings.brixo_api_url} ({answer.describe()})"
    if answer.status == 429 or answer.status >= 500:
        return False, f"Brixo answered {answer.describe()}; try again later"
    if answer.status not in (400, 404) or not answer.jsonapi:
        return False, (
            f"{settings.brixo_api_url} answered {answer.describe()}, not as Brixo's Signals API "
            "does; is BRIXO_API_URL the API's base URL (https://api.brixo.com)?"
        )
    return True, f"ok (key accepted by {settings.brixo_api_url})"


def check_slack(settings: Settings) -> tuple[bool, str]:
    """The bot token works and holds the standalone manifest's scopes; a mode can start."""
    from bot.slack.checks import check_slack_token

    refused = refused_reaction_names(settings)
    if refused:
        return False, refused
    ok, line = check_slack_token(settings)
    works = line.replace("ok (", "bot token works (", 1)  # for a line that isn't ok after all
    if ok and not (settings.slack_signing_secret or settings.slack_app_token):
        return False, (
            f"{works}, but neither SLACK_SIGNING_SECRET (serve) nor SLACK_APP_TOKEN (socket) is set"
        )
    if ok and settings.slack_app_token:
        refused = check_app_token(settings)
        if refused:
            return False, f"{works}, but Slack refused SLACK_APP_TOKEN: {refused}"
    return ok, line


def check_app_token(settings: Settings) -> str | None:
    """Why Slack won't open a Socket Mode connection with SLACK_APP_TOKEN, or None when it
    will (it hands out a connection URL, which is left unused)."""
    from slack_sdk.errors import SlackApiError

    from bot.slack.lookups import NETWORK_ERRORS, web_client

    try:
        web_client(settings).apps_connections_open(app_token=settings.slack_app_token or "")
    except SlackApiError as error:
        return str(error.response.get("error"))
    except NETWORK_ERRORS as error:
        return type(error).__name__
    return None


def refused_reaction_names(settings: Settings) -> str | None:
    """Why POSITIVE_ or NEGATIVE_REACTIONS can't be Slack's reaction names, or None."""
    from bot.core.settings import SettingsError
    from bot.slack.feedback import check_reaction_names

    try:
        check_reaction_names(settings)
    except SettingsError as error:
        return str(error)
    return None


def check_slack_library(settings: Settings) -> tuple[bool, str]:
    """The reaction names are Slack's; the bot token works and holds the scopes library mode
    needs."""
    from bot.library import required_scopes
    from bot.slack.checks import check_slack_token

    refused = refused_reaction_names(settings)
    if refused:
        return False, refused
    fix = "merge relay.manifest_fragment() into your app's manifest and reinstall it"
    return check_slack_token(settings, required_scopes(settings), fix)


def check_discord(settings: Settings) -> tuple[bool, str]:
    """The Discord bot token logs in, with the Message Content intent; watched bots' replies
    can be mapped."""
    from bot.discord.runner import unmappable_watch

    unmappable = unmappable_watch(settings)
    if unmappable:
        return False, unmappable
    try:
        from bot.discord.checks import check_discord_token
    except ImportError:
        return False, "the Discord adapter needs the 'discord' extra: pip install '.[discord]'"
    return check_discord_token(settings)


def _uses_slack(settings: Settings) -> bool:
    slack = (
        settings.slack_bot_token,
        settings.slack_client_id,
        settings.slack_signing_secret,
        settings.slack_app_token,
    )
    return any(slack) or not settings.discord_token


def run_checks(settings: Settings, library: bool = False) -> int:
    """Print one line per check; 0 when all pass, 1 otherwise.

    Slack is checked unless only Discord is set up; Discord when DISCORD_TOKEN is set.
    """
    checks: list[tuple[str, Check]] = [("database", check_database), ("brixo", check_brixo)]
    if library or _uses_slack(settings):
        checks.append(("slack", check_slack_library if library else check_slack))
    if settings.discord_token and not library:
        checks.append(("discord", check_discord))
    for name in ("slack_sdk", "slack_sdk.web.base_client"):  # the line says what failed
        logging.getLogger(name).setLevel(logging.CRITICAL)
    print("settings: ok")
    failed = False
    for name, check in checks:
        if name == "brixo" and failed:  # the database failed: no stored hold to read there
            check = partial(check_brixo, read_hold=False)
        ok, line = check(settings)
        failed |= not ok
        print(f"{name}: {line}")
    return 1 if failed else 0
