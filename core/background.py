"""Work that finishes after the reply is sent, tracked so that shutdown and forget can wait for it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["BackgroundWork"]

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
