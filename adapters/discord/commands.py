"""The application (slash) commands: /insights, /forget, /learning and the operators' /rapport, all answered only
to the person who asked.

The /forget buttons carry their whole meaning in their custom id (`rapport:forget:<yes|no>:<user id>`), so a
click is understood by any replica, after any restart, without a view kept in memory.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Any, Literal, cast

import discord
from discord import app_commands

from adapters.discord.translate import insights_embed, parents_of, user_ref
from core.assistant import Assistant
from core.entries import Incoming
from core.events import ForgetRequested, MessageReceived
from core.gate import report_text
from core.memory_view import KIND_TITLES, MemoryView
from core.turns import Turns

__all__ = ["Commands", "forget_button_id", "parse_forget_button"]

log = logging.getLogger(__name__)

_FORGET_ID = re.compile(r"rapport:forget:(yes|no):([0-9]{1,20})")
# /memory's components: what they do, whose they are, and the page they were on (any replica understands a click)
_MEMORY_ID = re.compile(r"rapport:memory:(page|del|learn):([0-9]{1,20}):([0-9]{1,4}):([01]):(pause|resume|-)")
MEMORY_NOT_YOURS = "This is someone else's /memory: run /memory to see yours."
FORGET_UNAVAILABLE = "Sorry, I can't do that right now; please try `/forget` again in a minute."
FORGET_QUESTION = (
    "This deletes everything I know about you: our conversations, what I learned about you and your "
    "feedback, in every server and in DMs. It can't be undone. (How much you used me today stays counted for the "
    "operators' limits: usage isn't a memory.)"
)
NOT_AN_OPERATOR = "Only members who can manage this server (or the operators' listed admins) can use /rapport."


def forget_button_id(choice: str, user_id: int) -> str:
    return f"rapport:forget:{choice}:{user_id}"


def parse_forget_button(custom_id: str) -> tuple[bool, int] | None:
    """(confirmed, user id) for one of the /forget buttons, None for any other component."""
    match = _FORGET_ID.fullmatch(custom_id)
    return None if match is None else (match[1] == "yes", int(match[2]))


class Commands:
    """Registers the commands on a CommandTree and answers them and the /forget buttons."""

    def __init__(self, assistant: Assistant, turns: Turns) -> None:
        self._assistant = assistant
        self._turns = turns

    def install(self, tree: app_commands.CommandTree[discord.Client]) -> None:
        async def insights(interaction: discord.Interaction) -> None:
            await self.insights(interaction)

        async def forget(interaction: discord.Interaction) -> None:
            await self.forget(interaction)

        async def rapport(interaction: discord.Interaction) -> None:
            await self.operators(interaction)

        async def memory(interaction: discord.Interaction) -> None:
            await self.memory(interaction)

        @app_commands.describe(action="pause: stop learning from what you say; resume: start again")
        async def learning(interaction: discord.Interaction, action: Literal["pause", "resume"]) -> None:
            await self.learning(interaction, paused=action == "pause")

        tree.add_command(
            app_commands.Command(name="insights", description="What Rapport has learned about you", callback=insights)
        )
        tree.add_command(
            app_commands.Command(
                name="forget", description="Delete everything Rapport knows about you", callback=forget
            )
        )
        tree.add_command(
            app_commands.Command(
                name="learning", description="Pause or resume Rapport learning about you", callback=learning
            )
        )
        tree.add_command(
            app_commands.Command(
                name="memory",
                description="See and delete what Rapport knows about you (only you see it)",
                callback=memory,
            )
        )
        operators: app_commands.Command[Any, ..., None] = app_commands.Command(
            name="rapport", description="Operators: Rapport's settings and usage in this server", callback=rapport
        )
        # Shown to Manage Server members only (server admins can change that in Integrations); checked again on use.
        operators.default_permissions = discord.Permissions(manage_guild=True)
        operators.guild_only = True
        tree.add_command(operators)

    async def sync(self, tree: app_commands.CommandTree[discord.Client], guild_id: int | None) -> None:
        """Publish the commands: to one server (instant, for development) or globally (may take a while)."""
        try:
            if guild_id is None:
                synced = await tree.sync()
                log.info("synced %d Discord application commands globally", len(synced))
            else:
                guild = discord.Object(id=guild_id)
                tree.copy_global_to(guild=guild)
                synced = await tree.sync(guild=guild)
                log.info("synced %d Discord application commands to server %d", len(synced), guild_id)
        except discord.HTTPException as exc:
            log.error("could not sync Discord application commands (%s); /insights and /forget may be missing", exc)

    async def insights(self, interaction: discord.Interaction) -> None:
        """A read: answered at once, never queued behind the person's turn."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            found = await self._assistant.insights(user_ref(interaction.user.id).key)
        except Exception:  # noqa: BLE001 - the person gets a word instead of a spinning "thinking…"
            log.exception("insights failed for discord:%s", interaction.user.id)
            await interaction.followup.send("Sorry, I couldn't read your insights right now.", ephemeral=True)
            return
        await interaction.followup.send(embed=insights_embed(found), ephemeral=True)

    async def operators(self, interaction: discord.Interaction) -> None:
        """/rapport: the settings in force in this channel and today's usage of the server, for its managers."""
        user = user_ref(interaction.user.id)
        gate = self._assistant.gate
        admins = gate.box.current.admins if gate is not None else []
        manages = interaction.guild is not None and interaction.permissions.manage_guild
        if not manages and user.key not in admins:
            await interaction.response.send_message(NOT_AN_OPERATOR, ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        channel = interaction.channel
        where = MessageReceived(
            user=user,
            text="",
            conversation_id=str(interaction.channel_id or 0),
            private=interaction.guild is None,
            community=str(interaction.guild_id or ""),
            parents=parents_of(channel) if channel is not None else (),
        )
        try:
            report = await asyncio.wait_for(self._assistant.operator_report(where), 5.0)
            text = report_text(report, mention=lambda key: f"<@{key.rsplit(':', 1)[-1]}>")
        except Exception:  # noqa: BLE001 - the operator gets a word instead of a spinning "thinking…"
            log.exception("/rapport failed in %s", interaction.guild_id)
            text = "Sorry, I couldn't read the settings and usage right now."
        await interaction.followup.send(text[:2000], ephemeral=True)

    async def memory(self, interaction: discord.Interaction) -> None:
        """/memory: the person's model, one page, with a menu to delete and buttons to page, see history, pause."""
        user_key = user_ref(interaction.user.id).key
        try:
            view = await self._assistant.memory(user_key)
        except Exception:  # noqa: BLE001 - the person is told
            log.exception("/memory failed for %s", user_key)
            await interaction.response.send_message("Sorry, I couldn't read what I know about you.", ephemeral=True)
            return
        embed, components = memory_message(view, interaction.user.id)
        await interaction.response.send_message(embed=embed, view=components, ephemeral=True)

    async def _memory_click(self, interaction: discord.Interaction, custom_id: str, values: list[str]) -> None:
        match = _MEMORY_ID.fullmatch(custom_id)
        if match is None:
            return
        action, owner, page, history, learn = match[1], int(match[2]), int(match[3]), match[4] == "1", match[5]
        if interaction.user.id != owner:
            await interaction.response.send_message(MEMORY_NOT_YOURS, ephemeral=True)
            return
        user_key = user_ref(owner).key
        note = ""
        # Answered first (Discord wants it within 3 s; a deletion reaches several stores), then the view is edited.
        await interaction.response.defer()
        try:
            if action == "del" and values:
                deleted = await self._assistant.forget_item(user_key, values[0])
                note = "Deleted." if deleted else "That one was already gone."
            elif action == "learn":
                note = await self._assistant.set_learning(user_key, paused=learn == "pause")
            view = await self._assistant.memory(user_key, page=page, history=history)
        except Exception:  # noqa: BLE001 - the person is told
            log.exception("/memory click failed for %s", user_key)
            await interaction.followup.send("Sorry, I couldn't change that just now.", ephemeral=True)
            return
        embed, components = memory_message(view, owner, note=note)
        await interaction.edit_original_response(embed=embed, view=components)

    async def learning(self, interaction: discord.Interaction, *, paused: bool) -> None:
        """Pause or resume: one write, answered in the response itself (ephemeral)."""
        note = await self._assistant.set_learning(user_ref(interaction.user.id).key, paused=paused)
        await interaction.response.send_message(note, ephemeral=True)

    async def forget(self, interaction: discord.Interaction) -> None:
        user_id = interaction.user.id
        view = discord.ui.View(timeout=None)
        view.add_item(
            discord.ui.Button(
                label="Delete everything", style=discord.ButtonStyle.danger, custom_id=forget_button_id("yes", user_id)
            )
        )
        view.add_item(
            discord.ui.Button(
                label="Keep it", style=discord.ButtonStyle.secondary, custom_id=forget_button_id("no", user_id)
            )
        )
        view.stop()  # clicks are routed by custom id (see on_component), so the view need not be kept
        await interaction.response.send_message(FORGET_QUESTION, view=view, ephemeral=True)

    async def on_component(self, interaction: discord.Interaction) -> None:
        """A button click; only the /forget buttons are ours. A confirmed forget is done in the person's turn
        (after what they sent before it), and its confirmation edits this response."""
        data: Mapping[str, Any] = cast("Mapping[str, Any]", interaction.data or {})
        custom_id = data.get("custom_id")
        if isinstance(custom_id, str) and custom_id.startswith("rapport:memory:"):
            await self._memory_click(interaction, custom_id, [str(v) for v in data.get("values") or []])
            return
        parsed = parse_forget_button(custom_id) if isinstance(custom_id, str) else None
        if parsed is None:
            return
        confirmed, owner = parsed
        if interaction.user.id != owner:
            await interaction.response.send_message("These buttons belong to someone else's /forget.", ephemeral=True)
            return
        if not confirmed:
            await interaction.response.edit_message(content="Kept everything.", view=None)
            return
        # Answered first (Discord wants a response within 3 seconds, and the turn's confirmation edits it).
        await interaction.response.edit_message(content="Forgetting everything I know about you…", view=None)
        incoming = Incoming(
            key=f"discord:interaction:{interaction.id}",
            event=ForgetRequested(user=user_ref(owner)),
            route={"application": str(interaction.application_id), "token": interaction.token},
        )
        try:
            await asyncio.wait_for(self._turns.accept(incoming), 2.0)
        except Exception:  # noqa: BLE001 - say so rather than claim it will be done
            log.exception("could not take the forget of discord:%s", owner)
            await interaction.edit_original_response(content=FORGET_UNAVAILABLE)


def memory_button_id(action: str, user_id: int, page: int, history: bool, learn: str = "-") -> str:
    return f"rapport:memory:{action}:{user_id}:{page}:{int(history)}:{learn}"


def memory_message(view: MemoryView, user_id: int, *, note: str = "") -> tuple[discord.Embed, discord.ui.View]:
    """/memory as an embed (this page, grouped) and its components; their ids carry everything a click needs."""
    title = "What stopped being true" if view.history else "What Rapport knows about you"
    lines = [f"_{note}_", ""] if note else []
    kind = ""
    for number, item in enumerate(view.items, view.first):
        if item.kind != kind:
            kind = item.kind
            lines.append(f"**{KIND_TITLES.get(kind, kind)}**")
        lines.append(f"{number}. {item.text}")
    if not view.items:
        lines.append("Nothing yet. Talk to me and I'll start learning.")
    # The description (4,096 characters) holds a whole page: eight items of 240 characters at most.
    embed = discord.Embed(title=title, description="\n".join(lines)[:4096])
    paused = " · learning is paused" if view.paused else ""
    embed.set_footer(text=f"Page {view.page + 1} of {view.pages} · only you can see this{paused}")
    components = discord.ui.View(timeout=None)
    if view.items:
        menu: discord.ui.Select[discord.ui.View] = discord.ui.Select(
            custom_id=memory_button_id("del", user_id, view.page, view.history),
            placeholder="Delete one of these…",
            options=[
                discord.SelectOption(label=f"{n}. {item.text}"[:100], value=item.id)
                for n, item in enumerate(view.items, view.first)
            ],
        )
        components.add_item(menu)

    def button(label: str, custom_id: str, *, disabled: bool = False) -> None:
        style = discord.ButtonStyle.secondary
        components.add_item(discord.ui.Button(label=label, custom_id=custom_id, style=style, disabled=disabled))

    button("Previous", memory_button_id("page", user_id, max(view.page - 1, 0), view.history), disabled=view.page == 0)
    button("Next", memory_button_id("page", user_id, view.page + 1, view.history), disabled=view.page + 1 >= view.pages)
    button("Current" if view.history else "Show history", memory_button_id("page", user_id, 0, not view.history))
    learn = "resume" if view.paused else "pause"
    button(f"{learn.title()} learning", memory_button_id("learn", user_id, view.page, view.history, learn))
    components.stop()  # clicks are routed by custom id (on_component), so the view need not be kept
    return embed, components
