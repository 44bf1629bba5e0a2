"""Peak memory of a worker that talks to 1,000 people of 1,000 memories each (issue 17's RSS target):

    python -m bench.rss [--people 1000] [--memories 1000]     (or python -m bench --only rss)

The memories (synthetic vectors, as the context benchmark seeds them) are written to a scratch SQLite database
first, by this process. Then a fresh process builds the embedded worker's services on that database, with the fake
Claude, and each person sends one message, so that every person's index is read once: it reports that process's
resident memory after start and at its peak (VmHWM), what the memory index holds, and each message's time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.workload import seed_memories
from core.recall import document_of, terms_of
from storage.database import Database
from storage.memory_store import MemoryRows

ROOT = Path(__file__).resolve().parent.parent

_SERVE = """
import asyncio, json, sys, time
from bench.platform import ask
from bench.stack import fake_claude, stack_on
from bench.stats import summary_ms
from bench.workload import message_for
from core.events import UserRef

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) // 1024

async def main(url, people):
    async with fake_claude(0.0) as claude, stack_on(claude, postgres=False, DATABASE_URL=url) as services:
        started = rss("VmRSS:")
        times = []
        for person in range(people):
            user = UserRef(platform="bench", user_id=f"rss{person}")
            began = time.perf_counter()
            await ask(services, message_for(user, 0))
            times.append(time.perf_counter() - began)
        await services.assistant.drain(60)
        print("RESULT " + json.dumps({
            "rss_after_start_mib": started, "rss_now_mib": rss("VmRSS:"), "rss_peak_mib": rss("VmHWM:"),
            "index_held_mib": round(services.index.held_bytes / 2**20, 1),
            "people_held": len(list(services.index._people)), "message_ms": summary_ms(times),
        }))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def seed(url: str, people: int, memories: int) -> float:
    database = Database(url)
    await database.open()
    rows = MemoryRows(database)
    started = time.perf_counter()
    try:
        for person in range(people):
            items, vectors = seed_memories(f"bench:rss{person}", memories, seed=person)
            await rows.add(items, [Counter(terms_of(document_of(m))) for m in items], vectors)
    finally:
        await database.close()
    return time.perf_counter() - started


async def measure_rss(*, people: int, memories: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rapport-rss-") as scratch:
        url = f"sqlite://{scratch}/rss.sqlite3"
        seeded = await seed(url, people, memories)
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", _SERVE, url, str(people)],
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
            capture_output=True,
            text=True,
            timeout=3_600,
            check=False,
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the serving process failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    result: dict[str, Any] = {"people": people, "memories_each": memories, "seed_seconds": round(seeded, 1)}
    result.update(json.loads(lines[-1].removeprefix("RESULT ")))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rss", description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000)
    parser.add_argument("--memories", type=int, default=1_000)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure_rss(people=args.people, memories=args.memories)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
