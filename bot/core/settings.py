"""Settings from the environment and `.env`: typed, validated, read once."""

from __future__ import annotations

import io
import ipaddress
import os
import re
import string
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal
from urllib.parse import urlsplit

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.ASCII | re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class SettingsError(Exception):
    """A missing or malformed setting; the message is one line naming the variable."""


# No setting needs more; far longer ones overflow timeouts and timestamps.
MAX_DURATION = 365 * 86400.0


def parse_duration(name: str, raw: str) -> float:
    """Seconds from `600`, `30s`, `10m`, `24h` (also `ms` and `d`; units in any case)."""
    match = _DURATION.match(raw)
    if not match:
        raise SettingsError(f"{name}: expected a duration like 600, 30s, 10m or 24h, got {raw!r}")
    unit = match.group(2)
    seconds = float(match.group(1)) * _UNITS[unit.lower() if unit else None]
    if seconds > MAX_DURATION:
        raise SettingsError(f"{name}: expected a duration of at most 365d, got {raw!r}")
    return seconds


def parse_positive_duration(name: str, raw: str) -> float:
    """A duration above zero."""
    seconds = parse_duration(name, raw)
    if seconds <= 0:
        raise SettingsError(f"{name}: expected a duration above zero like 30s or 10m, got {raw!r}")
    return seconds


def parse_bool(name: str, raw: str) -> bool:
    """`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, any case."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name}: expected true or false (also 1/0, yes/no, on/off), got {raw!r}")


def parse_list(raw: str) -> tuple[str, ...]:
    """A comma-separated list; blanks are dropped."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def parse_int(name: str, raw: str, low: int = 1, high: int = 65535) -> int:
    """A whole number within [low, high], in ASCII digits."""
    digits = raw.strip()
    value = int(digits) if digits.isascii() and digits.isdigit() else low - 1
    if not low <= value <= high:
        raise SettingsError(f"{name}: expected a whole number from {low} to {high}, got {raw!r}")
    return value


def parse_choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    """One of a fixed set of words, any case."""
    value = raw.strip().lower()
    if value not in choices:
        raise SettingsError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
    return value


def parse_url(name: str, raw: str) -> str:
    """An http(s) URL with a host and nothing blank in it."""
    value = _lower_scheme(raw.strip())
    if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", value):
        raise SettingsError(f"{name}: expected an http:// or https:// URL, got {raw!r}")
    problem = url_problem(value)
    if problem:
        raise SettingsError(f"{name}: expected an http:// or https:// URL, got {raw!r} ({problem})")
    return value


# A host name's labels (letters of any script, digits, hyphens), or an IP address.
_HOST = re.compile(r"(?:[^\W_](?:[\w-]*[^\W_])?\.)*[^\W_](?:[\w-]*[^\W_])?\.?")


def url_problem(url: str) -> str | None:
    """What makes a URL's host or port unusable (no host, a bad port), or None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "a broken [IPv6] host"
    try:
        port = parts.port
    except ValueError:  # out of range, or not a number
        port = 0
    if port == 0:
        return "a port that isn't a number from 1 to 65535"
    host = parts.hostname
    if not host:
        return "no host"
    if "[" in parts.netloc:  # an IPv6 address, and at most a port after it
        bracketed = re.fullmatch(r"(?:[^@]*@)?\[([^\]]*)\](?::\d*)?", parts.netloc)
        try:
            ipaddress.IPv6Address(bracketed[1] if bracketed else "")
        except ValueError:
            return f"a malformed IPv6 host in {parts.netloc!r}"
    elif not _HOST.fullmatch(host):
        return f"a malformed host {host!r}"
    return None


def _lower_scheme(url: str) -> str:
    """`url` with its scheme in lower case (schemes are case-insensitive: `HTTPS://` works)."""
    scheme, sep, rest = url.partition("://")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return scheme.lower() + sep + rest
    return url


def parse_base_url(name: str, raw: str) -> str:
    """An API's base URL, which paths are added to: no query or fragment."""
    value = parse_url(name, raw)
    if "?" in value or "#" in value:
        raise SettingsError(f"{name}: expected an API base URL without ? or #, got {raw!r}")
    return value


def parse_brixo_url(name: str, raw: str) -> str:
    """Brixo's API base: an http(s) URL without the `/v1` that every path adds."""
    value = parse_base_url(name, raw).rstrip("/")
    if value.endswith("/v1"):
        raise SettingsError(
            f"{name}: expected the API base without /v1 (like https://api.brixo.com), got {raw!r}"
        )
    return value


def parse_database_url(name: str, raw: str) -> str:
    """`sqlite:///PATH`, `postgres://…` or `postgresql://…` (SQLAlchemy URL with psycopg 3)."""
    value = _lower_scheme(raw.strip())
    if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
        if value.removeprefix("sqlite:///").startswith(":memory:"):
            raise SettingsError(
                f"{name}: expected a file like sqlite:///brixo-relay.db, got {value!r} "
                "(an in-memory database loses every vote at exit)"
            )
        return value
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://"):
        if value.startswith(prefix) and len(value) > len(prefix):
            url = "postgresql+psycopg://" + value[len(prefix) :]
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                port = make_url(url).port
            except (ArgumentError, ValueError):
                port = -1
            if port is not None and not 0 < port < 65536:
                raise SettingsError(
                    f"{name}: expected postgres://USER:PASSWORD@HOST:PORT/DATABASE, "
                    f"got {_redact_url(value)!r}"
                )
            return url
    raise SettingsError(
        f"{name}: expected sqlite:///PATH, postgres://… or postgresql://…, "
        f"got {_redact_url(value)!r}"
    )


def _redact_url(value: str) -> str:
    """The URL without what may hold a password: its user and password (up to the last `@`,
    which a password may hold too) and its query (libpq takes `password=` there)."""
    value = re.sub(r"//.*@", "//***@", value, flags=re.DOTALL)
    return re.sub(r"\?.*", "?***", value, flags=re.DOTALL)


def parse_template(name: str, raw: str) -> str:
    """An ID template using only {team}, {channel}, {ts} and {thread_ts}; blanks around it
    dropped, as for every setting (they would be in every ID, which no trace has)."""
    raw = raw.strip()
    allowed = {"team", "channel", "ts", "thread_ts"}
    try:
        parts = list(string.Formatter().parse(raw))
        fields = [
            field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            for _, field, spec, conversion in parts
            if field is not None
        ]
    except ValueError as error:
        raise SettingsError(
            f"{name}: expected a template like {{channel}}-{{ts}}, got {raw!r} ({error})"
        ) from None
    wrong = [field for field in fields if field not in allowed]
    if wrong:
        raise SettingsError(
            f"{name}: expected a template using {{team}}, {{channel}}, {{ts}}, {{thread_ts}}, "
            f"got {raw!r} (unknown field {wrong[0]!r})"
        )
    if name == "MESSAGE_ID_TEMPLATE" and "ts" not in fields:
        raise SettingsError(
            f"{name}: expected a template with {{ts}}, so that each reply gets an ID of its own, "
            f"got {raw!r}"
        )
    if name == "CONVERSATION_ID_TEMPLATE" and not {"channel", "ts", "thread_ts"} & set(fields):
        raise SettingsError(
            f"{name}: expected a template with {{thread_ts}} (or {{channel}}), so that "
            f"conversations get IDs of their own, got {raw!r}"
        )
    fixed = sum(len(text) for text, *_ in parts)
    if fixed > 1024:
        raise SettingsError(
            f"{name}: expected a template for IDs of at most 1024 characters, "
            f"got {fixed} characters besides its fields"
        )
    return raw


AskComment = Literal["never", "negative", "always"]
LogFormat = Literal["plain", "json"]

DEFAULT_DATABASE_URL = "sqlite:///brixo-relay.db"


@dataclass(frozen=True, repr=False)
class Settings:
    """Every setting, typed, with its default: SPEC.md's table, DISCORD_TOKEN, and gunicorn's
    WEB_CONCURRENCY and GUNICORN_THREADS."""

    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_client_id: str | None = None
    slack_client_secret: str | None = None
    slack_state_secret: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    brixo_api_key: str | None = None
    brixo_api_url: str = "https://api.brixo.com"
    database_url: str = DEFAULT_DATABASE_URL
    port: int = 3000
    log_level: str = "INFO"
    log_format: LogFormat = "plain"
    agent_url: str | None = None
    agent_token: str | None = None
    agent_timeout: float = 30.0
    assistant_bot_ids: tuple[str, ...] = ()
    seed_reactions: bool = True
    positive_reactions: tuple[str, ...] = ("+1", "thumbsup")
    negative_reactions: tuple[str, ...] = ("-1", "thumbsdown")
    ask_comment: AskComment = "negative"
    comment_wait: float = 600.0
    ack_message: str = "Thanks for your feedback!"
    message_id_template: str | None = None
    conversation_id_template: str | None = None
    delivery_max_age: float = 86400.0
    not_found_grace: float = 600.0
    delivery_concurrency: int = 32
    discord_token: str | None = None
    web_concurrency: int = 1  # gunicorn worker processes (`serve`)
    gunicorn_threads: int = 16  # threads per worker (`serve`)

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _SECRETS}
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def require(self, *names: str) -> None:
        """Raise SettingsError for the first of these fields that is unset."""
        for name in names:
            if not getattr(self, name):
                raise SettingsError(f"{name.upper()}: required here, {_PURPOSE[name]}")

    @property
    def oauth(self) -> bool:
        """True when the app installs into many workspaces through OAuth."""
        return bool(self.slack_client_id)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value set, for log redaction."""
        values = [getattr(self, name) for name in _SECRETS]
        if not self.database_url.startswith("sqlite"):
            from sqlalchemy.engine import make_url

            url = make_url(self.database_url)
            values += [url.password, url.query.get("password")]
        return tuple(v for v in values if v and isinstance(v, str))


_SECRETS = {
    "slack_bot_token",
    "slack_signing_secret",
    "slack_app_token",
    "slack_client_secret",
    "slack_state_secret",
    "brixo_api_key",
    "agent_token",
    "discord_token",
}

_PURPOSE = {
    "slack_bot_token": "the bot token (xoxb-…) of a single-workspace install",
    "slack_signing_secret": "the Signing Secret from the Slack app's Basic Information page",
    "slack_app_token": "an app-level token (xapp-…) with connections:write for Socket Mode",
    "slack_client_id": "the Client ID for the OAuth install",
    "slack_client_secret": "the Client Secret for the OAuth install",
    "slack_state_secret": "a random string that signs OAuth state",
    "brixo_api_key": "the Brixo API key that signals are sent with",
    "agent_url": "the URL of your agent",
    "discord_token": "the Discord bot token from the Developer Portal",
}


# Discord's limit on a message; Slack's on a section (where the thanks goes) is 3000.
ACK_MESSAGE_CHARS = 2000


def _ack_message(name: str, raw: str) -> str:
    if not raw.strip():
        return ""  # blanks are empty, as for every setting: no thanks (Slack refuses blank text)
    if len(raw) > ACK_MESSAGE_CHARS:
        raise SettingsError(
            f"{name}: expected a short thanks of at most {ACK_MESSAGE_CHARS:,} characters "
            f"(Discord's limit for a message), got {len(raw):,}"
        )
    return raw


def _token(name: str, raw: str) -> str | None:
    """A key or token sent in an HTTP header: printable ASCII, no spaces (a character pasted
    along with it, such as a zero-width space or a line break, would break every request)."""
    value = raw.strip()
    if value and not re.fullmatch(r"[!-~]+", value):
        what = _PURPOSE.get(name.lower(), "a key or token")
        raise SettingsError(
            f"{name}: expected {what}, in printable ASCII without spaces; it holds another "
            "character, perhaps pasted along with it (value not shown)"
        )
    return value or None


def _prefixed(name: str, raw: str, prefix: str, what: str) -> str | None:
    """A token that starts as Slack's tokens of its kind do."""
    value = _token(name, raw)
    if value and not value.startswith(prefix):
        raise SettingsError(f"{name}: expected {what} starting with {prefix} (value not shown)")
    return value


def _log_level(name: str, raw: str) -> str:
    return parse_choice(name, raw, ("debug", "info", "warning", "error")).upper()


def _ids(name: str, raw: str) -> tuple[str, ...]:
    """Slack bot IDs (B…) and user IDs (U…, W… on Enterprise Grid), or Discord IDs (digits)."""
    ids = parse_list(raw)
    for item in ids:
        if not re.fullmatch(r"[BUW][A-Z0-9]+|[0-9]+", item):
            raise SettingsError(
                f"{name}: expected comma-separated Slack bot IDs (B…) or user IDs (U…, W…), "
                f"or Discord IDs (digits), got {item!r}"
            )
    return ids


# Slack names 👍 and 👎 two ways each, and a reaction event may carry either name.
_SLACK_ALIASES = {"thumbsup": "+1", "thumbsdown": "-1"}


def reaction_name(reaction: str) -> str:
    """The emoji a Slack reaction names, skin tone dropped: `+1::skin-tone-3` and `thumbsup`
    are both `+1`."""
    name = reaction.split("::", 1)[0]
    return _SLACK_ALIASES.get(name, name)


def _reactions(name: str, raw: str) -> tuple[str, ...]:
    names = tuple(item.strip(":") for item in parse_list(raw))
    if not names or any(not n or re.search(r"\s", n) for n in names):
        raise SettingsError(
            f"{name}: expected comma-separated emoji names like +1,thumbsup, got {raw!r}"
        )
    return names


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "slack_bot_token": _token,
    "slack_signing_secret": _token,
    "slack_app_token": lambda n, r: _prefixed(n, r, "xapp-", "an app-level token"),
    "slack_client_id": _token,
    "slack_client_secret": _token,
    "slack_state_secret": _token,
    "slack_api_url": lambda n, r: parse_base_url(n, r).rstrip("/") + "/",
    "brixo_api_key": _token,
    "brixo_api_url": parse_brixo_url,
    "database_url": parse_database_url,
    "port": parse_int,
    "log_level": _log_level,
    "log_format": lambda n, r: parse_choice(n, r, ("plain", "json")),
    "agent_url": lambda n, r: parse_url(n, r) if r.strip() else None,
    "agent_token": _token,
    "agent_timeout": parse_positive_duration,
    "assistant_bot_ids": _ids,
    "seed_reactions": parse_bool,
    "positive_reactions": _reactions,
    "negative_reactions": _reactions,
    "ask_comment": lambda n, r: parse_choice(n, r, ("never", "negative", "always")),
    "comment_wait": parse_positive_duration,
    "ack_message": _ack_message,
    "message_id_template": lambda n, r: parse_template(n, r) if r.strip() else None,
    "conversation_id_template": lambda n, r: parse_template(n, r) if r.strip() else None,
    "delivery_max_age": parse_duration,
    "not_found_grace": parse_duration,
    "delivery_concurrency": lambda n, r: parse_int(n, r, 1, 256),
    "discord_token": _token,
    "web_concurrency": lambda n, r: parse_int(n, r, 1, 64),
    "gunicorn_threads": lambda n, r: parse_int(n, r, 1, 256),
}

SETTING_NAMES: tuple[str, ...] = tuple(name.upper() for name in _PARSERS)


# The standalone app's multi-workspace install; a team's own Bolt app (library mode) reads
# them for its own install, and the relay there has no use for them.
OAUTH_SETTINGS = ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "SLACK_STATE_SECRET")


def load_settings(
    environ: Mapping[str, str] | None = None,
    dotenv: str | None = ".env",
    ignore: Collection[str] = (),
) -> Settings:
    """Read settings from `environ` (default: os.environ) over the values in `dotenv`; the
    variables named in `ignore` count as unset."""
    values = read_dotenv(dotenv) if dotenv and os.path.exists(dotenv) else {}
    for name, value in (os.environ if environ is None else environ).items():
        # An empty variable counts as unset (`VAR: ${VAR}` in docker-compose, say): it doesn't
        # hide `.env`'s value, but for ACK_MESSAGE, where empty means "no thanks".
        if value.strip() or name == "ACK_MESSAGE" or name not in values:
            values[name] = value
    parsed: dict[str, Any] = {}
    for name, parse in _PARSERS.items():
        raw = None if name.upper() in ignore else values.get(name.upper())
        if raw is None or (raw.strip() == "" and name != "ack_message"):
            continue
        parsed[name] = parse(name.upper(), raw)
    settings = Settings(**parsed)
    _check_combinations(settings)
    return settings


def read_dotenv(path: str) -> dict[str, str]:
    """The values in a `.env` file; a line python-dotenv can't read stops the program (it
    would skip it, and the setting on it would silently keep its default)."""
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except UnicodeDecodeError as error:
        raise SettingsError(
            f"{path}: expected UTF-8 text, got byte {error.object[error.start]:#04x} "
            f"at offset {error.start}"
        ) from None
    except OSError as error:  # a folder, or a file it may not read
        raise SettingsError(f"{path}: expected a readable file, got {error.strerror}") from None
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            name = binding.original.string.split("=", 1)[0].strip()
            about = f" ({name})" if re.fullmatch(r"(export )?[A-Za-z_][A-Za-z0-9_]*", name) else ""
            raise SettingsError(
                f"{path} line {binding.original.line}{about}: expected NAME=value "
                "(with matching quotes), got a line that can't be read"
            )
    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}


def _check_combinations(settings: Settings) -> None:
    # A reaction in both sets: name the set that was changed (the default one can't be at
    # fault) and the reaction as given there.
    changed, other = "NEGATIVE_REACTIONS", "POSITIVE_REACTIONS"
    given, others = settings.negative_reactions, settings.positive_reactions
    if given == Settings.negative_reactions:
        changed, other, given, others = other, changed, others, given
    names = {reaction_name(n) for n in others}
    both = [n for n in given if reaction_name(n) in names]
    if both:
        raise SettingsError(
            f"{changed}: expected reactions that are not in {other} too, got {both[0]!r} in both"
        )
    oauth = (settings.slack_client_id, settings.slack_client_secret, settings.slack_state_secret)
    if any(oauth) and not all(oauth):
        missing = [n for n, v in zip(OAUTH_SETTINGS, oauth, strict=True) if not v]
        raise SettingsError(
            f"{missing[0]}: required with SLACK_CLIENT_ID, SLACK_CLIENT_SECRET and "
            "SLACK_STATE_SECRET for the multi-workspace OAuth install"
        )
    if settings.slack_bot_token and all(oauth):
        raise SettingsError(
            "SLACK_BOT_TOKEN: expected it unset with SLACK_CLIENT_ID (an OAuth install keeps "
            "each workspace's token; install this workspace through /slack/install), or the "
            "SLACK_CLIENT_* settings unset for a single workspace"
        )
