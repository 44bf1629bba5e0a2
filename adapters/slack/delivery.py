"""The Slack delivery port: how one inbox entry's reply reaches Slack, rebuilt from the entry alone.

A placeholder ("Thinking…") appears while Claude answers and becomes the reply's first part. Every part is posted
with metadata naming its entry, so a turn resumed after a crash between posting and recording finds what was
posted (conversations.replies or .history with include_all_metadata) and finishes it instead of posting again.
In a thread of Slack's assistant pane (route `assistant`) the thread's status says Rapport is at work instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from slack_bolt.async_app import AsyncSetStatus, AsyncSetTitle
from slack_sdk.web.async_chat_stream import AsyncChatStream

from adapters.download import Downloader
from adapters.slack.assistant_view import LOADING, STATUS, thread_title
from adapters.slack.outbox import Outbox, answer_chunks
from adapters.slack.translate import PLATFORM, attachment_of_file, needs_lookup
from adapters.streaming import Paced, with_closed_fences
from core.entries import Entry
from core.events import Attachment, MessageReceived, MessageRef
from core.files import NotFromPlatform
from core.ports import Stream

__all__ = ["REPLY_EVENT", "THINKING", "SlackDelivery"]

log = logging.getLogger(__name__)

THINKING = "_Thinking…_"
REPLY_EVENT = "rapport_reply"  # the metadata event type on every message of a reply
STREAM_LIMIT = 12_000  # characters of Markdown one streamed message takes (Slack's limit for markdown_text)
FENCE = "```"
PANE_CALL_BUDGET = 3.0  # seconds for a status or title call: a nicety, never worth holding the answer for


class SlackDelivery:
    """Implements core.ports.Delivery for Slack entries."""

    def __init__(
        self, entry: Entry, outbox: Outbox, *, bot_user_id: str | None, downloader: Downloader | None = None
    ) -> None:
        self.entry = entry
        self.outbox = outbox
        self._downloader = downloader
        self._bot_user_id = bot_user_id
        self.channel = str(entry.route.get("channel") or "")
        self.thread: str | None = entry.route.get("thread_ts") or None
        self._resumed = entry.taken > 1  # an earlier turn may have posted some of it already
        self._pane = bool(entry.route.get("assistant")) and self.thread is not None  # a thread of the assistant pane

    def metadata(self, part: int) -> dict[str, Any]:
        return {"event_type": REPLY_EVENT, "event_payload": {"entry": self.entry.key, "part": part}}

    def ref(self, ts: str) -> MessageRef:
        return MessageRef(platform=PLATFORM, channel_id=self.channel, message_id=ts)

    async def _earlier(self) -> dict[int, str]:
        event = self.entry.event
        oldest = event.message.message_id if isinstance(event, MessageReceived) and event.message else "0"
        return await self.outbox.posted_for(self.channel, self.thread, oldest, REPLY_EVENT, self.entry.key)

    async def prepare(self, event: MessageReceived) -> MessageReceived:
        name, tz = await self.outbox.person(event.user.user_id)
        event = replace(event, display_name=name, tz=tz)
        if any(needs_lookup(a) for a in event.attachments):
            event = replace(event, attachments=tuple([await self._looked_up(a) for a in event.attachments]))
        if not event.private and event.audience is None:  # an app_mention does not say what kind of channel
            event = replace(event, audience=await self.outbox.audience(event.user.scope, self.channel))
        if self.entry.route.get("fetch_thread") and event.thread_id and event.message:
            chain = await self.outbox.thread_so_far(
                self.channel, event.thread_id, event.message.message_id, self._bot_user_id
            )
            event = replace(event, reply_chain=chain)
        return event

    async def _looked_up(self, attachment: Attachment) -> Attachment:
        """A Slack Connect file as files.info describes it (a file it will not describe stays without an address,
        and the reply names it)."""
        if not needs_lookup(attachment):
            return attachment
        try:
            info = await self.outbox.client.files_info(file=attachment.file_id)
        except Exception as exc:  # noqa: BLE001 - that file is named as not downloadable; the rest goes on
            log.info("files.info for a shared file failed: %s", exc)
            return replace(attachment, name="a file shared from another organisation")
        found = attachment_of_file(info.get("file") or {})
        return found if found is not None and found.name else replace(attachment, name="a shared file")

    @asynccontextmanager
    async def working(self, *, streamed: bool = False) -> AsyncIterator[list[MessageRef]]:
        """While Claude answers: in the assistant pane the thread's status (Slack clears it when the reply comes;
        it is cleared here when there is none) and, for a thread new to Rapport, its title; and the placeholder."""
        if self._pane:
            await self._pane_call("status", self._status(STATUS, loading_messages=LOADING))
            event = self.entry.event
            if self.entry.route.get("title") and isinstance(event, MessageReceived):
                set_title = AsyncSetTitle(self.outbox.client, self.channel, str(self.thread))
                await self._pane_call("title", set_title(thread_title(event.text)))
        try:
            async with self._placeholder(streamed=streamed) as placeholder:
                yield placeholder
        except Exception:
            await self.failed()
            raise

    def _status(self, status: str, **more: Any) -> Awaitable[Any]:
        return AsyncSetStatus(self.outbox.client, self.channel, str(self.thread))(status, **more)

    async def _pane_call(self, what: str, call: Awaitable[Any]) -> None:
        """A status or title call, failing soft: bolt's matcher sends every DM thread here, and an ordinary DM
        thread has neither."""
        try:
            async with asyncio.timeout(PANE_CALL_BUDGET):
                await call
        except Exception as exc:  # noqa: BLE001 - the answer goes on without it
            log.info("assistant thread %s in %s not set: %s", what, self.channel, exc)

    async def failed(self) -> None:
        """The reply did not reach the thread (or reached it only as edits): its status must not go on saying
        Rapport is at work."""
        if self._pane:
            await self._pane_call("status", self._status(""))

    @asynccontextmanager
    async def _placeholder(self, *, streamed: bool) -> AsyncIterator[list[MessageRef]]:
        """The placeholder, posted once (a resumed turn takes up the one an earlier attempt posted); none in a
        thread where the reply streams into a message of its own."""
        if streamed and self.thread:
            yield []
            return
        earlier = await self._earlier() if self._resumed else {}
        ts = earlier.get(0)
        if ts is None and self._resumed and self.entry.refs:  # a streamed reply an earlier process began
            ts = self.entry.refs[0].message_id
            if self.thread:  # its stream is ended first, so that the message can be edited to the whole reply
                with contextlib.suppress(Exception):
                    await self.outbox.client.chat_stopStream(channel=self.channel, ts=ts)
        if ts is None:
            try:
                ts = await self.outbox.post(self.channel, THINKING, self.thread, metadata=self.metadata(0))
            except Exception:  # noqa: BLE001 - the reply is posted without it
                ts = None
        yield [self.ref(ts)] if ts else []

    def stream(
        self, placeholder: Sequence[MessageRef], started: Callable[[list[MessageRef]], Awaitable[None]]
    ) -> Stream | None:
        """In a thread, Slack's streaming methods; at the top level of a DM, the placeholder edited as it grows."""
        if self.thread:
            return _ThreadStream(self, started)
        if placeholder:
            return _EditedStream(self, list(placeholder), started)
        return None

    async def deliver(self, text: str, *, placeholder: Sequence[MessageRef]) -> list[MessageRef]:
        existing = await self._earlier() if self._resumed else {}
        for part, ref in enumerate(placeholder):
            existing.setdefault(part, ref.message_id)
        try:
            posted = await self.outbox.deliver(self.channel, self.thread, answer_chunks(text), existing, self.metadata)
        except Exception:
            await self.failed()
            raise
        if self._pane and len(posted) <= len(existing):
            # Only edits (a resumed turn finishing what an earlier one posted): Slack clears the status when the
            # app posts, not when it edits.
            await self.failed()
        return [self.ref(ts) for ts in posted]

    async def fetch(self, attachment: Attachment, limit: int) -> bytes:
        """A file of the message, from Slack's own file addresses with the bot token (`files:read`)."""
        if self._downloader is None:
            raise NotFromPlatform("no downloader here")
        return await self._downloader.fetch(attachment, limit)

    async def notify(self, text: str) -> None:
        """A note for the person alone: through the command's response_url, else an ephemeral message where they
        wrote (in their thread)."""
        url = self.entry.route.get("response_url")
        if url:
            await self.outbox.respond(str(url), text)
            return
        event = self.entry.event
        if isinstance(event, MessageReceived) and self.channel:
            await self.outbox.client.chat_postEphemeral(
                channel=self.channel, user=event.user.user_id, text=text, thread_ts=self.thread
            )


class _ThreadStream:
    """chat.startStream / appendStream / stopStream through the SDK's AsyncChatStream, one append a second at most
    (Slack renders the Markdown itself); its ts is kept as soon as the stream starts, and the metadata naming the
    entry goes on with the stop."""

    def __init__(self, delivery: SlackDelivery, started: Callable[[list[MessageRef]], Awaitable[None]]) -> None:
        self._delivery = delivery
        self._started = started
        self._chat: AsyncChatStream | None = None
        self._sent = ""
        self._paced = Paced(self._append)

    async def _opened(self) -> AsyncChatStream:
        if self._chat is None:
            event = self._delivery.entry.event
            user = event.user if isinstance(event, MessageReceived) else None
            self._chat = await self._delivery.outbox.client.chat_stream(
                channel=self._delivery.channel,
                thread_ts=str(self._delivery.thread),
                recipient_team_id=user.scope if user else None,
                recipient_user_id=user.user_id if user else None,
                buffer_size=1,  # the pace is ours (Paced), not the helper's buffer's
            )
        return self._chat

    @property
    def shown(self) -> str:
        return self._paced.latest

    async def show(self, so_far: str) -> None:
        self._paced.offer(so_far)

    async def _append(self, text: str) -> None:
        text = _growing(text)
        delta = text[len(self._sent) :] if text.startswith(self._sent) else ""
        if not delta:
            return
        chat = await self._opened()
        await chat.append(markdown_text=delta)
        if not self._sent and chat.ts:
            await self._started([self._delivery.ref(chat.ts)])
        self._sent = text

    async def finish(self, text: str) -> list[MessageRef]:
        try:
            return await self._finish(text)
        except Exception:
            await self._delivery.failed()
            raise

    async def _finish(self, text: str) -> list[MessageRef]:
        await self._paced.close()
        chat = self._chat
        if chat is None or chat.ts is None:  # nothing was shown yet: posted as a whole
            return await self._delivery.deliver(text, placeholder=[])
        ref = self._delivery.ref(chat.ts)
        head = _streamable(text)
        for shown in (self._sent, self._sent.rstrip()):
            if head.startswith(shown):
                rest = head[len(shown) :]
                break
        else:  # the whole reply differs from what was shown (it never should): made exact with an edit
            await chat.stop(metadata=self._delivery.metadata(0))
            return await self._delivery.deliver(text, placeholder=[ref])
        if head != text and head.count(FENCE) % 2:
            rest += "\n" + FENCE  # the message ends inside a code block that goes on in the next one
        await chat.stop(markdown_text=rest or None, metadata=self._delivery.metadata(0))
        self._sent = head
        if head == text:
            return [ref]
        after = text[len(head) :].lstrip("\n")
        if head.count(FENCE) % 2:
            after = head[head.rfind(FENCE) :].split("\n", 1)[0] + "\n" + after  # reopened, with its language
        delivery = self._delivery
        more = await delivery.outbox.deliver(
            delivery.channel, delivery.thread, answer_chunks(after), {}, lambda part: delivery.metadata(part + 1)
        )
        return [ref, *(delivery.ref(ts) for ts in more)]


def _growing(text: str) -> str:
    """What of a reply still arriving may be streamed now: never more than the finished reply's streamed message
    will hold (`_streamable` of the whole), so what is shown is always a beginning of it. Past half the limit the
    stream goes by whole paragraphs: the message may end at any of them."""
    if len(text) > STREAM_LIMIT:
        return _streamable(text)
    if len(text) > STREAM_LIMIT // 2:
        cut = text.rfind("\n\n")
        return text[:cut] if cut > 0 else text[: STREAM_LIMIT // 2]
    return text


def _streamable(text: str) -> str:
    """What of a reply one streamed message holds: all of it up to Slack's limit for Markdown text, else up to the
    last paragraph break before it (the rest is posted after it, in the thread, when the reply is done)."""
    if len(text) <= STREAM_LIMIT:
        return text
    cut = text.rfind("\n\n", 0, STREAM_LIMIT)
    return text[:cut] if cut > STREAM_LIMIT // 2 else text[:STREAM_LIMIT]


class _EditedStream:
    """At the top level of a DM: the placeholder edited with the reply so far (and parts past Slack's length
    posted after it), one edit a second at most; never an empty edit."""

    def __init__(
        self,
        delivery: SlackDelivery,
        placeholder: list[MessageRef],
        started: Callable[[list[MessageRef]], Awaitable[None]],
    ) -> None:
        self._delivery = delivery
        self._started = started
        self._parts = {part: ref.message_id for part, ref in enumerate(placeholder)}
        self._chunks: list[str] = []  # what each part shows now
        self._shown = ""
        self._paced = Paced(self._edit)

    @property
    def shown(self) -> str:
        return self._paced.latest

    async def show(self, so_far: str) -> None:
        self._paced.offer(so_far)

    async def _edit(self, text: str) -> None:
        chunks = [with_closed_fences(chunk) for chunk in answer_chunks(text)]
        before = len(self._parts)
        posted = await self._delivery.outbox.deliver(
            self._delivery.channel,
            None,
            chunks,
            self._parts,
            self._delivery.metadata,
            delete_surplus=False,
            shown=self._chunks,
        )
        self._parts = dict(enumerate(posted))
        self._chunks = chunks if len(posted) == len(chunks) else []
        if len(self._parts) > before:
            await self._started([self._delivery.ref(ts) for ts in posted])
        self._shown = text

    async def finish(self, text: str) -> list[MessageRef]:
        await self._paced.close()
        placeholder = [self._delivery.ref(ts) for _, ts in sorted(self._parts.items())]
        return await self._delivery.deliver(text, placeholder=placeholder)
