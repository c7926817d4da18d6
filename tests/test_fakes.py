"""Quick checks of the test doubles themselves."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import requests
from requests.adapters import HTTPAdapter
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from tests.fakes import FakeAgent, FakeBrixo, FakeSlackAPI
from tests.fakes import slack_requests as sr
from tests.fakes.brixo import is_rfc3339
from tests.pg import (  # noqa: F401
    PostgresServer,
    database_params,
    database_url,
    postgres_server,
    postgres_url,
)
from tests.waiting import wait_until

MEDIA = "application/vnd.api+json"
KEY = "brixo-test-key"

# The reference's request bodies, byte-for-byte as printed there.
EXAMPLE_UP = b"""{
  "data": {
    "type": "signals",
    "attributes": {
      "name": "feedback",
      "value": "thumbs_up",
      "occurred_at": "2026-02-03T14:22:10Z",
      "user_message": "Love this product!"
    }
  }
}"""
EXAMPLE_NO_TIME = b"""{
  "data": {
    "type": "signals",
    "attributes": {
      "name": "feedback",
      "value": "thumbs_down"
    }
  }
}"""
EXAMPLE_DOWN = b"""{
  "data": {
    "type": "signals",
    "attributes": {
      "name": "feedback",
      "value": "thumbs_down",
      "user_message": "Very frustrating!"
    }
  }
}"""


@pytest.fixture
def brixo() -> Iterator[FakeBrixo]:
    with FakeBrixo(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def slack() -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI() as fake:
        yield fake


def post(
    brixo: FakeBrixo,
    path: str,
    body: bytes | dict[str, Any],
    session: requests.Session | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5,
) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"Authorization": f"Bearer {KEY}", "Content-Type": MEDIA}
    hdrs.update(headers or {})
    return (session or requests).post(brixo.url + path, data=data, headers=hdrs, timeout=timeout)


def signal(**attrs: Any) -> dict[str, Any]:
    base = {"name": "feedback", "value": "thumbs_up"}
    base.update(attrs)
    return {"data": {"type": "signals", "attributes": base}}


def assert_jsonapi_error(resp: requests.Response, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == MEDIA
    error = resp.json()["errors"][0]
    assert error["status"] == str(status)
    assert error["title"] and error["detail"]


# -- Brixo --------------------------------------------------------------------------


def test_brixo_accepts_reference_examples(brixo: FakeBrixo) -> None:
    assert brixo.url.startswith("http://127.0.0.1:") and not brixo.url.endswith("/")
    for path, body in [
        ("/v1/messages/msg_1042/signals", EXAMPLE_UP),
        ("/v1/messages/msg_1042/signals", EXAMPLE_NO_TIME),
        ("/v1/conversations/conv_abc123/signals", EXAMPLE_DOWN),
    ]:
        resp = post(brixo, path, body)
        assert resp.status_code == 204, resp.text
        assert resp.content == b""
    assert [r.kind for r in brixo.accepted] == ["messages", "messages", "conversations"]
    assert len(brixo.accepted_for("msg_1042")) == 2
    last = brixo.accepted_for("conv_abc123")[0]
    assert last.body == EXAMPLE_DOWN
    assert last.attributes["user_message"] == "Very frustrating!"
    assert last.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"data": {"attributes": {"name": "feedback", "value": "thumbs_up"}}}, 400),
        ({"data": {"type": "signals"}}, 400),
        (
            {"data": {"type": "signal", "attributes": {"name": "feedback", "value": "thumbs_up"}}},
            400,
        ),
        ({"data": {"type": "signals", "attributes": {"value": "thumbs_up"}}}, 400),
        (signal(name="rating"), 400),
        ({"data": {"type": "signals", "attributes": {"name": "feedback"}}}, 400),
        (signal(value="up"), 400),
        (signal(occurred_at="2026-02-03 14:22"), 400),
        (signal(occurred_at="2026-02-03T14:22:10"), 400),
        (signal(occurred_at="2026-02-30T14:22:10Z"), 400),
        (signal(occurred_at=1770128530), 400),
        (signal(user_message=5), 400),
        (signal(extra="x"), 400),
        (
            {"data": {"type": "signals", "id": "1", "attributes": signal()["data"]["attributes"]}},
            400,
        ),
        (b"not json", 400),
        (b"[]", 400),
    ],
)
def test_brixo_rejects_bad_bodies(brixo: FakeBrixo, body: Any, status: int) -> None:
    assert_jsonapi_error(post(brixo, "/v1/messages/m1/signals", body), status)
    assert brixo.accepted == []


def test_brixo_rejects_auth_media_type_size_route_and_missing_id(brixo: FakeBrixo) -> None:
    path = "/v1/messages/m1/signals"
    assert_jsonapi_error(post(brixo, path, signal(), headers={"Authorization": ""}), 401)
    assert_jsonapi_error(post(brixo, path, signal(), headers={"Authorization": "Bearer no"}), 401)
    assert_jsonapi_error(
        post(brixo, path, signal(), headers={"Content-Type": "application/json"}), 415
    )
    ctype = f"{MEDIA}; charset=utf-8"
    assert_jsonapi_error(post(brixo, path, signal(), headers={"Content-Type": ctype}), 415)
    big = signal(user_message="x" * 20000)
    assert_jsonapi_error(post(brixo, path, big), 413)
    for bad in [
        "/v1/messages/a/b/signals",
        "/v1/messages/a?b/signals",
        "/v1/messages//signals",
        "/v1/message/m1/signals",
        "/v1/messages/m1/signals/",
        "/v1/messages/m1/signals?x=1",
    ]:
        assert_jsonapi_error(post(brixo, bad, signal()), 404)
    brixo.mark_missing("m1")
    assert_jsonapi_error(post(brixo, path, signal()), 404)
    brixo.mark_present("m1")
    assert post(brixo, path, signal()).status_code == 204
    brixo.set_key("rotated")
    assert_jsonapi_error(post(brixo, path, signal()), 401)
    resp = requests.get(brixo.url + path, timeout=5)
    assert_jsonapi_error(resp, 405)
    assert len(brixo.accepted) == 1


def test_brixo_decodes_percent_encoded_ids(brixo: FakeBrixo) -> None:
    ident = "conv/42 ü?#%"
    resp = post(brixo, f"/v1/conversations/{quote(ident, safe='')}/signals", signal())
    assert resp.status_code == 204
    assert brixo.accepted_for(ident)[0].kind == "conversations"


def test_rfc3339() -> None:
    good = ["2026-02-03T14:22:10Z", "2026-02-03T14:22:10.123456789+02:00", "2026-02-03t14:22:10z"]
    bad = ["2026-02-03", "2026-02-03T14:22:10", "2026-13-03T14:22:10Z", "2026-02-03T25:00:00Z"]
    assert all(is_rfc3339(v) for v in good)
    assert not any(is_rfc3339(v) for v in bad)


def test_brixo_keep_alive_and_size_error_keep_connection(brixo: FakeBrixo) -> None:
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1))
        for i in range(20):
            assert post(brixo, f"/v1/messages/m{i}/signals", signal(), session).status_code == 204
        assert (
            post(
                brixo, "/v1/messages/x/signals", signal(user_message="y" * 20000), session
            ).status_code
            == 413
        )
        assert post(brixo, "/v1/messages/m/signals", signal(), session).status_code == 204
    assert len({r.client_port for r in brixo.requests}) == 1


def test_brixo_faults_consumed_in_order(brixo: FakeBrixo) -> None:
    brixo.fail_next(1, status=429, retry_after="2")
    brixo.drop_next(1)
    brixo.fail_next(2, status=500, detail="boom")
    path = "/v1/messages/m1/signals"
    first = post(brixo, path, signal())
    assert_jsonapi_error(first, 429)
    assert first.headers["Retry-After"] == "2"
    with pytest.raises(requests.ConnectionError):
        post(brixo, path, signal())
    assert_jsonapi_error(post(brixo, path, signal()), 500)
    assert post(brixo, path, signal()).json()["errors"][0]["detail"] == "boom"
    assert post(brixo, path, signal()).status_code == 204
    assert [r.status for r in brixo.requests] == [429, 0, 500, 500, 204]
    assert brixo.pending_faults() == 0


def test_brixo_stall_and_concurrent_latency(brixo: FakeBrixo) -> None:
    brixo.stall_next(1, seconds=0.6)
    with pytest.raises(requests.ReadTimeout):
        post(brixo, "/v1/messages/slow/signals", signal(), timeout=0.2)
    # The stalled request is still processed after its client gave up.
    brixo.wait_for_accepted(1, timeout=5)
    brixo.set_latency(0.3)
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda i=i: results.append(
                post(brixo, f"/v1/messages/c{i}/signals", signal()).status_code
            )
        )
        for i in range(10)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [204] * 10
    assert time.monotonic() - started < 2.0  # would be >= 3 s if serialized


def test_brixo_restart_cuts_keep_alive_connections(brixo: FakeBrixo) -> None:
    with requests.Session() as session:
        assert post(brixo, "/v1/messages/a/signals", signal(), session).status_code == 204
        brixo.stop()
        with pytest.raises(requests.ConnectionError):
            post(brixo, "/v1/messages/b/signals", signal(), session)
        brixo.start()
        assert post(brixo, "/v1/messages/c/signals", signal(), session).status_code == 204
    assert [r.id for r in brixo.accepted] == ["a", "c"]


# -- Slack Web API -------------------------------------------------------------------


def test_fake_slack_with_web_client(slack: FakeSlackAPI) -> None:
    assert slack.url.endswith("/api/")
    client = WebClient(token="xoxb-test", base_url=slack.url)
    auth = client.auth_test()
    assert auth["user_id"] == "UBOT" and auth["bot_id"] == "BRELAY"
    assert "chat:write" in auth.headers["x-oauth-scopes"]

    metadata = {"event_type": "brixo_message", "event_payload": {"message_id": "m-1"}}
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    root = client.chat_postMessage(channel="D1", text="root", blocks=blocks, metadata=metadata)
    reply = client.chat_postMessage(channel="D1", text="reply", thread_ts=root["ts"])
    assert float(reply["ts"]) > float(root["ts"])
    call = slack.calls_to("chat.postMessage")[0]
    assert call.token == "xoxb-test"
    assert call.args["blocks"] == blocks and call.args["metadata"] == metadata

    with_meta = client.conversations_replies(channel="D1", ts=root["ts"], include_all_metadata=True)
    assert [m["ts"] for m in with_meta["messages"]] == [root["ts"], reply["ts"]]
    assert with_meta["messages"][0]["metadata"] == metadata
    assert with_meta["messages"][0]["bot_id"] == "BRELAY"
    plain = client.conversations_replies(channel="D1", ts=root["ts"])
    assert "metadata" not in plain["messages"][0]

    slack.add_message("C1", "100.000001", text="old", user="U1")
    slack.add_message("C1", "100.000002", text="new", user="U2")
    slack.add_message("C1", "100.000003", text="in thread", thread_ts="100.000001")
    hist = client.conversations_history(channel="C1", latest="100.000002", inclusive=True, limit=1)
    assert [m["text"] for m in hist["messages"]] == ["new"]
    hist = client.conversations_history(channel="C1")
    assert [m["text"] for m in hist["messages"]] == ["new", "old"]

    assert client.views_open(trigger_id="t", view={"type": "modal"})["view"]["id"].startswith("V")
    with pytest.raises(SlackApiError) as err:
        client.api_call("no.such.method")
    assert err.value.response["error"] == "unknown_method"
    slack.wait_for_call("views.open")


def test_fake_slack_overrides_failures_and_tokens(slack: FakeSlackAPI) -> None:
    client = WebClient(token="xoxb-test", base_url=slack.url)
    slack.fail_next("chat.postMessage", status=429, retry_after="3")
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C1", text="x")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "3"
    assert client.chat_postMessage(channel="C1", text="x")["ok"]
    slack.drop_next("chat.postMessage")
    with pytest.raises(OSError):  # WebClient(retry_handlers=[]): its default retries once
        WebClient(token="xoxb-test", base_url=slack.url, retry_handlers=[]).chat_postMessage(
            channel="C1", text="x"
        )
    assert client.chat_postMessage(channel="C1", text="x")["ok"]
    slack.respond("users.info", lambda args: {"ok": True, "user": {"id": args["user"]}})
    assert client.users_info(user="U7")["user"]["id"] == "U7"
    slack.valid_tokens = {"xoxb-good"}
    with pytest.raises(SlackApiError) as err:
        client.auth_test()
    assert err.value.response["error"] == "invalid_auth"
    oauth = WebClient(base_url=slack.url).oauth_v2_access(
        client_id="c", client_secret="s", code="abc"
    )
    assert oauth["access_token"] == "xoxb-installed-T9"
    assert slack.calls_to("oauth.v2.access")[0].args["code"] == "abc"


# -- Slack requests and the agent --------------------------------------------------


def test_signed_requests_verify_and_payload_shapes() -> None:
    body = b'{"type":"event_callback"}'
    headers = sr.sign(body, "secret")
    assert SignatureVerifier("secret").is_valid_request(body, headers)
    assert not SignatureVerifier("other").is_valid_request(body, headers)
    action = sr.feedback_button_action("negative")
    payload = sr.block_action("U1", "T1", "C1", "1.2", action, thread_ts="1.0")
    assert payload["actions"][0]["type"] == "feedback_buttons"
    assert payload["container"]["thread_ts"] == "1.0" and payload["message"]["ts"] == "1.2"
    view = sr.view_submission(
        "U1", "T1", {"callback_id": "cb", "private_metadata": "pm"}, {"a": {}}
    )
    assert view["view"]["state"]["values"] == {"a": {}} and view["view"]["callback_id"] == "cb"
    assert sr.message_shortcut("U1", "T1", "C1", "1.2")["type"] == "message_action"


def test_sender_posts_signed_envelopes() -> None:
    received: list[tuple[dict[str, Any], dict[str, str]]] = []

    with FakeAgent() as sink:  # any-path JSON recorder
        sender = sr.SlackSender(sink.base_url, "secret")
        sender.event(sr.reaction_added("U1", "+1", "C1", "1.2"), retry_num=1)
        sender.interaction(sr.block_action("U1", "T1", "C1", "1.2", sr.button_action("a", "v")))
        reqs = sink.wait_for_requests(2)
        received = [(r.json or {}, dict(r.headers)) for r in reqs]
        sender.close()
        assert reqs[0].path == "/slack/events"
        assert SignatureVerifier("secret").is_valid_request(reqs[1].body, reqs[1].headers)
    envelope, headers = received[0]
    assert envelope["type"] == "event_callback" and envelope["event_id"].startswith("Ev")
    assert envelope["authorizations"][0]["user_id"] == "UBOT"
    assert headers["x-slack-retry-num"] == "1"


def test_fake_agent_default_reply_and_faults() -> None:
    with FakeAgent() as agent:
        doc = {"text": "hello", "thread_ts": "1.0"}
        reply = requests.post(agent.url, json=doc, timeout=5).json()
        assert reply == {
            "text": "Answer to: hello",
            "message_id": "msg-1",
            "conversation_id": "conv-1.0",
        }
        agent.fail_next(1, status=502)
        assert requests.post(agent.url, json=doc, timeout=5).status_code == 502
        agent.stall_next(1, seconds=0.5)
        with pytest.raises(requests.ReadTimeout):
            requests.post(agent.url, json=doc, timeout=0.1)
        agent.reply_with({"text": "fixed", "message_id": "m"})
        assert requests.post(agent.url, json=doc, timeout=5).json()["text"] == "fixed"
        assert agent.requests[0].json == doc


def test_wait_until() -> None:
    assert wait_until(lambda: 5) == 5
    with pytest.raises(AssertionError, match="never"):
        wait_until(lambda: 0, timeout=0.05, message="never")


# -- PostgreSQL -------------------------------------------------------------------------


def test_postgres_url_is_usable(postgres_url: str) -> None:  # noqa: F811
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE t (id serial PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t (v) VALUES ('a')")
        row = conn.execute("SELECT v, current_setting('server_version_num') FROM t").fetchone()
    assert row is not None and row[0] == "a" and int(row[1]) >= 150000


@pytest.mark.parametrize("database_url", database_params(), indirect=True)
def test_database_url_fixture(database_url: str) -> None:  # noqa: F811
    if database_url.startswith("sqlite:///"):
        assert database_url.endswith("/relay.db")
    else:
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_brixo_answers_every_request_over_keep_alive_connections(brixo: FakeBrixo) -> None:
    """Several connections, many requests each: the benchmark's pattern. (How fast the stand-in
    answers is the benchmark's to show: its client table and requests-alone ceiling.)"""
    body = json.dumps(signal(occurred_at="2026-02-03T14:22:10Z")).encode()
    head = (
        f"POST /v1/messages/m1/signals HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: {MEDIA}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    per_conn, conns = 500, 4

    def run() -> None:
        with socket.create_connection(("127.0.0.1", brixo.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(per_conn):
                sock.sendall(head + body)
                assert sock.recv(4096).startswith(b"HTTP/1.1 204 ")

    threads = [threading.Thread(target=run) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(brixo.accepted) == per_conn * conns
