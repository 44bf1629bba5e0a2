"""The Discord delivery port: how one inbox entry's reply reaches Discord, rebuilt from the entry alone.

Everything goes through the REST API (a partial channel by id), so any process that is logged in can deliver,
whichever shard the message came through. Each part of a reply is sent with a nonce derived from the entry (and
discord.py asks Discord to enforce it): a turn resumed after a crash between sending and recording gets the
message already sent back instead of a second one.

An entry whose route says to open a thread (`route["thread"]`, where the place's `threads` is on) has its answer
in a thread started from the person's message: the delivery opens it first, and a thread that is already there (an
earlier attempt opened it) is the one to answer in. A thread started from a message has that message's id, so the
thread's channel is known before it exists, and the event was translated to it when the message arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

import discord
from discord.http import Route

from adapters.discord.translate import chain_message, message_ref, reply_chunks, thread_name
from adapters.download import Downloader
from adapters.streaming import Paced, with_closed_fences
from core.entries import Entry
from core.events import Attachment, ChainMessage, MessageReceived, MessageRef
from core.files import NotFromPlatform

__all__ = ["CHAIN_DEPTH", "DiscordDelivery", "DiscordStream", "nonce_for"]

log = logging.getLogger(__name__)

CHAIN_DEPTH = 5  # referenced messages followed back from a reply
THREAD_EXISTS = 160004  # Discord: "A thread has already been created for this message"
# Refusals that stay refusals: missing access or permission, a channel where threads cannot be, an unknown message
THREAD_REFUSED: Final = frozenset({50001, 50013, 50024, 10008, 160002})
THREAD_OPEN_SECONDS: Final = 10.0
THREAD_MUTED: Final = frozenset({50013, 160005, 50083})  # no permission to write there; locked; archived
# Minutes of quiet before Discord hides a thread (its longest): an archived thread leaves discord.py's cache and
# the active threads a new session is sent, and a message there must find it known to be answered without a mention.
THREAD_ARCHIVE_MINUTES: Final = 10080


def nonce_for(message_id: str, part: int) -> str:
    """Discord keeps nonces of up to 25 characters: the person's message id (a snowflake) and the part."""
    return f"{message_id}:{part}"[-25:]


class DiscordDelivery:
    """Implements core.ports.Delivery for Discord entries."""

    def __init__(
        self, entry: Entry, client: Callable[[], discord.Client | None], downloader: Downloader | None = None
    ) -> None:
        self._entry = entry
        self._client = client
        self._downloader = downloader
        route = entry.route
        self._channel = int(route.get("channel") or 0)
        self._message = str(route.get("message") or "")
        guild = route.get("guild")
        self._guild = int(guild) if guild else None
        thread = route.get("thread")
        opens_thread = isinstance(thread, Mapping) and bool(thread.get("open")) and bool(self._message)
        self._target: int | None = None if opens_thread else self._channel  # where the answer goes, once known

    def _logged_in(self) -> discord.Client:
        client = self._client()
        if client is None or client.user is None:
            raise RuntimeError("the Discord client is not logged in (yet)")
        return client

    def _channel_object(self, client: discord.Client, channel: int | None = None) -> discord.PartialMessageable:
        return client.get_partial_messageable(channel or self._channel, guild_id=self._guild)

    async def _answer_channel(self, client: discord.Client) -> int:
        """The channel the answer goes to: the person's, or the thread opened from their message (opened here the
        first time it is asked for). Opening it is idempotent: Discord's "already created" means an earlier attempt
        did it. Refused for any other reason (no permission to create threads there), it answers with a reply in the
        channel, as without threads, rather than not at all."""
        if self._target is not None:
            return self._target
        entry = self._entry
        if entry.refs:  # an earlier attempt posted there already: the rest of the answer goes to the same place
            self._target = int(entry.refs[0].channel_id)
            return self._target
        event = entry.event
        text, author = (event.text, event.author_name) if isinstance(event, MessageReceived) else ("", "")
        try:
            # Through the REST route rather than PartialMessage.create_thread, which needs this process to have the
            # server in its cache: any logged-in process delivers, whichever shard took the message.
            async with asyncio.timeout(THREAD_OPEN_SECONDS):
                await client.http.start_thread_with_message(
                    self._channel,
                    int(self._message),
                    name=thread_name(text, author),
                    auto_archive_duration=THREAD_ARCHIVE_MINUTES,
                )
            self._target = int(self._message)
        except discord.HTTPException as exc:
            if exc.code == THREAD_EXISTS:
                self._target = int(self._message)
            elif isinstance(exc, discord.Forbidden) or exc.code in THREAD_REFUSED:
                log.warning(
                    "could not open a thread for %s in Discord channel %s (%s); answering in the channel",
                    entry.key,
                    self._channel,
                    exc,
                )
                self._target = self._channel
            else:
                raise  # Discord's trouble, not a refusal: the turn tries again (and opens the thread then)
        return self._target

    def in_channel(self, event: MessageReceived) -> MessageReceived:
        """The event back in the channel when its thread could not be opened: the exchange is the channel's."""
        if self._target != self._channel or event.conversation_id == str(self._channel):
            return event
        return replace(event, conversation_id=str(self._channel), parents=event.parents[1:])

    async def prepare(self, event: MessageReceived) -> MessageReceived:
        """The reply chain beyond what the gateway payload carried, followed back through the REST API; a thread
        that could not be opened gives the exchange back to the channel."""
        event = self.in_channel(event)
        deeper = self._entry.route.get("deeper")
        if not deeper:
            return event
        client = self._logged_in()
        assert client.user is not None
        older: list[ChainMessage] = []
        current: str | None = str(deeper)
        while current and len(older) + len(event.reply_chain) < CHAIN_DEPTH:
            try:
                found = await self._channel_object(client).fetch_message(int(current))
            except discord.HTTPException as exc:
                log.debug("referenced message %s not readable: %s", current, exc)
                break
            if found.content:
                older.append(chain_message(found, bot_id=client.user.id, bot_name=client.user.display_name))
            ref = found.reference
            reply = ref is not None and ref.type is discord.MessageReferenceType.reply
            current = str(ref.message_id) if reply and ref is not None and ref.message_id else None
        older.reverse()
        return replace(event, reply_chain=(*older, *event.reply_chain))

    @contextlib.asynccontextmanager
    async def working(self, *, streamed: bool = False) -> AsyncIterator[list[MessageRef]]:
        """ "Rapport is typing…" while the answer is prepared (in the thread it opens, if it opens one); a refused
        typing call costs nothing."""
        client = self._client()
        if client is None:
            yield []
            return
        channel = self._channel_object(client, await self._answer_channel(client) if client.user else None)

        async def keep_typing() -> None:
            while True:
                try:
                    await channel.typing()
                except Exception as exc:  # noqa: BLE001 - cosmetic
                    log.debug("typing indicator failed: %s", exc)
                await asyncio.sleep(8)

        task = asyncio.create_task(keep_typing(), name="discord-typing")
        try:
            # a resumed turn finishes the messages an earlier process streamed into, rather than posting more
            yield list(self._entry.refs) if self._entry.taken > 1 else []
        finally:
            task.cancel()

    def stream(
        self, placeholder: Sequence[MessageRef], started: Callable[[list[MessageRef]], Awaitable[None]]
    ) -> DiscordStream:
        return DiscordStream(self, started)

    async def send_part(self, part: int, chunk: str) -> discord.Message:
        """One part of a reply: the first as a reply that does not ping the person again. Sent with the entry's
        nonce for that part, so sending it again (a resumed turn) gets the message sent before, made current."""
        client = self._logged_in()
        target = await self._answer_channel(client)
        channel = self._channel_object(client, target)
        options: dict[str, Any] = {"nonce": nonce_for(self._message, part)}
        if part == 0 and self._message and target == self._channel:  # in its own thread, an answer needs none
            options["reference"] = discord.MessageReference(
                message_id=int(self._message), channel_id=self._channel, fail_if_not_exists=False
            )
            options["mention_author"] = False
        try:
            posted = await channel.send(chunk, **options)
        except discord.Forbidden as exc:
            if target == self._channel or exc.code not in THREAD_MUTED:
                raise
            # Threads may be opened but not written in (no Send Messages in Threads; a locked thread): the answer
            # goes to the channel rather than nowhere.
            log.warning("could not post in the thread of %s (%s); answering in the channel", self._entry.key, exc)
            self._target = self._channel
            return await self.send_part(part, chunk)
        if posted.content != chunk:  # Discord gave back the message an earlier attempt sent with that nonce
            posted = await posted.edit(content=chunk)
        return posted

    async def deliver(self, text: str, *, placeholder: Sequence[MessageRef]) -> list[MessageRef]:
        """Each part into the message an earlier attempt posted for it (a streamed reply cut short by a restart),
        else sent; raises when not one part could be posted (the turn tries again)."""
        client = self._logged_in()
        target = await self._answer_channel(client)
        chunks = reply_chunks(text)
        refs: list[MessageRef] = []
        for part, chunk in enumerate(chunks):
            try:
                if part < len(placeholder):
                    await self._shown_message(client, placeholder[part]).edit(content=chunk)
                    refs.append(placeholder[part])
                    continue
                posted = await self.send_part(part, chunk)
            except discord.HTTPException as exc:
                sent = f"{part} of {len(chunks)} parts sent"
                log.error("could not post to Discord channel %s (%s); %s", target, exc, sent)
                if not refs:
                    raise
                break
            refs.append(message_ref(posted.channel.id, posted.id))
        for extra in placeholder[len(chunks) :]:  # an earlier, longer attempt's parts
            with contextlib.suppress(discord.HTTPException):
                await self._shown_message(client, extra).delete()
        return refs

    async def fetch(self, attachment: Attachment, limit: int) -> bytes:
        """A file of the message from Discord's CDN (the address the gateway gave, signed by Discord)."""
        if self._downloader is None:
            raise NotFromPlatform("no downloader here")
        return await self._downloader.fetch(attachment, limit)

    def _shown_message(self, client: discord.Client, ref: MessageRef) -> discord.PartialMessage:
        """A message an earlier attempt posted, in the channel it was posted in (the thread, or the channel)."""
        return self._channel_object(client, int(ref.channel_id)).get_partial_message(int(ref.message_id))

    async def notify(self, text: str) -> None:
        """A note for the person alone: the interaction's original (ephemeral) response when the entry came from
        one (its token is valid for 15 minutes), else a DM (never a public message: a refused person is not
        scolded in front of others)."""
        application, token = self._entry.route.get("application"), self._entry.route.get("token")
        client = self._logged_in()
        if not application or not token:
            event = self._entry.event
            if not isinstance(event, MessageReceived):
                return
            try:
                if event.private:
                    await self._channel_object(client).send(text)
                else:
                    dm = await client.create_dm(discord.Object(id=int(event.user.user_id)))
                    await dm.send(text)
            except discord.HTTPException as exc:  # DMs closed to the bot: then nothing is said
                log.info("could not send a private note to discord:%s: %s", event.user.user_id, exc)
            return
        route = Route(
            "PATCH",
            "/webhooks/{webhook_id}/{webhook_token}/messages/@original",
            webhook_id=int(application),
            webhook_token=str(token),
        )
        try:
            await client.http.request(route, json={"content": text})
        except discord.HTTPException as exc:
            log.warning("could not tell the person how their command went: %s", exc)


class DiscordStream:
    """A reply shown as Claude writes it: the first text at once as a reply, then edits at most once a second
    (discord.py waits out a 429 by itself), into further messages past 2,000 characters with code fences whole;
    the last edit is exactly the whole reply."""

    def __init__(self, delivery: DiscordDelivery, started: Callable[[list[MessageRef]], Awaitable[None]]) -> None:
        self._delivery = delivery
        self._started = started
        self._posted: list[discord.Message] = []
        self._shown = ""
        self._paced = Paced(self._render)

    @property
    def shown(self) -> str:
        return self._paced.latest

    @property
    def edits(self) -> int:
        return self._paced.renders

    def _refs(self) -> list[MessageRef]:
        return [message_ref(m.channel.id, m.id) for m in self._posted]

    async def show(self, so_far: str) -> None:
        self._paced.offer(so_far)

    async def _render(self, text: str, *, final: bool = False) -> None:
        chunks = reply_chunks(text) if final else [with_closed_fences(c) for c in reply_chunks(text)]
        for part, chunk in enumerate(chunks):
            if part < len(self._posted):
                if self._posted[part].content != chunk:
                    self._posted[part] = await self._posted[part].edit(content=chunk)
                continue
            self._posted.append(await self._delivery.send_part(part, chunk))
            await self._started(self._refs())
        if final:
            for extra in self._posted[len(chunks) :]:
                with contextlib.suppress(discord.HTTPException):
                    await extra.delete()
            del self._posted[len(chunks) :]
        self._shown = text

    async def finish(self, text: str) -> list[MessageRef]:
        await self._paced.close()
        await self._render(text, final=True)
        return self._refs()
