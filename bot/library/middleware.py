"""The middleware that runs the standalone app's listeners inside a team's own app."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.lazy_listener.thread_runner import ThreadLazyListenerRunner
from slack_bolt.listener.custom_listener import CustomListener
from slack_bolt.listener.listener import Listener
from slack_bolt.listener.listener_error_handler import CustomListenerErrorHandler
from slack_bolt.listener.thread_runner import ThreadListenerRunner
from slack_bolt.listener_matcher import builtins as matchers
from slack_bolt.listener_matcher.listener_matcher import ListenerMatcher
from slack_bolt.middleware import Middleware

from bot.library.setup import LIBRARY_EVENTS
from bot.slack.app import answer_error
from bot.slack.feedback import SlackFeedback
from bot.slack.listeners import actions, events, shortcuts, views

log = logging.getLogger("bot.library")

# Event types the middleware hands to the relay's listeners (`message` only for the observer).
_EVENT_TYPES = frozenset(LIBRARY_EVENTS)
_OBSERVED = "brixo_observed"  # context key: the relay handled this event
_INTERACTIVE = frozenset({"block_actions", "view_submission", "view_closed", "message_action"})


class _Collector:
    """Stands in for `App` while the standalone listener modules register: keeps the listeners."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.listeners: list[Listener] = []

    def action(self, constraints: Any) -> Callable[..., None]:
        return self._add(matchers.action(constraints, base_logger=self.logger), auto_ack=False)

    def view_submission(self, constraints: Any) -> Callable[..., None]:
        return self._add(matchers.view_submission(constraints, base_logger=self.logger), False)

    def view_closed(self, constraints: Any) -> Callable[..., None]:
        return self._add(matchers.view_closed(constraints, base_logger=self.logger), False)

    def shortcut(self, constraints: Any) -> Callable[..., None]:
        return self._add(matchers.shortcut(constraints, base_logger=self.logger), False)

    def event(self, constraints: Any) -> Callable[..., None]:
        return self._add(matchers.event(constraints, base_logger=self.logger), auto_ack=True)

    def _add(self, matcher: ListenerMatcher | Any, auto_ack: bool) -> Callable[..., None]:
        def add(function: Callable[..., Any]) -> None:
            self.listeners.append(
                CustomListener(
                    app_name="brixo-relay",
                    ack_function=function,
                    lazy_functions=[],
                    matchers=[matcher],
                    middleware=[],
                    auto_acknowledgement=auto_ack,
                    base_logger=self.logger,
                )
            )

        return add


class RelayMiddleware(Middleware):
    """Runs the relay's listeners (with process_before_response semantics) from a middleware."""

    def __init__(self, app: App, feedback: SlackFeedback) -> None:
        collector = _Collector(app.logger)
        shim = cast(App, collector)  # the listener modules only call the methods it has
        actions.register(shim, feedback)
        views.register(shim, feedback)
        shortcuts.register(shim, feedback)
        events.register(shim, feedback, None)
        self.listeners = collector.listeners
        self.watch_messages = bool(feedback.watched)
        executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="brixo-relay")
        base = app.listener_runner
        # The relay stores each act before the ack and hands follow-ups (thanks, modals) to its
        # own threads: the listeners run as process_before_response=True, whatever the app uses.
        # Their errors are answered as the standalone app answers them (a vote not stored is a
        # 500, so that Slack sends it again), not by the app's error handler, which may ack.
        self.runner = ThreadListenerRunner(
            logger=app.logger,
            process_before_response=True,
            listener_error_handler=CustomListenerErrorHandler(app.logger, answer_error),
            listener_start_handler=base.listener_start_handler,
            listener_completion_handler=base.listener_completion_handler,
            listener_executor=executor,
            lazy_listener_runner=ThreadLazyListenerRunner(logger=app.logger, executor=executor),
        )

    @property
    def name(self) -> str:
        return "BrixoFeedbackRelay"

    def process(
        self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse | None:
        body = req.body
        is_event = body.get("type") == "event_callback"
        if is_event:
            kind = (body.get("event") or {}).get("type")
            wanted = kind in _EVENT_TYPES or (kind == "message" and self.watch_messages)
        else:
            wanted = body.get("type") in _INTERACTIVE
        listener = _first_match(self.listeners, req, resp) if wanted else None
        if listener is None:
            return next()
        answer = self.runner.run(
            request=req,
            response=resp,
            listener_name=f"brixo:{listener.ack_function.__name__}",
            listener=listener,
        )
        if not is_event:
            return answer  # the relay's own button, modal or shortcut: answered here
        if answer is not None and answer.status >= 500:
            return answer  # not stored: Slack retries, and the app's listeners get it then
        req.context[_OBSERVED] = True  # the app's own listeners get it too
        return next()


def _first_match(
    listeners: Iterable[Listener], req: BoltRequest, resp: BoltResponse
) -> Listener | None:
    """The first of `listeners` matching the request."""
    for listener in listeners:
        if listener.matches(req=req, resp=resp):
            return listener
    return None


def acknowledge_unclaimed(app: App) -> None:
    """A last listener for the events the relay handled that none of the app's listeners take.

    Bolt answers 404 to a request no listener matches (and Slack retries it); this one matches
    only then, wherever it stands among the app's listeners, so it never shadows them.
    """

    def acknowledge() -> None:
        """The relay handled this event in its middleware."""

    def unclaimed(request: BoltRequest, response: BoltResponse) -> bool:
        if not request.context.get(_OBSERVED):
            return False
        listeners = getattr(app, "_listeners", None)
        if listeners is None:  # a Bolt without the list: leave such events unanswered
            return False
        return not any(
            listener.matches(req=request, resp=response)
            for listener in listeners
            if listener.ack_function is not acknowledge
        )

    app.event(re.compile(".*"), matchers=[unclaimed])(acknowledge)
