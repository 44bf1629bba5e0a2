"""What the process needs from every adapter."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Adapter"]


class Adapter(Protocol):
    name: str

    @property
    def connected(self) -> bool:
        """True while the platform connection is up (what /ready reports)."""
        ...

    @property
    def problem(self) -> str | None:
        """Why it is not connected, in words an operator can act on."""
        ...

    async def start(self) -> None: ...

    async def stop_taking(self) -> None:
        """Shutdown, first step: take no new events (answers under way go on and are still delivered)."""
        ...

    async def drain(self, timeout: float) -> bool:
        """Shutdown, second step: wait for the answers under way to be delivered; False if time ran out."""
        ...

    async def stop(self) -> None:
        """Shutdown, last step: close the platform connection."""
        ...
