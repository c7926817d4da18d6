"""`python -m bot check`: its Slack line, run as the user runs it, against the fake Slack."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from slack_bolt import App
from slack_sdk import WebClient

from bot.commands.check import check_app_token
from bot.library import FeedbackRelay
from bot.slack.checks import check_slack_token
from bot.slack.socket import connect
from tests.conftest import BRIXO_KEY, Env
from tests.fakes import FakeBrixo, FakeSlackAPI
from tests.procs import run_bot
from tests.slack_harness import BOT_TOKEN

REQUIRED = ("reactions:write", "metadata.message:read")


def _check(env: Env, slack: FakeSlackAPI, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "check", *flags],
        env=env.process(
            SLACK_API_URL=slack.url, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET="secret"
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _slack_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stdout.splitlines() if line.startswith("slack:")]
    assert len(lines) == 1, (result.stdout, result.stderr)
    return lines[0]


def test_check_slack_ok(env: Env, fake_slack: FakeSlackAPI) -> None:
    result = _check(env, fake_slack)
    assert _slack_line(result).startswith("slack: ok (team T1, bot user UBOT"), result.stdout
    assert result.returncode == 0, (result.stdout, result.stderr)
    call = fake_slack.calls_to("auth.test")[0]
    assert call.token == BOT_TOKEN
    assert BOT_TOKEN not in result.stdout + result.stderr


def test_check_slack_missing_scopes(env: Env, fake_slack: FakeSlackAPI) -> None:
    fake_slack.scopes = [s for s in fake_slack.scopes if s not in REQUIRED]
    result = _check(env, fake_slack)
    line = _slack_line(result)
    assert line.startswith("slack: token works"), line
    assert all(scope in line for scope in REQUIRED), line
    assert "chat:write" not in line
    assert result.returncode == 1


def test_check_slack_refused_token(env: Env, fake_slack: FakeSlackAPI) -> None:
    fake_slack.valid_tokens = {"xoxb-some-other-token"}
    result = _check(env, fake_slack)
    assert _slack_line(result) == "slack: Slack refused the token: invalid_auth"
    assert result.returncode == 1


def test_check_slack_down_is_no_refused_token(env: Env, fake_slack: FakeSlackAPI) -> None:
    """A 5xx left after the client's retries says Slack is down, not that the token is bad."""
    fake_slack.fail_next("auth.test", 3, status=503)
    result = _check(env, fake_slack)
    line = _slack_line(result)
    assert line.startswith(f"slack: Slack at {fake_slack.url}"), line
    assert line.endswith("is busy or down (HTTP 503: fatal_error); try again shortly"), line
    assert result.returncode == 1


def test_check_library_needs_only_library_scopes(env: Env, fake_slack: FakeSlackAPI) -> None:
    """A team's own app lacks the standalone app's assistant scopes: fine in library mode."""
    fake_slack.scopes = [
        s for s in fake_slack.scopes if s not in ("assistant:write", "app_mentions:read")
    ]
    standalone = _check(env, fake_slack)
    assert "assistant:write" in _slack_line(standalone) and standalone.returncode == 1
    library = _check(env, fake_slack, "--library")
    assert _slack_line(library).startswith("slack: ok"), library.stdout
    assert library.returncode == 0, (library.stdout, library.stderr)
    fake_slack.scopes = [s for s in fake_slack.scopes if s != "reactions:read"]
    missing = _check(env, fake_slack, "--library")
    assert "reactions:read" in _slack_line(missing) and missing.returncode == 1
    # A team's app isn't installed from the relay's manifest: the line says what to merge.
    assert _slack_line(missing).endswith(
        "; merge relay.manifest_fragment() into your app's manifest and reinstall it"
    )
    assert _slack_line(standalone).endswith("; reinstall the app from the manifest")


def test_check_tries_the_app_token_for_socket_mode(env: Env, fake_slack: FakeSlackAPI) -> None:
    """SLACK_APP_TOKEN is checked as `socket` uses it: Slack must open a connection for it."""
    environ = env.process(
        SLACK_API_URL=fake_slack.url, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN="xapp-1-A1-bad"
    )
    fake_slack.respond("apps.connections.open", {"ok": False, "error": "invalid_auth"})
    refused = subprocess.run(
        [sys.executable, "-m", "bot", "check"], env=environ, capture_output=True, text=True
    )
    assert _slack_line(refused).startswith("slack: bot token works (team T1")
    assert _slack_line(refused).endswith(", but Slack refused SLACK_APP_TOKEN: invalid_auth")
    assert refused.returncode == 1
    fake_slack.reset_response("apps.connections.open")
    accepted = subprocess.run(
        [sys.executable, "-m", "bot", "check"], env=environ, capture_output=True, text=True
    )
    assert _slack_line(accepted).startswith("slack: ok (team T1"), accepted.stdout
    assert "refused" not in accepted.stdout, accepted.stdout
    assert [c.token for c in fake_slack.calls_to("apps.connections.open")] == ["xapp-1-A1-bad"] * 2


def test_a_slack_api_url_that_is_not_slacks_is_named_not_the_token(
    env: Env, fake_slack: FakeSlackAPI, brixo: FakeBrixo, tmp_path: Path
) -> None:
    """SLACK_API_URL without its /api/, with it twice, or some other server's: the token
    isn't at fault, and the one line says which setting is (as Brixo's line does), for
    `check` and for `serve`, which stops on it."""
    bare = fake_slack.url.removesuffix("api/")
    for url in (bare, fake_slack.url + "api/", brixo.url + "/"):
        environ = env.process(
            SLACK_API_URL=url, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET="secret"
        )
        result = run_bot("check", env=environ, cwd=tmp_path)
        line = _slack_line(result)
        assert line.startswith(f"slack: {url} doesn't answer as Slack's Web API does ("), line
        assert line.endswith("is SLACK_API_URL Slack's API base (https://slack.com/api/)?"), line
        assert result.returncode == 1
    result = run_bot("serve", env=env.process(**environ, PORT="9"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: SLACK_API_URL: {brixo.url}/ doesn't answer"), result


def test_a_server_answering_200_but_not_as_slack_is_named_not_the_token(
    env: Env, fake_slack: FakeSlackAPI, tmp_path: Path
) -> None:
    """A SLACK_API_URL whose server answers 200, but with a page instead of JSON, or with JSON
    that is no Slack answer (no error in it, or not even an object): still SLACK_API_URL's
    fault, in one line that says what came, never a traceback."""
    html = fake_slack.response_url("x").removesuffix("x")  # answers 200 "ok" as text/html
    cases = ((html, None, "HTTP 200: not JSON"), (fake_slack.url, {}, "HTTP 200"),
             (fake_slack.url, [], "HTTP 200"))  # fmt: skip
    for url, answer, got in cases:
        fake_slack.respond("auth.test", lambda _args, answer=answer: answer)
        environ = env.process(
            SLACK_API_URL=url, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET="secret"
        )
        result = run_bot("check", env=environ, cwd=tmp_path)
        line = _slack_line(result)
        assert line.startswith(f"slack: {url} doesn't answer as Slack's Web API does ({got}); ")
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr


class Bug(Exception):
    """An exception of our own code's making: no network error, no Slack answer."""


def test_a_bug_in_a_slack_call_keeps_its_traceback_instead_of_passing_for_slack_unreachable(
    env: Env, fake_slack: FakeSlackAPI, brixo: FakeBrixo, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Only network errors mean "Slack unreachable": a bug in the call (here, in the client)
    is raised as itself, from every place that reports a Slack that can't be reached."""

    def broken(*_args: object, **_kwargs: object) -> None:
        raise Bug("a bug, not the network")

    monkeypatch.setattr(WebClient, "auth_test", broken)
    monkeypatch.setattr(WebClient, "apps_connections_open", broken)
    settings = env.settings(
        SLACK_API_URL=fake_slack.url, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN="xapp-1-A1-x"
    )
    with pytest.raises(Bug):
        check_slack_token(settings)
    with pytest.raises(Bug):
        check_app_token(settings)
    handler = SimpleNamespace(connect=broken, app=SimpleNamespace(logger=logging.getLogger("t")))
    with pytest.raises(Bug):
        connect(handler, settings)  # type: ignore[arg-type]
    relay = FeedbackRelay(
        brixo_api_key=BRIXO_KEY, brixo_api_url=brixo.url,
        database_url=f"sqlite:///{tmp_path}/library.db",
    )  # fmt: skip
    client = WebClient(token=BOT_TOKEN, base_url=fake_slack.url)
    app = App(signing_secret="secret", client=client, token_verification_enabled=False)
    with pytest.raises(Bug):
        relay.attach(app)
    relay.close()
    # A network error still is "Slack unreachable", in one line.
    closed = env.settings(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN="xapp-1-A1-x")
    monkeypatch.undo()
    ok, line = check_slack_token(closed)
    assert not ok and line == f"Slack unreachable at {closed.slack_api_url} (URLError)"
    assert check_app_token(closed) == "URLError"


def test_check_library_leaves_the_apps_own_oauth_settings_alone(
    env: Env, fake_slack: FakeSlackAPI
) -> None:
    """A team's app reads SLACK_CLIENT_ID/SECRET for its own install; `check --library` runs
    with them set, where the standalone app's `check` wants all three OAuth settings."""
    oauth = {"SLACK_CLIENT_ID": "1.2", "SLACK_CLIENT_SECRET": "app-secret"}
    commands = {"--library": (0, "slack: ok"), "": (2, "error: SLACK_STATE_SECRET: required")}
    for flag, (status, expected) in commands.items():
        result = subprocess.run(
            [sys.executable, "-m", "bot", "check", *([flag] if flag else [])],
            env=env.process(SLACK_API_URL=fake_slack.url, SLACK_BOT_TOKEN=BOT_TOKEN, **oauth),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == status, (result.stdout, result.stderr)
        assert expected in result.stdout + result.stderr
