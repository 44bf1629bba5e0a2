"""Before and after, side by side in one run: the closed-loop load benchmark in a checkout of an earlier commit
and in this one, taking turns, so that the machine's drift within the run falls on both alike."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["measure_compare"]

ROOT = Path(__file__).resolve().parent.parent
# Run in either checkout: the load benchmark's entry points are the same in both.
_LOAD = """
import asyncio, json, sys
from bench.load import measure_load
from bench.stack import real_stack

async def main(people, seconds):
    async with real_stack(latency=1.0) as services:
        result = await measure_load(services, people=people, seconds=seconds, claude_latency=1.0,
                                    tag=f"cmp{people}", warmup=5.0)
    print("RESULT " + json.dumps(result))

if __name__ == "__main__":
    try:  # the loop the worker of that checkout runs on (bot/loop.py; before it, asyncio's own)
        from bot.loop import run
    except ImportError:
        run = asyncio.run
    run(main(int(sys.argv[1]), float(sys.argv[2])))
"""


def _load(root: Path, people: int, seconds: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _LOAD, str(people), str(seconds)],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return result


async def measure_compare(*, before: str, people: int, seconds: float, rounds: int) -> dict[str, Any]:
    """`rounds` runs of each, alternating; `before` is a git revision of this repository."""
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="rapport-before-") as scratch:
        checkout = Path(scratch) / "before"
        add = ["git", "worktree", "add", "--detach", str(checkout), before]
        await asyncio.to_thread(subprocess.run, add, cwd=ROOT, check=True, capture_output=True)
        try:
            for _ in range(rounds):
                for side, root in (("before", checkout), ("after", ROOT)):
                    runs[side].append(await asyncio.to_thread(_load, root, people, seconds))
        finally:
            remove = ["git", "worktree", "remove", "--force", str(checkout)]
            await asyncio.to_thread(subprocess.run, remove, cwd=ROOT, capture_output=True)
    return {"before": before, "people": people, "seconds": seconds, "runs": runs}
