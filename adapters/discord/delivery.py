"""The Discord delivery port: how one inbox entry's reply reaches Discord, rebuilt from the entry alone.

Everything goes through the REST API (a partial channel by id), so any process that is logged in can deliver,
whichever shard the message came through. Each part of a reply is sent with a nonce derived from the entry (and
discord.py asks Discord to enforce it): a turn resumed after a crash between sending and recording gets the
message already sent back instead of a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

import discord
from discord.http import Route

from adapters.discord.translate import chain_message, message_ref, reply_chunks
from core.entries import Entry
from core.events import ChainMessage, MessageReceived, MessageRef

__all__ = ["CHAIN_DEPTH", "DiscordDelivery", "nonce_for"]

log = logging.getLogger(__name__)

CHAIN_DEPTH = 5  # referenced messages followed back from a reply


def nonce_for(message_id: str, part: int) -> str:
    """Discord keeps nonces of up to 25 characters: the person's message id (a snowflake) and the part."""
    return f"{message_id}:{part}"[-25:]


class DiscordDelivery:
    """Implements core.ports.Delivery for Discord entries."""

    def __init__(self, entry: Entry, client: Callable[[], discord.Client | None]) -> None:
        self._entry = entry
        self._client = client
        route = entry.route
        self._channel = int(route.get("channel") or 0)
        self._message = str(route.get("message") or "")
        guild = route.get("guild")
        self._guild = int(guild) if guild else None

    def _logged_in(self) -> discord.Client:
        client = self._client()
        if client is None or client.user is None:
            raise RuntimeError("the Discord client is not logged in (yet)")
        return client

    def _channel_object(self, client: discord.Client) -> discord.PartialMessageable:
        return client.get_partial_messageable(self._channel, guild_id=self._guild)

    async def prepare(self, event: MessageReceived) -> MessageReceived:
        """The reply chain beyond what the gateway payload carried, followed back through the REST API."""
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
    async def working(self) -> AsyncIterator[list[MessageRef]]:
        """ "Rapport is typing…" while the answer is prepared; a refused typing call costs nothing."""
        client = self._client()
        if client is None:
            yield []
            return
        channel = self._channel_object(client)

        async def keep_typing() -> None:
            while True:
                try:
                    await channel.typing()
                except Exception as exc:  # noqa: BLE001 - cosmetic
                    log.debug("typing indicator failed: %s", exc)
                await asyncio.sleep(8)

        task = asyncio.create_task(keep_typing(), name="discord-typing")
        try:
            yield []
        finally:
            task.cancel()

    async def deliver(self, text: str, *, placeholder: Sequence[MessageRef]) -> list[MessageRef]:
        """The first part as a reply that does not ping the person again, the rest after it; raises when not one
        part could be posted (the turn tries again)."""
        channel = self._channel_object(self._logged_in())
        chunks = reply_chunks(text)
        refs: list[MessageRef] = []
        for part, chunk in enumerate(chunks):
            options: dict[str, Any] = {"nonce": nonce_for(self._message, part)}
            if part == 0 and self._message:
                options["reference"] = discord.MessageReference(
                    message_id=int(self._message), channel_id=self._channel, fail_if_not_exists=False
                )
                options["mention_author"] = False
            try:
                posted = await channel.send(chunk, **options)
            except discord.HTTPException as exc:
                sent = f"{part} of {len(chunks)} parts sent"
                log.error("could not post to Discord channel %s (%s); %s", self._channel, exc, sent)
                if not refs:
                    raise
                break
            refs.append(message_ref(posted.channel.id, posted.id))
        return refs

    async def notify(self, text: str) -> None:
        """Edit the interaction's original (ephemeral) response: its token is valid for 15 minutes."""
        application, token = self._entry.route.get("application"), self._entry.route.get("token")
        if not application or not token:
            return
        client = self._logged_in()
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
