"""`python -m bot discord`: the Discord bot and delivery to Brixo, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

from bot.core.relay import Relay
from bot.core.settings import Settings, SettingsError

if TYPE_CHECKING:
    from bot.discord.client import RelayClient

log = logging.getLogger("bot.discord")


def unmappable_watch(settings: Settings) -> str | None:
    """Why watched bots' replies could never be rated on Discord (it has no message metadata:
    only the templates map them), or None. Slack's IDs (B…, U…) in the list don't count."""
    discord_ids = [i for i in settings.assistant_bot_ids if i.isdigit()]
    if discord_ids and not (settings.message_id_template or settings.conversation_id_template):
        return (
            "ASSISTANT_BOT_IDS: on Discord, watched bots' replies are mapped only by "
            "MESSAGE_ID_TEMPLATE or CONVERSATION_ID_TEMPLATE; set one of them"
        )
    return None


def run_discord(settings: Settings) -> int:
    """Connect to Discord's gateway and deliver; exit 1 when Discord refuses to connect."""
    settings.require("discord_token", "brixo_api_key")
    assert settings.discord_token
    unmappable = unmappable_watch(settings)
    if unmappable:
        raise SettingsError(unmappable)
    try:
        import aiohttp
        import discord

        from bot.discord.checks import INTENT_HELP
        from bot.discord.client import RelayClient
    except ImportError:
        raise SettingsError(
            "the Discord adapter needs the 'discord' extra: "
            "make run MODE=discord, or pip install '.[discord]' in the relay's folder"
        ) from None
    relay = Relay(settings)
    relay.start()
    try:
        asyncio.run(_run(RelayClient(relay), settings.discord_token))
    except discord.LoginFailure as error:
        log.error("Discord refused DISCORD_TOKEN: %s", error)
        return 1
    except discord.PrivilegedIntentsRequired:
        log.error(INTENT_HELP)
        return 1
    except (aiohttp.ClientError, OSError, TimeoutError, discord.HTTPException) as error:
        # At login (discord.py retries the gateway itself once logged in): DNS, a firewall, a
        # Discord down. One line, as for a Slack the relay can't reach; no traceback.
        log.error("Discord unreachable, can't log in: %s: %s", type(error).__name__, error)
        return 1
    finally:
        relay.stop(25.0)
    return 0


async def _run(client: RelayClient, token: str) -> None:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        log.info("signal: closing the gateway, finishing deliveries")
        loop.create_task(client.close())

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    async with client:
        await client.start(token)
