"""Builds the concrete objects from Settings and hands them to the core. The only place that knows both."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from threadpoolctl import threadpool_limits

from bot.config import Settings
from bot.metrics import Metrics
from core.assistant import Assistant, AssistantSettings
from core.llm import Claude, ClaudeSettings
from core.ports import EventLedger, LanguageModel, ShortTermMemory, Telemetry
from core.recall import Recall
from storage.database import Database
from storage.embeddings import BatchingEmbedder, default_model_path, load_model
from storage.ledger import InProcessLedger, RedisLedger
from storage.lexicon_cache import CachedLexicon
from storage.locks import RedisPersonLocks
from storage.long_term import ChromaCollection, ChromaVectors, open_chroma
from storage.memory_store import RelationalMemory
from storage.records import RelationalRecords
from storage.short_term import InProcessShortTerm, RedisShortTerm
from storage.vector_cache import CachedVectors

__all__ = ["Services", "build_memory", "build_services", "describe_storage", "redact_url"]

log = logging.getLogger(__name__)


def redact_url(url: str) -> str:
    """A URL fit for a log line: the password replaced."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def describe_storage(settings: Settings) -> str:
    short_term = f"redis at {redact_url(settings.redis_url)}" if settings.redis_url else "in-process"
    long_term = (
        f"chroma server at {settings.chroma_url}" if settings.chroma_url else f"chroma at {settings.chroma_path}"
    )
    return f"database {redact_url(settings.database_url)}; short-term {short_term}; long-term {long_term}"


@dataclass(kw_only=True)
class Services:
    settings: Settings
    database: Database
    records: RelationalRecords
    short_term: ShortTermMemory
    long_term: Recall
    vectors: CachedVectors
    lexicon: CachedLexicon
    embedder: BatchingEmbedder
    llm: LanguageModel
    assistant: Assistant
    metrics: Metrics
    ledger: EventLedger
    redis: Redis | None = None

    async def storage_problems(self, timeout: float = 2.0) -> list[str]:
        """What in storage does not answer right now (empty when all is well)."""
        checks = {
            "database": self.records.ping(),
            "short-term memory": self.short_term.ping(),
            "long-term memory": self.long_term.ping(),
        }
        results = await asyncio.gather(
            *(asyncio.wait_for(check, timeout) for check in checks.values()), return_exceptions=True
        )
        return [
            f"{name}: {type(result).__name__} {result}".strip()
            for name, result in zip(checks, results, strict=True)
            if isinstance(result, BaseException)
        ]

    async def close(self) -> None:
        await self.assistant.close()
        await self.embedder.close()
        close_llm = getattr(self.llm, "close", None)
        if close_llm is not None:
            await close_llm()
        if self.redis is not None:
            await self.redis.aclose()
        await self.vectors.close()
        await self.lexicon.close()
        await self.database.close()


async def build_memory(database: Database, chroma: ChromaCollection) -> tuple[CachedVectors, CachedLexicon, Recall]:
    """Long-term memory as the assistant uses it (the retrieval evaluation builds it here too)."""
    vectors = CachedVectors(ChromaVectors(chroma), database)
    await vectors.ping()  # starts an embedded store's process now, so a broken store stops the start
    lexicon = CachedLexicon(RelationalMemory(database), database)
    return vectors, lexicon, Recall(vectors=vectors, store=lexicon)


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
            )
        )
    database = Database(settings.database_url)
    await database.open()
    redis: Redis | None = None
    short_term: ShortTermMemory
    ledger: EventLedger
    if settings.redis_url:
        # A blocking pool: under a burst, callers wait for a connection instead of failing with
        # "Too many connections" (seen at 500 people in the load benchmark).
        redis = Redis(
            connection_pool=BlockingConnectionPool.from_url(settings.redis_url, max_connections=64, timeout=30)
        )
        short_term = RedisShortTerm(
            redis,
            prefix=settings.redis_prefix,
            max_turns=settings.short_term_turns,
            ttl_seconds=settings.short_term_ttl_seconds,
        )
        ledger = RedisLedger(redis, prefix=settings.redis_prefix)
    else:
        ledger = InProcessLedger()
        short_term = InProcessShortTerm(
            max_turns=settings.short_term_turns, ttl_seconds=settings.short_term_ttl_seconds
        )
    if model is None:
        model = await asyncio.to_thread(load_model, default_model_path(settings.embedding_model))
    embedder = BatchingEmbedder(model)
    chroma = await asyncio.to_thread(open_chroma, path=settings.chroma_path, url=settings.chroma_url)
    vectors, lexicon, long_term = await build_memory(database, chroma)
    records = RelationalRecords(database)
    metrics = Metrics()
    assistant = Assistant(
        llm=llm,
        records=records,
        short_term=short_term,
        long_term=long_term,
        embedder=embedder,
        telemetry=telemetry or metrics,
        settings=AssistantSettings(),
        person_locks=(
            RedisPersonLocks(
                redis,
                prefix=settings.redis_prefix,
                timeout=settings.claude_timeout * (settings.claude_max_retries + 1) + 60,
            )
            if redis is not None
            else None
        ),
    )
    return Services(
        settings=settings,
        database=database,
        records=records,
        short_term=short_term,
        long_term=long_term,
        vectors=vectors,
        lexicon=lexicon,
        embedder=embedder,
        llm=llm,
        assistant=assistant,
        metrics=metrics,
        ledger=ledger,
        redis=redis,
    )
