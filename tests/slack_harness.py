"""The relay's HTTP app running for real, with a fake Slack Web API, agent and Brixo around it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from bot.core.relay import Relay
from bot.slack.server import RelayWSGI, build_wsgi
from tests.conftest import Env
from tests.fakes import FakeAgent, FakeBrixo, FakeSlackAPI, SlackSender

SIGNING_SECRET = "slack-signing-secret-8e1d"
BOT_TOKEN = "xoxb-test-bot-token-33c1"


class _ThreadedWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@dataclass
class RunningRelay:
    """One relay serving HTTP on 127.0.0.1, and the fakes it talks to."""

    url: str
    relay: Relay
    wsgi: RelayWSGI
    sender: SlackSender
    slack: FakeSlackAPI
    brixo: FakeBrixo
    agent: FakeAgent
    server: WSGIServer

    def stop(self) -> None:
        """Stop serving and delivering."""
        self.server.shutdown()
        self.server.server_close()
        self.relay.stop(5.0)
        self.relay.db.dispose()


StartRelay = Callable[..., RunningRelay]


@pytest.fixture
def fake_slack() -> Iterator[FakeSlackAPI]:
    """The fake Slack Web API; every scope of the manifest granted."""
    from bot.slack.manifest import BOT_SCOPES

    with FakeSlackAPI() as fake:
        fake.scopes = list(BOT_SCOPES)
        yield fake


@pytest.fixture
def fake_agent() -> Iterator[FakeAgent]:
    """The fake agent behind AGENT_URL."""
    with FakeAgent() as fake:
        yield fake


@pytest.fixture
def start_relay(
    env: Env, brixo: FakeBrixo, fake_slack: FakeSlackAPI, fake_agent: FakeAgent
) -> Iterator[StartRelay]:
    """`start_relay(ASK_COMMENT="never", …)` runs the relay in HTTP mode with these settings."""
    running: list[RunningRelay] = []

    def start(**overrides: str | None) -> RunningRelay:
        values = {
            "SLACK_API_URL": fake_slack.url,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "AGENT_URL": fake_agent.url,
            **overrides,
        }
        settings = env.settings(**values)
        wsgi, relay = build_wsgi(settings)
        server = make_server(
            "127.0.0.1", 0, wsgi, server_class=_ThreadedWSGIServer, handler_class=_QuietHandler
        )
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        url = f"http://127.0.0.1:{server.server_port}"
        instance = RunningRelay(
            url,
            relay,
            wsgi,
            SlackSender(url, SIGNING_SECRET),
            fake_slack,
            brixo,
            fake_agent,
            server,
        )
        running.append(instance)
        return instance

    yield start
    for instance in running:
        instance.stop()
