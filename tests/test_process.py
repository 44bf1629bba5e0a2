"""The real process: `python -m bot` serves HTTP, reports its set-up, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from tests.fakes.anthropic_api import FakeAnthropic
from tests.workers import worker


async def test_worker_starts_on_embedded_defaults_and_exits_zero_on_sigterm(
    tmp_path: Path, fake_claude: FakeAnthropic
) -> None:
    secret = "sk-ant-process-test-secret"
    async with worker(tmp_path, ANTHROPIC_API_KEY=secret, ANTHROPIC_BASE_URL=fake_claude.url, LOG_LEVEL="DEBUG") as (
        process,
        port,
    ):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/ready") as response:
                assert await response.json() == {"status": "ready", "adapters": []}
            async with http.get(f"http://127.0.0.1:{port}/health") as response:
                assert response.status == 200
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
        output = (await process.stdout.read()).decode()  # type: ignore[union-attr]
    assert code == 0, output
    assert "adapters none" in output
    assert (
        "storage: database sqlite://data/rapport.sqlite3; short-term in-process; long-term chroma at data/chroma"
        in output
    )
    assert "stopped" in output
    assert secret not in output
    assert (tmp_path / "data" / "rapport.sqlite3").exists() and (tmp_path / "data" / "chroma").is_dir()
