"""The Discord adapter: the same feedback acts as on Slack, over the same core.

discord.py is imported only inside this package (the `discord` extra); `feedback` is plain
Python that handlers call with small dataclasses built from discord.py's objects.
"""
