"""The first messages after a restart of a person with many memories (issue 17's cold stalls):

    python -m bench.cold

A person with 100,000 memories, one with 10,000 and one with 3,000, among 100,000 memories of 1,000 others
(synthetic vectors, as the context benchmark seeds them); the process's index lets the person go first, as a
restart leaves it. Prints the context-assembly time of each of their first 30 messages, in order (ms), and their
p50/p95/max. Also `python -m bench --only cold`, into docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bench.latency import ContextClock, _seed
from bench.platform import ask
from bench.stack import real_stack
from bench.stats import summary_ms
from bench.workload import message_for
from core.events import UserRef

TIERS = (100_000, 10_000, 3_000)
OTHERS, MESSAGES = 100_000, 30


async def measure_cold(*, tiers: tuple[int, ...], others: int, messages: int) -> dict[str, Any]:
    clock = ContextClock()
    async with real_stack(latency=0.0, telemetry=clock) as services:
        for person in range(1_000):
            await _seed(services, f"bench:other{person}", others // 1_000, seed=10_000 + person)
        out: dict[str, Any] = {"others": others, "messages": messages, "tiers": {}}
        for tier in tiers:
            user = UserRef(platform="bench", user_id=f"person{tier}")
            await _seed(services, user.key, tier, seed=tier)
            await services.database.connection().execute_script("VACUUM ANALYZE")
            services.index.let_go(user.key)  # what a restart leaves: nothing of theirs held
            clock.context.clear()
            for index in range(messages):
                await ask(services, message_for(user, index))
                await services.assistant.drain(60)
            out["tiers"][str(tier)] = {
                "first_ms": [round(seconds * 1000, 1) for seconds in clock.context],
                "context_ms": summary_ms(clock.context),
            }
    return out


if __name__ == "__main__":  # the bench's parts are spawned: they import this module again
    print(json.dumps(asyncio.run(measure_cold(tiers=TIERS, others=OTHERS, messages=MESSAGES)), indent=2))
