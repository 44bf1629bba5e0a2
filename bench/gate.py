"""What the operators' gate costs a message before it is kept: `Gate.screen` (access lists, the per-minute rate, the
day's budgets) and `Gate.charge` (after each answer), on each counter store, one message at a time and 50 at once.

The access decision is pure; with limits set, a message costs one counter hit and one read of the day's spending
(and a refusal a write), so the figures are those stores' round trips.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.stack import served_stores
from bench.stats import summary_ms
from core.assistant import NullTelemetry
from core.entries import Incoming
from core.events import MessageReceived, UserRef
from core.gate import Gate
from core.policy import Policy, PolicyBox
from core.ports import UsageCounters
from storage.database import Database
from storage.usage import DatabaseUsage, RedisUsage

__all__ = ["measure_gate"]

LISTS = {
    "access": {
        "allow": {"roles": [f"discord:{900 + n}" for n in range(50)]},
        "block": {
            "users": [f"discord:{1000 + n}" for n in range(500)],
            "channels": [f"discord:{n}" for n in range(50)],
        },
    }
}
LIMITS = {"limits": {"messages_per_minute": 1_000_000, "tokens_per_day": 10**12, "server_tokens_per_day": 10**12}}


def _incoming(n: int, people: int) -> Incoming:
    person = n % people
    event = MessageReceived(
        user=UserRef(platform="discord", user_id=str(10**17 + person)),
        text=f"message {n}",
        conversation_id="123456789012345678",
        private=False,
        community="223456789012345678",
        roles=("901",),
    )
    return Incoming(key=f"discord:message:1:{n}", event=event)


@asynccontextmanager
async def _counters(store: str) -> AsyncIterator[tuple[UsageCounters, DatabaseUsage]]:
    if store == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            database = Database(f"sqlite://{Path(tmp) / 'gate.sqlite3'}")
            await database.open()
            try:
                usage = DatabaseUsage(database)
                yield usage, usage
            finally:
                await database.close()
        return
    async with served_stores() as stores:
        database = Database(stores["DATABASE_URL"])
        await database.open()
        redis = Redis.from_url(stores["REDIS_URL"])
        try:
            usage = DatabaseUsage(database)
            yield (RedisUsage(redis, stores["REDIS_PREFIX"]) if store == "redis" else usage), usage
        finally:
            await redis.aclose()
            await database.close()


async def _run(gate: Gate, messages: int, people: int, concurrency: int) -> dict[str, Any]:
    screens: list[float] = []
    charges: list[float] = []
    queue = list(range(messages))

    async def worker() -> None:
        while queue:
            incoming = _incoming(queue.pop(), people)
            started = time.perf_counter()
            kept = await gate.screen(incoming)
            screens.append(time.perf_counter() - started)
            assert kept is incoming, "the benchmark's messages are all admitted"
            started = time.perf_counter()
            await gate.charge(
                user=incoming.person,
                server="discord:223456789012345678",
                private=False,
                model="claude-sonnet-5-5",
                kind="answer",
                input_tokens=900,
                output_tokens=200,
                cache_read=3000,
            )
            charges.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "screen_ms": summary_ms(screens),
        "charge_ms": summary_ms(charges),
        "messages_per_second": round(messages / elapsed, 1),
    }


async def measure_gate(
    *, messages: int = 2_000, people: int = 200, concurrency: tuple[int, ...] = (1, 50)
) -> dict[str, Any]:
    """Each configuration: no policy, long access lists (pure), and limits on SQLite, PostgreSQL and Redis."""
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("no policy", "sqlite", {}),
        ("access lists (600 ids)", "sqlite", LISTS),
        ("limits, SQLite counters", "sqlite", LIMITS),
        ("limits, PostgreSQL counters", "postgres", LIMITS),
        ("limits, Redis counters", "redis", LIMITS),
    ]
    results = []
    for label, store, policy in cases:
        async with _counters(store) as (counters, refusals):
            gate = Gate(
                box=PolicyBox(Policy.model_validate(policy)),
                counters=counters,
                refusals=refusals,
                telemetry=NullTelemetry(),
            )
            await _run(gate, min(messages, 200), people, max(concurrency))  # warm-up: connections, statements
            runs = [await _run(gate, messages, people, c) for c in concurrency]
        results.append({"case": label, "store": store, "runs": runs})
    return {"messages": messages, "people": people, "cases": results}


if __name__ == "__main__":
    import json

    print(json.dumps(asyncio.run(measure_gate(messages=300)), indent=2))
