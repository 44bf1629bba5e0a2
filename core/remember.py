"""The jobs behind each turn: storing an exchange and learning from it, applying a reaction. Durable (each is
an inbox entry at DELIVERED until it is done), batched, and retried until done.

Every exchange costs the same few statements whether it is stored alone or with sixty others, so under load a
writer that gathers what arrives within a few milliseconds turns dozens of round trips per message into a few
per batch (measured in docs/benchmarks.md). A job never delays the person's next message: the turn hands it
over and goes on. A job that cannot be done now (the database is down, Chroma is down) is tried again with a
growing pause, one log line per outage; the ones this process cannot hold in memory stay in the inbox, where the
sweep of any process finds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from core.background import every, stop_tasks
from core.context import ContextLimits, message_text
from core.entries import Entry, interaction_id_for
from core.events import MessageChanged, MessageReceived, ReactionAdded, ReactionRemoved
from core.feedback import normalise_emoji, polarity, score_for
from core.files import remembered_text
from core.health import Health
from core.learner import refresh_preferences
from core.learning import extract_topics, patterns_of, update_profile
from core.ports import (
    Embedder,
    Inbox,
    InteractionRecord,
    Learned,
    LongTermMemory,
    Memory,
    Profile,
    Records,
    ShortTermMemory,
    Telemetry,
)
from core.recall import embedded_text
from core.turns import Outcomes

__all__ = ["Job", "MemoryWriter", "exchange_of", "learn"]

log = logging.getLogger(__name__)

PART = "storing"


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One delivered entry's job; a message's `embedding` is its text's, when the turn already computed it."""

    entry: Entry
    embedding: list[float] | None = None


def exchange_of(entry: Entry, limits: ContextLimits) -> tuple[InteractionRecord, Memory] | None:
    """What a delivered message entry stores: its interaction and its memory (None: nothing to keep)."""
    event, answer = entry.event, entry.answer
    if not isinstance(event, MessageReceived) or answer is None:
        return None
    text = remembered_text(event, limits)  # the words and a note of the files, never their contents
    if not text:
        return None
    reply = answer.text if answer.ok else ""
    record = InteractionRecord(
        id=entry.interaction_id,
        user_key=event.user.key,
        platform=event.user.platform,
        conversation_id=event.conversation_id,
        thread_id=event.thread_id,
        private=event.private,
        user_text=text,
        reply_text=reply,
        topics=tuple(extract_topics(text)),
        ok=answer.ok,
        error=answer.error,
        model=answer.model,
        input_tokens=answer.input_tokens,
        output_tokens=answer.output_tokens,
        latency_ms=answer.latency_ms,
        created_at=event.sent_at,
        display_name=event.display_name,
        tz=event.tz,
        audience=event.where.code,
    )
    memory = Memory(
        id=record.id,
        user_key=record.user_key,
        text=text,
        scope=event.where.code,
        conversation_id=event.conversation_key,
        created_at=event.sent_at,
        speaker=event.author_name,
        reply=reply,
    )
    return record, memory


def learn(records: Sequence[InteractionRecord], profiles: Mapping[str, Profile]) -> Learned:
    """Topics, style and patterns of exchanges stored for the first time (a pure function: core.ports.Learner)."""
    updated = {
        key: replace(profile, interests={t: dict(c) for t, c in profile.interests.items()}, style=dict(profile.style))
        for key, profile in profiles.items()
    }
    rows: list[tuple[str, str, str, str]] = []
    for record in records:
        scope = record.audience
        profile = updated.setdefault(record.user_key, Profile(user_key=record.user_key))
        update_profile(
            profile, text=record.user_text, topics=record.topics, scope=scope, display_name=record.display_name
        )
        for kind, value in patterns_of(
            text=record.user_text, topics=record.topics, when=record.created_at, tz=record.tz
        ):
            rows.append((record.user_key, scope, kind, value))
    return Learned(profiles=list(updated.values()), patterns=rows)


class _Pulse:
    """Wakes everyone waiting each time it fires (a batch finished)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


class MemoryWriter:
    def __init__(
        self,
        *,
        records: Records,
        long_term: LongTermMemory,
        short_term: ShortTermMemory,
        embedder: Embedder,
        inbox: Inbox,
        owner: str,
        telemetry: Telemetry,
        health: Health,
        outcomes: Outcomes,
        limits: ContextLimits,
        emoji_scores: Mapping[str, float],
        window: float = 0.01,
        max_batch: int = 64,
        backlog: int = 5_000,
        job_ttl: float = 120.0,
    ) -> None:
        self._records = records
        self._long_term = long_term
        self._short_term = short_term
        self._embedder = embedder
        self._inbox = inbox
        self._owner = owner
        self._telemetry = telemetry
        self._health = health
        self._outcomes = outcomes
        self._limits = limits
        self._emoji_scores = emoji_scores
        self._window = window
        self._max_batch = max_batch
        self._backlog = backlog
        self.job_ttl = job_ttl
        self._pending: list[tuple[Job, float]] = []
        self._flushing: list[Job] = []
        self._queued: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._batch_done = _Pulse()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._closed = False

    def start(self, seconds: float = 5.0) -> None:
        """Sweep for jobs nobody holds now and then (the first sweep at once: what a stopped process left)."""
        self._closed = False
        self._stopped.clear()
        self._sweeper = asyncio.create_task(every(seconds, self.sweep, self._stopped), name="memory-writer-sweep")

    @property
    def pending(self) -> int:
        """Jobs this process holds (queued or being done)."""
        return len(self._pending) + len(self._flushing)

    def submit(self, job: Job) -> None:
        """Queue a job (returns at once). Past the backlog it is left to the inbox, where a sweep finds it."""
        if self._closed or job.entry.key in self._queued:
            return
        if self.pending >= self._backlog:
            self._telemetry.error("store_backlog_full")
            return
        loop = asyncio.get_running_loop()
        self._pending.append((job, time.perf_counter()))
        self._queued.add(job.entry.key)
        self._idle.clear()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._run(), name="memory-writer")
        assert self._wake is not None
        self._wake.set()

    async def sweep(self) -> None:
        """Take over jobs nobody holds (their process stopped, or its backlog was full)."""
        room = self._backlog - self.pending
        if self._closed or room <= 0:
            return
        for entry in await self._inbox.claim_jobs(self._owner, self.job_ttl, min(room, self._max_batch)):
            self.submit(Job(entry=entry))

    async def settle(self, person: str, timeout: float = 10.0) -> None:
        """Wait (up to `timeout`) until this process holds no job of `person`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while any(job.entry.person == person for job in self._jobs()):
                    await self._batch_done.wait()

    def drop(self, person: str) -> None:
        """Forget the queued jobs of `person` (they are being forgotten)."""
        self._pending = [(job, at) for job, at in self._pending if job.entry.person != person]
        self._queued -= {job.entry.key for job in self._flushing if job.entry.person == person}  # not retried

    def _jobs(self) -> list[Job]:
        return [job for job, _ in self._pending] + self._flushing

    async def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every job held; True if all are done."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._window)  # let jobs finishing together join one batch
            await self._work_through()
            self._idle.set()

    async def _work_through(self) -> None:
        """Batches until nothing is pending. A failed batch is tried again after a pause that grows with each
        failure, together with what arrived meanwhile (so, with Chroma down, new exchanges still get their text
        stored on each try); one log line when storing stops and one when it goes on (Health), never a
        traceback per message."""
        retry: list[tuple[Job, float]] = []
        pause = 0.2
        while (self._pending or retry) and not self._closed:
            room = max(self._max_batch - len(retry), 0)
            batch, self._pending = retry + self._pending[:room], self._pending[room:]
            self._flushing = [job for job, _ in batch]
            try:
                await self._do(self._flushing)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - tried again until done: nothing delivered is lost
                self._health.down(PART, f"{type(exc).__name__}: {exc}".strip()[:300])
                log.debug("storing %d jobs failed", len(batch), exc_info=True)
                retry = [(job, at) for job, at in batch if job.entry.key in self._queued]  # a forget drops some
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)
                continue
            self._health.up(PART)
            retry, pause = [], 0.2
            now = time.perf_counter()
            for job, queued in batch:
                self._telemetry.stored(now - queued)
                self._queued.discard(job.entry.key)
            self._flushing = []
            self._batch_done.fire()

    async def _do(self, jobs: Sequence[Job]) -> None:
        keys = [job.entry.key for job in jobs]
        held = await self._inbox.confirm_jobs(keys, self._owner, self.job_ttl)
        live = [job for job in jobs if job.entry.key in held]  # a forgotten person's, or another's now, are not
        exchanges = [(job, found) for job in live if (found := exchange_of(job.entry, self._limits)) is not None]
        if exchanges:
            await self._records.store_exchanges([record for _, (record, _) in exchanges], learn)
            missing = [i for i, (job, _) in enumerate(exchanges) if job.embedding is None]
            computed = dict(
                zip(
                    missing,
                    await self._embedder.embed([embedded_text(exchanges[i][1][1]) for i in missing]),
                    strict=True,
                )
            )
            vectors = [computed[i] if job.embedding is None else job.embedding for i, (job, _) in enumerate(exchanges)]
            await self._long_term.add([memory for _, (_, memory) in exchanges], vectors)
        counted: dict[str, bool] = {}
        for job in live:  # reactions and edits, in the order they came (each is idempotent)
            if job.entry.kind == "reaction":
                counted[job.entry.key] = await self._apply_reaction(job.entry)
            elif job.entry.kind == "change":
                counted[job.entry.key] = await self._apply_change(job.entry)
        await self._inbox.finished(keys, self._owner)
        for key in keys:
            self._outcomes.settle(key, counted.get(key, key in held))

    async def _apply_reaction(self, entry: Entry) -> bool:
        """The asker's reaction on Rapport's reply sets that interaction's satisfaction; taking it back undoes it.
        True when it counted as feedback (a stranger's reaction never does)."""
        event = entry.event
        if not isinstance(event, ReactionAdded | ReactionRemoved):
            return False
        link = await self._records.find_reply(event.message)
        if link is None or link.user_key != event.actor.key:
            return False
        emoji = normalise_emoji(event.emoji)
        if isinstance(event, ReactionAdded):
            score = score_for(event.emoji, self._emoji_scores)
            if score is None:
                return False
            await self._records.set_feedback(link.interaction_id, link.user_key, emoji, score)
            self._telemetry.feedback_recorded(polarity(score))
            await refresh_preferences(self._records, link.user_key)
            return True
        cleared = await self._records.clear_feedback(link.interaction_id, emoji)
        if cleared:
            await refresh_preferences(self._records, link.user_key)
        return cleared

    async def _apply_change(self, entry: Entry) -> bool:
        """The person edited or deleted a message of theirs: its memory takes the new words or goes, what was
        learned from it alone goes, its turns leave the conversation's short-term memory, and an edit is learned
        from again. Only the author's own message (whoever deleted it, what is gone is theirs). True when a kept
        exchange was changed."""
        event = entry.event
        if not isinstance(event, MessageChanged):
            return False
        interaction, person = interaction_id_for(event.original), event.user.key
        kept = await self._records.said(interaction)
        if kept is None or kept[0] != person:
            return False
        text = None if event.text is None else message_text(event.text, self._limits)
        if text == "":
            text = None  # edited down to nothing: as good as deleted
        # Each step can be done again: a retried job finishes what a failed one began.
        await self._records.change_exchange(interaction, person, text)
        await self._long_term.revise(person, interaction, text, None if text is None else self._embed_one)
        await self._short_term.unsay(person, interaction)
        await self._inbox.unsay(event.original)
        await refresh_preferences(self._records, person)
        return True

    async def _embed_one(self, text: str) -> list[float]:
        [vector] = await self._embedder.embed([text])
        return vector

    async def close(self) -> None:
        """Stop (after `drain`): what is not done stays in the inbox, for the next process."""
        self._closed = True
        self._stopped.set()
        await stop_tasks(task for task in (self._sweeper, self._worker) if task is not None)
        self._sweeper = self._worker = None
        self._idle.set()
