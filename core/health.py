"""Which dependencies are down right now: one log line when each goes down and one when it is back, never a
traceback per message, and what /ready and the metrics report."""

from __future__ import annotations

import logging
import time

__all__ = ["Health"]

log = logging.getLogger(__name__)


class Health:
    """Parts by name ("database", "short-term memory", "vectors", ...) with why and since when they are down."""

    def __init__(self) -> None:
        self._down: dict[str, tuple[str, float]] = {}

    def is_down(self, part: str) -> bool:
        return part in self._down

    def down(self, part: str, why: str) -> None:
        if part not in self._down:
            log.warning("%s is unavailable (%s); going on without it", part, why)
            self._down[part] = (why, time.monotonic())

    def up(self, part: str) -> None:
        was = self._down.pop(part, None)
        if was is not None:
            log.warning("%s is back after %.1fs", part, time.monotonic() - was[1])

    def problems(self) -> dict[str, str]:
        """Part -> why, for what is down now."""
        return {part: why for part, (why, _) in sorted(self._down.items())}
