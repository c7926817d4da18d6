"""`python -m bot discord`: the Discord bot and delivery to Brixo, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from bot.core.logs import Redactor
from bot.core.relay import Relay
from bot.core.settings import Settings, SettingsError

log = logging.getLogger("bot.discord")

TOKEN_PURPOSE = "the bot token from the Bot page of the Discord application"


def discord_token(settings: Settings, dotenv: str | None = ".env") -> str:
    """DISCORD_TOKEN from the settings, the environment or `.env`; SettingsError when unset."""
    token = getattr(settings, "discord_token", None) or os.environ.get("DISCORD_TOKEN")
    if not token and dotenv and os.path.exists(dotenv):
        from dotenv import dotenv_values

        token = dotenv_values(dotenv).get("DISCORD_TOKEN")
    if not token or not token.strip():
        raise SettingsError(f"DISCORD_TOKEN: required here, {TOKEN_PURPOSE}")
    return token.strip()


def run_discord(settings: Settings) -> int:
    """Connect to Discord's gateway and deliver; exit 1 when Discord refuses the token."""
    try:
        import discord
    except ImportError:
        raise SettingsError(
            "DISCORD_TOKEN: the Discord adapter needs discord.py: "
            "pip install 'brixo-feedback-relay[discord]'"
        ) from None
    token = discord_token(settings)
    settings.require("brixo_api_key")
    for handler in logging.getLogger().handlers:
        handler.addFilter(Redactor([token]))
    from bot.discord.client import RelayClient

    relay = Relay(settings)
    relay.start()
    try:
        asyncio.run(_run(RelayClient(relay), token))
    except discord.LoginFailure as error:
        log.error("Discord refused DISCORD_TOKEN: %s", error)
        return 1
    except discord.PrivilegedIntentsRequired:
        log.error("enable the Message Content intent on the Bot page of the Discord application")
        return 1
    finally:
        relay.stop(25.0)
    return 0


async def _run(client: object, token: str) -> None:
    from bot.discord.client import RelayClient

    assert isinstance(client, RelayClient)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        log.info("signal: closing the gateway, finishing deliveries")
        loop.create_task(client.close())

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    async with client:
        await client.start(token)
