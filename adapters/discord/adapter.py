"""The Discord adapter: discord.py's client and the events Rapport takes. Each is written to the inbox as soon
as discord.py hands it over; the answer follows in the person's turn, through the delivery port
(`delivery.py`), which any process can rebuild from the entry and post through the REST API.

Decisions and translation live in `translate.py`; this module only does the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from adapters.discord.commands import Commands
from adapters.discord.delivery import DiscordDelivery
from adapters.discord.translate import (
    PLATFORM,
    Verdict,
    decide,
    facts_of,
    in_new_thread,
    message_ref,
    message_text,
    opens_thread,
    reaction_event,
    to_event,
    user_ref,
)
from adapters.download import Downloader
from core.assistant import Assistant
from core.entries import Entry, Incoming
from core.events import MessageChanged, UserRef
from core.turns import Turns

__all__ = ["DISCORD_FILE_ORIGINS", "DiscordAdapter", "DiscordConfig"]

log = logging.getLogger(__name__)

ACCEPT_BUDGET = 5.0  # seconds to write an event down; past that it is logged as lost
INTENT_PROBLEM = (
    "Discord refused the Message Content intent: enable the Message Content intent for this bot in the "
    "Discord Developer Portal → Bot → Privileged Gateway Intents, then restart Rapport"
)
_NETWORK_ERRORS = (OSError, asyncio.TimeoutError, aiohttp.ClientError, discord.GatewayNotFound, discord.HTTPException)
_CLOSE_PROBLEMS = {
    4004: "Discord rejected DISCORD_TOKEN (gateway close 4004): check the bot token",
    4010: "Discord refused the shard settings (gateway close 4010): check the shard count and ids",
    4011: "Discord requires sharding for this bot (gateway close 4011): set a shard count",
    4013: "Discord refused the gateway intents (gateway close 4013)",
    4014: INTENT_PROBLEM,
}


DISCORD_FILE_ORIGINS = frozenset({"https://cdn.discordapp.com", "https://media.discordapp.net"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscordConfig:
    token: str
    guild_id: int | None = None  # sync app commands to this server (instant) else globally
    allowed_channel_ids: frozenset[int] = frozenset()  # channels where every message is answered
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None  # this replica's shards; an AutoShardedClient when set
    api_base: str | None = None  # overrides discord.http.Route.BASE (tests); the gateway comes from its /gateway/bot
    file_origins: frozenset[str] = DISCORD_FILE_ORIGINS  # where attachments may be downloaded from


class DiscordAdapter:
    """Rapport as a member of Discord conversations (satisfies `adapters.base.Adapter`)."""

    name = "discord"
    retry_delays = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0)  # reconnecting after a failure discord.py gave up on

    def __init__(self, assistant: Assistant, turns: Turns, config: DiscordConfig) -> None:
        if config.shard_ids is not None and config.shard_count is None:
            raise ValueError("shard_ids needs shard_count")
        self._assistant = assistant
        self._turns = turns
        self._config = config
        self._commands = Commands(assistant, turns)
        self._client: discord.Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._accepting = False
        sharded = config.shard_count is not None
        self._expected: frozenset[int | None] = (
            frozenset(config.shard_ids if config.shard_ids is not None else range(config.shard_count or 1))
            if sharded
            else frozenset({None})
        )
        self._links: set[int | None] = set()
        self._fatal: str | None = None
        self._transient: str | None = None
        self._restore: list[Callable[[], None]] = []
        self._stopping = asyncio.Event()
        self._downloads = Downloader(config.file_origins)
        assistant.deliver_with(PLATFORM, self._delivery)

    def _delivery(self, entry: Entry) -> DiscordDelivery:
        return DiscordDelivery(entry, lambda: self._client, self._downloads)

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._accepting and self._fatal is None and self._expected <= self._links

    @property
    def problem(self) -> str | None:
        if self._fatal is not None:
            return self._fatal
        if self.connected:
            return None
        if not self._accepting:
            return "the Discord adapter is not running"
        return self._transient or "not connected to the Discord gateway yet (connecting or reconnecting)"

    async def start(self) -> None:
        """Start the client in the background and return at once; `connected` turns true on READY."""
        if self._runner is not None:
            return
        self._accepting, self._fatal, self._transient = True, None, None
        self._stopping.clear()
        if self._config.api_base is not None:
            saved = Route.BASE
            Route.BASE = self._config.api_base.rstrip("/")
            self._restore.append(lambda: setattr(Route, "BASE", saved))
        self._runner = asyncio.create_task(self._run(), name="discord-client")

    async def stop_taking(self) -> None:
        """Shutdown, first step: take no new events; turns under way go on (the client stays open for them)."""
        self._accepting = False
        self._stopping.set()

    async def drain(self, timeout: float) -> bool:
        """Shutdown, second step: nothing of the adapter's own is under way (the turns are drained apart)."""
        return True

    async def stop(self) -> None:
        """Take no new events and close the client."""
        await self.stop_taking()
        if self._client is not None and not self._client.is_closed():
            await self._client.close()
        if self._runner is not None:
            done, _ = await asyncio.wait({self._runner}, timeout=5)
            if not done:
                self._runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._runner
            self._runner = None
        self._links.clear()
        await self._downloads.close()
        while self._restore:
            self._restore.pop()()

    async def _run(self) -> None:
        """Keep a client running; discord.py reconnects by itself, this covers what it gives up on."""
        for attempt in itertools.count():
            if not self._accepting:
                return
            client = self._client = self._build_client()
            try:
                await client.start(self._config.token)
                return
            except discord.PrivilegedIntentsRequired:
                return self._give_up(INTENT_PROBLEM)
            except discord.LoginFailure:
                return self._give_up("Discord rejected DISCORD_TOKEN (401): check the bot token")
            except discord.ConnectionClosed as exc:
                return self._give_up(
                    _CLOSE_PROBLEMS.get(exc.code, f"Discord closed the gateway with code {exc.code} ({exc.reason})")
                )
            except Exception as exc:  # noqa: BLE001 - network trouble at start-up: try again later
                if not self._accepting:
                    return
                self._transient = f"cannot reach Discord ({type(exc).__name__}: {exc}); retrying"
                if not isinstance(exc, _NETWORK_ERRORS):
                    log.exception("the Discord client failed unexpectedly")
            finally:
                if not client.is_closed():
                    await client.close()
            delay = self.retry_delays[min(attempt, len(self.retry_delays) - 1)]
            log.warning("%s in %.0fs", self._transient, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def _give_up(self, problem: str) -> None:
        self._fatal = problem
        self._links.clear()
        log.error("%s", problem)

    def _build_client(self) -> discord.Client:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = intents.dm_messages = True
        intents.guild_reactions = intents.dm_reactions = True
        intents.message_content = True
        options: dict[str, Any] = {"intents": intents, "allowed_mentions": discord.AllowedMentions.none()}
        client: discord.Client
        if self._config.shard_count is not None:
            options["shard_count"] = self._config.shard_count
            if self._config.shard_ids is not None:
                options["shard_ids"] = list(self._config.shard_ids)
            client = discord.AutoShardedClient(**options)
        else:
            client = discord.Client(**options)
        tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
        self._commands.install(tree)
        for name, hook in self._hooks(client, tree).items():
            setattr(client, name, hook)  # discord.py looks its event handlers up on the client by name
        return client

    def _hooks(
        self, client: discord.Client, tree: app_commands.CommandTree[discord.Client]
    ) -> dict[str, Callable[..., Awaitable[None]]]:
        async def setup_hook() -> None:
            await self._setup(client, tree)

        async def on_message(message: discord.Message) -> None:
            await self._on_message(client, message)

        async def on_raw_reaction(raw: discord.RawReactionActionEvent) -> None:
            await self._on_reaction(client, raw)

        async def on_raw_message_edit(raw: discord.RawMessageUpdateEvent) -> None:
            await self._on_change(client, raw.channel_id, raw.message_id, raw.message)

        async def on_raw_message_delete(raw: discord.RawMessageDeleteEvent) -> None:
            await self._on_change(client, raw.channel_id, raw.message_id, None)

        async def on_interaction(interaction: discord.Interaction) -> None:
            if interaction.type is discord.InteractionType.component:
                try:
                    await self._commands.on_component(interaction)
                except Exception:  # noqa: BLE001 - one bad click must not reach discord.py's loop
                    log.exception("Discord button click failed")

        def link(up: bool) -> Callable[..., Awaitable[None]]:
            """Gateway sessions up and down: the shard id for a sharded client, None for a plain one."""

            async def hook(*args: Any) -> None:
                shard: int | None = args[0] if args else None
                if up:
                    self._links.add(shard)
                    self._transient = None
                else:
                    self._links.discard(shard)

            return hook

        hooks: dict[str, Callable[..., Awaitable[None]]] = {
            "setup_hook": setup_hook,
            "on_message": on_message,
            "on_raw_reaction_add": on_raw_reaction,
            "on_raw_reaction_remove": on_raw_reaction,
            "on_raw_message_edit": on_raw_message_edit,
            "on_raw_message_delete": on_raw_message_delete,
            "on_interaction": on_interaction,
        }
        if isinstance(client, discord.AutoShardedClient):
            hooks |= {
                "on_shard_connect": link(True),
                "on_shard_resumed": link(True),
                "on_shard_disconnect": link(False),
            }
        else:
            hooks |= {"on_connect": link(True), "on_resumed": link(True), "on_disconnect": link(False)}
        return hooks

    async def _setup(self, client: discord.Client, tree: app_commands.CommandTree[discord.Client]) -> None:
        """After login, before the gateway: where to connect (when the API is overridden) and the commands."""
        if self._config.api_base is not None:
            _, url, _ = await client.http.get_bot_gateway()
            saved = DiscordWebSocket.DEFAULT_GATEWAY
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
            self._restore.append(lambda: setattr(DiscordWebSocket, "DEFAULT_GATEWAY", saved))
        await self._commands.sync(tree, self._config.guild_id)

    # --- messages --------------------------------------------------------------------------------

    async def _on_message(self, client: discord.Client, message: discord.Message) -> None:
        """Decide at once, then write the message down; its person's turn answers it."""
        me = client.user
        if not self._accepting or me is None:
            return
        referenced = self._referenced(message)
        facts = facts_of(message, bot_id=me.id, bot_name=me.display_name, referenced=referenced)
        verdict = decide(facts, bot_id=me.id, allowed_channel_ids=self._config.allowed_channel_ids)
        if verdict is Verdict.IGNORE:
            return
        chain = [referenced] if referenced is not None else []
        deeper = referenced.reference if referenced is not None else None
        event = to_event(message, bot_id=me.id, bot_name=me.display_name, chain=chain)
        if verdict is Verdict.TEXT_ONLY:
            event = replace(event, text="")  # nothing to read: the turn answers with a note, without Claude
        route: dict[str, object] = {
            "channel": str(message.channel.id),
            "message": str(message.id),
            "guild": str(message.guild.id) if message.guild is not None else None,
            "deeper": str(deeper.message_id) if _is_reply(deeper) and deeper is not None else None,
        }
        gate = self._assistant.gate
        if opens_thread(facts, verdict, threads=gate is not None and bool(gate.place(event).threads)):
            # The delivery opens it (any process can, from the entry); its name comes from the event, so that
            # nothing a person wrote is in the route, which a refusal and /forget leave as it was.
            event = in_new_thread(event)
            route["thread"] = {"open": True}
        await self._accept(Incoming(key=f"discord:message:{message.channel.id}:{message.id}", event=event, route=route))

    async def _accept(self, incoming: Incoming) -> None:
        try:
            accepted = await asyncio.wait_for(self._turns.accept(incoming), ACCEPT_BUDGET)
        except Exception:  # noqa: BLE001 - Discord cannot be asked to send it again: say so, loudly
            log.exception("could not write Discord event %s down; it is lost", incoming.key)
            return
        if not accepted.fresh and not accepted.refused:
            log.info("Discord event %s was already taken; not again", incoming.key)

    # --- the reply chain -------------------------------------------------------------------------

    @staticmethod
    def _referenced(message: discord.Message) -> discord.Message | None:
        """The message this one replies to, if the payload or the cache has it (no I/O: decided at once)."""
        ref = message.reference
        if not _is_reply(ref) or ref is None:
            return None
        if isinstance(ref.resolved, discord.Message):
            return ref.resolved
        return ref.cached_message

    # --- reactions -------------------------------------------------------------------------------

    async def _on_reaction(self, client: discord.Client, raw: discord.RawReactionActionEvent) -> None:
        """A reaction on one of Rapport's messages: its person's turn applies it, after the reply it is about."""
        me = client.user
        if not self._accepting or me is None:
            return
        event = reaction_event(raw, bot_id=me.id)
        if event is None:
            return
        change = "add" if raw.event_type == "REACTION_ADD" else "remove"
        key = f"discord:reaction:{raw.channel_id}:{raw.message_id}:{raw.user_id}:{event.emoji}:{change}"
        await self._accept(Incoming(key=key, event=event))

    # --- edits and deletions -----------------------------------------------------------------------

    async def _on_change(
        self, client: discord.Client, channel_id: int, message_id: int, edited: discord.Message | None
    ) -> None:
        """A message Rapport kept was edited (`edited`) or deleted: its author's turn changes what was kept. A
        deletion does not say who wrote it (nor, uncached, what it said): what was kept does."""
        me = client.user
        if not self._accepting or me is None:
            return
        if edited is not None and edited.edited_at is None:
            return  # not an edit of the words: an embed appeared under a link, or it was pinned
        original = f"discord:message:{channel_id}:{message_id}"
        author = await self._assistant.author_of(original)
        if author is None or (edited is not None and user_ref(edited.author.id).key != author):
            return
        text = None if edited is None else message_text(edited, bot_id=me.id, bot_name=me.display_name)
        event = MessageChanged(
            user=UserRef(platform="discord", user_id=author.split(":", 1)[1]),
            message=message_ref(channel_id, message_id),
            original=original,
            text=text,
        )
        change = "edit" if edited is not None else "delete"
        stamp = edited.edited_at.timestamp() if edited is not None and edited.edited_at else 0
        await self._accept(Incoming(key=f"discord:{change}:{channel_id}:{message_id}:{stamp}", event=event))


def _is_reply(ref: discord.MessageReference | None) -> bool:
    return ref is not None and ref.message_id is not None and ref.type is discord.MessageReferenceType.reply
