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

    async def stop(self) -> None:
        """Stop taking new events; answers already under way are the assistant's to finish."""
        ...
