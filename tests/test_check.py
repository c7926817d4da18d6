"""`python -m bot check` beyond the Slack line: Brixo's answers, the SQLite file, Discord."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from time import time

import discord
import pytest
from sqlalchemy import insert

from bot.commands.check import check_brixo, run_checks
from bot.core.db import Database, schema_version
from bot.core.logs import setup_logging
from bot.core.outbox import Outbox
from bot.core.settings import load_settings, parse_database_url
from tests.conftest import Env, make_version_1
from tests.discord_fakes import FakeDiscordAPI
from tests.fakes import FakeBrixo, FakeSlackAPI
from tests.procs import run_bot
from tests.slack_harness import BOT_TOKEN

pytestmark = pytest.mark.timeout(60)


class NotBrixo:
    """Answers every request with one fixed status, body and media type."""

    def __init__(self) -> None:
        self.answer: tuple[int, str, bytes] = (404, "text/html", b"<h1>Not Found</h1>")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, media_type, body = outer.answer
                self.send_response(status)
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def not_brixo() -> Iterator[NotBrixo]:
    server = NotBrixo()
    yield server
    server.server.shutdown()
    server.server.server_close()


def brixo_line(env: Env, tmp_path: Path, **overrides: str) -> str:
    result = run_bot("check", env=env.process(**overrides), cwd=tmp_path)
    lines = [line for line in result.stdout.splitlines() if line.startswith("brixo: ")]
    assert len(lines) == 1 and result.returncode == 1, result.stdout
    return lines[0]


JSONAPI = "application/vnd.api+json"


@pytest.mark.parametrize(
    "answer",
    [
        (404, "text/html", b"<h1>Not Found</h1>"),  # a web server, not the API
        (200, "application/json", b'{"ok": false, "error": "unknown_method"}'),
        (204, JSONAPI, b""),  # took an empty body as a signal
        (415, JSONAPI, json.dumps({"errors": [{"status": "415", "detail": "x"}]}).encode()),
        (403, "text/plain", b"Forbidden by proxy"),
    ],
)
def test_check_fails_for_a_url_that_does_not_answer_as_brixo(
    env: Env, tmp_path: Path, not_brixo: NotBrixo, answer: tuple[int, str, bytes]
) -> None:
    not_brixo.answer = answer
    line = brixo_line(env, tmp_path, BRIXO_API_URL=not_brixo.url)
    assert f"answered HTTP {answer[0]}" in line and "BRIXO_API_URL" in line, line


def test_check_fails_when_brixo_is_overloaded(
    env: Env, tmp_path: Path, not_brixo: NotBrixo
) -> None:
    not_brixo.answer = (503, JSONAPI, b'{"errors": [{"status": "503", "title": "Busy"}]}')
    line = brixo_line(env, tmp_path, BRIXO_API_URL=not_brixo.url)
    assert line == "brixo: Brixo answered HTTP 503: Busy; try again later", line


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # Past auth, Brixo may refuse the empty probe as unknown (404) or invalid (400).
        ((404, JSONAPI, b'{"errors": [{"status": "404", "detail": "no such message"}]}'), "ok"),
        ((400, JSONAPI, b'{"errors": [{"status": "400", "detail": "bad body"}]}'), "ok"),
        ((429, JSONAPI, b'{"errors": [{"status": "429", "title": "Slow down"}]}'), "later"),
    ],
)
def test_check_reads_brixos_answers_to_the_key_check(
    tmp_path: Path, not_brixo: NotBrixo, answer: tuple[int, str, bytes], expected: str
) -> None:
    """A JSON:API 400 or 404 means the key was accepted; a 429 without Retry-After asks to
    come back later (not to fix BRIXO_API_URL)."""
    not_brixo.answer = answer
    settings = load_settings(
        {
            "BRIXO_API_KEY": "key",
            "BRIXO_API_URL": not_brixo.url,
            "DATABASE_URL": f"sqlite:///{tmp_path}/relay.db",
        },
        dotenv=None,
    )
    ok, line = check_brixo(settings)
    if expected == "ok":
        assert (ok, line) == (True, f"ok (key accepted by {not_brixo.url})")
    else:
        assert (ok, line) == (False, "Brixo answered HTTP 429: Slow down; try again later")


def test_check_asks_brixo_nothing_while_a_429_holds_every_request(
    env: Env, tmp_path: Path, brixo: FakeBrixo
) -> None:
    """A relay stored a 429's Retry-After: the key check waits it out too, and says so."""
    database = Database(parse_database_url("DATABASE_URL", env()["DATABASE_URL"]))
    database.migrate(time())
    Outbox(database).hold(time() + 120)
    database.dispose()
    line = brixo_line(env, tmp_path)
    assert re.fullmatch(
        r"brixo: not asked: Brixo asked to wait \(Retry-After\); try again in 1[12]\d s", line
    ), line
    assert brixo.requests == []


def test_checks_own_429_says_when_and_holds_every_relay_on_the_database(
    env: Env, tmp_path: Path, brixo: FakeBrixo
) -> None:
    database = Database(parse_database_url("DATABASE_URL", env()["DATABASE_URL"]))
    database.migrate(time())
    brixo.fail_next(1, status=429, retry_after="300")
    line = brixo_line(env, tmp_path)
    assert re.fullmatch(r"brixo: Brixo answered HTTP 429.*; try again in 300 s", line), line
    assert 290 < Outbox(database).held_until() - time() <= 300
    database.dispose()
    assert "not asked" in brixo_line(env, tmp_path)
    assert len(brixo.requests) == 1


def test_check_lines_stay_one_line_each(env: Env, tmp_path: Path, not_brixo: NotBrixo) -> None:
    """A multi-line error page, and Slack unreachable: one line per check, nothing else."""
    not_brixo.answer = (501, "text/html", b"<html>\n<body>\n  Not\n  Implemented\n</body></html>")
    environ = env.process(
        BRIXO_API_URL=not_brixo.url, SLACK_BOT_TOKEN="xoxb-1", SLACK_SIGNING_SECRET="s"
    )  # SLACK_API_URL: a closed port (the env fixture)
    result = run_bot("check", env=environ, cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["settings", "database", "brixo", "slack"]
    assert "Not Implemented" in lines[2], lines
    assert lines[3].startswith("slack: Slack unreachable"), lines
    assert result.stderr == "", result.stderr


def test_check_leaves_no_sqlite_file_behind(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    result = run_bot("check", env=env.process(DATABASE_URL=f"sqlite:///{path}"), cwd=tmp_path)
    assert f"database: ok (SQLite; {path} will be created at start)" in result.stdout
    assert not path.exists()
    missing = tmp_path / "no-such-folder" / "relay.db"
    result = run_bot("check", env=env.process(DATABASE_URL=f"sqlite:///{missing}"), cwd=tmp_path)
    assert "database: can't create the SQLite file" in result.stdout, result.stdout
    assert result.returncode == 1


def test_check_wants_a_way_for_slack_to_reach_the_relay(
    env: Env, tmp_path: Path, fake_slack: FakeSlackAPI
) -> None:
    slack = {"SLACK_API_URL": fake_slack.url, "SLACK_BOT_TOKEN": BOT_TOKEN}
    result = run_bot("check", env=env.process(**slack), cwd=tmp_path)
    assert "neither SLACK_SIGNING_SECRET (serve) nor SLACK_APP_TOKEN (socket)" in result.stdout
    assert result.returncode == 1
    result = run_bot("check", env=env.process(**slack, SLACK_APP_TOKEN="xapp-1"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout


@pytest.fixture
def discord_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDiscordAPI]:
    with FakeDiscordAPI() as fake:
        monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
        yield fake


def in_process_check(env: Env, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, str]]:
    code = run_checks(env.settings(DISCORD_TOKEN="discord-token"))
    out = capsys.readouterr().out
    return code, dict(line.split(": ", 1) for line in out.splitlines())


def test_check_a_discord_only_setup(
    env: Env, tmp_path: Path, discord_api: FakeDiscordAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = in_process_check(env, capsys)
    assert "slack" not in lines, lines
    assert lines["discord"].startswith("ok (bot "), lines
    assert code == 0, lines
    assert not os.path.exists(tmp_path / "relay.db")


def test_check_library_checks_no_discord_token(
    env: Env,
    discord_api: FakeDiscordAPI,
    fake_slack: FakeSlackAPI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Library mode is Slack only: `check --library` skips DISCORD_TOKEN, set or not."""
    settings = env.settings(
        DISCORD_TOKEN="discord-token", SLACK_API_URL=fake_slack.url, SLACK_BOT_TOKEN=BOT_TOKEN
    )
    run_checks(settings, library=True)
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert "discord" not in lines and "slack" in lines, lines
    assert discord_api.calls == [], discord_api.calls


def test_check_says_watched_discord_bots_need_a_template(
    env: Env, discord_api: FakeDiscordAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    env.values["ASSISTANT_BOT_IDS"] = "BSLACKBOT"  # a Slack bot's: mapped by its metadata there
    code, lines = in_process_check(env, capsys)
    assert lines["discord"].startswith("ok (bot "), lines
    env.values["ASSISTANT_BOT_IDS"] = "BSLACKBOT,123456789012345678"
    code, lines = in_process_check(env, capsys)
    assert lines["discord"] == (
        "ASSISTANT_BOT_IDS: on Discord, watched bots' replies are mapped only by "
        "MESSAGE_ID_TEMPLATE or CONVERSATION_ID_TEMPLATE; set one of them"
    )
    assert code == 1, lines
    env.values["CONVERSATION_ID_TEMPLATE"] = "{team}-{thread_ts}"  # either template will do
    code, lines = in_process_check(env, capsys)
    assert lines["discord"].startswith("ok (bot "), lines
    del env.values["CONVERSATION_ID_TEMPLATE"]
    env.values["MESSAGE_ID_TEMPLATE"] = "{team}-{ts}"
    code, lines = in_process_check(env, capsys)
    assert lines["discord"].startswith("ok (bot "), lines


def test_check_discord_refused_token(
    env: Env, discord_api: FakeDiscordAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    discord_api.fail("GET /users/@me", 401)
    code, lines = in_process_check(env, capsys)
    assert (code, lines["discord"]) == (1, "Discord refused DISCORD_TOKEN")


def test_check_discord_without_the_message_content_intent(
    env: Env, discord_api: FakeDiscordAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    discord_api.application_flags = 0
    code, lines = in_process_check(env, capsys)
    assert code == 1 and "Message Content intent" in lines["discord"], lines


def test_check_discord_is_its_line_alone(
    env: Env, discord_api: FakeDiscordAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    """As for Slack's line, the one line says it all: discord.py's own log lines while it
    logs in (its Guilds intent and voice warnings, "logging in using static token") stay out
    of `check`'s output, at the log level `check` runs with."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("INFO", "plain")
        code = run_checks(env.settings(DISCORD_TOKEN="discord-token"))
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    out, err = capsys.readouterr()
    assert code == 0 and "\ndiscord: ok (bot " in out, out
    assert err == ""


def test_a_postgres_server_that_never_answers_fails_in_seconds(
    env: Env, tmp_path: Path, brixo: FakeBrixo
) -> None:
    """A host that takes the connection and says nothing: one line after the connect timeout
    (2 s), not the OS's minutes; Brixo's key is still checked."""
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        environ = env.process(DATABASE_URL=f"postgres://relay:pw@127.0.0.1:{port}/relay")
        result = run_bot("check", env=environ, cwd=tmp_path, timeout=40)
    finally:
        silent.close()
    lines = result.stdout.splitlines()
    database = next(line for line in lines if line.startswith("database: "))
    assert database.startswith("database: cannot connect (OperationalError: "), database
    assert "timeout" in database, database
    assert "brixo: ok (key accepted" in result.stdout


@pytest.mark.parametrize(
    ("command", "path"), [(["serve"], "no-such-folder/relay.db"), (["outbox", "list"], "a-folder")]
)
def test_a_database_that_cannot_be_opened_is_one_line(
    env: Env, tmp_path: Path, command: list[str], path: str
) -> None:
    (tmp_path / "a-folder").mkdir()  # where a file should be
    environ = env.process(
        DATABASE_URL=f"sqlite:///{tmp_path}/{path}", SLACK_SIGNING_SECRET="s", PORT="9"
    )
    result = run_bot(*command, env=environ, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "error: DATABASE_URL: can't open the database "
        "(OperationalError: unable to open database file)"
    )


def test_socket_mode_with_a_refused_app_token_is_one_line(
    env: Env, tmp_path: Path, fake_slack: FakeSlackAPI
) -> None:
    fake_slack.respond("apps.connections.open", {"ok": False, "error": "invalid_auth"})
    environ = env.process(
        SLACK_API_URL=fake_slack.url, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN="xapp-1-A1-x"
    )
    result = run_bot("socket", env=environ, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: SLACK_APP_TOKEN: Slack refused the token: invalid_auth"
    ]


@pytest.mark.parametrize("command", ["serve", "socket"])
def test_slack_unreachable_at_start_is_one_line(env: Env, tmp_path: Path, command: str) -> None:
    environ = env.process(  # SLACK_API_URL: a closed port (the env fixture)
        SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET="s", SLACK_APP_TOKEN="xapp-1-A1-x"
    )
    result = run_bot(command, env=environ, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: SLACK_API_URL: Slack unreachable at {environ['SLACK_API_URL']} (URLError)"
    ]


@pytest.mark.parametrize("command", ["serve", "socket", "check", "check --library"])
@pytest.mark.parametrize(
    ("setting", "value"),
    [("POSITIVE_REACTIONS", "👍"), ("NEGATIVE_REACTIONS", "-1,THUMBSDOWN"),
     ("POSITIVE_REACTIONS", "Star")],
)  # fmt: skip
def test_a_reaction_name_slack_never_sends_stops_the_slack_modes_in_one_line(
    env: Env, tmp_path: Path, fake_slack: FakeSlackAPI, command: str, setting: str, value: str
) -> None:
    """Slack sends reactions' names in lowercase: a 👍 or THUMBSDOWN in a set would leave
    every such vote uncounted without a word (library mode refuses it too). Nothing is asked
    of Slack, nothing created."""
    environ = env.process(
        SLACK_API_URL=fake_slack.url, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET="s",
        SLACK_APP_TOKEN="xapp-1-A1-x", PORT="9", **{setting: value},
    )  # fmt: skip
    result = run_bot(*command.split(), env=environ, cwd=tmp_path)
    bad = value.split(",")[-1]
    expected = (
        f"{setting}: expected Slack's names of reactions, in lowercase, like +1,thumbsup "
        f"(Discord reads them as the emoji they name), got {bad!r}"
    )
    if command.startswith("check"):
        assert result.returncode == 1, result.stdout
        assert f"slack: {expected}" in result.stdout.splitlines(), result.stdout
    else:
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [f"error: {expected}"]
        assert not (tmp_path / "relay.db").exists()
    assert fake_slack.calls == []


def test_a_failed_start_is_a_json_line_under_log_format_json(env: Env, tmp_path: Path) -> None:
    """A log drain parsing JSON gets the start's failure as a line of JSON too, once the
    settings asked for it; a malformed setting, found before they could, stays plain."""
    environ = env.process(  # SLACK_API_URL: a closed port (the env fixture)
        SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET="s", LOG_FORMAT="json", PORT="9"
    )
    result = run_bot("serve", env=environ, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["message"]) == (
        "ERROR",
        f"SLACK_API_URL: Slack unreachable at {environ['SLACK_API_URL']} (URLError)",
    )
    result = run_bot("serve", env={**environ, "PORT": "abc"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: PORT: expected a whole number from 1 to 65535, got 'abc'"
    ]


def test_check_an_existing_database_without_the_schema_yet(
    env: Env, tmp_path: Path, discord_api: FakeDiscordAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database that exists but is still empty (a fresh Heroku Postgres, a touched file) is
    fine: the relay creates the schema at start."""
    (tmp_path / "relay.db").touch()
    code, lines = in_process_check(env, capsys)
    assert lines["database"] == "ok (SQLite; the schema will be created at start)", lines
    assert code == 0, lines


def test_check_both_slack_and_discord(
    env: Env,
    fake_slack: FakeSlackAPI,
    discord_api: FakeDiscordAPI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Slack set up beside DISCORD_TOKEN: both tokens are checked, one line each."""
    env.values.update(
        SLACK_API_URL=fake_slack.url, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN="xapp-1"
    )
    code, lines = in_process_check(env, capsys)
    assert list(lines) == ["settings", "database", "brixo", "slack", "discord"], lines
    assert lines["slack"].startswith("ok"), lines
    assert lines["discord"].startswith("ok (bot "), lines
    assert code == 0, lines


def test_any_failed_line_fails_the_check_not_only_the_last(
    env: Env, discord_api: FakeDiscordAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    """Brixo refuses the key while the Discord line after it passes: exit 1 all the same."""
    env.values["BRIXO_API_KEY"] = "wrong-key-0123456789"
    code, lines = in_process_check(env, capsys)
    assert lines["brixo"].startswith("unauthorized"), lines
    assert lines["discord"].startswith("ok (bot "), lines
    assert code == 1, lines


def test_check_passes_an_older_relays_database_and_reads_its_hold(
    env: Env, brixo: FakeBrixo, discord_api: FakeDiscordAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database of a relay of schema version 1 is migrated at start: `check` passes it, and
    still honours the 429 hold an older relay stored there."""
    database = Database(parse_database_url("DATABASE_URL", env()["DATABASE_URL"]))
    database.migrate(time())
    make_version_1(database, time())
    Outbox(database).hold(time() + 120)
    database.dispose()
    code, lines = in_process_check(env, capsys)
    assert lines["database"] == "ok (SQLite; an older relay's schema, migrated at start)"
    assert lines["brixo"].startswith("not asked: Brixo asked to wait"), lines
    assert brixo.requests == []
    assert code == 1, lines


def test_check_fails_on_a_schema_the_relay_would_refuse(
    env: Env, discord_api: FakeDiscordAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database written by a newer relay stops this one at start: `check` must not pass it."""
    database = Database(parse_database_url("DATABASE_URL", env()["DATABASE_URL"]))
    database.migrate(time())
    with database.write() as conn:
        conn.execute(insert(schema_version).values(version=99, applied_at=time()))
    database.dispose()
    code, lines = in_process_check(env, capsys)
    assert lines["database"] == "SQLite schema is newer than this relay's; upgrade the relay"
    assert code == 1, lines
