"""Builds the concrete objects from Settings and hands them to the core. The only place that knows both."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from threadpoolctl import threadpool_limits

from bot.config import Settings
from bot.metrics import Metrics
from bot.policy_file import PolicyWatcher, load_policy
from core.assistant import Assistant, AssistantSettings
from core.background import stop_tasks
from core.gate import Gate
from core.health import Health
from core.learner import LearningSettings
from core.llm import Claude, ClaudeSettings
from core.policy import PolicyBox
from core.ports import LanguageModel, ShortTermMemory, Telemetry, UsageCounters
from core.recall import Recall
from core.turns import Turns
from storage.database import Database
from storage.embeddings import BatchingEmbedder, default_model_path, load_model
from storage.inbox import RelationalInbox
from storage.long_term import ChromaVectors, open_chroma
from storage.memory_index import MemoryIndex
from storage.memory_store import MemoryRows
from storage.records import RelationalRecords
from storage.short_term import InProcessShortTerm, RedisShortTerm, ResilientShortTerm
from storage.spool import Spool
from storage.usage import DatabaseUsage, RedisUsage
from storage.vector_import import import_from, old_store, rows_without_vectors

__all__ = ["Services", "build_memory", "build_services", "describe_storage", "owner_id", "redact_url"]

log = logging.getLogger(__name__)


def redact_url(url: str) -> str:
    """A URL fit for a log line: the password replaced."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def owner_id() -> str:
    """This process among the replicas, as inbox leases name it: host, pid and a random part (a restarted
    process is a new owner, and waits for its predecessor's leases to lapse or be handed back)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def describe_storage(settings: Settings) -> str:
    short_term = f"redis at {redact_url(settings.redis_url)}" if settings.redis_url else "in-process"
    long_term = f"vectors in a chroma server at {settings.chroma_url}" if settings.chroma_url else "in the database"
    return f"database {redact_url(settings.database_url)}; short-term {short_term}; long-term {long_term}"


@dataclass(kw_only=True)
class Services:
    settings: Settings
    database: Database
    records: RelationalRecords
    short_term: ShortTermMemory
    long_term: Recall
    index: MemoryIndex
    embedder: BatchingEmbedder
    llm: LanguageModel
    assistant: Assistant
    metrics: Metrics
    inbox: RelationalInbox
    turns: Turns
    health: Health
    gate: Gate
    policy_watcher: PolicyWatcher | None = None
    redis: Redis | None = None
    # Rows without vectors to fill (from an embedded Chroma store of an earlier release, if there is one).
    vectors_to_move: bool = False
    _moving: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Resume what earlier processes left (the spool, waiting turns, jobs), then keep sweeping for it; follow
        the policy file; move an old Chroma store's vectors into the database."""
        if self.policy_watcher is not None:
            self.policy_watcher.start()
        if self.vectors_to_move:
            self._moving = asyncio.create_task(self._move_vectors(), name="move-vectors")
        self.inbox.start()
        self.turns.start()
        self.assistant.start()

    async def storage_problems(self, timeout: float = 2.0) -> tuple[list[str], list[str]]:
        """(what stops Rapport from taking events, what it goes on without), each part in words."""
        checks = {
            "database": self.records.ping(),
            "short-term memory": self.short_term.ping(),
            "long-term memory": self.long_term.ping(),
        }
        results = await asyncio.gather(
            *(asyncio.wait_for(check, timeout) for check in checks.values()), return_exceptions=True
        )
        found = {
            name: f"{type(result).__name__} {result}".strip()
            for name, result in zip(checks, results, strict=True)
            if isinstance(result, BaseException)
        }
        for part, why in self.health.problems().items():
            found.setdefault(part, why)
        if self.gate.box.problem:
            found["policy"] = self.gate.box.problem
        if "database" in found:
            found["database"] += f" (events go to the local spool: {self.inbox.spooled} held)"
        blocking = [f"{name}: {why}" for name, why in found.items() if name == "database" and self.inbox.full]
        degraded = [f"{name}: {why}" for name, why in found.items() if f"{name}: {why}" not in blocking]
        return blocking, degraded

    async def _move_vectors(self) -> None:
        path = old_store(self.settings.chroma_path)
        try:
            await import_from(self.database, path, self.embedder, self.index.vectors_moved)
        except Exception:  # noqa: BLE001 - the next start tries again; meanwhile those memories are found by words
            log.exception("filling the memory rows without vectors failed (from %s)", path or "the model")

    async def close(self) -> None:
        """After the turns and jobs are drained (bot/worker.py): stop them, hand leases back, close the stores."""
        if self.policy_watcher is not None:
            await self.policy_watcher.close()
        if self._moving is not None:
            await stop_tasks([self._moving])
        await self.assistant.close()
        await self.turns.close()
        await self.inbox.close()
        await self.embedder.close()
        close_llm = getattr(self.llm, "close", None)
        if close_llm is not None:
            await close_llm()
        if self.redis is not None:
            await self.redis.aclose()
        await self.index.close()
        await self.database.close()


async def build_memory(
    database: Database, chroma_url: str | None, health: Health | None = None
) -> tuple[MemoryIndex, Recall]:
    """Long-term memory as the assistant uses it (the retrieval evaluation builds it here too): the rows hold
    the vectors, unless a Chroma server does."""
    source = None
    if chroma_url:
        source = ChromaVectors(await asyncio.to_thread(open_chroma, path="", url=chroma_url))
    index = MemoryIndex(MemoryRows(database, with_vectors=source is None), source=source)
    await index.ping()
    return index, Recall(index=index, health=health)


async def build_services(
    settings: Settings, *, llm: LanguageModel | None = None, model: Any = None, telemetry: Telemetry | None = None
) -> Services:
    """Open every store and build the assistant.

    `model` lets a caller share one loaded embedding model; `telemetry` replaces the Prometheus metrics as what
    the assistant reports to (benchmarks keep raw timings).
    """
    # numpy's BLAS on one thread: the vector cache's products are one person's memories, and a second BLAS thread
    # waits for a core that the model or the databases hold (10,000 vectors: 1.3 ms on one thread, 0.25-8 ms on
    # two inside a busy answer).
    threadpool_limits(limits=1, user_api="blas")
    if llm is None:
        llm = Claude(
            ClaudeSettings(
                api_key=settings.require_claude(),
                base_url=settings.anthropic_base_url,
                model=settings.claude_model,
                max_tokens=settings.claude_max_tokens,
                temperature=settings.claude_temperature,
                timeout=settings.claude_timeout,
                max_retries=settings.claude_max_retries,
                deadline=settings.claude_deadline,
            )
        )
    health = Health()
    owner = owner_id()
    database = Database(settings.database_url)
    await database.open()
    spool = Spool(settings.spool_dir or Path(settings.data_dir) / "spool")
    inbox = RelationalInbox(database, spool, health=health, owner=owner, max_spooled=settings.spool_max_events)
    redis: Redis | None = None
    short_term: ShortTermMemory
    if settings.redis_url:
        # A blocking pool: under a burst, callers wait for a connection instead of failing with "Too many
        # connections" (seen at 500 people in the load benchmark); every wait on Redis has a deadline.
        redis = Redis(
            connection_pool=BlockingConnectionPool.from_url(
                settings.redis_url, max_connections=64, timeout=5, socket_timeout=2, socket_connect_timeout=2
            )
        )
        redis_turns = RedisShortTerm(
            redis,
            prefix=settings.redis_prefix,
            max_turns=settings.short_term_turns,
            ttl_seconds=settings.short_term_ttl_seconds,
        )
        short_term = ResilientShortTerm(redis_turns, inbox.history, health=health)
    else:
        short_term = InProcessShortTerm(
            max_turns=settings.short_term_turns, ttl_seconds=settings.short_term_ttl_seconds
        )
    if model is None:
        model = await asyncio.to_thread(
            partial(load_model, default_model_path(settings.embedding_model), int8=settings.embedding_int8)
        )
    embedder = BatchingEmbedder(model)
    index, long_term = await build_memory(database, settings.chroma_url, health)
    vectors_to_move = not settings.chroma_url and await rows_without_vectors(database)
    records = RelationalRecords(database)
    metrics = Metrics()
    box, watcher = PolicyBox(), None
    if settings.rapport_config:
        path = Path(settings.rapport_config)
        box = PolicyBox(await asyncio.to_thread(load_policy, path), source=str(path))
        watcher = PolicyWatcher(path, box)
    database_usage = DatabaseUsage(database)
    counters: UsageCounters = RedisUsage(redis, settings.redis_prefix) if redis is not None else database_usage
    gate = Gate(
        box=box,
        counters=counters,
        refusals=database_usage,
        telemetry=telemetry or metrics,
        health=health,
    )
    assistant = Assistant(
        gate=gate,
        llm=llm,
        records=records,
        short_term=short_term,
        long_term=long_term,
        embedder=embedder,
        inbox=inbox,
        owner=owner,
        health=health,
        telemetry=telemetry or metrics,
        settings=AssistantSettings(
            stale_after=settings.stale_after_seconds,
            stream=settings.stream_answers,
            consent_note=settings.consent_note.strip(),
            learning=LearningSettings(
                enabled=settings.learning,
                model=settings.claude_memory_model,
                batch=settings.learn_batch,
                quiet=settings.learn_quiet_seconds,
                cooldown=settings.learn_cooldown_seconds,
                daily_tokens=settings.learn_daily_tokens,
                deadline=settings.learn_deadline_seconds,
                # Held for twice a call's deadline: a process that stops mid-call lets another take it then.
                lease=max(2 * settings.learn_deadline_seconds, 5.0),
            ),
        ),
    )
    turns = Turns(
        inbox=inbox, handle=assistant.process, owner=owner, lease=settings.turn_lease_seconds, screen=gate.screen
    )
    return Services(
        settings=settings,
        database=database,
        records=records,
        short_term=short_term,
        long_term=long_term,
        index=index,
        vectors_to_move=vectors_to_move,
        embedder=embedder,
        llm=llm,
        assistant=assistant,
        metrics=metrics,
        inbox=inbox,
        turns=turns,
        health=health,
        gate=gate,
        policy_watcher=watcher,
        redis=redis,
    )
