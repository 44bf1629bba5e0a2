"""The real process: `python -m bot` serves HTTP, reports its set-up, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp

from tests.fakes.anthropic_api import FakeAnthropic
from tests.workers import worker


async def test_worker_starts_on_embedded_defaults_and_exits_zero_on_sigterm(
    tmp_path: Path, fake_claude: FakeAnthropic
) -> None:
    secret = "sk-ant-process-test-secret"
    env = {"ANTHROPIC_API_KEY": secret, "ANTHROPIC_BASE_URL": fake_claude.url, "LOG_LEVEL": "DEBUG"}
    async with worker(tmp_path, **env) as running:
        process, port = running.process, running.port
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/ready") as response:
                assert await response.json() == {"status": "ready", "adapters": []}
            async with http.get(f"http://127.0.0.1:{port}/health") as response:
                assert response.status == 200
        process.send_signal(signal.SIGTERM)
        code = await running.exited(30)
        output = running.output
    assert code == 0, output
    assert "adapters none" in output
    assert "storage: database sqlite://data/rapport.sqlite3; short-term in-process; long-term in the database" in output
    assert "stopped" in output
    assert secret not in output
    assert (tmp_path / "data" / "rapport.sqlite3").exists()
    assert not (tmp_path / "data" / "chroma").exists(), "the embedded default needs no Chroma store"


def _children(pid: int) -> list[int]:
    """Every process below `pid` (from /proc: its children, theirs, ...)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            children = (task / "children").read_text().split()
            found += [int(c) for c in children]
            pending += [int(c) for c in children]
    return found


async def test_the_embedded_worker_runs_no_helper_process(tmp_path: Path, fake_claude: FakeAnthropic) -> None:
    """Nothing to outlive a killed worker: the vectors live in the database, so no Chroma process is started
    (nor multiprocessing's resource tracker with it)."""
    async with worker(tmp_path, ANTHROPIC_BASE_URL=fake_claude.url) as (process, _):
        helpers = _children(process.pid)
        for pid in helpers:  # so that a failure here leaves nothing running (they hold the worker's stdout)
            os.kill(pid, signal.SIGKILL)
        assert helpers == []
