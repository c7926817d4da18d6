"""Multi-workspace OAuth: install at /slack/install, installations kept in the relay's database."""

from __future__ import annotations

import hmac
import logging
import os
import re
import time
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from sqlalchemy import MetaData, Table, create_engine, func, insert, inspect, select, update
from sqlalchemy.exc import OperationalError

from bot.core.logs import setup_logging
from bot.slack.manifest import BOT_SCOPES
from bot.slack.oauth import create_tables
from tests.fakes import FakeSlackAPI
from tests.fakes import slack_requests as sr
from tests.pg import database_params
from tests.slack_harness import (
    RunningRelay,
    StartRelay,
)
from tests.test_slack_smoke import (
    assert_app_rate_limited_is_acked_with_a_warning,
    assert_votes_meet_their_listeners_first,
)

CLIENT_ID = "1111.2222"
CLIENT_SECRET = "client-secret-5a7e"
STATE_SECRET = "state-secret-0b9d"
INSTALLED_TOKEN = "xoxb-installed-T9"


@pytest.fixture(params=database_params())
def oauth_relay(
    request: pytest.FixtureRequest,
    start_relay: StartRelay,
) -> RunningRelay:
    """A relay in OAuth mode (no SLACK_BOT_TOKEN) on SQLite or PostgreSQL."""
    overrides: dict[str, str | None] = {
        "SLACK_BOT_TOKEN": None,
        "SLACK_CLIENT_ID": CLIENT_ID,
        "SLACK_CLIENT_SECRET": CLIENT_SECRET,
        "SLACK_STATE_SECRET": STATE_SECRET,
        "ASK_COMMENT": "never",
    }
    if request.param == "postgresql":
        overrides["DATABASE_URL"] = str(request.getfixturevalue("postgres_url"))
    return start_relay(**overrides)


def install(app: RunningRelay | str, code: str = "c0de") -> requests.Response:
    """Walk Slack's OAuth flow: the install page, Slack's authorize URL, then the redirect."""
    base = app if isinstance(app, str) else app.url
    session, state = install_page(base)
    return back_from_slack(session, base, state, code)


def back_from_slack(
    session: requests.Session, base: str, state: str, code: str = "c0de"
) -> requests.Response:
    """Slack's redirect to the app after the install was approved, with the state cookie."""
    return session.get(
        f"{base}/slack/oauth_redirect",
        params={"code": code, "state": state},
        headers={"Cookie": f"slack-app-oauth-state={state}"},
        allow_redirects=False,
        timeout=10,
    )


def install_page(base: str) -> tuple[requests.Session, str]:
    """Open the install page as a browser would; returns the session and the OAuth state."""
    session = requests.Session()
    page = session.get(f"{base}/slack/install", allow_redirects=False, timeout=10)
    assert page.status_code in (200, 302), page.text
    location = page.headers.get("Location") or ""
    if not location:
        found = re.search(r'href="(https://slack\.com/oauth/v2/authorize\?[^"]+)"', page.text)
        assert found, page.text
        location = unescape(found.group(1))
    split = urlsplit(location)
    assert (split.scheme, split.netloc, split.path) == ("https", "slack.com", "/oauth/v2/authorize")
    query = parse_qs(split.query)
    assert query["client_id"] == [CLIENT_ID]
    assert set(query["scope"][0].split(",")) == set(BOT_SCOPES)
    state = query["state"][0]
    # The browser gets the state in a Secure cookie too; send it back as a browser would.
    cookie = page.headers.get("Set-Cookie", "")
    assert f"slack-app-oauth-state={state}" in cookie and "Secure" in cookie, cookie
    return session, state


def stored_bot(app: RunningRelay, team: str = "T9") -> Bot | None:
    """The bot installation the relay's database holds for `team`."""
    store = SQLAlchemyInstallationStore(client_id=CLIENT_ID, engine=app.relay.db.engine)
    return store.find_bot(enterprise_id=None, team_id=team)


def stored_installation(app: RunningRelay, team: str = "T9") -> Installation | None:
    """The installation row (with its copy of the bot token) the database holds for `team`."""
    store = SQLAlchemyInstallationStore(client_id=CLIENT_ID, engine=app.relay.db.engine)
    return store.find_installation(enterprise_id=None, team_id=team)


def unmapped_click(app: RunningRelay, team: str) -> requests.Response:
    """A 👍 on a message the relay can't map: Slack is asked for it, then a note is posted."""
    payload = sr.block_action(
        "U9", team, "C9", "1700000999.000100", sr.feedback_button_action("up")
    )
    return app.sender.interaction(payload)


def tokens_used(slack: FakeSlackAPI, *methods: str) -> set[str | None]:
    return {c.token for c in slack.calls if c.method in methods}


def test_install_stores_the_workspace_and_its_token_is_used(oauth_relay: RunningRelay) -> None:
    app = oauth_relay
    done = install(app)
    assert done.status_code == 200, done.text
    access = app.slack.calls_to("oauth.v2.access")
    assert len(access) == 1 and access[0].args["code"] == "c0de"
    bot = stored_bot(app)
    assert bot is not None and bot.bot_token == INSTALLED_TOKEN and bot.bot_user_id == "UBOT9"
    tables = set(inspect(app.relay.db.engine).get_table_names())
    assert {"slack_installations", "slack_bots", "slack_oauth_states"} <= tables

    app.slack.clear()
    assert unmapped_click(app, "T9").status_code == 200
    app.slack.wait_for_call("chat.postEphemeral")
    assert tokens_used(app.slack, "conversations.replies", "chat.postEphemeral") == {
        INSTALLED_TOKEN
    }

    # A workspace that never installed the app gets nothing done with anyone's token.
    app.slack.clear()
    refused = unmapped_click(app, "T7")
    assert refused.status_code != 200 or "install" in refused.text.lower()
    assert app.slack.calls == []


def test_install_with_a_forged_state_is_refused(oauth_relay: RunningRelay) -> None:
    app = oauth_relay
    answer = requests.get(
        f"{app.url}/slack/oauth_redirect",
        params={"code": "c0de", "state": "forged"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code >= 400
    assert app.slack.calls_to("oauth.v2.access") == []
    assert stored_bot(app) is None


@pytest.mark.parametrize(
    "event",
    [
        {"type": "app_uninstalled", "event_ts": "1700000000.000001"},
        {
            "type": "tokens_revoked",
            "tokens": {"oauth": [], "bot": ["UBOT9"]},
            "event_ts": "1700000000.000002",
        },
    ],
    ids=["app_uninstalled", "tokens_revoked"],
)
def test_uninstall_and_revocation_forget_the_workspace(
    oauth_relay: RunningRelay, event: dict[str, object]
) -> None:
    app = oauth_relay
    assert install(app).status_code == 200
    assert stored_bot(app) is not None and stored_installation(app) is not None
    assert app.sender.event(dict(event), team_id="T9").status_code == 200
    assert stored_bot(app) is None
    assert stored_installation(app) is None  # no copy of the token is kept either
    app.slack.clear()
    unmapped_click(app, "T9")
    assert INSTALLED_TOKEN not in tokens_used(app.slack, "conversations.replies")
    assert app.slack.calls_to("chat.postEphemeral") == []


def test_a_late_uninstall_redelivered_after_a_reinstall_keeps_the_new_install(
    oauth_relay: RunningRelay,
) -> None:
    """Slack redelivers an app_uninstalled whose first delivery failed, after the workspace
    installed the app again: the new installation stays."""
    app = oauth_relay
    assert install(app).status_code == 200
    before = int(time.time()) - 60  # when the workspace uninstalled the app, before this install
    for event in (
        {"type": "app_uninstalled"},
        {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["UBOT9"]}},
    ):
        late = app.sender.event(event, team_id="T9", event_time=before, retry_num=1)
        assert late.status_code == 200
        assert stored_bot(app) is not None, event["type"]
    assert app.sender.event({"type": "app_uninstalled"}, team_id="T9").status_code == 200
    assert stored_bot(app) is None


def test_revoking_user_tokens_alone_keeps_the_workspaces_bot(oauth_relay: RunningRelay) -> None:
    """tokens_revoked naming only user tokens (the relay installs none) leaves the bot's
    installation, and its votes, in place."""
    app = oauth_relay
    assert install(app).status_code == 200
    revoked = {"type": "tokens_revoked", "tokens": {"oauth": ["U9"], "bot": []}}
    assert app.sender.event(revoked, team_id="T9").status_code == 200
    bot = stored_bot(app)
    assert bot is not None and bot.bot_token == INSTALLED_TOKEN
    assert stored_installation(app) is not None


def test_oauth_states_are_signed_with_the_state_secret(oauth_relay: RunningRelay) -> None:
    app = oauth_relay
    session, state = install_page(app.url)
    nonce, _, signature = state.rpartition(".")
    assert signature == hmac.new(STATE_SECRET.encode(), nonce.encode(), "sha256").hexdigest()
    forged = f"{nonce}.{hmac.new(b'another-secret', nonce.encode(), 'sha256').hexdigest()}"
    refused = back_from_slack(session, app.url, forged)
    assert refused.status_code >= 400
    assert app.slack.calls_to("oauth.v2.access") == [] and stored_bot(app) is None


def test_a_used_expired_or_unknown_state_is_refused_even_signed(oauth_relay: RunningRelay) -> None:
    """A signature isn't enough: the state must be one the relay issued, unused and not
    expired (10 minutes), else the redirect is refused and no code is exchanged."""
    app = oauth_relay
    session, used = install_page(app.url)
    assert back_from_slack(session, app.url, used).status_code == 200
    exchanged = len(app.slack.calls_to("oauth.v2.access"))
    _, expired = install_page(app.url)
    states = Table("slack_oauth_states", MetaData(), autoload_with=app.relay.db.engine)
    past = datetime.now(tz=UTC).replace(tzinfo=None) - timedelta(minutes=11)
    with app.relay.db.engine.begin() as conn:
        conn.execute(
            update(states)
            .where(states.c.state == expired.rpartition(".")[0])
            .values(expire_at=past)
        )
    made_up = "never-issued"
    unknown = f"{made_up}.{hmac.new(STATE_SECRET.encode(), made_up.encode(), 'sha256').hexdigest()}"
    for state in (used, expired, unknown):
        refused = back_from_slack(requests.Session(), app.url, state)
        assert refused.status_code >= 400, (state, refused.status_code)
    assert len(app.slack.calls_to("oauth.v2.access")) == exchanged


def test_two_install_pages_open_at_once_both_work(oauth_relay: RunningRelay) -> None:
    """Two admins (or two tabs): issuing the second state keeps the first one."""
    app = oauth_relay
    first_session, first = install_page(app.url)
    install_page(app.url)
    done = back_from_slack(first_session, app.url, first)
    assert done.status_code == 200, done.text
    assert stored_bot(app) is not None


def test_expired_oauth_states_are_deleted_as_new_ones_are_issued(
    oauth_relay: RunningRelay,
) -> None:
    app = oauth_relay
    states = Table("slack_oauth_states", MetaData(), autoload_with=app.relay.db.engine)
    expired = datetime.now(tz=UTC).replace(tzinfo=None) - timedelta(minutes=11)
    with app.relay.db.engine.begin() as conn:
        conn.execute(
            insert(states), [{"state": f"old-{n}", "expire_at": expired} for n in range(50)]
        )
    assert install(app).status_code == 200  # issues one state, uses it
    with app.relay.db.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(states)) == 0


def test_votes_need_no_slack_call_before_the_ack(oauth_relay: RunningRelay) -> None:
    """Authorization reads the stored installation: Slack faltering can't drop a vote."""
    app = oauth_relay
    assert install(app).status_code == 200
    app.relay.mappings.record(
        "T9",
        "C9",
        "1700000500.000100",
        message_id="m-oauth",
        conversation_id=None,
        thread_ts=None,
        source="posted",
        now=0.0,
    )
    app.slack.clear()
    app.slack.fail_next("auth.test", 5, status=503, retry_after=None)
    reaction = sr.reaction_added("U9", "+1", "C9", "1700000500.000100", item_user="UBOT9")
    assert app.sender.event(reaction, team_id="T9").status_code == 200
    assert app.brixo.wait_for_accepted(1)[0].id == "m-oauth"
    assert app.slack.calls_to("auth.test") == []


def test_empty_oauth_variables_in_the_environment_leave_a_single_workspace_app(
    start_relay: StartRelay, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An env file with `SLACK_CLIENT_ID=` lines (as .env.example has) means unset: Bolt, which
    reads these variables itself, must not turn on its own install pages and file stores."""
    monkeypatch.setenv("SLACK_CLIENT_ID", "")
    monkeypatch.setenv("SLACK_CLIENT_SECRET", "")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-the-environment")
    app = start_relay(ASK_COMMENT="never")
    assert requests.get(f"{app.url}/slack/install", timeout=10).status_code == 404
    assert not [r for r in caplog.records if r.name.startswith("slack_bolt")], caplog.text
    # Hidden from Bolt only while it was built: the process's environment is as it was.
    assert [os.environ.get(name) for name in ("SLACK_CLIENT_ID", "SLACK_BOT_TOKEN")] == [
        "",
        "xoxb-from-the-environment",
    ]


def test_votes_meet_their_listeners_first_in_oauth_mode(oauth_relay: RunningRelay) -> None:
    """The uninstall events' listeners (forgetting the workspace here) come after the votes'."""
    assert_votes_meet_their_listeners_first(oauth_relay, "T9")


def test_app_rate_limited_and_unsubscribed_events_are_acked_in_oauth_mode(
    oauth_relay: RunningRelay, caplog: pytest.LogCaptureFixture
) -> None:
    assert install(oauth_relay).status_code == 200
    assert_app_rate_limited_is_acked_with_a_warning(oauth_relay, "T9", caplog)
    created = oauth_relay.sender.event({"type": "channel_created", "channel": {}}, team_id="T9")
    assert created.status_code == 200


def test_oauth_states_expire_ten_minutes_after_the_install_page(
    oauth_relay: RunningRelay,
) -> None:
    app = oauth_relay
    _, state = install_page(app.url)
    nonce = state.rpartition(".")[0]
    states = Table("slack_oauth_states", MetaData(), autoload_with=app.relay.db.engine)
    with app.relay.db.engine.connect() as conn:
        expire_at = conn.scalar(select(states.c.expire_at).where(states.c.state == nonce))
    lifetime = expire_at - datetime.now(tz=UTC).replace(tzinfo=None)
    assert timedelta(minutes=9) < lifetime <= timedelta(minutes=10)


def test_oauth_tables_raced_by_another_process_are_used_but_other_failures_stop_the_start(
    tmp_path: Path,
) -> None:
    """create_tables: a table created by a process starting alongside (the create fails once)
    is fine; a database that keeps failing stops the start instead of failing the first
    install later."""
    engine = create_engine(f"sqlite:///{tmp_path / 'oauth.db'}")
    store = SQLAlchemyInstallationStore(client_id=CLIENT_ID, engine=engine)
    real_create = store.create_tables
    failures = [1]

    def raced_once() -> None:
        if failures[0]:
            failures[0] -= 1
            real_create()  # the other process's create...
            raise OperationalError("CREATE TABLE", {}, Exception("table already exists"))
        real_create()

    store.create_tables = raced_once  # type: ignore[method-assign]
    create_tables(store)
    assert "slack_installations" in inspect(engine).get_table_names()

    def refused() -> None:
        raise OperationalError("CREATE TABLE", {}, Exception("permission denied"))

    store.create_tables = refused  # type: ignore[method-assign]
    with pytest.raises(OperationalError, match="permission denied"):
        create_tables(store)


def test_the_oauth_pages_answer_another_method_with_405_and_allow(
    oauth_relay: RunningRelay,
) -> None:
    """/slack/install and /slack/oauth_redirect are GET pages: a POST is 405 naming GET, never
    handed to Bolt as if it were a Slack request."""
    for path in ("/slack/install", "/slack/oauth_redirect"):
        answer = requests.post(f"{oauth_relay.url}{path}", data=b"x", timeout=10)
        assert (answer.status_code, answer.headers.get("Allow")) == (405, "GET"), path
        assert answer.json() == {"error": "method not allowed"}
    assert oauth_relay.slack.calls_to("oauth.v2.access") == []


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_the_code_of_an_oauth_redirect_never_reaches_the_log(
    oauth_relay: RunningRelay, capsys: pytest.CaptureFixture[str], level: str
) -> None:
    """Slack trades that code for the workspace's token: Bolt's lines that carry it (a failed
    exchange at INFO, every callback at DEBUG) are written with it masked."""
    app = oauth_relay
    app.slack.respond("oauth.v2.access", {"ok": False, "error": "bad_client_secret"})
    root, bolt = logging.getLogger(), logging.getLogger("slack_bolt.App")
    handlers, saved_levels = root.handlers[:], (root.level, bolt.level)
    try:
        setup_logging(level, "plain")
        bolt.setLevel(level)  # every line of Bolt's at this level
        capsys.readouterr()
        answer = install(app, code="c0de-4f1a-9b2e")
        log = capsys.readouterr().err
    finally:
        root.handlers[:] = handlers
        root.setLevel(saved_levels[0])
        bolt.setLevel(saved_levels[1])
    assert answer.status_code >= 400 and stored_bot(app) is None
    assert "c0de-4f1a-9b2e" not in log, log
    assert re.search(r"code'?:? \[?'?\*\*\*", log), log  # Bolt's line is there, masked
