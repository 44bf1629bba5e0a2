"""Work that finishes after the reply is sent, tracked so that shutdown and forget can wait for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

__all__ = ["BackgroundWork", "every", "stop_tasks"]

log = logging.getLogger(__name__)
T = TypeVar("T")


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], *, timeout: float = 5.0) -> None:
    """Cancel these tasks and wait for them, at most `timeout`: a task that swallows its cancellation (asyncio's
    wait_for can, when what it waits for finishes in the same moment) must not hold a shutdown forever."""
    live = [task for task in tasks if not task.done()]
    for task in live:
        task.cancel()
    if live:
        _, stuck = await asyncio.wait(live, timeout=timeout)
        for task in stuck:
            log.warning("%s did not stop within %.0fs; leaving it", task.get_name(), timeout)


async def every(seconds: float, chore: Callable[[], Awaitable[None]], stopped: asyncio.Event) -> None:
    """`chore` at once and then every `seconds`, until `stopped` is set (a failure is logged and the next round
    tries again); the pause ends as soon as it is set, and the loop checks it, cancelled or not."""
    while not stopped.is_set():
        try:
            await chore()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - tried again on the next round
            log.debug("%s failed: %s", getattr(chore, "__qualname__", "a chore"), exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), seconds)


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
