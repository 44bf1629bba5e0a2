"""An in-memory platform ("fake"): plain calls become inbox entries, answered by the real turns and assistant,
and a delivery port that keeps what Rapport posted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.wiring import Services
from core.entries import Answer, Entry, Incoming, interaction_id_for
from core.events import (
    Attachment,
    ForgetRequested,
    MessageReceived,
    MessageRef,
    ReactionAdded,
    ReactionRemoved,
    Reply,
    UserRef,
)
from core.files import NotFromPlatform
from core.privacy import Audience

WAIT = 30.0
COMMUNITY = "community"  # the fake platform's one workspace: its channels are its public places


@dataclass
class Posted:
    reply: Reply
    ref: MessageRef


@dataclass
class FakePlatform:
    """What people see of the fake platform: each entry's reply, whichever replica delivered it."""

    replies: dict[str, str] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def show(self, key: str, text: str) -> None:
        self.replies[key] = text
        self.changed.set()

    async def reply_to(self, key: str, timeout: float = WAIT) -> str:
        async with asyncio.timeout(timeout):
            while key not in self.replies:
                self.changed.clear()
                await self.changed.wait()
        return self.replies[key]


class FakeDelivery:
    """core.ports.Delivery for the fake platform: a reply is "posted" as one message named after its entry."""

    def __init__(self, entry: Entry, platform: FakePlatform) -> None:
        self._entry = entry
        self._platform = platform

    async def prepare(self, event: MessageReceived) -> MessageReceived:
        return event

    @asynccontextmanager
    async def working(self, *, streamed: bool = False) -> AsyncIterator[list[MessageRef]]:
        yield []

    def stream(self, placeholder: Sequence[MessageRef], started: Callable[[list[MessageRef]], Awaitable[None]]) -> None:
        return None  # shown whole

    async def deliver(self, text: str, *, placeholder: Sequence[MessageRef]) -> list[MessageRef]:
        self._platform.show(self._entry.key, text)
        return [reply_ref(self._entry)]

    async def notify(self, text: str) -> None: ...

    async def fetch(self, attachment: Attachment, limit: int) -> bytes:
        raise NotFromPlatform("this fake platform sends no files")


def reply_ref(entry: Entry) -> MessageRef:
    event = entry.event
    channel = event.conversation_id if isinstance(event, MessageReceived) else ""
    return MessageRef(platform=entry.person.split(":", 1)[0], channel_id=channel, message_id=f"r-{entry.key}")


@dataclass
class FakeChat:
    services: Services
    platform: str = "fake"
    seen: FakePlatform = field(default_factory=FakePlatform)  # share one between replicas' chats
    shared: bool = False  # True with a `seen` shared between replicas: an answer may come from another
    posted: list[Posted] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.services.assistant.deliver_with(self.platform, lambda entry: FakeDelivery(entry, self.seen))

    def user(self, name: str) -> UserRef:
        return UserRef(platform=self.platform, user_id=name)

    async def _through_turn(self, incoming: Incoming) -> Any:
        outcome = self.services.assistant.outcomes.expect(incoming.key)
        await self.services.turns.accept(incoming)
        return await asyncio.wait_for(outcome, WAIT)

    async def say(
        self,
        who: str,
        text: str,
        *,
        channel: str | None = None,
        thread: str | None = None,
        sent_at: datetime | None = None,
        audience: Audience | None = None,
    ) -> Posted:
        """`who` writes `text` in a DM (no channel) or in a channel (at `sent_at`), and gets the reply. A channel is
        one of the fake community's public places unless `audience` says otherwise."""
        private = channel is None
        conversation = f"dm-{who}" if private else channel
        assert conversation is not None
        message_id = uuid.uuid4().hex
        event = MessageReceived(
            user=self.user(who),
            display_name=who.title(),
            text=text,
            conversation_id=conversation,
            thread_id=thread,
            private=private,
            audience=None if private else audience or Audience.public(self.platform, COMMUNITY, place=conversation),
            message=MessageRef(platform=self.platform, channel_id=conversation, message_id=message_id),
            sent_at=sent_at or datetime.now(UTC),
        )
        key = f"{self.platform}:message:{conversation}:{message_id}"
        outcome = self.services.assistant.outcomes.expect(key)  # settled here when this replica answers it
        await self.services.turns.accept(Incoming(key=key, event=event))
        text = await self.seen.reply_to(key)  # wherever it was answered
        if not self.shared:  # answered here, then: its outcome follows the delivery at once
            await asyncio.wait([outcome], timeout=5)
        answer: Answer | None = outcome.result() if outcome.done() else None
        ok = answer.ok if answer is not None else True
        reply = Reply(text=text, interaction_id=interaction_id_for(key), user_key=event.user.key, ok=ok)
        ref = MessageRef(platform=self.platform, channel_id=conversation, message_id=f"r-{key}")
        posted = Posted(reply=reply, ref=ref)
        self.posted.append(posted)
        return posted

    async def react(self, who: str, posted: Posted, emoji: str) -> bool:
        """True when it counted as feedback (its job is done when this returns)."""
        event = ReactionAdded(actor=self.user(who), message=posted.ref, emoji=emoji)
        return bool(await self._through_turn(Incoming(key=f"{self.platform}:reaction:{uuid.uuid4().hex}", event=event)))

    async def unreact(self, who: str, posted: Posted, emoji: str) -> bool:
        event = ReactionRemoved(actor=self.user(who), message=posted.ref, emoji=emoji)
        return bool(await self._through_turn(Incoming(key=f"{self.platform}:reaction:{uuid.uuid4().hex}", event=event)))

    async def forget(self, who: str) -> None:
        """`who` confirms /forget: done in their turn, after what they sent before."""
        event = ForgetRequested(user=self.user(who))
        await self._through_turn(Incoming(key=f"{self.platform}:forget:{uuid.uuid4().hex}", event=event))
