"""The floor: a Bolt app that only acknowledges reactions and clicks (gunicorn `bare_app:app`)."""

from __future__ import annotations

import os
import re

from slack_bolt import Ack, App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

bolt = App(
    signing_secret=os.environ["SLACK_SIGNING_SECRET"],
    client=WebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"]),
    process_before_response=True,  # as the relay: the listener runs before the ack
)


@bolt.event("reaction_added")
def reaction(ack: Ack) -> None:
    ack()


@bolt.action(re.compile(".*"))
def click(ack: Ack) -> None:
    ack()


app = SlackRequestHandler(bolt)
