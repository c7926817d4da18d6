"""The relay's Discord components: 👍/👎 and "Add a comment" buttons, the two modals.

Every custom_id carries what its handler needs, so buttons and modals keep working after a
restart; the handlers are the client's (`Handlers`).
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

import discord

from bot.core.acts import MAX_COMMENT_CHARS

VOTE_ID = r"brixo:vote:(?P<value>up|down)"
# An act ID is a 64-bit integer in the database: at most 18 digits here, so none overflows it.
ADD_COMMENT_ID = r"brixo:add-comment:(?P<workspace>[^:]+):(?P<act>\d{1,18})"
COMMENT_ID = re.compile(r"brixo:comment:(?P<workspace>[^:]+):(?P<act>\d{1,18})")
COMMENT_INPUT = "comment"
RATE_ID = re.compile(r"brixo:rate:(?P<message>\d+)")
RATING_INPUT = "rating"


@runtime_checkable
class Handlers(Protocol):
    """What the buttons call on the client."""

    async def vote_clicked(self, interaction: discord.Interaction[Any], value: str) -> None: ...

    async def add_comment_pressed(
        self, interaction: discord.Interaction[Any], workspace: str, act_id: int
    ) -> None: ...


class VoteButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=VOTE_ID):
    """👍/👎 under a reply; its custom_id is all a click needs, so it works after a restart."""

    def __init__(self, value: str) -> None:
        super().__init__(
            discord.ui.Button(
                emoji="👍" if value == "up" else "👎",
                style=discord.ButtonStyle.secondary,
                custom_id=f"brixo:vote:{value}",
            )
        )
        self.value = value

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str]
    ) -> VoteButton:
        return cls(match["value"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        if isinstance(client, Handlers):
            await client.vote_clicked(interaction, self.value)


class AddCommentButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=ADD_COMMENT_ID):
    """ "Add a comment" in the note sent after a reaction: opens the comment modal."""

    def __init__(self, workspace: str, act_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Add a comment",
                style=discord.ButtonStyle.primary,
                custom_id=f"brixo:add-comment:{workspace}:{act_id}",
            )
        )
        self.workspace, self.act_id = workspace, act_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str]
    ) -> AddCommentButton:
        return cls(match["workspace"], int(match["act"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        if isinstance(client, Handlers):
            await client.add_comment_pressed(interaction, self.workspace, self.act_id)


class CommentModal(discord.ui.Modal):
    """The optional comment; its submission is handled in `RelayClient.on_interaction`."""

    comment: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="Anything to add? (optional)",
        style=discord.TextStyle.paragraph,
        required=False,
        max_length=MAX_COMMENT_CHARS,
        custom_id=COMMENT_INPUT,
    )

    def __init__(self, workspace: str, act_id: int, timeout: float) -> None:
        super().__init__(
            title="Your feedback",
            custom_id=f"brixo:comment:{workspace}:{act_id}",
            timeout=timeout,
        )


class RatingModal(discord.ui.Modal):
    """ "Rate this conversation": 👍/👎 and an optional comment, handled in `on_interaction`."""

    def __init__(self, message_id: int, timeout: float) -> None:
        super().__init__(
            title="Rate this conversation", custom_id=f"brixo:rate:{message_id}", timeout=timeout
        )
        rating: discord.ui.Select[Any] = discord.ui.Select(
            custom_id=RATING_INPUT,
            options=[
                discord.SelectOption(label="Good", value="up", emoji="👍"),
                discord.SelectOption(label="Not good", value="down", emoji="👎"),
            ],
            min_values=1,
            max_values=1,
            required=True,
        )
        comment: discord.ui.TextInput[Any] = discord.ui.TextInput(
            style=discord.TextStyle.paragraph,
            required=False,
            max_length=MAX_COMMENT_CHARS,
            custom_id=COMMENT_INPUT,
        )
        self.add_item(discord.ui.Label(text="How was this conversation?", component=rating))
        self.add_item(discord.ui.Label(text="Anything to add? (optional)", component=comment))


def reply_view() -> discord.ui.View:
    """👍/👎 buttons for a reply."""
    view = discord.ui.View(timeout=None)
    view.add_item(VoteButton("up"))
    view.add_item(VoteButton("down"))
    return view


def add_comment_view(workspace: str, act_id: int) -> discord.ui.View:
    """The "Add a comment" button for a vote cast with a reaction."""
    view = discord.ui.View(timeout=None)
    view.add_item(AddCommentButton(workspace, act_id))
    return view


def submitted_value(components: Any, custom_id: str) -> str | None:
    """A text input's value, or a select's first choice, from a modal submission's components,
    however nested."""
    for component in components if isinstance(components, list) else []:
        if not isinstance(component, dict):
            continue
        if component.get("custom_id") == custom_id:
            value, values = component.get("value"), component.get("values")
            if isinstance(value, str):
                return value
            if isinstance(values, list) and values and isinstance(values[0], str):
                return values[0]
        inner = component.get("components") or [component.get("component")]
        found = submitted_value(inner, custom_id)
        if found is not None:
            return found
    return None
