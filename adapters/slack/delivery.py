"""The Slack delivery port: how one inbox entry's reply reaches Slack, rebuilt from the entry alone.

A placeholder ("Thinking…") appears while Claude answers and becomes the reply's first part. Every part is posted
with metadata naming its entry, so a turn resumed after a crash between posting and recording finds what was
posted (conversations.replies or .history with include_all_metadata) and finishes it instead of posting again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from adapters.slack.outbox import Outbox, answer_chunks
from adapters.slack.translate import PLATFORM
from core.entries import Entry
from core.events import MessageReceived, MessageRef

__all__ = ["REPLY_EVENT", "THINKING", "SlackDelivery"]

THINKING = "_Thinking…_"
REPLY_EVENT = "rapport_reply"  # the metadata event type on every message of a reply


class SlackDelivery:
    """Implements core.ports.Delivery for Slack entries."""

    def __init__(self, entry: Entry, outbox: Outbox, *, bot_user_id: str | None) -> None:
        self._entry = entry
        self._outbox = outbox
        self._bot_user_id = bot_user_id
        self._channel = str(entry.route.get("channel") or "")
        self._thread = entry.route.get("thread_ts") or None
        self._resumed = entry.taken > 1  # an earlier turn may have posted some of it already

    def _metadata(self, part: int) -> dict[str, Any]:
        return {"event_type": REPLY_EVENT, "event_payload": {"entry": self._entry.key, "part": part}}

    def _ref(self, ts: str) -> MessageRef:
        return MessageRef(platform=PLATFORM, channel_id=self._channel, message_id=ts)

    async def _earlier(self) -> dict[int, str]:
        event = self._entry.event
        oldest = event.message.message_id if isinstance(event, MessageReceived) and event.message else "0"
        return await self._outbox.posted_for(self._channel, self._thread, oldest, REPLY_EVENT, self._entry.key)

    async def prepare(self, event: MessageReceived) -> MessageReceived:
        event = replace(event, display_name=await self._outbox.display_name(event.user.user_id))
        if not event.private and event.audience is None:  # an app_mention does not say what kind of channel
            event = replace(event, audience=await self._outbox.audience(event.user.scope, self._channel))
        if self._entry.route.get("fetch_thread") and event.thread_id and event.message:
            chain = await self._outbox.thread_so_far(
                self._channel, event.thread_id, event.message.message_id, self._bot_user_id
            )
            event = replace(event, reply_chain=chain)
        return event

    @asynccontextmanager
    async def working(self) -> AsyncIterator[list[MessageRef]]:
        """The placeholder, posted once: a resumed turn takes up the one an earlier attempt posted."""
        earlier = await self._earlier() if self._resumed else {}
        ts = earlier.get(0)
        if ts is None:
            try:
                ts = await self._outbox.post(self._channel, THINKING, self._thread, metadata=self._metadata(0))
            except Exception:  # noqa: BLE001 - the reply is posted without it
                ts = None
        yield [self._ref(ts)] if ts else []

    async def deliver(self, text: str, *, placeholder: Sequence[MessageRef]) -> list[MessageRef]:
        existing = await self._earlier() if self._resumed else {}
        if placeholder:
            existing.setdefault(0, placeholder[0].message_id)
        posted = await self._outbox.deliver(self._channel, self._thread, answer_chunks(text), existing, self._metadata)
        return [self._ref(ts) for ts in posted]

    async def notify(self, text: str) -> None:
        url = self._entry.route.get("response_url")
        if url:
            await self._outbox.respond(str(url), text)
