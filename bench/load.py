"""Many people writing at once, with Claude answering in a fixed time: throughput, added latency, loop lag,
memory, and whether every message was stored."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from typing import Any

from bench.platform import ask
from bench.procs import cpu_seconds, helper_peak_rss_mib, per_answer
from bench.stats import percentile, summary_ms
from bench.workload import message_for
from bot.wiring import Services
from core.events import UserRef
from storage.models import Interaction

__all__ = ["measure_load"]


async def _loop_lag(samples: list[float], stop: asyncio.Event, every: float = 0.01) -> None:
    """How late the loop wakes a task that asked to sleep `every` seconds."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        asked = loop.time()
        await asyncio.sleep(every)
        samples.append(max(loop.time() - asked - every, 0.0))


async def measure_load(
    services: Services, *, people: int, seconds: float, claude_latency: float, tag: str, warmup: float = 5.0
) -> dict[str, Any]:
    """Each person sends a message, waits for the answer, and sends the next, until time is up.

    Everyone's first message arrives in the same instant, to caches that have never seen them: the answers
    sent in the first `warmup` seconds are reported apart as well (steady state = after them).
    """
    users = [UserRef(platform="bench", user_id=f"{tag}-p{i}") for i in range(people)]
    answered: list[float] = []
    steady: list[float] = []
    sent = 0
    lag: list[float] = []
    stop = asyncio.Event()
    lag_task = asyncio.create_task(_loop_lag(lag, stop))
    deadline = time.perf_counter() + seconds

    async def person(user: UserRef) -> None:
        nonlocal sent
        index = 0
        while time.perf_counter() < deadline:
            sent += 1
            started = time.perf_counter()
            reply = await ask(services, message_for(user, index, private=index % 3 != 0))
            if reply.ok:
                answered.append(time.perf_counter() - started)
                if started - begun >= warmup:
                    steady.append(answered[-1])
            index += 1

    cpu_before = cpu_seconds()
    begun = time.perf_counter()
    await asyncio.gather(*(person(user) for user in users))
    elapsed = time.perf_counter() - begun
    cpu = per_answer(cpu_before, cpu_seconds(), len(answered), os.cpu_count() or 1)
    stop.set()
    await lag_task
    drained_in = time.perf_counter()
    await services.assistant.drain(300)
    drained_in = time.perf_counter() - drained_in
    stored = await Interaction.filter(user_key__startswith=f"bench:{tag}-").count()
    added = [max(t - claude_latency, 0.0) for t in answered]
    return {
        "people": people,
        "seconds": round(elapsed, 1),
        "messages_sent": sent,
        "answers": len(answered),
        "answers_per_second": round(len(answered) / elapsed, 1),
        "added_ms": summary_ms(added),
        "added_after_warmup_ms": summary_ms([max(t - claude_latency, 0.0) for t in steady]),
        "warmup_seconds": warmup,
        "loop_lag_ms": {"p99": round(percentile(lag, 99) * 1000, 2), "max": round(max(lag, default=0) * 1000, 2)},
        # The worker's own peak plus its Chroma process's: what the deployment needs.
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + helper_peak_rss_mib(), 1),
        "interactions_stored": stored,
        "cpu_ms_per_answer": cpu,
        "drain_seconds": round(drained_in, 2),
    }
