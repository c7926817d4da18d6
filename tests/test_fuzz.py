"""Fuzzing with hypothesis: payloads, settings, and awkward IDs and comments.

- Slack events and interactions with fields missing, of the wrong type, huge or in any
  script, validly signed and sent over HTTP to the running relay: never a 5xx, the delivery
  worker never dies, and nothing that reaches Brixo breaks its strict validation.
- Settings: `load_settings` raises nothing but SettingsError, whatever the strings.
- IDs and comments with every awkward character round-trip to Brixo exactly.
"""

from __future__ import annotations

import itertools
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from bot.core.acts import clean_comment
from bot.core.brixo import KEY_CHECK_ID
from bot.core.mapping import customer_id
from bot.core.settings import SETTING_NAMES, SettingsError, load_settings
from tests.fakes import slack_requests as sr
from tests.fakes.brixo import validate_body
from tests.slack_harness import (
    SIGNING_SECRET,
    RunningRelay,
    StartRelay,
)
from tests.waiting import wait_until

FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
# Requests to a live relay: the same examples every run (a failure is no fluke), no shrinking
# (each step is an HTTP round trip; the failing payload is in the assertion message).
FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=FIXTURES,
)

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
ODD = (
    JSON
    | st.just("x" * 60_000)
    | st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=200)
    | st.just("")
    | st.just("../../etc/passwd")
    | st.just("'; DROP TABLE brixo_acts; --")
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            found.append((*prefix, key))
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found.append((*prefix, i))
            found.extend(_paths(value, (*prefix, i)))
    return found


def _mutate(data: Any, draw: Any) -> Any:
    """A copy of `data` with a few fields removed or replaced by odd values."""
    data = json.loads(json.dumps(data))
    paths = _paths(data)
    for _ in range(draw(st.integers(1, 4))):
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        try:
            for step in path[:-1]:
                parent = parent[step]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(ODD)
        except (KeyError, IndexError, TypeError):
            continue
    return data


def _base_requests(ts: str) -> list[tuple[str, dict[str, Any]]]:
    """Every kind of request the relay handles, well formed, on the mapped reply `ts`."""
    comment_view = {"callback_id": "brixo_comment", "private_metadata": json.dumps({"act": 1})}
    rating_view = {
        "callback_id": "brixo_rate_conversation",
        "private_metadata": json.dumps(
            {"channel": "C1", "thread_ts": ts, "conversation_id": "conv-fuzz"}
        ),
    }
    rating_values = {
        "vote": {"vote_input": {"selected_option": {"value": "down"}}},
        "comment": {"comment_input": {"value": "meh"}},
    }
    return [
        ("event", sr.reaction_added("U1", "-1", "C1", ts)),
        ("event", sr.reaction_removed("U1", "-1", "C1", ts)),
        ("event", sr.message("D1", "U1", "hello", sr.now_ts())),
        ("event", sr.message("C1", None, "reply", sr.now_ts(), bot_id="BASSIST")),
        ("event", sr.app_mention("C1", "U1", "<@UBOT> hi", sr.now_ts())),
        ("event", sr.assistant_thread_started("D1", sr.now_ts(), "U1")),
        (
            "event",
            sr.message_metadata_posted(
                "C1", sr.now_ts(), "brixo_message", {"message_id": "m-new", "conversation_id": "c"}
            ),
        ),
        (
            "interaction",
            sr.block_action("U1", "T1", "C1", ts, sr.feedback_button_action("down")),
        ),
        (
            "interaction",
            sr.block_action("U1", "T1", "C1", ts, sr.button_action("brixo_add_comment", "1:x")),
        ),
        ("interaction", sr.message_shortcut("U1", "T1", "C1", ts)),
        ("interaction", sr.view_submission("U1", "T1", comment_view, {})),
        ("interaction", sr.view_closed("U1", "T1", comment_view)),
        ("interaction", sr.view_submission("U1", "T1", rating_view, rating_values)),
    ]


def _send(app: RunningRelay, kind: str, payload: Any) -> int:
    if kind == "event":
        envelope = app.sender.envelope({})
        envelope["event"] = payload
        body = json.dumps(envelope).encode()
        content_type = "application/json"
    else:
        body = urlencode({"payload": json.dumps(payload)}).encode()
        content_type = "application/x-www-form-urlencoded"
    headers = sr.sign(body, SIGNING_SECRET)
    headers["Content-Type"] = content_type
    return app.sender.raw(body, headers).status_code


def _worker_alive(app: RunningRelay) -> bool:
    worker = app.relay.worker
    return bool(worker and worker._thread and worker._thread.is_alive())


def _brixo_saw_only_valid_signals(app: RunningRelay) -> None:
    for received in app.brixo.requests:
        if received.id == KEY_CHECK_ID:
            continue
        assert validate_body(received.body) is None, received.body[:300]
        assert received.status in (204, 404), (received.status, received.raw_path)


def _drained(app: RunningRelay) -> None:
    wait_until(
        lambda: app.relay.outbox.counts(1e12)["pending"] == 0, message="outbox never drained"
    )


def test_fuzzed_payloads_never_give_5xx_nor_kill_the_worker(start_relay: StartRelay) -> None:
    app = start_relay(ASSISTANT_BOT_IDS="BASSIST", COMMENT_WAIT="1s")
    ts = sr.now_ts()
    event = sr.message_metadata_posted("C1", ts, "brixo_message", {"message_id": "m-fuzz"})
    assert app.sender.event(event).status_code == 200
    base = _base_requests(ts)
    statuses: list[int] = []

    @settings(FUZZ, max_examples=150)
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        kind, payload = data.draw(st.sampled_from(base))
        mutated = _mutate(payload, data.draw)
        status = _send(app, kind, mutated)
        statuses.append(status)
        assert status < 500, (status, json.dumps(mutated)[:300])
        assert _worker_alive(app)

    fuzz()
    assert statuses and all(s < 500 for s in statuses)
    _drained(app)
    assert _worker_alive(app)
    _brixo_saw_only_valid_signals(app)
    # Still healthy: a plain vote on a fresh reply is relayed.
    ts2 = sr.now_ts()
    event = sr.message_metadata_posted("C1", ts2, "brixo_message", {"message_id": "m-after"})
    assert app.sender.event(event).status_code == 200
    assert app.sender.event(sr.reaction_added("U77", "+1", "C1", ts2)).status_code == 200
    wait_until(lambda: app.brixo.accepted_for("m-after"), message="relay stopped relaying")


def test_whole_documents_of_odd_json_never_give_5xx(start_relay: StartRelay) -> None:
    app = start_relay()

    @settings(FUZZ, max_examples=80)
    @given(kind=st.sampled_from(("event", "interaction")), payload=JSON)
    def fuzz(kind: str, payload: Any) -> None:
        status = _send(app, kind, payload)
        assert status < 500, (status, repr(payload)[:300])

    fuzz()
    assert _worker_alive(app)


def _wrong_typed(ts: str) -> list[tuple[str, Any]]:
    """Well-formed requests with one field of the wrong type: each gave a 500."""
    cases: list[tuple[str, Any]] = []
    changes = [
        ("user", 5),
        ("channel", 5),
        ("team", 5),
        ("enterprise", 5),
        ("response_urls", "x"),
        ("view", "V1"),
        ("actions", "brixo_feedback"),
        ("actions", ["brixo_feedback"]),
    ]
    for kind, payload in _base_requests(ts):
        for key, value in changes:
            if key in payload:
                cases.append((kind, {**payload, key: value}))
        view = payload.get("view")
        if isinstance(view, dict):
            cases.append((kind, {**payload, "view": {**view, "private_metadata": 5}}))
    cases.append(("event", {**sr.message("D1", "U1", "x", "1.5"), "user": ["U1"]}))
    cases.append(("event", {**sr.message("D1", None, "x", "1.5", bot_id="B1"), "bot_id": {}}))
    cases.append(("event", {**sr.reaction_added("U1", "+1", "C1", ts), "user": 5}))
    return cases


def test_wrong_typed_fields_never_give_5xx(start_relay: StartRelay) -> None:
    app = start_relay()
    failed = [
        (json.dumps(payload)[:160], status)
        for kind, payload in _wrong_typed("1.2")
        if (status := _send(app, kind, payload)) >= 500
    ]
    assert failed == [], f"{len(failed)} request(s) answered 5xx, e.g. {failed[:5]}"
    assert _worker_alive(app)


# --- settings ------------------------------------------------------------------------------

SETTING_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["0", "-1", "1e9", "10x", "99999999999999999999999", "9" * 5000, "nan", "inf",
         "true", "maybe", "http://", "https://x", "sqlite:///", "postgres://", "{team}",
         "{nope}", "{0}", "{team.real}", "{team[9]}", "{ts:d}", "{team!z}", "{", "}", ":",
         ",,,", " ", "\t", "é", "😀"]  # fmt: skip
    ),
    st.builds(lambda a, b: a + b, st.sampled_from(["{team", "{ts", "{channel", "{thread_ts"]),
              st.sampled_from(["}", ".x}", "[0]}", "[99]}", ":>3}", "!r}", "!s:}", ".__class__}"])),
)  # fmt: skip


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(values=st.dictionaries(st.sampled_from(SETTING_NAMES), SETTING_VALUES, max_size=8))
def test_load_settings_raises_only_settings_error(values: dict[str, str]) -> None:
    try:
        load_settings(values, dotenv=None)
    except SettingsError as error:
        assert "\n" not in str(error).strip()
        assert any(name in str(error) for name in SETTING_NAMES), str(error)


@pytest.mark.parametrize("template", ["{team.x}", "{ts.__nope__}"])
def test_template_with_attribute_access_is_a_settings_error(template: str) -> None:
    with pytest.raises(SettingsError, match="MESSAGE_ID_TEMPLATE"):
        load_settings({"MESSAGE_ID_TEMPLATE": template}, dotenv=None)


@pytest.mark.parametrize("blank", ["", " ", "\t", "\u3000", "\n\n"])
def test_blank_customer_ids_are_refused(blank: str) -> None:
    assert customer_id(blank) is None
    assert customer_id(f"x{blank}") == f"x{blank}"  # blanks inside an ID are its own business


@pytest.mark.parametrize("odd", ["nul\x00inside", "lone\ud800surrogate", "\udcff"])
def test_ids_no_customer_could_have_traced_are_refused(odd: str) -> None:
    """A NUL or a lone surrogate (JSON lets metadata and agents send both) can't be in an ID
    the customer's assistant sent Brixo as UTF-8: no mapping, not a signal retried for nothing."""
    assert customer_id(odd) is None
    assert customer_id(f"x{odd}y") is None


@pytest.mark.parametrize(
    ("raw", "expected"), [(123, "123"), (-7, "-7"), (0, "0"), (True, None), (1.5, None)]
)
def test_whole_numbers_are_customer_ids_as_their_digits(raw: object, expected: str | None) -> None:
    assert customer_id(raw) == expected


# --- awkward IDs and comments ----------------------------------------------------------------

AWKWARD_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=200
) | st.sampled_from(["..", ".", "../", "%2e%2e", "/", "?x", "#", "'; DROP TABLE brixo_acts; --",
                     "a/../../b", "%", "%%", "+ &=", "\\", "\u202e", "👍🏽", "\r\n"])  # fmt: skip
_counter = itertools.count()


def _round_trip(app: RunningRelay, message_id: str, comment: str) -> None:
    app.brixo.clear()  # each example on its own, even after one that failed
    n = next(_counter)
    user, ts = f"UF{n}", f"1700{n:06d}.000001"
    event = sr.message_metadata_posted("C1", ts, "brixo_message", {"message_id": message_id})
    assert app.sender.event(event).status_code == 200
    trigger = f"trig-f{n}"
    click = sr.block_action(
        user, "T1", "C1", ts, sr.feedback_button_action("down"), trigger_id=trigger
    )
    assert app.sender.interaction(click).status_code == 200
    view = wait_until(
        lambda: next(
            (c.args["view"] for c in app.slack.calls_to("views.open")
             if c.args.get("trigger_id") == trigger),
            None,
        ),
        message="no comment modal",
    )  # fmt: skip
    values = {"comment": {"comment_input": {"type": "plain_text_input", "value": comment}}}
    shown = {k: view.get(k) for k in ("callback_id", "private_metadata")}
    assert app.sender.interaction(sr.view_submission(user, "T1", shown, values)).status_code == 200
    got = wait_until(lambda: app.brixo.accepted_for(message_id), message=repr(message_id))
    assert len(got) == 1
    sent = got[0]
    assert validate_body(sent.body) is None
    assert sent.id == message_id  # the path segment decodes to the very ID
    assert sent.raw_path.count("/") == 4 and sent.raw_path.startswith("/v1/messages/")
    assert sent.attributes.get("user_message") == clean_comment(comment)  # stored, sent intact


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_awkward_ids_and_comments_round_trip(
    start_relay: StartRelay, backend: str, request: pytest.FixtureRequest
) -> None:
    overrides = {"ASK_COMMENT": "always"}
    if backend == "postgresql":
        overrides["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    app = start_relay(**overrides)

    @settings(max_examples=60, deadline=None, suppress_health_check=FIXTURES)
    @given(message_id=AWKWARD_TEXT, comment=st.text(max_size=300) | AWKWARD_TEXT)
    def fuzz(message_id: str, comment: str) -> None:
        assume(message_id.strip() and "\x00" not in comment)
        _round_trip(app, message_id, comment)

    fuzz()
    assert _worker_alive(app)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("where", ["message_id", "comment"])
def test_nul_and_lone_surrogates_never_give_5xx(
    start_relay: StartRelay, backend: str, where: str, request: pytest.FixtureRequest
) -> None:
    overrides = {"ASK_COMMENT": "always"}
    if backend == "postgresql":
        overrides["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    app = start_relay(**overrides)
    for n, odd in enumerate(["nul\x00inside", "lone\ud800surrogate"]):
        ts = f"1690000000.{n:06d}"
        message_id = odd if where == "message_id" else f"m-odd-{n}"
        event = sr.message_metadata_posted("C1", ts, "brixo_message", {"message_id": message_id})
        assert _send(app, "event", event) < 500, repr(odd)
        trigger = f"trig-odd-{where}-{n}"
        click = sr.block_action(
            "U1", "T1", "C1", ts, sr.feedback_button_action("down"), trigger_id=trigger
        )
        assert _send(app, "interaction", click) < 500, repr(odd)
        if where == "comment":
            view = wait_until(
                lambda t=trigger: next(
                    (c.args["view"] for c in app.slack.calls_to("views.open")
                     if c.args.get("trigger_id") == t),
                    None,
                ),
            )  # fmt: skip
            shown = {k: view.get(k) for k in ("callback_id", "private_metadata")}
            values = {"comment": {"comment_input": {"value": odd}}}
            assert _send(app, "interaction", sr.view_submission("U1", "T1", shown, values)) < 500
    _drained(app)
    assert _worker_alive(app)
    _brixo_saw_only_valid_signals(app)
