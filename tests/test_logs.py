"""Logs of a real relay process: a line per act and per delivery outcome, no secret or comment."""

from __future__ import annotations

import json
import logging
import re
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.core.logs import JsonFormatter, MaskingFormatter, Redactor, setup_logging
from bot.slack.blocks import COMMENT_BLOCK, COMMENT_INPUT
from tests.conftest import BRIXO_KEY, Env
from tests.fakes import FakeBrixo, FakeSlackAPI, SlackSender
from tests.fakes import slack_requests as sr
from tests.procs import Proc, start_bot
from tests.slack_harness import BOT_TOKEN, SIGNING_SECRET
from tests.test_deploy import click, free_port, seed_reply
from tests.test_oauth import CLIENT_ID, CLIENT_SECRET, INSTALLED_TOKEN, STATE_SECRET, install
from tests.waiting import wait_until

COMMENT = "the answer leaked my salary 123456, please fix"
FORGED_COMMENT = "forged comment text 987654"
AGENT_TOKEN = "agent-token-77f3e1"
APP_TOKEN = "xapp-1-A1-app-token-9c2d"
ACT_LINE = re.compile(r"\bact=(\d+) workspace=(\w+) .*\btarget=message:(\S+)")
DELIVERY_LINE = re.compile(
    r"\bdelivery act=(\d+) workspace=(\w+) target=message:(\S+) outcome=(\w+) attempt=(\d+)"
)


def messages(proc: Proc, fmt: str) -> list[str]:
    """The message of every log line (each line is one JSON object in the json format)."""
    lines = [line for line in proc.stderr_lines if line.strip()]
    if fmt == "plain":
        return lines
    out = []
    for line in lines:
        entry = json.loads(line)  # fails the test on any line that isn't JSON
        assert {"time", "level", "logger", "message"} <= set(entry), entry
        out.append(str(entry["message"]))
    return out


def vote_with_comment(slack: FakeSlackAPI, sender: SlackSender, team: str, message_id: str) -> None:
    """👎 on a reply, then the comment modal submitted with COMMENT."""
    ts = seed_reply(slack, "C1", message_id, team=team)
    action = sr.feedback_button_action("down")
    answer = sender.interaction(
        sr.block_action("U1", team, "C1", ts, action, message_bot_id="BOTHER")
    )
    assert answer.status_code == 200, answer.text
    view = slack.wait_for_call("views.open")[-1].args["view"]
    values = {COMMENT_BLOCK: {COMMENT_INPUT: {"type": "plain_text_input", "value": COMMENT}}}
    answer = sender.interaction(sr.view_submission("U1", team, view, values))
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "fmt,level,oauth",
    [("plain", "info", False), ("json", "debug", True)],
    ids=["plain-info-single", "json-debug-oauth"],
)
def test_log_lines_per_act_and_outcome_without_secrets(
    fmt: str,
    level: str,
    oauth: bool,
    env: Env,
    brixo: FakeBrixo,
    fake_slack: FakeSlackAPI,
    tmp_path: Path,
) -> None:
    port = free_port()
    secrets = [SIGNING_SECRET, BRIXO_KEY, AGENT_TOKEN, APP_TOKEN]
    settings: dict[str, str | None] = {
        "PORT": str(port),
        "LOG_FORMAT": fmt,
        "LOG_LEVEL": level,
        "SLACK_API_URL": fake_slack.url,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_APP_TOKEN": APP_TOKEN,
        "AGENT_URL": "http://127.0.0.1:9/agent",
        "AGENT_TOKEN": AGENT_TOKEN,
        "ASK_COMMENT": "negative",
    }
    if oauth:
        settings.update(
            SLACK_CLIENT_ID=CLIENT_ID,
            SLACK_CLIENT_SECRET=CLIENT_SECRET,
            SLACK_STATE_SECRET=STATE_SECRET,
        )
        secrets += [CLIENT_SECRET, STATE_SECRET, INSTALLED_TOKEN]
    else:
        settings["SLACK_BOT_TOKEN"] = BOT_TOKEN
        secrets.append(BOT_TOKEN)
    proc = start_bot("serve", env=env.process(**settings), cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        proc.wait_healthy(f"{base}/healthz", timeout=30)
        team = "T9" if oauth else "T1"
        if oauth:
            assert install(base).status_code == 200
        sender = SlackSender(base, SIGNING_SECRET)
        brixo.wait_for_requests(1, timeout=20)  # the key check at start: faults only after it
        brixo.fail_next(1, status=503)  # attempt 1 is retried, attempt 2 delivers
        vote_with_comment(fake_slack, sender, team, "m-logged")
        got = brixo.wait_for_accepted(1, timeout=20)[0]
        assert got.attributes["user_message"] == COMMENT
        # A request signed with the wrong secret: Slack payloads never reach the logs.
        forged = SlackSender(base, "a-wrong-signing-secret")
        view = {"callback_id": "brixo_comment", "private_metadata": "{}"}
        forged_input = {"type": "plain_text_input", "value": FORGED_COMMENT}
        values = {COMMENT_BLOCK: {COMMENT_INPUT: forged_input}}
        assert forged.interaction(sr.view_submission("U1", team, view, values)).status_code == 401
        proc.wait_for_line(r"outcome=delivered attempt=2", stream="stderr", timeout=10)
        proc.terminate()
        assert proc.wait(timeout=30) == 0, proc.describe()
    finally:
        proc.stop()

    lines = messages(proc, fmt)
    acts = [m.groups() for line in lines if (m := ACT_LINE.search(line)) and "delivery" not in line]
    assert len(acts) == 1, lines
    act_id = acts[0][0]
    assert acts[0][1:] == (team, "m-logged")
    act_line = next(line for line in lines if ACT_LINE.search(line) and "delivery" not in line)
    assert act_line.endswith("value=thumbs_down waiting for comment"), act_line
    outcomes = [m.groups() for line in lines if (m := DELIVERY_LINE.search(line))]
    assert outcomes == [
        (act_id, team, "m-logged", "retry", "1"),
        (act_id, team, "m-logged", "delivered", "2"),
    ], lines
    everything = proc.stdout + "\n" + proc.stderr
    for secret in [*secrets, COMMENT, FORGED_COMMENT, "123456", "987654"]:
        assert secret not in everything, f"{secret!r} appears in the logs"


@pytest.mark.parametrize(
    "line,masked",
    [
        ("a token xoxp-123-abc-def in text", "a token xoxp-*** in text"),
        ("app token xapp-1-A1-77", "app token xapp-***"),
        ("Authorization: Bearer s3cr3t-value", "Authorization: Bearer ***"),
        ("authorization: BEARER s3cr3t-value", "authorization: BEARER ***"),
        ("the configured key-4242 leaked", "the configured *** leaked"),
        (
            "delivery act=7 outcome=delivered status=204",
            "delivery act=7 outcome=delivered status=204",
        ),
    ],
)
def test_redactor_masks_tokens_bearers_and_secrets(line: str, masked: str) -> None:
    assert Redactor(["key-4242"]).mask(line) == masked


def test_a_secret_of_four_characters_is_masked_shorter_strings_are_not() -> None:
    """A short password or key is still a secret; one to three characters would mask
    ordinary words all over the log."""
    assert Redactor(["pw42", "abc"]).mask("pw42 abc") == "*** abc"


def test_a_secret_inside_another_is_masked_with_the_longer_one() -> None:
    """A key that holds another secret (a token inside a longer key, say) is masked whole:
    masking the shorter first would leave the longer one's other characters in the log."""
    redactor = Redactor(["4242", "key-4242-secret"])
    assert redactor.mask("got key-4242-secret and 4242") == "got *** and ***"


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_a_secret_with_quotes_and_backslashes_is_masked_however_it_is_written(fmt: str) -> None:
    key = "k3y\"Secr3t\\Aud'1t"
    redactor = Redactor([key])
    inner = logging.Formatter("%(message)s") if fmt == "plain" else JsonFormatter()
    formatter = MaskingFormatter(inner, redactor)
    for args in ((key,), (repr(key),), ({"key": key},)):
        record = logging.LogRecord("bot", logging.INFO, __file__, 1, "got %s %r", args * 2, None)
        line = formatter.format(record)
        assert "Secr3t" not in line and "Aud" not in line, line


def test_redactor_drops_payloads_only_from_slacks_loggers() -> None:
    redactor = Redactor([])

    def record(name: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.DEBUG, __file__, 1, "body: %s", ("comment",), None)

    from_slack, ours = record("slack_bolt.App"), record("bot.slack")
    from_sdk = record("slack_sdk.web.base_client")  # the Web API client's debug lines
    assert redactor.filter(from_slack) and redactor.filter(ours) and redactor.filter(from_sdk)
    assert from_slack.getMessage() == "body: (not logged)"
    assert from_sdk.getMessage() == "body: (not logged)"
    assert ours.getMessage() == "body: comment"
    status = logging.LogRecord(
        "slack_sdk.web", logging.DEBUG, __file__, 1, "status code: 500", None, None
    )
    assert redactor.filter(status) and status.getMessage() == "status code: 500"  # no OAuth code


def line_then_traceback(
    capsys: pytest.CaptureFixture[str], fmt: str, level: int, message: str, *args: object
) -> list[str]:
    """The stderr lines of `message` logged by bot.delivery at `level`, then of a "failed"
    with a ValueError's traceback, under setup_logging("INFO", fmt)."""
    root = logging.getLogger()
    handlers, saved_level = root.handlers[:], root.level
    try:
        setup_logging("INFO", fmt)
        logging.getLogger("bot.delivery").log(level, message, *args)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("bot").exception("failed")
    finally:
        root.handlers[:] = handlers
        root.setLevel(saved_level)
    return capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("fmt", ["plain", "json"])
@pytest.mark.parametrize(
    "separator",
    ["\n", "\r", "\x0b", "\x0c", "\x85", "\u2028", "\x1b[2K\x1b[1G"],  # last: a terminal's
    ids=["LF", "CR", "VT", "FF", "NEL", "LS", "ESC"],
)
def test_a_line_break_from_outside_cannot_forge_a_log_line(
    fmt: str, separator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    forged = (
        f"m1{separator}2026-01-01 00:00:00,000 INFO bot.delivery delivery act=9 outcome=delivered"
    )
    lines = line_then_traceback(
        capsys, fmt, logging.INFO, "delivery target=message:%s outcome=dead", forged
    )
    if fmt == "json":
        entries = [json.loads(line) for line in lines]
        assert [e["message"] for e in entries] == [
            f"delivery target=message:{forged} outcome=dead",
            "failed",
        ]
        return
    starts = [line for line in lines if re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert len(starts) == 2, lines
    escaped = separator.encode("unicode_escape").decode("ascii")
    assert starts[0].endswith(
        f"m1{escaped}2026-01-01 00:00:00,000 INFO bot.delivery delivery act=9 "
        "outcome=delivered outcome=dead"
    ), starts[0]
    assert "\x1b" not in starts[0]
    assert lines[-1] == "ValueError: boom"  # the traceback keeps its lines


@pytest.mark.parametrize("control", ["\u202e", "\u2066", "\u200f"], ids=["RLO", "LRI", "RLM"])
def test_a_bidirectional_control_from_outside_is_shown_escaped(
    control: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ID holding U+202E would show what follows it reversed on a terminal."""
    lines = line_then_traceback(capsys, "plain", logging.INFO, "target=message:%s", f"m{control}1")
    escaped = control.encode("unicode_escape").decode("ascii")
    assert lines[0].endswith(f"target=message:m{escaped}1"), lines[0]


def test_a_python_warning_is_a_log_line_in_the_format_with_secrets_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logging.captureWarnings(False)  # an earlier test's setup_logging left it on, outside pytest's
    try:
        setup_logging("INFO", "json", secrets=["xoxb-warned-token"])
        warnings.warn_explicit("token xoxb-warned-token is old", UserWarning, "lib.py", 3)
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = capsys.readouterr().err.splitlines()
    entries = [json.loads(line) for line in lines]  # every line JSON: the warning's two too
    assert len(entries) == 1 and "UserWarning" in entries[0]["message"], entries
    assert "xoxb-warned-token" not in lines[0]


def test_an_ack_message_of_blanks_turns_the_thanks_off_and_json_logs_stay_json(
    env: Env, brixo: FakeBrixo, fake_slack: FakeSlackAPI, tmp_path: Path
) -> None:
    """`ACK_MESSAGE` of blanks is empty, as every other setting of blanks is: no thanks. Posted,
    its blank text is refused by Slack (`no_text`), and slack-sdk's warning about it came out as
    two plain lines among LOG_FORMAT=json's one object a line."""
    port = free_port()
    settings = {
        "PORT": str(port),
        "LOG_FORMAT": "json",
        "SLACK_API_URL": fake_slack.url,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "ASK_COMMENT": "never",
        "ACK_MESSAGE": "   ",
    }
    proc = start_bot("serve", env=env.process(**settings), cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        proc.wait_healthy(f"{base}/healthz", timeout=30)
        sender = SlackSender(base, SIGNING_SECRET)
        blank = seed_reply(fake_slack, "C1", "m-blank-thanks")
        assert click(sender, "C1", blank).status_code == 200
        brixo.wait_for_accepted(1, timeout=20)
        # The sentinel: a vote on an unmapped message gets its note, after any thanks would.
        action = sr.feedback_button_action("up")
        unmapped = sr.block_action("U1", "T1", "C1", "1.000001", action, message_bot_id="BOTHER")
        assert sender.interaction(unmapped).status_code == 200
        wait_until(
            lambda: any(
                str(c.args.get("text")).startswith("I can't link")
                for c in fake_slack.calls_to("chat.postEphemeral")
            )
        )
        proc.terminate()
        assert proc.wait(timeout=30) == 0, proc.describe()
    finally:
        proc.stop()
    texts = [call.args.get("text") for call in fake_slack.calls_to("chat.postEphemeral")]
    assert len(texts) == 1 and str(texts[0]).startswith("I can't link"), texts
    messages(proc, "json")  # every line one JSON object


def test_json_lines_carry_utc_time_level_logger_and_the_exception(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """LOG_FORMAT=json: `time` (UTC, with its offset), `level`, `logger`, `message`, and the
    traceback as `exception`."""
    lines = line_then_traceback(capsys, "json", logging.WARNING, "delivery act=3 outcome=dead")
    dead, failed = [json.loads(line) for line in lines]
    assert set(dead) == {"time", "level", "logger", "message"}
    assert (dead["level"], dead["logger"], dead["message"]) == (
        "WARNING",
        "bot.delivery",
        "delivery act=3 outcome=dead",
    )
    logged_at = datetime.fromisoformat(dead["time"])
    assert logged_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - logged_at) < timedelta(minutes=5)
    assert (failed["level"], failed["logger"], failed["message"]) == ("ERROR", "bot", "failed")
    assert failed["exception"].startswith("Traceback (most recent call last):")
    assert failed["exception"].endswith("ValueError: boom")


def test_discords_gateway_and_http_lines_stay_out_even_at_debug(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """discord.py's debug lines hold gateway events and REST calls (people's comments,
    interaction tokens): LOG_LEVEL=debug shows the relay's debug lines, not those."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("DEBUG", "plain")
        for name in ("discord.gateway", "discord.http", "discord.webhook", "discord.state"):
            logging.getLogger(name).debug("%s event: comment %s", name, COMMENT)
            logging.getLogger(name).info("%s connected", name)
        logging.getLogger("bot.discord").debug("the relay's own debug line")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert COMMENT not in err
    assert err.count(" connected") == 4 and "the relay's own debug line" in err


def test_http_and_slack_library_lines_stay_out_below_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """urllib3's, slack_sdk's and Bolt's info and debug lines (a connection pool's every new
    connection, each Web API call) would drown the relay's: only their warnings show."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = ("urllib3.connectionpool", "slack_sdk.web.base_client", "slack_bolt.App")
    noisy = [
        logging.getLogger(n) for n in ("urllib3", "slack_sdk.web.base_client", "slack_bolt.App")
    ]
    levels = [logger.level for logger in noisy]
    try:
        setup_logging("DEBUG", "plain")
        for name in names:
            logging.getLogger(name).info("%s chatter", name)
            logging.getLogger(name).warning("%s warned", name)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for logger, saved in zip(noisy, levels, strict=True):
            logger.setLevel(saved)
    err = capsys.readouterr().err
    assert "chatter" not in err and err.count(" warned") == 3, err
