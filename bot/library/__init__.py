"""Library mode: Brixo feedback inside a team's own Bolt for Python app.

    relay = FeedbackRelay.from_env()      # BRIXO_API_KEY, DATABASE_URL, … as for the standalone app
    relay.attach(app)                     # buttons, reactions, comment modals, shortcut, metadata
    relay.say(say, text, message_id=…)    # post a reply with 👍/👎 and record its mapping
    with relay: app.start()               # delivery runs beside the app

The relay's listeners are the standalone app's own (bot/slack/listeners), run from one
global middleware instead of being registered as listeners of the app. Bolt runs only the
first listener that matches a request, so registered catch-all `message` or `reaction_added`
listeners would shadow the app's own; the middleware does the relay's work, stores the act
before Slack is acknowledged (whatever the app's `process_before_response`), and passes every
event on to the app's listeners. Requests that belong to the relay alone (its buttons, modals
and shortcut) are answered by the middleware.
"""

from bot.library.relay import FeedbackRelay
from bot.library.setup import RelaySetupError, manifest_fragment, required_scopes

__all__ = ["FeedbackRelay", "RelaySetupError", "manifest_fragment", "required_scopes"]
