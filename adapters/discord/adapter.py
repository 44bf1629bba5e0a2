"""The Discord adapter: discord.py's client, the events Rapport answers, and what it posts back.

Decisions and translation live in `translate.py`; this module only does the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from adapters.discord.commands import Commands
from adapters.discord.translate import (
    TEXT_ONLY_NOTE,
    Verdict,
    decide,
    facts_of,
    message_ref,
    reaction_event,
    reply_chunks,
    to_event,
    user_ref,
)
from core.assistant import Assistant
from core.background import KeyedLocks
from core.events import MessageRef, ReactionAdded
from core.ports import EventLedger

__all__ = ["DiscordAdapter", "DiscordConfig"]

log = logging.getLogger(__name__)

APOLOGY = "Sorry, something went wrong on my side while answering. Please try again in a moment."
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


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscordConfig:
    token: str
    guild_id: int | None = None  # sync app commands to this server (instant) else globally
    allowed_channel_ids: frozenset[int] = frozenset()  # channels where every message is answered
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None  # this replica's shards; an AutoShardedClient when set
    api_base: str | None = None  # overrides discord.http.Route.BASE (tests); the gateway comes from its /gateway/bot


class DiscordAdapter:
    """Rapport as a member of Discord conversations (satisfies `adapters.base.Adapter`)."""

    name = "discord"
    chain_depth = 5  # referenced messages followed back from a reply
    stop_grace = 10.0  # seconds stop() lets answers under way reach Discord
    retry_delays = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0)  # reconnecting after a failure discord.py gave up on

    def __init__(self, assistant: Assistant, ledger: EventLedger, config: DiscordConfig) -> None:
        if config.shard_ids is not None and config.shard_count is None:
            raise ValueError("shard_ids needs shard_count")
        self._assistant = assistant
        self._ledger = ledger
        self._config = config
        self._commands = Commands(assistant, ledger)
        self._locks = KeyedLocks()
        self._client: discord.Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._accepting = False
        self._inflight: set[asyncio.Task[Any]] = set()
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
        """Shutdown, first step: take no new events; answers under way go on (the client stays open for them)."""
        self._accepting = False
        self._stopping.set()

    async def drain(self, timeout: float) -> bool:
        """Shutdown, second step: wait up to `timeout` seconds for answers under way to be posted."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=timeout)
        return not self._inflight

    async def stop(self) -> None:
        """Take no new events, let answers under way be posted (up to `stop_grace`), then close."""
        await self.stop_taking()
        await self.drain(self.stop_grace)
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
        """Decide at once, then queue behind the same person's earlier messages (taken before any await)."""
        me = client.user
        if not self._accepting or me is None:
            return
        referenced = self._referenced(message)
        facts = facts_of(message, bot_id=me.id, bot_name=me.display_name, referenced=referenced)
        verdict = decide(facts, bot_id=me.id, allowed_channel_ids=self._config.allowed_channel_ids)
        if verdict is Verdict.IGNORE:
            return
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            async with self._locks(user_ref(message.author.id).key):
                await self._take(client, message, referenced, verdict)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _take(
        self, client: discord.Client, message: discord.Message, referenced: discord.Message | None, verdict: Verdict
    ) -> None:
        if not await self._first_sighting(message):
            log.info("Discord message %s was already taken; not answering it again", message.id)
            return
        me = client.user
        assert me is not None
        sent: list[MessageRef] = []
        try:
            if verdict is Verdict.TEXT_ONLY:
                sent = await self._post(message, [TEXT_ONLY_NOTE])
                return
            chain = await self._reply_chain(client, message, referenced)
            event = to_event(message, bot_id=me.id, bot_name=me.display_name, chain=chain)
            async with self._typing(message.channel):
                reply = await self._assistant.handle(event)
            sent = await self._post(message, reply_chunks(reply.text))
            await self._assistant.delivered(reply, sent)
        except Exception:  # noqa: BLE001 - one message's failure must never stop the client
            log.exception("answering Discord message %s failed", message.id)
            if not sent:
                with contextlib.suppress(Exception):
                    await self._post(message, [APOLOGY])

    async def _first_sighting(self, message: discord.Message) -> bool:
        """Claim the message, so that a replayed or redelivered MESSAGE_CREATE is never answered twice."""
        try:
            return await self._ledger.first_sighting(f"discord:msg:{message.id}")
        except Exception:  # noqa: BLE001 - without the ledger, answering beats silence
            log.warning("event ledger unavailable; answering Discord message %s anyway", message.id, exc_info=True)
            return True

    async def _post(self, message: discord.Message, chunks: list[str]) -> list[MessageRef]:
        """The first chunk as a reply that does not ping the person again, the rest after it."""
        refs: list[MessageRef] = []
        for index, chunk in enumerate(chunks):
            try:
                if index == 0:
                    posted = await message.channel.send(
                        chunk, reference=message.to_reference(fail_if_not_exists=False), mention_author=False
                    )
                else:
                    posted = await message.channel.send(chunk)
            except discord.HTTPException as exc:
                log.error(
                    "could not post to Discord channel %s (%s); %d of %d parts sent",
                    message.channel.id,
                    exc,
                    index,
                    len(chunks),
                )
                break
            refs.append(message_ref(posted.channel.id, posted.id))
        return refs

    @contextlib.asynccontextmanager
    async def _typing(self, channel: discord.abc.Messageable) -> AsyncIterator[None]:
        """Show "Rapport is typing…" while the answer is prepared; a refused typing call costs nothing."""

        async def keep_typing() -> None:
            while True:
                try:
                    await channel.typing()
                except Exception as exc:  # noqa: BLE001 - cosmetic
                    log.debug("typing indicator failed: %s", exc)
                await asyncio.sleep(8)

        task = asyncio.create_task(keep_typing(), name="discord-typing")
        try:
            yield
        finally:
            task.cancel()

    # --- the reply chain -------------------------------------------------------------------------

    @staticmethod
    def _referenced(message: discord.Message) -> discord.Message | None:
        """The message this one replies to, if the payload or the cache has it (no I/O: decided before queueing)."""
        ref = message.reference
        if ref is None or ref.type is not discord.MessageReferenceType.reply:
            return None
        if isinstance(ref.resolved, discord.Message):
            return ref.resolved
        return ref.cached_message

    async def _reply_chain(
        self, client: discord.Client, message: discord.Message, referenced: discord.Message | None
    ) -> list[discord.Message]:
        """The referenced messages, oldest first, followed back a few levels through the cache or REST."""
        chain: list[discord.Message] = []
        current = referenced or await self._fetch(client, message.reference)
        while current is not None and len(chain) < self.chain_depth:
            chain.append(current)
            current = await self._fetch(client, current.reference)
        chain.reverse()
        return chain

    @staticmethod
    async def _fetch(client: discord.Client, ref: discord.MessageReference | None) -> discord.Message | None:
        if ref is None or ref.message_id is None or ref.type is not discord.MessageReferenceType.reply:
            return None
        if isinstance(ref.resolved, discord.Message):
            return ref.resolved
        if ref.cached_message is not None:
            return ref.cached_message
        channel = client.get_partial_messageable(ref.channel_id, guild_id=ref.guild_id)
        try:
            return await channel.fetch_message(ref.message_id)
        except discord.HTTPException as exc:
            log.debug("referenced message %s not readable: %s", ref.message_id, exc)
            return None

    # --- reactions -------------------------------------------------------------------------------

    async def _on_reaction(self, client: discord.Client, raw: discord.RawReactionActionEvent) -> None:
        """The asker's reaction on Rapport's reply becomes feedback; taking it off undoes it."""
        me = client.user
        if not self._accepting or me is None:
            return
        event = reaction_event(raw, bot_id=me.id)
        if event is None:
            return
        # Behind the person's own messages: an answer still being posted to them is linked before this is read.
        async with self._locks(event.actor.key):
            try:
                if isinstance(event, ReactionAdded):
                    counted = await self._assistant.reaction_added(event)
                else:
                    counted = await self._assistant.reaction_removed(event)
                log.debug("reaction %s by %s on %s counted: %s", event.emoji, event.actor.key, raw.message_id, counted)
            except Exception:  # noqa: BLE001 - feedback is best effort
                log.exception("recording a Discord reaction failed")
