"""The first messages after a restart of a person with many memories (issue 17's cold stalls):

    python -m bench.cold

A person with 100,000 memories, one with 10,000 and one with 3,000, among 100,000 memories of 1,000 others
(synthetic vectors, as the context benchmark seeds them); the process's index lets the person go first, as a
restart leaves it. Prints the context-assembly time of each of their first 30 messages, in order (ms), and their
p50/p95/max.
"""

from __future__ import annotations

import asyncio
import json

from bench.latency import ContextClock, _seed
from bench.platform import ask
from bench.stack import real_stack
from bench.stats import summary_ms
from bench.workload import message_for
from core.events import UserRef

TIERS = (100_000, 10_000, 3_000)
OTHERS, MESSAGES = 100_000, 30


async def main() -> None:
    clock = ContextClock()
    async with real_stack(latency=0.0, telemetry=clock) as services:
        for person in range(1_000):
            await _seed(services, f"bench:other{person}", OTHERS // 1_000, seed=10_000 + person)
        out: dict[int, list[float]] = {}
        for tier in TIERS:
            user = UserRef(platform="bench", user_id=f"person{tier}")
            await _seed(services, user.key, tier, seed=tier)
            await services.database.connection().execute_script("VACUUM ANALYZE")
            services.index.let_go(user.key)  # what a restart leaves: nothing of theirs held
            clock.context.clear()
            for index in range(MESSAGES):
                await ask(services, message_for(user, index))
                await services.assistant.drain(60)
            out[tier] = [round(seconds * 1000, 1) for seconds in clock.context]
            print(tier, json.dumps(summary_ms(clock.context)), flush=True)
        print(json.dumps(out))


if __name__ == "__main__":  # Chroma's process is spawned: it imports this module again
    asyncio.run(main())
