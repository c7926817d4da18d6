"""A naive relay (gunicorn `naive_relay:app`): `requests.post` to Brixo inside the listener.

A new connection for every signal, nothing stored, Bolt's defaults (events are acknowledged
before their listener runs; a click's listener acks first, then posts). IDs come from the same
rule the benchmark pre-maps, so both relays send the same signals.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import requests
from slack_bolt import Ack, App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

from benchmarks.traffic import message_id_of

BRIXO_URL = os.environ["BRIXO_API_URL"].rstrip("/")
HEADERS = {
    "Authorization": f"Bearer {os.environ['BRIXO_API_KEY']}",
    "Content-Type": "application/vnd.api+json",
}
VALUES = {"+1": "thumbs_up", "-1": "thumbs_down", "up": "thumbs_up", "down": "thumbs_down"}

bolt = App(
    signing_secret=os.environ["SLACK_SIGNING_SECRET"],
    client=WebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"]),
)


def post_signal(ts: str, value: str, occurred_at: float) -> None:
    moment = datetime.fromtimestamp(occurred_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "data": {
            "type": "signals",
            "attributes": {"name": "feedback", "value": value, "occurred_at": moment},
        }
    }
    path = quote(message_id_of(ts), safe="").replace(".", "%2E")
    requests.post(
        f"{BRIXO_URL}/v1/messages/{path}/signals",
        data=json.dumps(body),
        headers=HEADERS,
        timeout=15,
    )


@bolt.event("reaction_added")
def reaction(event: dict[str, Any]) -> None:
    value = VALUES.get(event["reaction"].split("::")[0])
    if value:
        post_signal(event["item"]["ts"], value, float(event["event_ts"]))


@bolt.action(re.compile(".*"))
def click(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
    ack()
    value = VALUES.get(action.get("value", ""))
    if value:
        post_signal(body["message"]["ts"], value, float(action["action_ts"]))


app = SlackRequestHandler(bolt)
