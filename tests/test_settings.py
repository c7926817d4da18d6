"""Settings: from the environment over `.env`, every format SPEC.md names, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.settings import SettingsError, load_settings


def load(**values: str) -> object:
    return load_settings(values, dotenv=None)


def test_defaults_without_anything() -> None:
    settings = load_settings({}, dotenv=None)
    assert settings.brixo_api_url == "https://api.brixo.com"
    assert settings.database_url == "sqlite:///brixo-relay.db"
    assert settings.port == 3000
    assert settings.delivery_max_age == 24 * 3600
    assert settings.not_found_grace == 600
    assert settings.comment_wait == 600
    assert settings.ask_comment == "negative"
    assert settings.seed_reactions is True
    assert settings.positive_reactions == ("+1", "thumbsup")
    assert settings.negative_reactions == ("-1", "thumbsdown")
    assert settings.brixo_api_key is None


def test_dotenv_is_read_and_the_real_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "BRIXO_API_KEY=from-dotenv\n"
        "PORT=4000\n"
        "# a comment\n"
        'ACK_MESSAGE="Thanks, noted"\n'
        "DELIVERY_MAX_AGE=1h\n",
        encoding="utf-8",
    )
    settings = load_settings({"BRIXO_API_KEY": "from-env", "PORT": "5000"}, dotenv=str(dotenv))
    assert settings.brixo_api_key == "from-env"
    assert settings.port == 5000
    assert settings.ack_message == "Thanks, noted"
    assert settings.delivery_max_age == 3600
    # A missing .env is no error.
    assert load_settings({}, dotenv=str(tmp_path / "absent.env")).port == 3000


def test_an_empty_variable_does_not_hide_the_dotenv_value_but_for_ack_message(
    tmp_path: Path,
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("BRIXO_API_KEY=from-dotenv\nASK_COMMENT=always\nACK_MESSAGE=Thanks\n")
    environ = {"BRIXO_API_KEY": "", "ASK_COMMENT": " ", "ACK_MESSAGE": ""}
    settings = load_settings(environ, dotenv=str(dotenv))
    assert (settings.brixo_api_key, settings.ask_comment) == ("from-dotenv", "always")
    assert settings.ack_message == ""  # empty turns the thanks off


def test_a_dotenv_line_that_cannot_be_read_stops_with_its_line_and_name(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text('PORT=4000\nBRIXO_API_KEY="s3cret-key\nDELIVERY_MAX_AGE=1h\n', "utf-8")
    with pytest.raises(SettingsError) as raised:
        load_settings({}, dotenv=str(dotenv))
    message = str(raised.value)
    assert message == (
        f"{dotenv} line 2 (BRIXO_API_KEY): expected NAME=value (with matching quotes), "
        "got a line that can't be read"
    )
    assert "s3cret" not in message


def test_dotenv_in_the_working_folder_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("NOT_FOUND_GRACE=5m\nPORT=4100\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    settings = load_settings({"PORT": "4200"})
    assert settings.not_found_grace == 300
    assert settings.port == 4200


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("600", 600),
        ("30s", 30),
        ("10m", 600),
        ("24h", 86400),
        (" 2h ", 7200),
        ("1.5m", 90),
        ("7d", 7 * 86400),
        ("500ms", 0.5),
        ("24H", 86400),  # units in any case, as the other settings' words
        ("10M", 600),
        ("500MS", 0.5),
    ],
)
def test_durations(raw: str, seconds: float) -> None:
    settings = load_settings(
        {
            "DELIVERY_MAX_AGE": raw,
            "NOT_FOUND_GRACE": raw,
            "COMMENT_WAIT": raw,
            "AGENT_TIMEOUT": raw,
        },
        dotenv=None,
    )
    assert settings.delivery_max_age == seconds
    assert settings.not_found_grace == seconds
    assert settings.comment_wait == seconds
    assert settings.agent_timeout == seconds


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("yes", True),
        ("no", False),
        ("on", True),
        ("off", False),
        ("TRUE", True),
        ("Off", False),
    ],
)
def test_booleans(raw: str, value: bool) -> None:
    assert load_settings({"SEED_REACTIONS": raw}, dotenv=None).seed_reactions is value


def test_lists_replace_defaults() -> None:
    settings = load_settings(
        {
            "ASSISTANT_BOT_IDS": "B123, U456 ,,B789, W0ASSIST",  # W…: Enterprise Grid users
            "POSITIVE_REACTIONS": "heart, :tada:",
            "NEGATIVE_REACTIONS": "x",
        },
        dotenv=None,
    )
    assert settings.assistant_bot_ids == ("B123", "U456", "B789", "W0ASSIST")
    assert settings.positive_reactions == ("heart", "tada")
    assert settings.negative_reactions == ("x",)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgres://u:p@db.example:5432/d1", "postgresql+psycopg://u:p@db.example:5432/d1"),
        ("postgresql://u:p@db.example/d1", "postgresql+psycopg://u:p@db.example/d1"),
        ("sqlite:///relay.db", "sqlite:///relay.db"),
        ("sqlite:////abs/relay.db", "sqlite:////abs/relay.db"),
        ("POSTGRES://U:P@DB/D1", "postgresql+psycopg://U:P@DB/D1"),  # schemes: any case
        ("SQLite:///Relay.db", "sqlite:///Relay.db"),
    ],
)
def test_database_urls(raw: str, expected: str) -> None:
    assert load_settings({"DATABASE_URL": raw}, dotenv=None).database_url == expected


def test_url_schemes_are_any_case_and_the_rest_is_kept() -> None:
    settings = load_settings(
        {
            "BRIXO_API_URL": "HTTPS://API.Brixo.com/Base",
            "SLACK_API_URL": "Http://127.0.0.1:9/api/",
            "AGENT_URL": "hTTps://agent.example/Ask?Key=V",
        },
        dotenv=None,
    )
    assert settings.brixo_api_url == "https://API.Brixo.com/Base"
    assert settings.slack_api_url == "http://127.0.0.1:9/api/"
    assert settings.agent_url == "https://agent.example/Ask?Key=V"


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1]:8080/api/",
        "http://ü.example/a",
        "http://relay_1.internal:8000/",
        "https://api.brixo.com.",  # a fully qualified name, its root dot included
    ],
)
def test_urls_with_an_ipv6_an_international_or_an_internal_host_are_taken(url: str) -> None:
    assert load_settings({"AGENT_URL": url}, dotenv=None).agent_url == url


def test_slack_api_url_gets_the_slash_slack_sdk_needs() -> None:
    """slack-sdk appends the method to the base URL as it is: without the trailing slash,
    `…/api` would become `…/apiauth.test`."""
    settings = load_settings({"SLACK_API_URL": "http://127.0.0.1:9/api"}, dotenv=None)
    assert settings.slack_api_url == "http://127.0.0.1:9/api/"


def test_heroku_postgres_url_connects(postgres_url: str) -> None:
    """A Heroku-style postgres:// URL works against a real server."""
    from bot.core.db import Database

    heroku = postgres_url.replace("postgresql://", "postgres://", 1)
    settings = load_settings({"DATABASE_URL": heroku}, dotenv=None)
    database = Database(settings.database_url)
    try:
        database.ping()
        assert database.migrate(0.0) == database.migrate(1.0)
        assert database.schema_state() == "ok"
    finally:
        database.dispose()


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("DELIVERY_MAX_AGE", "banana"),
        ("NOT_FOUND_GRACE", "10 minutes"),
        ("COMMENT_WAIT", "-5"),
        ("PORT", "99999"),
        ("PORT", "0"),
        ("PORT", "http"),
        ("DATABASE_URL", "mysql://x"),
        ("SEED_REACTIONS", "maybe"),
        ("ASK_COMMENT", "sometimes"),
        ("LOG_FORMAT", "xml"),
        ("BRIXO_API_URL", "api.brixo.com"),
        ("DELIVERY_CONCURRENCY", "0"),
        ("MESSAGE_ID_TEMPLATE", "{team}-{nope}"),
        ("MESSAGE_ID_TEMPLATE", "static-id"),  # every reply one ID: votes on them would merge
        ("MESSAGE_ID_TEMPLATE", "{channel}-{thread_ts}"),
        ("CONVERSATION_ID_TEMPLATE", "{channel"),
        ("CONVERSATION_ID_TEMPLATE", "static-conversation"),  # every thread one conversation
        ("CONVERSATION_ID_TEMPLATE", "{team}"),
        ("CONVERSATION_ID_TEMPLATE", "c" * 1025 + "{ts}"),
        ("ASSISTANT_BOT_IDS", "B1, not an id"),
        ("ASSISTANT_BOT_IDS", "BASSIST,hello"),  # starts, then watches nothing: refused
        ("ASSISTANT_BOT_IDS", "bassist"),
        ("ASSISTANT_BOT_IDS", "Bassist"),
        ("AGENT_TIMEOUT", "0s"),
        ("COMMENT_WAIT", "0"),
        ("BRIXO_API_URL", "https://api.brixo.com/v1/"),
        ("DATABASE_URL", "sqlite:///:memory:"),
        ("DATABASE_URL", "sqlite:///:memory:?cache=shared"),
        ("DATABASE_URL", "postgres://u:pw@db.example.com:65536/relay"),
        ("DATABASE_URL", "postgres://u:pw@db.example.com:notaport/relay"),
        ("DATABASE_URL", "postgres://u:pw@[::1/relay"),
        ("AGENT_TIMEOUT", "200000d"),
        ("DELIVERY_MAX_AGE", "366d"),  # at most 365 days
        ("NOT_FOUND_GRACE", "31622401"),
        ("POSITIVE_REACTIONS", "thumbs up"),
        ("WEB_CONCURRENCY", "abc"),
        ("WEB_CONCURRENCY", "0"),
        ("WEB_CONCURRENCY", "65"),  # the README's ranges: 1–64, 1–256
        ("GUNICORN_THREADS", "-1"),
        ("GUNICORN_THREADS", "257"),
        ("DELIVERY_CONCURRENCY", "0"),
        ("DELIVERY_CONCURRENCY", "257"),
        ("SLACK_APP_TOKEN", "xoxb-a-bot-token"),
        ("BRIXO_API_KEY", "brixo-key\u200b"),  # a zero-width space pasted along
        ("BRIXO_API_KEY", "brixo-key\nsecond-line"),
        ("BRIXO_API_KEY", "brixo key"),
        ("AGENT_TOKEN", "tökén"),
        ("BRIXO_API_URL", "http://127.0.0.1:47001?x=1"),
        ("SLACK_API_URL", "https://slack.com/api/#x"),
        ("AGENT_URL", "http://a b"),
        ("AGENT_URL", "https://?x=1"),
        ("BRIXO_API_URL", "http://127.0.0.1:99999"),  # requests would fail on every send
        ("BRIXO_API_URL", "http://127.0.0.1:abc"),
        ("BRIXO_API_URL", "https://127.0.0.1:18801x"),
        ("BRIXO_API_URL", "http://:80"),
        ("BRIXO_API_URL", "http://user@"),
        ("SLACK_API_URL", "http://[::1/api/"),
        ("SLACK_API_URL", "http://[::1]x/api/"),
        ("BRIXO_API_URL", "https://[v1.fe]"),  # IPvFuture: requests can't reach it
        ("AGENT_URL", "http://a..b/agent"),
        ("AGENT_URL", "http://x:0/agent"),
        ("PORT", "٣٠٠٠"),  # Arabic-Indic digits
        ("DELIVERY_MAX_AGE", "٣٠"),
        ("COMMENT_WAIT", "１０m"),  # full-width digits
        ("PORT", "3_000"),
        ("SLACK_STATE_SECRET", "my secret\u200b"),
        ("SLACK_CLIENT_ID", "12\u200b3"),
        ("SLACK_BOT_TOKEN", "xoxb-1\t2"),
        ("SLACK_SIGNING_SECRET", "abc\u00a0def"),
        ("SLACK_APP_TOKEN", "xapp-1\u200b"),
        ("DISCORD_TOKEN", "a\rb"),
        ("ACK_MESSAGE", "x" * 2001),
    ],
)
def test_malformed_setting_names_the_variable_in_one_line(name: str, raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: raw}, dotenv=None)
    text = str(caught.value)
    assert text.startswith(f"{name}: expected"), text
    assert "\n" not in text


def test_durations_of_zero_and_of_a_year() -> None:
    """0 is a duration where it makes sense (DELIVERY_MAX_AGE=0: no retries), a year is the
    longest any setting takes."""
    settings = load_settings({"DELIVERY_MAX_AGE": "0", "NOT_FOUND_GRACE": "365d"}, dotenv=None)
    assert (settings.delivery_max_age, settings.not_found_grace) == (0, 365 * 86400)


def test_template_errors_say_what_is_wrong() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"CONVERSATION_ID_TEMPLATE": "{channel"}, dotenv=None)
    assert str(caught.value) == (
        "CONVERSATION_ID_TEMPLATE: expected a template like {channel}-{ts}, got '{channel' "
        "(expected '}' before end of string)"
    )
    with pytest.raises(SettingsError, match=r"with \{ts\}, so that each reply gets an ID"):
        load_settings({"MESSAGE_ID_TEMPLATE": "static-id"}, dotenv=None)
    conversation = load_settings({"CONVERSATION_ID_TEMPLATE": "{channel}"}, dotenv=None)
    assert conversation.conversation_id_template == "{channel}"  # a channel as one conversation


def test_a_dotenv_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(b"ACK_MESSAGE=Merci \xe9\n")  # Latin-1
    with pytest.raises(SettingsError) as caught:
        load_settings({}, dotenv=str(dotenv))
    assert str(caught.value) == f"{dotenv}: expected UTF-8 text, got byte 0xe9 at offset 18"


def test_a_dotenv_that_is_a_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / ".env").mkdir()
    with pytest.raises(SettingsError) as caught:
        load_settings({}, dotenv=str(tmp_path / ".env"))
    assert str(caught.value) == f"{tmp_path / '.env'}: expected a readable file, got Is a directory"


def test_a_reaction_in_both_sets_is_an_error() -> None:
    with pytest.raises(SettingsError, match=r"^NEGATIVE_REACTIONS: expected .* 'heart' in both"):
        load_settings({"POSITIVE_REACTIONS": "heart", "NEGATIVE_REACTIONS": "-1,heart"}, None)
    # Only the positive set given: it is the one named.
    with pytest.raises(SettingsError, match=r"^POSITIVE_REACTIONS: expected .* '-1' in both"):
        load_settings({"POSITIVE_REACTIONS": "+1,-1"}, None)


def test_a_reaction_in_both_sets_in_another_tone_is_an_error() -> None:
    with pytest.raises(SettingsError, match=r"^NEGATIVE_REACTIONS: .* '\+1::skin-tone-2' in both"):
        load_settings({"NEGATIVE_REACTIONS": "+1::skin-tone-2"}, None)


def test_slacks_two_names_of_a_thumb_are_one_reaction_in_both_sets() -> None:
    with pytest.raises(SettingsError, match=r"^NEGATIVE_REACTIONS: .* got '\+1' in both"):
        load_settings({"POSITIVE_REACTIONS": "heart,thumbsup", "NEGATIVE_REACTIONS": "+1"}, None)
    settings = load_settings({"POSITIVE_REACTIONS": "thumbsup", "NEGATIVE_REACTIONS": "-1"}, None)
    assert settings.positive_reactions == ("thumbsup",)


def test_half_an_oauth_install_is_an_error() -> None:
    with pytest.raises(SettingsError, match=r"^SLACK_CLIENT_SECRET: "):
        load_settings({"SLACK_CLIENT_ID": "1.2", "SLACK_STATE_SECRET": "s"}, dotenv=None)


def test_a_bot_token_beside_an_oauth_install_is_an_error() -> None:
    """The OAuth install would silently ignore the token, and its workspace's votes with it."""
    oauth = {"SLACK_CLIENT_ID": "1.2", "SLACK_CLIENT_SECRET": "c", "SLACK_STATE_SECRET": "s"}
    with pytest.raises(SettingsError, match=r"^SLACK_BOT_TOKEN: expected it unset with "):
        load_settings({**oauth, "SLACK_BOT_TOKEN": "xoxb-1"}, dotenv=None)
    assert load_settings(oauth, dotenv=None).oauth


@pytest.mark.parametrize(
    "url",
    [
        "mysql://admin:hunter2secret@db/x",
        "postgres://:hunter2secret@db:99999/x",  # no user name
        "postgres://u@db:99999/x?password=hunter2secret",  # libpq's query parameter
        "postgis://:hunter2secret@db/x",
        "postgresq://u:hunter2@secret@db/x",  # an @ in the password, unencoded
    ],
)
def test_database_url_error_hides_the_password(url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"DATABASE_URL": url}, dotenv=None)
    assert "hunter2" not in str(caught.value) and "secret" not in str(caught.value)
    assert str(caught.value).startswith("DATABASE_URL: expected")


def test_the_database_password_is_masked_in_logs_too() -> None:
    url = "postgres://u:pw-in-url@db/x?sslpassword=k&password=pw-in-query"
    settings = load_settings({"DATABASE_URL": url}, dotenv=None)
    assert {"pw-in-url", "pw-in-query"} <= set(settings.secrets)


def test_require_names_a_missing_setting() -> None:
    settings = load_settings({}, dotenv=None)
    with pytest.raises(SettingsError, match=r"^BRIXO_API_KEY: required"):
        settings.require("brixo_api_key")


def test_secrets_never_in_repr() -> None:
    secrets = {
        "BRIXO_API_KEY": "brixo-secret-key-123456",
        "SLACK_BOT_TOKEN": "xoxb-secret-token-123456",
        "SLACK_SIGNING_SECRET": "signing-secret-123456",
        "SLACK_APP_TOKEN": "xapp-secret-123456",
        "AGENT_TOKEN": "agent-secret-123456",
    }
    settings = load_settings(secrets, dotenv=None)
    text = repr(settings) + str(settings)
    for value in secrets.values():
        assert value not in text
    assert "brixo_api_url" in text  # the repr is still useful
    assert set(settings.secrets) == set(secrets.values())


def test_a_key_with_a_pasted_character_is_refused_without_showing_it() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"BRIXO_API_KEY": "brixo-secret-part\u200b"}, dotenv=None)
    assert "secret-part" not in str(caught.value)
    assert load_settings({"BRIXO_API_KEY": "  brixo-key-1  "}, dotenv=None).brixo_api_key == (
        "brixo-key-1"
    )


def test_id_templates_lose_the_blanks_around_them() -> None:
    settings = load_settings(
        {"MESSAGE_ID_TEMPLATE": "  {channel}-{ts} ", "CONVERSATION_ID_TEMPLATE": "\t{thread_ts}\n"},
        dotenv=None,
    )
    assert settings.message_id_template == "{channel}-{ts}"
    assert settings.conversation_id_template == "{thread_ts}"
