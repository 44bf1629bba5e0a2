"""Real worker processes for tests: `python -m bot` started with given settings, ready before it is used."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def worker(cwd: Path, **env: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """`python -m bot` with these settings; yields once /ready answers 200."""
    port = free_port()
    await asyncio.to_thread(cwd.mkdir, parents=True, exist_ok=True)
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "REDIS_", "CHROMA_", "SLACK_", "DISCORD_"))
    }
    environment |= {"PORT": str(port), "PYTHONPATH": str(ROOT), "ANTHROPIC_API_KEY": "sk-test", **env}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=cwd,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/ready") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                if process.returncode is not None:
                    raise AssertionError((await process.stdout.read()).decode())  # type: ignore[union-attr]
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("worker never became ready")
        yield process, port
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
