"""A platform for the benchmarks: messages go the way every platform's do (inbox, the person's turn, a delivery
port), and the delivery costs nothing, so what is measured is Rapport's own path."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from adapters.streaming import Paced
from bot.wiring import Services
from core.entries import Answer, Entry, Incoming
from core.events import Attachment, MessageReceived, MessageRef
from core.files import NotFromPlatform

__all__ = ["PLATFORM", "STREAMING", "BenchDelivery", "ask"]

PLATFORM = "bench"


class _Switch:
    on = False  # stream the answers (what streaming costs, against not)


STREAMING = _Switch()


class BenchStream:
    """A stream that shows nothing but keeps the platforms' pace (one edit a second): what streaming costs Rapport
    itself, the SDK's server-sent events and the pacing, without a platform's."""

    def __init__(self, started: Callable[[list[MessageRef]], Awaitable[None]], ref: MessageRef) -> None:
        self._started = started
        self._ref = ref
        self._shown = ""
        self._paced = Paced(self._render)

    @property
    def shown(self) -> str:
        return self._paced.latest

    async def _render(self, text: str) -> None:
        if not self._shown:
            await self._started([self._ref])
        self._shown = text

    async def show(self, so_far: str) -> None:
        self._paced.offer(so_far)

    async def finish(self, text: str) -> list[MessageRef]:
        await self._paced.close()
        self._shown = text
        return [self._ref]


class BenchDelivery:
    """core.ports.Delivery that posts nowhere."""

    def __init__(self, entry: Entry) -> None:
        self._entry = entry

    async def prepare(self, event: MessageReceived) -> MessageReceived:
        return event

    @asynccontextmanager
    async def working(self, *, streamed: bool = False) -> AsyncIterator[list[MessageRef]]:
        yield []

    def stream(
        self, placeholder: Sequence[MessageRef], started: Callable[[list[MessageRef]], Awaitable[None]]
    ) -> BenchStream | None:
        return BenchStream(started, self._ref()) if STREAMING.on else None

    def _ref(self) -> MessageRef:
        return MessageRef(platform=PLATFORM, channel_id="bench", message_id=f"r{self._entry.seq}")

    async def deliver(self, text: str, *, placeholder: Sequence[MessageRef]) -> list[MessageRef]:
        return [self._ref()]

    async def notify(self, text: str) -> None: ...

    async def fetch(self, attachment: Attachment, limit: int) -> bytes:
        raise NotFromPlatform("the benchmark sends no files")


async def ask(services: Services, event: MessageReceived) -> Answer:
    """One message through the inbox and its person's turn; returns once it is answered and delivered."""
    key = f"{PLATFORM}:message:{uuid.uuid4().hex}"
    outcome = services.assistant.outcomes.expect(key)
    await services.turns.accept(Incoming(key=key, event=event))
    answer = await outcome
    assert isinstance(answer, Answer)
    return answer
