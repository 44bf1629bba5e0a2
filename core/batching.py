"""One call at a time, with whatever was asked for meanwhile: a batcher that adds no wait of its own.

When nothing is under way, a request goes out at once, alone; requests made while one is under way wait for it
and go out together as the next call. Under load, N requests cost a few calls instead of N round trips, and the
calls keep the order the requests were made in (the inbox relies on that for a person's arrival order).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """`run` takes a list of items and returns one result per item, in order; an exception fails its batch."""

    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_batch: int = 64) -> None:
        self._run = run
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._busy = False
        self._worker: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        if self._busy:  # a call is under way: this one waits for it, and goes with the next
            future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
            self._pending.append((item, future))
            return await future
        # Idle: this call goes out at once, from the caller's own task (no hop through a worker's).
        self._busy = True
        try:
            [result] = await self._run([item])
        finally:
            self._busy = False
            self._drain_soon()
        return result

    def _drain_soon(self) -> None:
        if self._pending and (self._worker is None or self._worker.done()):
            self._busy = True
            self._worker = asyncio.get_running_loop().create_task(self._drain(), name="batcher")

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                live = [(item, future) for item, future in batch if not future.done()]
                if not live:
                    continue
                try:
                    results = await self._run([item for item, _ in live])
                except asyncio.CancelledError:
                    for _, future in live:
                        future.cancel()
                    raise
                except Exception as exc:  # noqa: BLE001 - every caller in the batch learns why
                    for _, future in live:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(live, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._busy = False
