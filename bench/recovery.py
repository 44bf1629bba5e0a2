"""How long a restart takes to finish what was acknowledged: a real worker in Slack HTTP mode (the fake Web API and
a fake Claude), `events` messages acknowledged and being answered, the worker stopped (SIGKILL, or SIGTERM as a
deploy does), a new one started: the time from starting it to the last of those messages answered."""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from bench.stack import PG_ADMIN_URL, REDIS_URL
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.slack_api import FakeSlackAPI
from tests.slackside import deliver, dm, slack_env
from tests.workers import worker

__all__ = ["measure_recovery"]


def _answered(api: FakeSlackAPI, people: int) -> int:
    return sum(1 for i in range(people) if [m.get("text") for m in api.shown(f"D{i}")] == [f"Noted: question {i}"])


async def _one(how: signal.Signals, events: int, lease: float, claude_latency: float) -> dict[str, Any]:
    claude, slack = FakeAnthropic(latency=30.0), FakeSlackAPI()
    await claude.start()
    await slack.start()
    name, prefix = f"rapport_bench_{uuid.uuid4().hex[:10]}", f"rapport-bench-{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    env = slack_env(claude, slack) | {
        "DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}",
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": prefix,
        "TURN_LEASE_SECONDS": str(lease),
        "CLAUDE_MAX_RETRIES": "0",
        "SHUTDOWN_TIMEOUT": "3",
        "LOG_LEVEL": "WARNING",
    }
    try:
        with tempfile.TemporaryDirectory(prefix="rapport-recovery-") as scratch:
            async with worker(Path(scratch), **env) as first:
                async with aiohttp.ClientSession() as http:
                    for i in range(events):
                        assert await deliver(http, first.port, dm(i, f"question {i}")) == 200
                while claude.in_flight < events:  # noqa: ASYNC110 - a counter of the fake's, polled
                    await asyncio.sleep(0.05)
                first.process.send_signal(how)
                await first.exited(60)
            claude.latency = claude_latency
            started = time.monotonic()
            async with worker(Path(scratch), **env):
                ready = time.monotonic() - started
                await slack.wait_for(lambda: _answered(slack, events) == events, timeout=600)
                done = time.monotonic() - started
    finally:
        await claude.stop()
        await slack.stop()
        admin = await asyncpg.connect(PG_ADMIN_URL)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        redis = Redis.from_url(REDIS_URL)
        keys = [key async for key in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    return {
        "stopped_by": how.name,
        "events": events,
        "lease_seconds": lease,
        "claude_latency_s": claude_latency,
        "ready_s": round(ready, 2),
        "last_answered_s": round(done, 2),
    }


async def measure_recovery(*, events: int, lease: float, claude_latency: float) -> dict[str, Any]:
    return {
        "runs": [await _one(how, events, lease, claude_latency) for how in (signal.SIGKILL, signal.SIGTERM)],
    }
