"""An in-memory adapter: turns plain calls into neutral events and keeps what Rapport posted."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

from core.assistant import Assistant
from core.events import MessageReceived, MessageRef, ReactionAdded, ReactionRemoved, Reply, UserRef


@dataclass
class Posted:
    reply: Reply
    ref: MessageRef


@dataclass
class FakeChat:
    assistant: Assistant
    platform: str = "fake"
    posted: list[Posted] = field(default_factory=list)
    _ids: count[int] = field(default_factory=lambda: count(1))

    def user(self, name: str) -> UserRef:
        return UserRef(platform=self.platform, user_id=name)

    async def say(self, who: str, text: str, *, channel: str | None = None, thread: str | None = None) -> Posted:
        """`who` writes `text` in a DM (no channel) or in a shared channel."""
        private = channel is None
        conversation = f"dm-{who}" if private else channel
        assert conversation is not None
        incoming = MessageRef(platform=self.platform, channel_id=conversation, message_id=str(next(self._ids)))
        event = MessageReceived(
            user=self.user(who),
            display_name=who.title(),
            text=text,
            conversation_id=conversation,
            thread_id=thread,
            private=private,
            message=incoming,
        )
        reply = await self.assistant.handle(event)
        ref = MessageRef(platform=self.platform, channel_id=conversation, message_id=str(next(self._ids)))
        await self.assistant.delivered(reply, [ref])
        posted = Posted(reply=reply, ref=ref)
        self.posted.append(posted)
        return posted

    async def react(self, who: str, posted: Posted, emoji: str) -> bool:
        return await self.assistant.reaction_added(ReactionAdded(actor=self.user(who), message=posted.ref, emoji=emoji))

    async def unreact(self, who: str, posted: Posted, emoji: str) -> bool:
        return await self.assistant.reaction_removed(
            ReactionRemoved(actor=self.user(who), message=posted.ref, emoji=emoji)
        )
