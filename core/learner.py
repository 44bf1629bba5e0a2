"""The learning job: Claude keeps each person's model current, in the background, a batch of exchanges at a time.

An exchange is stored first (core.remember) and waits to be learned from. A person's waiting exchanges are learned
from when enough have gathered (a batch), or once they have been quiet a while; a quiet call is allowed once per
cooldown, so that someone writing a message every few minutes does not cost a call per message, while a burst
is learned from a minute after it ends. A learning call sees only the exchanges said before one audience, and
only the items readable there: what it writes can never carry a private place's words into a wider one. A call
that fails, times out or returns what does not validate changes nothing and is tried again later with a growing
pause (one log line per person until it works again); the exchanges stay waiting, so nothing is lost, and a
restart in the middle of a call finds them still waiting when the lease lapses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from core.background import every, stop_tasks
from core.feedback import preferences_from
from core.health import Health
from core.llm import DEFAULT_MEMORY_MODEL, ClaudeError
from core.person import EXTRACTION_TOOL, Plan, learning_request, parse_extraction, plan_changes
from core.ports import LanguageModel, LearningState, PersonModels, Telemetry
from core.privacy import readable_where

__all__ = [
    "LearningSettings",
    "PersonLearner",
    "day_of",
    "due",
    "quiet_for",
    "refresh_preferences",
    "retry_pause",
]

log = logging.getLogger(__name__)
PART = "learning"


@dataclass(frozen=True, slots=True, kw_only=True)
class LearningSettings:
    model: str = DEFAULT_MEMORY_MODEL
    batch: int = 6  # exchanges that make a call as soon as the person pauses (twice their pace, a minute at most)
    quiet: float = 60.0  # seconds without a new message after which what waits is learned from (at least)
    quiet_gaps: float = 3.0  # ... or this many of the person's own gaps between the messages waiting, if longer
    max_quiet: float = 1_800.0
    cooldown: float = 900.0  # seconds between two quiet calls for one person (a full batch needs no wait)
    max_exchanges: int = 20  # in one call (a backfill goes on in further calls)
    daily_tokens: int = 60_000  # per person and UTC day, input and output together
    max_tokens: int = 1_024  # of one call's answer
    deadline: float = 60.0  # of one call
    lease: float = 120.0  # longer than a call: a process that stops mid-call lets another take it then
    poll: float = 5.0
    concurrency: int = 2  # learning calls in flight per process
    max_failures: int = 5  # in a row on the same exchanges, after which those are given up
    items_shown: int = 150  # of the current model, to the learning call
    enabled: bool = True


def due(state: LearningState, now: float, settings: LearningSettings) -> str | None:
    """Why the person's waiting exchanges are to be learned from now ("batch", "quiet"), or None."""
    if state.paused or state.pending <= 0 or state.held_until > now or state.retry_at > now:
        return None
    if state.day == day_of(now) and state.tokens_today >= settings.daily_tokens:
        return None  # the day's cap: the rest waits for tomorrow (UTC)
    if state.pending >= settings.max_exchanges:
        return "batch"
    if state.pending >= settings.batch and now - state.newest >= min(settings.quiet, 2 * _gap(state)):
        return "batch"  # a batch has gathered and they paused: the rest of a burst is not left for another call
    if now - state.newest >= quiet_for(state, settings) and now - state.last_quiet_call >= settings.cooldown:
        return "quiet"
    return None


def quiet_for(state: LearningState, settings: LearningSettings) -> float:
    """How long a silence ends a conversation for this person: a minute after a burst; for someone who writes a
    message every few minutes, a few of their own gaps (so that each of their messages is not a conversation's
    end, and a call each)."""
    gap = _gap(state)
    if gap <= 0:
        return settings.quiet
    return min(max(settings.quiet, settings.quiet_gaps * gap), max(settings.max_quiet, settings.quiet))


async def refresh_preferences(store: PersonModels, user_key: str) -> None:
    """The preferences the person's reactions show, derived again: after each reaction, and after each learning
    call (so that old evidence fades even when no new reaction comes)."""
    now = datetime.now(UTC)
    await store.refresh_feedback_items(user_key, lambda reactions: preferences_from(user_key, reactions, now=now))


def retry_pause(failures: int) -> float:
    """Seconds before the next try after this many failures in a row: a minute, doubling, an hour at most."""
    return float(min(60.0 * 2.0 ** max(failures - 1, 0), 3_600.0))


def _gap(state: LearningState) -> float:
    """The person's own pace: the mean time between the messages waiting (and the last one learned from); 0 when
    there is nothing to tell it by."""
    if state.last_seen > 0:
        return max(state.newest - state.last_seen, 0.0) / max(state.pending, 1)
    if state.pending >= 2 and state.oldest > 0:
        return max(state.newest - state.oldest, 0.0) / (state.pending - 1)
    return 0.0


def day_of(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


# (person, audience code of what was read, model, input tokens, output tokens): counts a call's spending.
Charge = Callable[[str, str, str, int, int], Awaitable[None]]
# (person, audience code): seconds until the operators' budgets let them spend again (0: now).
Budget = Callable[[str, str], Awaitable[float]]


class PersonLearner:
    """Finds the people due for learning now and then (any replica: a lease keeps it to one) and learns."""

    def __init__(
        self,
        *,
        store: PersonModels,
        llm: LanguageModel,
        owner: str,
        settings: LearningSettings | None = None,
        health: Health | None = None,
        telemetry: Telemetry | None = None,
        charge: Charge | None = None,
        budget: Budget | None = None,
        changed: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._changed = changed
        self._charge = charge
        self._budget = budget
        self._llm = llm
        self._owner = owner
        self.settings = settings or LearningSettings()
        self._health = health or Health()
        self._telemetry = telemetry
        self._running: dict[str, asyncio.Task[bool]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._failing: set[str] = set()
        self.calls = 0
        self.tokens = 0

    def start(self) -> None:
        if not self.settings.enabled:
            return
        self._stopped.clear()
        self._sweeper = asyncio.create_task(every(self.settings.poll, self._sweep, self._stopped), name="learner")

    async def _sweep(self) -> None:
        await self.sweep()

    async def sweep(self) -> int:
        """Start learning for the people due now (up to the free places); returns how many started."""
        room = self.settings.concurrency - len(self._running)
        if room <= 0:
            return 0
        try:
            now = time.time()
            states = await self._store.learning_due(
                200, now=now, day=day_of(now), daily_tokens=self.settings.daily_tokens
            )
        except Exception as exc:  # noqa: BLE001 - the store is down: learning waits, answers go on
            self._health.down(PART, f"{type(exc).__name__}: {exc}"[:200])
            return 0
        started = 0
        for state in states:
            if started >= room:
                break
            why = None if state.user_key in self._running else due(state, now, self.settings)
            if why is None:
                continue
            task = asyncio.create_task(self.learn(state.user_key, quiet=why == "quiet"), name=f"learn {state.user_key}")
            self._running[state.user_key] = task
            task.add_done_callback(lambda _, key=state.user_key: self._running.pop(key, None))  # type: ignore[misc]
            started += 1
        return started

    async def settle(self, timeout: float = 30.0, *, person: str | None = None) -> None:
        """Wait for the learning calls in flight (of `person`, or all)."""
        tasks = [t for key, t in self._running.items() if person is None or key == person]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def learn(self, user_key: str, *, quiet: bool = False) -> bool:
        """One learning call for the person, if their learning is ours to take now; True when something was
        learned from (the exchanges it read are no longer waiting)."""
        settings = self.settings
        store = self._store
        try:
            if not await store.take_learning(user_key, self._owner, settings.lease):
                return False
            waiting = await store.pending_exchanges(user_key, settings.max_exchanges)
            if not waiting:
                await store.apply_learning(
                    user_key, self._owner, Plan(), {}, tokens=0, day=day_of(time.time()), quiet=False
                )
                return False
            audience = waiting[0].audience
            batch = [ex for ex in waiting if ex.audience == audience]
            # Tombstones hold no words, so all of them are read; the call is shown only what may be read here.
            known = await store.person_items(user_key, scopes=None, current=False)
            tombstones = [item for item in known if item.ended == "deleted"]
            scopes = readable_where(audience)
            items = [
                item
                for item in known
                if item.current and item.origin == "said" and (scopes is None or item.audience in scopes)
            ][-settings.items_shown :]
        except Exception as exc:  # noqa: BLE001 - the store is down: this person's learning waits
            self._health.down(PART, f"{type(exc).__name__}: {exc}"[:200])
            log.debug("learning for %s could not start", user_key, exc_info=True)
            return False
        wait = await self._budget(user_key, audience) if self._budget is not None else 0.0
        if wait > 0:
            # Their (or their server's) budget for the day is spent: learning waits for it like answers do.
            log.info("learning for %s waits %.0fs for the day's budget", user_key, wait)
            await self._store.learning_failed(
                user_key, self._owner, pause_of=lambda _: wait, tokens=0, day=day_of(time.time()), count=False
            )
            return False
        system, user, item_refs, exchange_refs = learning_request(items, batch)
        spent = (0, 0)  # input and output tokens of the call
        try:
            self.calls += 1
            call = await self._llm.use_tool(
                system=system,
                user=user,
                tool=EXTRACTION_TOOL,
                model=settings.model,
                max_tokens=settings.max_tokens,
                deadline=settings.deadline,
            )
            spent = (call.input_tokens, call.output_tokens)
            self.tokens += sum(spent)
            extraction = parse_extraction(call.input)
            plan = plan_changes(
                extraction,
                user_key=user_key,
                items=items,
                exchanges=batch,
                item_refs=item_refs,
                exchange_refs=exchange_refs,
                now=datetime.now(UTC),
                tombstones=tombstones,
            )
        except (ClaudeError, ValueError) as exc:
            # Only an answer that does not hold (or a request Claude refuses) counts towards giving up on these
            # exchanges: an outage is waited out, however long.
            invalid = isinstance(exc, ValueError) or getattr(exc, "kind", "") == "bad_request"
            await self._called("invalid" if invalid else "failed", spent, user_key, audience)
            await self._failed(user_key, [ex.id for ex in batch], exc, sum(spent), invalid=invalid)
            return False
        except Exception as exc:  # noqa: BLE001 - a broken call must not end the sweeper
            log.exception("learning call for %s failed unexpectedly", user_key)
            await self._called("failed", spent, user_key, audience)
            await self._failed(user_key, [ex.id for ex in batch], exc, sum(spent), invalid=False)
            return False
        await self._called("learned", spent, user_key, audience)
        try:
            done = await store.apply_learning(
                user_key,
                self._owner,
                plan,
                {ex.id: ex.text for ex in batch},
                tokens=sum(spent),
                day=day_of(time.time()),
                quiet=quiet,
            )
            if done:
                await refresh_preferences(store, user_key)
                if self._changed is not None and (plan.added or plan.ended or plan.sourced):
                    await self._changed(user_key)
        except Exception as exc:  # noqa: BLE001 - not applied: the exchanges still wait, and are tried again
            self._health.down(PART, f"{type(exc).__name__}: {exc}"[:200])
            log.debug("learning for %s could not be kept", user_key, exc_info=True)
            return False
        if user_key in self._failing:
            self._failing.discard(user_key)
            log.info("learning for %s works again", user_key)
        self._health.up(PART)
        if plan.dropped:
            log.info("learning for %s dropped %d changes that did not hold", user_key, plan.dropped)
        return done

    async def _called(self, outcome: str, spent: tuple[int, int], user_key: str, audience: str) -> None:
        if self._telemetry is not None:
            self._telemetry.learning_called(outcome, *spent)
        if self._charge is not None and any(spent):
            # Learning tokens count against the person's (and their server's) budget like an answer's.
            await self._charge(user_key, audience, self.settings.model, *spent)

    async def _failed(
        self, user_key: str, batch: Sequence[str], exc: BaseException, tokens: int, *, invalid: bool
    ) -> None:
        """Nothing changes; the next try comes after a pause that doubles with each failure in a row."""
        if user_key not in self._failing:
            self._failing.add(user_key)
            log.warning("learning for %s failed (%s); it will be tried again", user_key, str(exc)[:200])
        try:
            failures = await self._store.learning_failed(
                user_key, self._owner, pause_of=retry_pause, tokens=tokens, day=day_of(time.time())
            )
            if invalid and failures >= self.settings.max_failures:
                log.warning("learning for %s gave up on %d exchanges after %d failures", user_key, len(batch), failures)
                await self._store.skip_exchanges(user_key, batch)
        except Exception:  # noqa: BLE001 - the lease lapses by itself
            log.debug("could not record the learning failure of %s", user_key, exc_info=True)

    async def close(self) -> None:
        self._stopped.set()
        await stop_tasks(t for t in (self._sweeper, *self._running.values()) if t is not None)
        self._sweeper = None
        try:
            await self._store.release_learning(self._owner)
        except Exception:  # noqa: BLE001 - the leases lapse by themselves
            log.debug("could not give up the learning leases", exc_info=True)
