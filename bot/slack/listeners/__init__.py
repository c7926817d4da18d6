"""Bolt listeners, one module per surface Slack reaches the relay through."""

from __future__ import annotations

from slack_bolt import App

from bot.slack.agent import AgentBridge
from bot.slack.feedback import SlackFeedback
from bot.slack.listeners import actions, events, shortcuts, views


def register(app: App, feedback: SlackFeedback, agent: AgentBridge | None) -> None:
    """Attach every relay listener to `app`, beside whatever listeners it already has.

    Bolt tries listeners in this order until one matches, and each try costs CPU on the ack
    path: the votes (clicks, then events with reactions first) come before modals and shortcuts.
    """
    actions.register(app, feedback)
    events.register(app, feedback, agent)
    views.register(app, feedback)
    shortcuts.register(app, feedback)
