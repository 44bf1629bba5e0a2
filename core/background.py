"""Work that finishes after the reply is sent, tracked so that shutdown and forget can wait for it."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["BackgroundWork", "KeyedLocks", "retrying"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class BackgroundWork:
    """A set of tasks, each tagged with the person it concerns."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[None], str] = {}

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def spawn(self, key: str, work: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks[task] = key
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def settle(self, key: str) -> None:
        """Wait until nothing is left running for `key`."""
        mine = [task for task, owner in self._tasks.items() if owner == key]
        if mine:
            await asyncio.gather(*mine, return_exceptions=True)

    async def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every task (and any they spawn); True if all finished."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.wait(list(self._tasks), timeout=remaining)
        return True


class KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock


async def retrying(what: str, action: Callable[[], Awaitable[T]], *, delays: tuple[float, ...] = (0.2, 1.0, 3.0)) -> T:
    """Run `action`, retrying after each delay; the last failure propagates."""
    for delay in delays:
        try:
            return await action()
        except Exception as exc:  # noqa: BLE001 - any store failure is worth another try
            log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
    return await action()
