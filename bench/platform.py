"""A platform for the benchmarks: messages go the way every platform's do (inbox, the person's turn, a delivery
port), and the delivery costs nothing, so what is measured is Rapport's own path."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from bot.wiring import Services
from core.entries import Answer, Entry, Incoming
from core.events import MessageReceived, MessageRef

__all__ = ["PLATFORM", "BenchDelivery", "ask"]

PLATFORM = "bench"


class BenchDelivery:
    """core.ports.Delivery that posts nowhere."""

    def __init__(self, entry: Entry) -> None:
        self._entry = entry

    async def prepare(self, event: MessageReceived) -> MessageReceived:
        return event

    @asynccontextmanager
    async def working(self) -> AsyncIterator[list[MessageRef]]:
        yield []

    async def deliver(self, text: str, *, placeholder: Sequence[MessageRef]) -> list[MessageRef]:
        return [MessageRef(platform=PLATFORM, channel_id="bench", message_id=f"r{self._entry.seq}")]

    async def notify(self, text: str) -> None: ...


async def ask(services: Services, event: MessageReceived) -> Answer:
    """One message through the inbox and its person's turn; returns once it is answered and delivered."""
    key = f"{PLATFORM}:message:{uuid.uuid4().hex}"
    outcome = services.assistant.outcomes.expect(key)
    await services.turns.accept(Incoming(key=key, event=event))
    answer = await outcome
    assert isinstance(answer, Answer)
    return answer
