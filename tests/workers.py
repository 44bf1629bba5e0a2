"""Real worker processes for tests: `python -m bot` started with given settings, ready before it is used."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Running:
    """A worker process, its HTTP port, and everything it has printed so far (read as it comes, so that a
    chatty worker never blocks on a full pipe)."""

    process: asyncio.subprocess.Process
    port: int
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    def __iter__(self) -> Iterator[object]:  # `async with worker(...) as (process, port)`
        return iter((self.process, self.port))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def exited(self, timeout: float) -> int:
        """Wait for the process to exit (and its output to end); its exit code."""
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self.reader is not None:
            await asyncio.wait_for(self.reader, 10)
        return code


async def _read(running: Running) -> None:
    stream = running.process.stdout
    assert stream is not None
    while line := await stream.readline():
        running.lines.append(line.decode(errors="replace"))


@asynccontextmanager
async def worker(cwd: Path, **env: str) -> AsyncIterator[Running]:
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
    running = Running(process=process, port=port)
    running.reader = asyncio.create_task(_read(running))
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
                    await asyncio.wait_for(running.reader, 10)
                    raise AssertionError(running.output)
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("worker never became ready:\n" + running.output)
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        running.reader.cancel()
