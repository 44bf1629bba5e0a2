"""The real stack for a benchmark run: a fresh PostgreSQL database, a Redis prefix, Chroma, the real model,
and a fake Claude with a set latency in a process of its own (so its CPU is not counted as ours)."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from bench.platform import PLATFORM, BenchDelivery
from bot.config import Settings
from bot.wiring import Services, build_services
from core.ports import Telemetry

__all__ = ["fake_claude", "real_stack", "served_stores", "stack_on"]

PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def fake_claude(latency: float, answer_chars: int = 0) -> AsyncIterator[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.anthropic_api",
        str(latency),
        str(answer_chars),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        url = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().strip()
        yield url
    finally:
        process.terminate()
        await process.wait()


@asynccontextmanager
async def served_stores(postgres: bool = True) -> AsyncIterator[dict[str, str]]:
    """The settings of a fresh PostgreSQL database and Redis prefix, both dropped after (none: the embedded
    defaults)."""
    if not postgres:
        yield {}
        return
    name = f"rapport_bench_{uuid.uuid4().hex[:10]}"
    prefix = f"rapport-bench-{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield {
            "DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}",
            "REDIS_URL": REDIS_URL,
            "REDIS_PREFIX": prefix,
        }
    finally:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        redis = Redis.from_url(REDIS_URL)
        keys = [key async for key in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


@asynccontextmanager
async def stack_on(
    claude_url: str,
    *,
    model: object = None,
    postgres: bool = True,
    telemetry: Telemetry | None = None,
    **env: Any,
) -> AsyncIterator[Services]:
    """Started services against the Claude at `claude_url`, on PostgreSQL + Redis + embedded Chroma (or all
    embedded with postgres=False); `env` adds or overrides settings. Drained and closed after."""
    with tempfile.TemporaryDirectory(prefix="rapport-bench-") as scratch:
        async with served_stores(postgres) as served:
            values: dict[str, Any] = {
                "ANTHROPIC_API_KEY": "sk-bench",
                "ANTHROPIC_BASE_URL": claude_url,
                "CLAUDE_MAX_RETRIES": 0,
                "CHROMA_PATH": f"{scratch}/chroma",
                "DATABASE_URL": f"sqlite://{scratch}/bench.sqlite3",
                **served,
                **env,
            }
            settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
            services = await build_services(settings, model=model, telemetry=telemetry)
            services.assistant.deliver_with(PLATFORM, BenchDelivery)
            services.start()
            gc.freeze()  # as the worker does once it has started (bot/worker.py)
            try:
                yield services
            finally:
                await services.turns.stop_taking()
                await services.turns.drain(60)
                await services.assistant.drain(60)
                await services.close()


@asynccontextmanager
async def real_stack(
    *,
    latency: float,
    model: object = None,
    postgres: bool = True,
    telemetry: Telemetry | None = None,
    answer_chars: int = 0,
) -> AsyncIterator[Services]:
    """Services on PostgreSQL + Redis + embedded Chroma (or all embedded with postgres=False); `answer_chars` > 0
    makes Claude's answers about that long (the usual ones are a short echo)."""
    async with (
        fake_claude(latency, answer_chars) as url,
        stack_on(url, model=model, postgres=postgres, telemetry=telemetry) as services,
    ):
        yield services
