"""Brixo feedback relay: 👍/👎 on an AI assistant's chat replies, delivered to Brixo.

Library mode (see examples/): `from bot import FeedbackRelay`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "FeedbackRelay",
    "RelaySetupError",
    "Settings",
    "SettingsError",
    "__version__",
    "manifest_fragment",
    "required_scopes",
]

if TYPE_CHECKING:
    from bot.core.settings import Settings, SettingsError
    from bot.library import FeedbackRelay, RelaySetupError, manifest_fragment, required_scopes

# Imported on first use, so `python -m bot manifest` and the Discord adapter don't load Bolt.
_LAZY = {
    "FeedbackRelay": "bot.library",
    "RelaySetupError": "bot.library",
    "manifest_fragment": "bot.library",
    "required_scopes": "bot.library",
    "Settings": "bot.core.settings",
    "SettingsError": "bot.core.settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bot' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
