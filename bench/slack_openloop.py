"""The open loop end to end through the Slack adapter: a real worker (`python -m bot`) in HTTP mode taking signed
Events API requests that arrive at random (Poisson), the fake Web API and the fake Claude in this process. Unlike
bench/openloop.py, which hands events to the core, this counts what the adapter costs too: the HTTP server, bolt's
signature check and parsing, users.info, the "Thinking…" placeholder and the stream's edits.

- added: from the request sent to the answer's whole text at the fake Web API, minus Claude's time, over messages
  whose person had none still being answered (those wait their turn: counted apart);
- ack: the HTTP response to the event, what Slack waits for (3 s at most);
- loop lag: the worker's own `rapport_event_loop_lag_seconds` (read from /metrics before and after), as the bucket
  its 99th percentile falls in;
- CPU per answer by part, from /proc: the worker's event-loop thread, its other threads, its Chroma process,
  PostgreSQL and Redis; the fakes and the load generator are this process, counted apart (they compete for the
  same two cores, so at the higher shares the figures are the worker's and its load's together).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.procs import cpu_seconds, per_answer
from bench.stack import served_stores
from bench.stats import summary_ms
from bot.loop import run as run_loop
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.slack_api import FakeSlackAPI
from tests.slackside import deliver, dm, slack_env
from tests.workers import worker

__all__ = ["measure_slack_open_loop", "measure_workers"]

_BUCKET = re.compile(r'^rapport_event_loop_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M)


@dataclass
class _Watched(FakeSlackAPI):
    """The fake Web API, noting when each expected answer's whole text arrives (a posted or edited message)."""

    waiting: dict[str, asyncio.Future[float]] = field(default_factory=dict)

    def _record(self, method: str, args: dict[str, Any], token: str) -> None:
        super()._record(method, args, token)
        if method in ("chat.update", "chat.postMessage"):
            future = self.waiting.pop(str(args.get("text")), None)
            if future is not None and not future.done():
                future.set_result(time.perf_counter())


async def _lag_buckets(http: aiohttp.ClientSession, port: int) -> dict[float, float]:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return {float("inf") if le == "+Inf" else float(le): float(n) for le, n in _BUCKET.findall(text)}


def _p99_bound(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The upper bound (ms) of the bucket the 99th percentile of the lag samples taken in between falls in."""
    counts = sorted((le, after.get(le, 0.0) - before.get(le, 0.0)) for le in after)
    total = counts[-1][1] if counts else 0.0
    if total <= 0:
        return None
    for le, cumulative in counts:
        if cumulative >= 0.99 * total:
            return round(le * 1000, 1) if le != float("inf") else float("inf")
    return None


def _cpu_of(pids: list[int]) -> dict[str, float] | None:
    """CPU seconds so far by role, the workers' own summed (the servers' are the machine's, the same from each)."""
    total: dict[str, float] = {}
    for pid in pids:
        reading = cpu_seconds(pid)
        if reading is None:
            return None
        for role, seconds in reading.items():
            total[role] = seconds if role in ("postgres", "redis") else total.get(role, 0.0) + seconds
    return total


async def _run(
    http: aiohttp.ClientSession,
    slack: _Watched,
    ports: list[int],
    pids: list[int],
    *,
    rate: float,
    seconds: float,
    people: int,
    claude_latency: float,
    start_at: int,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    busy: dict[int, int] = {}
    added: list[float] = []
    behind: list[float] = []
    acks: list[float] = []
    failed = 0

    async def one(person: int, n: int) -> None:
        nonlocal failed
        waiting = busy.get(person, 0) > 0
        busy[person] = busy.get(person, 0) + 1
        text = f"question {n}"
        done = slack.waiting[f"Noted: {text}"] = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        try:
            # One worker draws no port: its arrivals stay those of the seed as before there was a choice.
            port = rng.choice(ports) if len(ports) > 1 else ports[0]
            status = await deliver(http, port, dm(person, text))
            acks.append(time.perf_counter() - started)
            if status != 200:
                failed += 1
                return
            finished = await asyncio.wait_for(done, 120)
        except (TimeoutError, aiohttp.ClientError):
            failed += 1
            return
        finally:
            busy[person] -= 1
        (behind if waiting else added).append(max(finished - started - claude_latency, 0.0))

    lag_before = await _lag_buckets(http, ports[0])
    cpu_before = _cpu_of(pids)
    own_before = time.process_time()
    tasks: set[asyncio.Task[None]] = set()
    begun = next_at = time.perf_counter()
    sent = 0
    while next_at < begun + seconds:
        next_at += rng.expovariate(rate)
        await asyncio.sleep(max(next_at - time.perf_counter(), 0))
        task = asyncio.create_task(one(rng.randrange(people), start_at + sent))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - begun
    answered = len(added) + len(behind)
    cpu = per_answer(cpu_before, _cpu_of(pids), answered, os.cpu_count() or 1)
    own = (time.process_time() - own_before) * 1000 / max(answered, 1)
    lag_after = await _lag_buckets(http, ports[0])
    return {
        "rate": rate,
        "people": people,
        "seconds": round(elapsed, 1),
        "messages_sent": sent,
        "answers": answered,
        "failed": failed,
        "answers_per_second": round(answered / elapsed, 1),
        "added_ms": summary_ms(added),
        "behind_their_own_ms": summary_ms(behind),
        "ack_ms": summary_ms(acks),
        "loop_lag_p99_bucket_ms": _p99_bound(lag_before, lag_after),
        "cpu_ms_per_answer": cpu,
        # the load, the fake Web API and the fake Claude, on the same two cores: not Rapport's, but competing
        "benchmark_cpu_ms_per_answer": round(own, 2),
    }


_Workers = tuple[aiohttp.ClientSession, _Watched, list[int], list[int]]  # session, Web API, ports, pids


@asynccontextmanager
async def _workers(count: int, claude_latency: float) -> AsyncIterator[_Workers]:
    """`count` real workers on one fresh database and Redis prefix (replicas, as several processes of one
    deployment would be), the fake Claude and the fake Web API in this process."""
    claude, slack = FakeAnthropic(latency=claude_latency), _Watched()
    await claude.start()
    await slack.start()
    try:
        async with served_stores() as served, AsyncExitStack() as stack:
            env = slack_env(claude, slack) | served | {"LOG_LEVEL": "WARNING"}
            running = []
            for number in range(count):
                scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"rapport-slack-open-{number}-"))
                running.append(await stack.enter_async_context(worker(Path(scratch), **env)))
            http = await stack.enter_async_context(aiohttp.ClientSession())
            yield http, slack, [r.port for r in running], [r.process.pid for r in running]
    finally:
        await claude.stop()
        await slack.stop()


async def measure_slack_open_loop(
    *, shares: list[float], seconds: float, people: int, claude_latency: float, calibrate: float, calibrate_rate: float
) -> dict[str, Any]:
    """A calibration run at `calibrate_rate` messages a second measures the CPU an answer costs end to end (the
    ceiling is what the cores give at that cost); then a run at each share of that ceiling, on one worker."""
    async with _workers(1, claude_latency) as (http, slack, ports, pids):
        sent = 0

        async def run(rate: float, length: float, seed: int) -> dict[str, Any]:
            nonlocal sent
            result = await _run(
                http, slack, ports, pids, rate=rate, seconds=length, people=people,
                claude_latency=claude_latency, start_at=sent, seed=seed,
            )  # fmt: skip
            sent += result["messages_sent"]
            return result

        calibration = await run(calibrate_rate, calibrate, 1)
        cpu = calibration["cpu_ms_per_answer"] or {}
        ceiling = float(cpu.get("ceiling_answers_per_second") or calibration["answers_per_second"])
        runs = [
            await run(round(ceiling * share, 1), seconds, 2 + i) | {"share_of_ceiling": share}
            for i, share in enumerate(shares)
        ]
    return {
        "ceiling_answers_per_second": ceiling,
        "claude_latency_s": claude_latency,
        "calibration": calibration,
        "runs": runs,
    }


async def measure_workers(*, workers: int, rate: float, seconds: float, people: int, warmup: float) -> dict[str, Any]:
    """One fixed rate on `workers` workers sharing the database, each request to one of them at random (as a
    kernel spreading connections over processes would): what more than one process per machine would give."""
    async with _workers(workers, 1.0) as (http, slack, ports, pids):
        await _run(
            http, slack, ports, pids, rate=rate / 2, seconds=warmup, people=people, claude_latency=1.0,
            start_at=0, seed=1,
        )  # fmt: skip
        return await _run(
            http, slack, ports, pids, rate=rate, seconds=seconds, people=people, claude_latency=1.0,
            start_at=1_000_000, seed=2,
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slack_openloop", description=measure_workers.__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=60.0, help="messages a second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--people", type=int, default=2_000)
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds at half the rate first, not counted")
    args = parser.parse_args(argv)
    result = run_loop(
        measure_workers(
            workers=args.workers, rate=args.rate, seconds=args.seconds, people=args.people, warmup=args.warmup
        )
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
