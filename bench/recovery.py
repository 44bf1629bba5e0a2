"""How long a restart takes to finish what was acknowledged: a real worker in Slack HTTP mode (the fake Web API and
a fake Claude), `events` messages acknowledged and being answered, the worker stopped (SIGKILL, or SIGTERM as a
deploy does), a new one started: the time from starting it to the last of those messages answered."""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.stack import served_stores
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
    try:
        async with served_stores() as served:
            env = (
                slack_env(claude, slack)
                | served
                | {
                    "TURN_LEASE_SECONDS": str(lease),
                    "CLAUDE_MAX_RETRIES": "0",
                    "SHUTDOWN_TIMEOUT": "3",
                    "LOG_LEVEL": "WARNING",
                }
            )
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
