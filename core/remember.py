"""Storing and learning after each answer, in groups: exchanges that finish together are written together.

Every exchange costs the same few statements whether it is stored alone or with sixty others, so under load a
writer that gathers what arrives within a few milliseconds turns dozens of round trips per message into a few
per batch (measured in docs/benchmarks.md). Each caller still waits for its own exchange to be stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from core.background import retrying
from core.learning import patterns_of, update_profile
from core.ports import Embedder, InteractionRecord, LongTermMemory, Memory, Profile, Records, Telemetry

__all__ = ["MemoryWriter", "Remembrance"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Remembrance:
    """One exchange to store: its record, its memory (with the embedding of its text, if already computed)."""

    record: InteractionRecord
    memory: Memory
    embedding: list[float] | None
    display_name: str


class MemoryWriter:
    def __init__(
        self,
        *,
        records: Records,
        long_term: LongTermMemory,
        embedder: Embedder,
        telemetry: Telemetry,
        window: float = 0.01,
        max_batch: int = 64,
    ) -> None:
        self._records = records
        self._long_term = long_term
        self._embedder = embedder
        self._telemetry = telemetry
        self._window = window
        self._max_batch = max_batch
        self._pending: list[tuple[Remembrance, asyncio.Future[None], float]] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    async def write(self, item: Remembrance) -> None:
        """Store `item` with whatever else is waiting; returns once it is stored (or raises why not)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((item, future, time.perf_counter()))
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._run(), name="memory-writer")
        assert self._wake is not None
        self._wake.set()
        await future

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._window)  # let exchanges finishing together join one batch
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                try:
                    await self._flush([item for item, _, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every waiter learns why its exchange was not stored
                    log.exception("storing %d exchanges failed", len(batch))
                    for _, future, _ in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                now = time.perf_counter()
                for _, future, queued in batch:
                    self._telemetry.stored(now - queued)
                    if not future.done():
                        future.set_result(None)

    async def _flush(self, items: Sequence[Remembrance]) -> None:
        records = [item.record for item in items]
        await retrying("storing interactions", lambda: self._records.save_interactions(records))
        memories = [item.memory for item in items]

        async def add_memories() -> None:
            missing = [i for i, item in enumerate(items) if item.embedding is None]
            computed = dict(
                zip(missing, await self._embedder.embed([items[i].memory.text for i in missing]), strict=True)
            )
            vectors = [item.embedding if item.embedding is not None else computed[i] for i, item in enumerate(items)]
            await self._long_term.add(memories, vectors)

        await retrying("storing memories", add_memories)
        await retrying("learning", lambda: self._learn(items))

    async def _learn(self, items: Sequence[Remembrance]) -> None:
        profiles = await self._records.get_profiles(sorted({item.record.user_key for item in items}))
        rows: list[tuple[str, str, str, str]] = []
        for item in items:
            record, memory = item.record, item.memory
            profile = profiles.setdefault(record.user_key, Profile(user_key=record.user_key))
            update_profile(
                profile, text=record.user_text, topics=record.topics, scope=memory.scope, display_name=item.display_name
            )
            for kind, value in patterns_of(text=record.user_text, topics=record.topics, when=record.created_at):
                rows.append((record.user_key, memory.scope, kind, value))
        await self._records.save_profiles(list(profiles.values()))
        await self._records.bump_patterns(rows)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
