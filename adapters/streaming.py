"""The pace of a reply shown as it grows: the first text at once, then at most one edit a second (what the
platforms' rate limits allow for one message, and what people read comfortably), the last one exact."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["EDIT_EVERY", "Paced", "with_closed_fences"]

log = logging.getLogger(__name__)

EDIT_EVERY = 1.0  # seconds between two edits of a streamed reply
FENCE = "```"


def with_closed_fences(text: str) -> str:
    """A partial reply as it may be shown: a code block still open is closed (the next edit reopens it)."""
    return text + "\n" + FENCE if text.count(FENCE) % 2 else text


class Paced:
    """Calls `render` with the latest text offered: the first at once, then at most once every `interval`
    seconds. A failed render is logged; the next one (or the caller's final one) catches up."""

    def __init__(self, render: Callable[[str], Awaitable[None]], *, interval: float = EDIT_EVERY) -> None:
        self._render = render
        self._interval = interval
        self._latest = ""
        self._rendered = ""
        self._wake = asyncio.Event()
        self._rendering = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.renders = 0

    @property
    def latest(self) -> str:
        """The text last offered: the reply as far as it has arrived."""
        return self._latest

    def offer(self, text: str) -> None:
        if self._closed:
            return
        self._latest = text
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="paced-render")
        self._wake.set()

    async def _run(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            text = self._latest
            if self._closed or text == self._rendered or not text.strip():
                continue
            async with self._rendering:
                if self._closed:
                    return
                try:
                    await self._render(text)
                    self.renders += 1
                except Exception as exc:  # noqa: BLE001 - the next edit, or the final one, catches up
                    log.warning("an edit of a streamed reply failed: %s", exc)
                self._rendered = text
            await asyncio.sleep(self._interval)
            if self._latest != self._rendered:
                self._wake.set()

    async def close(self) -> None:
        """Stop: waits for a render under way (so the caller's final one comes after it), renders nothing more."""
        self._closed = True
        if self._task is None:
            return
        async with self._rendering:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
