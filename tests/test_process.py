"""The real process: `python -m bot` serves HTTP, reports its set-up, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from tests.fakes.anthropic_api import FakeAnthropic

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_worker_starts_on_embedded_defaults_and_exits_zero_on_sigterm(
    tmp_path: Path, fake_claude: FakeAnthropic
) -> None:
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "REDIS_", "CHROMA_", "DISCORD_", "SLACK_"))
    }
    env.update(
        ANTHROPIC_API_KEY="sk-ant-process-test-secret",
        ANTHROPIC_BASE_URL=fake_claude.url,
        PORT=str(port),
        LOG_LEVEL="DEBUG",
        PYTHONPATH=str(ROOT),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession() as http:
            ready = None
            for _ in range(600):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/ready") as response:
                        if response.status == 200:
                            ready = await response.json()
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            assert ready == {"status": "ready", "adapters": []}
            async with http.get(f"http://127.0.0.1:{port}/health") as response:
                assert response.status == 200
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stdout is not None
    output = (await process.stdout.read()).decode()
    assert code == 0, output
    assert "adapters none" in output
    assert (
        "storage: database sqlite://data/rapport.sqlite3; short-term in-process; long-term chroma at data/chroma"
        in output
    )
    assert "stopped" in output
    assert "sk-ant-process-test-secret" not in output
    assert (tmp_path / "data" / "rapport.sqlite3").exists() and (tmp_path / "data" / "chroma").is_dir()
