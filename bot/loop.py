"""The event loop the processes run on: uvloop where it is installed (Linux and macOS), asyncio's own elsewhere.

uvloop (libuv, in C) does the loop's own work, the socket reads and writes and the timers, for less CPU than
asyncio's selector loop. Every answer is about a dozen round trips to PostgreSQL, Redis and Claude, so that work is a
good part of the event loop's thread: in the load benchmark at 200 people it took about 0.5 ms of CPU off each
answer's 6 ms there (three runs of each in turn; docs/benchmarks.md). asyncpg, aiohttp, discord.py and slack-bolt
all support it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main), on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - not on Windows
        return asyncio.run(main)
    return uvloop.run(main)
