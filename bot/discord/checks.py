"""The Discord line of `check`: the bot token logs in and may read message content."""

from __future__ import annotations

import asyncio

import aiohttp
import discord

from bot.core.logs import quiet
from bot.core.settings import Settings

discord.VoiceClient.warn_nacl = False  # no voice here: no "PyNaCl is not installed" warning
discord.VoiceClient.warn_dave = False  # nor, from discord.py 2.7, "davey is not installed"

INTENT_HELP = "turn on the Message Content intent on the Bot page of the Discord application"


def check_discord_token(settings: Settings) -> tuple[bool, str]:
    """Log in with DISCORD_TOKEN (no gateway) and read the application's intent flags."""
    if not settings.discord_token:
        return False, "DISCORD_TOKEN is not set"
    # discord.py's own lines while it logs in (the Guilds intent it needn't have, the login
    # itself): the one line says it all. Its state logger has a level of its own (logs.py).
    with quiet("discord", "discord.client", "discord.state", "discord.http"):
        return asyncio.run(_check(settings.discord_token))


async def _check(token: str) -> tuple[bool, str]:
    client = discord.Client(intents=discord.Intents.none())
    try:
        await client.login(token)
        application = await client.application_info()
    except discord.LoginFailure:
        return False, "Discord refused DISCORD_TOKEN"
    except (discord.HTTPException, aiohttp.ClientError, OSError) as error:
        return False, f"Discord unreachable or refused the check ({type(error).__name__})"
    finally:
        await client.close()
    assert client.user is not None
    where = f"bot {client.user.name} {client.user.id}, application {application.id}"
    flags = application.flags
    if not (flags.gateway_message_content or flags.gateway_message_content_limited):
        return False, f"token works ({where}) but the relay can't read messages: {INTENT_HELP}"
    return True, f"ok ({where})"
