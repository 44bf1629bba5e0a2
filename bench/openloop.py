"""Messages arriving at random (Poisson), as people write, whatever Rapport is doing: the added time at a given
share of what the cores can give, and how long writing an event to the inbox takes.

The closed-loop load benchmark (bench/load.py) has each person wait for the answer before writing again, and with
Claude answering in a fixed time everyone's messages come back in waves; here arrivals are independent, so the
figures say what a steady stream costs. A message whose person still has one being answered waits its turn (one
turn per person): those are counted apart, and "added" is measured over the others.

A steady stream is measured on people Rapport has already answered (`greet` first: their person model, memory
index and conversation are loaded, as they are minutes after a restart); a stream of people it has not seen since
it started costs more on the event loop and on PostgreSQL, and is measured apart (the cold run).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from typing import Any

from bench.load import _loop_lag
from bench.platform import PLATFORM, ask
from bench.procs import cpu_seconds, per_answer
from bench.stats import percentile, summary_ms
from bench.workload import message_for
from bot.wiring import Services
from core.entries import Answer, Incoming
from core.events import UserRef
from storage.models import Interaction

__all__ = ["greet", "measure_open_loop"]


def _people(tag: str, people: int) -> list[UserRef]:
    return [UserRef(platform=PLATFORM, user_id=f"{tag}-p{i}") for i in range(people)]


async def greet(services: Services, *, people: int, tag: str, rate: float) -> float:
    """One message from each of the `people` of `tag`, `rate` a second, every answer awaited and stored: the
    seconds it took."""
    begun = time.perf_counter()

    async def one(user: UserRef, at: float) -> None:
        await asyncio.sleep(at)
        answer = await asyncio.wait_for(ask(services, message_for(user, -1)), 120)
        if not answer.ok:
            raise RuntimeError(f"{user.key} was not answered: {answer!r}")

    async with asyncio.TaskGroup() as group:  # one failure stops the rest: no greeting runs into a measured run
        for i, user in enumerate(_people(tag, people)):
            group.create_task(one(user, i / rate))
    # Their exchanges stored too, so that a run counts only its own.
    if not await services.assistant.drain(300):
        raise RuntimeError("the greetings' exchanges were not all stored in 300 s")
    return round(time.perf_counter() - begun, 1)


async def measure_open_loop(
    services: Services, *, rate: float, seconds: float, claude_latency: float, people: int, tag: str, seed: int = 7
) -> dict[str, Any]:
    """`rate` messages a second for `seconds`, each from one of `people` picked at random."""
    rng = random.Random(seed)
    users = _people(tag, people)
    stored_before = await _stored(tag)
    busy: dict[str, int] = {}
    added: list[float] = []
    queued_behind: list[float] = []
    accepts: list[float] = []
    failed = 0
    lag: list[float] = []
    stop = asyncio.Event()
    lag_task = asyncio.create_task(_loop_lag(lag, stop))
    tasks: set[asyncio.Task[None]] = set()

    async def one(user: UserRef, index: int) -> None:
        nonlocal failed
        waiting = busy.get(user.key, 0) > 0
        busy[user.key] = busy.get(user.key, 0) + 1
        key = f"{PLATFORM}:message:{uuid.uuid4().hex}"
        outcome = services.assistant.outcomes.expect(key)
        started = time.perf_counter()
        try:
            await services.turns.accept(Incoming(key=key, event=message_for(user, index, private=index % 3 != 0)))
            accepts.append(time.perf_counter() - started)
            answer = await outcome
        finally:
            busy[user.key] -= 1
        if not isinstance(answer, Answer) or not answer.ok:
            failed += 1
            return
        took = max(time.perf_counter() - started - claude_latency, 0.0)
        (queued_behind if waiting else added).append(took)

    cpu_before = cpu_seconds()
    begun = time.perf_counter()
    sent = 0
    next_at = begun
    while next_at < begun + seconds:
        next_at += rng.expovariate(rate)
        await asyncio.sleep(max(next_at - time.perf_counter(), 0))
        user = rng.choice(users)
        task = asyncio.create_task(one(user, sent))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - begun
    answered = len(added) + len(queued_behind)
    cpu = per_answer(cpu_before, cpu_seconds(), answered, os.cpu_count() or 1)
    stop.set()
    await lag_task
    if not await services.assistant.drain(300):  # what it stored is counted below, and nothing leaks into the next
        raise RuntimeError("the run's exchanges were not all stored in 300 s")
    stored = await _stored(tag) - stored_before
    return {
        "rate": rate,
        "people": people,
        "seconds": round(elapsed, 1),
        "messages_sent": sent,
        "answers": answered,
        "failed": failed,
        "answers_per_second": round(answered / elapsed, 1),
        "added_ms": summary_ms(added),
        "behind_their_own_ms": summary_ms(queued_behind),
        "accept_ms": summary_ms(accepts),
        "loop_lag_ms": {"p99": round(percentile(lag, 99) * 1000, 2), "max": round(max(lag, default=0) * 1000, 2)},
        "interactions_stored": stored,
        "cpu_ms_per_answer": cpu,
    }


async def _stored(tag: str) -> int:
    return await Interaction.filter(user_key__startswith=f"{PLATFORM}:{tag}-").count()
