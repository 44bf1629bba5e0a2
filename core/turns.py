"""One turn per person: each person's entries in arrival order, one at a time, by whichever process holds that
person's turn.

The turn is a lease in the inbox (owner and expiry), renewed while this process works and handed back when the
person has nothing more waiting; a process that stops without handing it back loses it when it lapses, and the
sweeper of any process takes the person's entries over. It is the only thing that orders a person's events:
adapters hold no locks, and a reaction waits behind the reply it is about, because both are the same person's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from core.background import every, stop_tasks
from core.entries import Entry, Incoming
from core.ports import Accepted, Inbox
from core.tracing import traced

Screen = Callable[[Incoming], Awaitable[Incoming | None]]

__all__ = ["Outcomes", "Turns"]

log = logging.getLogger(__name__)

KEEP_FOR = 8 * 86_400.0  # seconds done entries stay: redeliveries come within minutes, threads are followed a week
PRUNE_EVERY = 3_600.0


class Outcomes:
    """What this process is waiting to see finished, by entry key (the console waits for its reply to be
    printed; feedback counts once its job is done)."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[object]] = {}

    def expect(self, key: str) -> asyncio.Future[object]:
        """A future for the entry `key`: its result is the Answer (a message), whether it counted (a reaction),
        or the note sent (a forget). Expect it before accepting the entry."""
        future = self._waiting.get(key)
        if future is None or future.done():
            future = self._waiting[key] = asyncio.get_running_loop().create_future()
        return future

    def settle(self, key: str, result: object = None) -> None:
        future = self._waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(result)


class Turns:
    def __init__(
        self,
        *,
        inbox: Inbox,
        handle: Callable[[Entry], Awaitable[bool]],
        owner: str,
        lease: float = 20.0,
        sweep_every: float = 2.0,
        screen: Screen | None = None,
    ) -> None:
        self._inbox = inbox
        self._screen = screen
        self._handle = handle
        self._owner = owner
        self._lease = lease
        self._sweep_every = sweep_every
        self._serving: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        # The turns this process holds, each with the number of its taking: a renewal answered after the turn
        # was handed back and taken again is about the earlier taking, not this one.
        self._held: dict[str, int] = {}
        self._takings = 0
        self._lost: set[str] = set()
        self._closing = False
        self._stopped = asyncio.Event()
        self._chores: list[asyncio.Task[None]] = []

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def serving(self) -> int:
        """People whose turn this process is working through."""
        return len(self._serving)

    async def accept(self, incoming: Incoming) -> Accepted:
        """Screen the event (the operators' policy: core.gate), write down what may be kept (durable when this
        returns), then let its person's turn take it."""
        if self._screen is not None:
            screened = await self._screen(incoming)
            if screened is None:
                return Accepted(fresh=False, refused=True)
            incoming = screened
        accepted = await self._inbox.accept(incoming)
        if accepted.fresh:
            self.wake(incoming.person)
        return accepted

    async def knows_thread(self, platform: str, place: str, thread: str) -> bool:
        """Whether Rapport took part in this thread (adapters follow such threads without a mention)."""
        return await self._inbox.knows_thread(platform, place, thread)

    def wake(self, person: str) -> None:
        """Make sure someone works through `person`'s entries: this process, unless another holds the turn."""
        if self._closing:
            return
        if person in self._serving:
            self._again.add(person)  # the loop may be handing the turn back this very moment: take it again
            return
        self._serving[person] = asyncio.create_task(self._serve(person), name=f"turn-{person}")

    async def _serve(self, person: str) -> None:
        try:
            with traced(person):
                while not self._closing:
                    self._again.discard(person)
                    held, first = await self._inbox.open_turn(person, self._owner, self._lease)
                    if not held:
                        return  # another process holds it: it sees the new entry before it hands the turn back
                    self._takings += 1
                    self._held[person] = self._takings
                    self._lost.discard(person)
                    await self._work_through(person, first)
                    self._held.pop(person, None)
                    if person not in self._again:
                        return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the entries stay in the inbox; the sweeper brings the person back
            log.exception("the turn of %s stopped on an error; its entries wait for the next sweep", person)
        finally:
            self._held.pop(person, None)
            if self._serving.get(person) is asyncio.current_task():
                del self._serving[person]

    async def _work_through(self, person: str, entry: Entry | None) -> None:
        """The person's entries one by one, until the turn is handed back (by an entry's last step, or here when
        nothing more waits)."""
        idle = 0
        while not self._closing and person not in self._lost:
            if entry is None:
                if await self._inbox.release(person, self._owner):
                    return
                idle += 1  # entries arrived meanwhile, or the lease is no longer ours
                if idle > 2:
                    return
            else:
                idle = 0
                try:
                    if await self._handle(entry):
                        return
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - it stays where it got to and is taken again, a little later
                    pause = min(2.0**entry.taken, 30.0)
                    log.exception("%s failed (taken %d times); trying again in %.0fs", entry.key, entry.taken, pause)
                    await asyncio.sleep(pause)
            if self._closing:
                return
            entry = await self._inbox.next_entry(person)

    # --- chores: the sweeper and the lease renewer ----------------------------------------------------

    def start(self) -> None:
        """Resume what is waiting (after a restart, or left by a process that stopped), then keep sweeping."""
        self._closing = False
        self._stopped.clear()
        self._chores = [
            asyncio.create_task(every(self._sweep_every, self.sweep, self._stopped), name="turns-sweep"),
            asyncio.create_task(every(self._lease / 3, self._renew, self._stopped), name="turns-renew"),
            asyncio.create_task(every(PRUNE_EVERY, self._prune, self._stopped), name="inbox-prune"),
        ]

    async def sweep(self) -> None:
        for person in await self._inbox.waiting(200):
            self.wake(person)

    async def _prune(self) -> None:
        for _ in range(100):  # a backlog goes in chunks, each its own short statement
            if await self._inbox.prune(KEEP_FOR) < 5_000:
                return
            await asyncio.sleep(0.1)

    async def _renew(self) -> None:
        held = dict(self._held)
        if not held:
            return
        kept = await self._inbox.renew(sorted(held), self._owner, self._lease)
        for person in held.keys() - kept:
            if self._held.get(person) == held[person]:  # still the same taking: it did lapse
                log.warning("the turn of %s lapsed while this process worked on it; another takes over", person)
                self._lost.add(person)

    # --- shutdown ----------------------------------------------------------------------------------------

    async def stop_taking(self) -> None:
        """Shutdown, first step: turns finish the entry they are on and take no other."""
        self._closing = True

    async def drain(self, timeout: float) -> bool:
        """Shutdown, second step: wait up to `timeout` seconds for the entries under way."""
        running = list(self._serving.values())
        if running:
            await asyncio.wait(running, timeout=timeout)
        return not self._serving

    async def close(self) -> None:
        """Shutdown, last step: stop what is still running (its entries stay in the inbox, where they got to) and
        hand every lease back, so that the next process takes them over at once."""
        self._closing = True
        self._stopped.set()
        await stop_tasks([*self._chores, *self._serving.values()])
        self._chores = []
        try:
            await asyncio.wait_for(self._inbox.release_all(self._owner), 5)
        except Exception as exc:  # noqa: BLE001 - the leases lapse by themselves
            log.warning("could not hand the turns back (%s); they lapse within %.0fs", exc, self._lease)
