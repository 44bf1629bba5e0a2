"""What the per-process caches of long-term memory share: people in least-recently-used order under a cap on
their total size, and first loads of long histories that run behind the answers."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from core.background import stop_tasks

__all__ = ["AudienceCodes", "Held", "People", "allowed_mask"]

log = logging.getLogger(__name__)


class AudienceCodes:
    """One person's audiences (core.privacy codes) as small numbers, so that a cache keeps two bytes a memory."""

    def __init__(self) -> None:
        self._numbers: dict[str, int] = {}

    def number(self, code: str) -> int:
        return self._numbers.setdefault(code, len(self._numbers))

    def allowed(self, codes: Sequence[str] | None) -> list[int] | None:
        """The numbers of these audiences (None: every audience)."""
        if codes is None:
            return None
        return [self._numbers[code] for code in codes if code in self._numbers]


def allowed_mask(numbers: np.ndarray, allowed: list[int] | None) -> np.ndarray:
    """Which of a person's memories these audiences may see."""
    if allowed is None:
        return np.ones(len(numbers), dtype=bool)
    return np.isin(numbers, allowed)


class Held(Protocol):
    """One person's share of a cache."""

    counted: int  # of `size`, what the cache's total already includes

    @property
    def size(self) -> int: ...


P = TypeVar("P", bound=Held)


class People(Generic[P]):
    """People held, least recently used first, with a running total of their sizes (summing over everyone on
    each add cost ~2% of the event loop at 200 people) and the loads running behind."""

    def __init__(self, capacity: int, make: Callable[[], P]) -> None:
        self.capacity = capacity
        self.held = 0
        self.loading: dict[str, asyncio.Task[None]] = {}
        self._make = make
        self._people: OrderedDict[str, P] = OrderedDict()

    def __contains__(self, user_key: str) -> bool:
        return user_key in self._people

    def __iter__(self) -> Any:
        return iter(self._people)

    def get(self, user_key: str) -> P | None:
        return self._people.get(user_key)

    def touch(self, user_key: str) -> P:
        """This person's entry (a new, empty one if not held), now the most recently used."""
        person = self._people.get(user_key)
        if person is None:
            person = self._people[user_key] = self._make()
        self._people.move_to_end(user_key)
        return person

    def account(self, user_key: str, person: P) -> None:
        """Count what `person` gained since last counted (unless it was let go meanwhile)."""
        if self._people.get(user_key) is person:
            self.held += person.size - person.counted
            person.counted = person.size

    def drop(self, user_key: str) -> None:
        """Let this person go, and stop a load of theirs under way (it loads into the entry let go)."""
        person = self._people.pop(user_key, None)
        if person is not None:
            self.held -= person.counted
        loading = self.loading.get(user_key)
        if loading is not None and loading is not asyncio.current_task():
            del self.loading[user_key]
            loading.cancel()

    def evict(self, keep: str | None = None) -> None:
        """Let the least recently used go until the total fits (never `keep`, never the last one)."""
        while self.held > self.capacity and len(self._people) > 1:
            user_key = next(iter(self._people))
            if user_key == keep:
                self._people.move_to_end(user_key)
                continue
            self.drop(user_key)

    def load_behind(self, user_key: str, load: Callable[[], Coroutine[Any, Any, object]], what: str) -> None:
        """Run `load` as a task of its own unless one runs already; a failure lets the person go (the next
        search tries again)."""
        if user_key in self.loading:
            return

        async def run() -> None:
            try:
                await load()
            except Exception:  # noqa: BLE001 - the next search tries again; the slower path answers until then
                log.exception("loading the %s of %s failed", what, user_key)
                self.drop(user_key)
            finally:
                if self.loading.get(user_key) is asyncio.current_task():
                    del self.loading[user_key]

        self.loading[user_key] = asyncio.create_task(run(), name=f"load-{what}-{user_key}")

    def forget(self, user_key: str) -> None:
        loading = self.loading.pop(user_key, None)
        if loading is not None:
            loading.cancel()
        self.drop(user_key)

    async def close(self) -> None:
        """Stop the loads still running (before the stores they read close)."""
        await stop_tasks(list(self.loading.values()))
