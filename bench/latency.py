"""Context assembly (message received → request ready for Claude) as a person's memory grows."""

from __future__ import annotations

import time
from typing import Any

from bench.platform import ask
from bench.stats import summary_ms
from bench.workload import message_for, seed_memories
from bot.wiring import Services
from core.assistant import NullTelemetry
from core.events import UserRef

__all__ = ["ContextClock", "measure_context"]


class ContextClock(NullTelemetry):
    """A Telemetry that keeps the context-assembly and storing times the assistant reports."""

    def __init__(self) -> None:
        self.context: list[float] = []
        self.stored_seconds: list[float] = []

    def context_built(self, seconds: float) -> None:
        self.context.append(seconds)

    def stored(self, seconds: float) -> None:
        self.stored_seconds.append(seconds)


async def _seed(services: Services, user_key: str, count: int, seed: int) -> None:
    for start in range(0, count, 2_000):
        memories, vectors = seed_memories(user_key, min(2_000, count - start), seed=seed + start)
        await services.long_term.add(memories, vectors.tolist())


async def measure_context(
    services: Services, clock: ContextClock, *, tiers: tuple[int, ...], others: int, messages: int
) -> dict[str, Any]:
    """p50/p95/p99 of context assembly for a person with each number of memories, among `others` memories
    spread over 1,000 other people in the same store (`clock` is the Telemetry the services report to)."""
    seeding_started = time.perf_counter()
    per_other = max(others // 1_000, 1) if others else 0
    for person in range(1_000 if others else 0):
        await _seed(services, f"bench:other{person}", per_other, seed=10_000 + person)
    results: dict[str, Any] = {"others": others, "tiers": {}}
    for tier in tiers:
        user = UserRef(platform="bench", user_id=f"person{tier}")
        await _seed(services, user.key, tier, seed=tier)
        # What autovacuum does soon after such growth in a live database: without statistics the planner takes
        # a table that grew by 10,000 rows a second ago for an empty one, and until vacuum marks the new pages
        # all-visible, index-only scans still read the table (the postings' table is vacuumed after 2% growth).
        database = services.database
        await database.connection().execute_script("VACUUM ANALYZE" if database.dialect == "postgres" else "ANALYZE")
        clock.context.clear()
        clock.stored_seconds.clear()
        for index in range(messages):
            await ask(services, message_for(user, index))
            await services.assistant.drain(60)  # storing is measured on its own, not under the next message
        results["tiers"][str(tier)] = {
            "memories": await services.long_term.count(user.key),
            "context_ms": summary_ms(clock.context),
            "store_ms": summary_ms(clock.stored_seconds),
        }
    results["seconds"] = round(time.perf_counter() - seeding_started, 1)
    return results
