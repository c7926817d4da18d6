"""`check`: settings, database, Brixo key and Slack token, one line each."""

from __future__ import annotations

from collections.abc import Callable

from bot.core.settings import Settings

Check = Callable[[Settings], tuple[bool, str]]


def check_database(settings: Settings) -> tuple[bool, str]:
    """The database answers and its schema is current (or will be created at start)."""
    from bot.core.db import Database

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
    return False, f"{backend} schema is {schema}; start the relay once to migrate it"


def check_brixo(settings: Settings) -> tuple[bool, str]:
    """The key is accepted, tested with a request that is no signal."""
    from bot.core.brixo import BrixoClient, Outcome

    if not settings.brixo_api_key:
        return False, "BRIXO_API_KEY is not set"
    client = BrixoClient(settings.brixo_api_key, settings.brixo_api_url, pool_size=1)
    answer = client.probe()
    client.close()
    if answer.outcome is Outcome.UNAUTHORIZED:
        return False, f"unauthorized: Brixo refused BRIXO_API_KEY ({answer.describe()})"
    if answer.status is None:
        return False, f"unreachable at {settings.brixo_api_url} ({answer.describe()})"
    if answer.status >= 500:
        return False, f"Brixo answered {answer.describe()}"
    return True, f"ok (key accepted by {settings.brixo_api_url})"


def check_slack(settings: Settings) -> tuple[bool, str]:
    """The bot token works and holds the standalone manifest's scopes."""
    from bot.slack.checks import check_slack_token

    return check_slack_token(settings)


def check_slack_library(settings: Settings) -> tuple[bool, str]:
    """The bot token works and holds the scopes library mode needs."""
    from bot.library import required_scopes
    from bot.slack.checks import check_slack_token

    return check_slack_token(settings, required_scopes(settings))


def run_checks(settings: Settings, library: bool = False) -> int:
    """Print one line per check; 0 when all pass, 1 otherwise."""
    checks: tuple[tuple[str, Check], ...] = (
        ("database", check_database),
        ("brixo", check_brixo),
        ("slack", check_slack_library if library else check_slack),
    )
    print("settings: ok")
    failed = False
    for name, check in checks:
        ok, line = check(settings)
        failed |= not ok
        print(f"{name}: {line}")
    return 1 if failed else 0
