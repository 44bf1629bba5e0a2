"""The assistant: one received message in, one reply out, and everything learned along the way."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from core.background import BackgroundWork, KeyedLocks
from core.context import ContextLimits, build_prompt, clean_text, truncate
from core.events import MessageReceived, MessageRef, ReactionAdded, ReactionRemoved, Reply
from core.feedback import DEFAULT_EMOJI_SCORES, normalise_emoji, polarity, score_for
from core.insights import build_insights
from core.learning import describe_style, extract_topics, interests_for
from core.llm import ClaudeError
from core.ports import (
    Embedder,
    InteractionRecord,
    LanguageModel,
    LongTermMemory,
    Memory,
    MemoryHit,
    Pattern,
    PersonLocks,
    Profile,
    Prompt,
    Records,
    ShortTermMemory,
    Telemetry,
    Turn,
)
from core.privacy import recallable_scopes, scope_of
from core.remember import MemoryWriter, Remembrance
from core.tracing import current, traced

__all__ = ["Assistant", "AssistantSettings", "NullTelemetry"]

log = logging.getLogger(__name__)
T = TypeVar("T")

ASSISTANT_NAME = "Rapport"


@dataclass(frozen=True, slots=True, kw_only=True)
class AssistantSettings:
    limits: ContextLimits = field(default_factory=ContextLimits)
    emoji_scores: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_EMOJI_SCORES))
    patterns_in_context: int = 5
    apology: str = (
        "Sorry, I can't reach my language model right now. I've kept your message; please try again in a minute."
    )
    empty_reply: str = "I can only read text. Send me a few words and I'll gladly answer."


class NullTelemetry:
    """Telemetry that goes nowhere, for tools and tests that do not watch."""

    def message_handled(self, platform: str, outcome: str, seconds: float) -> None: ...

    def context_built(self, seconds: float) -> None: ...

    def claude_called(self, seconds: float, input_tokens: int, output_tokens: int) -> None: ...

    def feedback_recorded(self, polarity: str) -> None: ...

    def stored(self, seconds: float) -> None: ...

    def error(self, kind: str) -> None: ...


class Assistant:
    def __init__(
        self,
        *,
        llm: LanguageModel,
        records: Records,
        short_term: ShortTermMemory,
        long_term: LongTermMemory,
        embedder: Embedder,
        telemetry: Telemetry | None = None,
        settings: AssistantSettings | None = None,
        person_locks: PersonLocks | None = None,
    ) -> None:
        self._llm = llm
        self._records = records
        self._short_term = short_term
        self._long_term = long_term
        self._embedder = embedder
        self._telemetry = telemetry or NullTelemetry()
        self._settings = settings or AssistantSettings()
        self._background = BackgroundWork()
        self._writer = MemoryWriter(records=records, long_term=long_term, embedder=embedder, telemetry=self._telemetry)
        self._locks = KeyedLocks()
        self._person_locks = person_locks

    @property
    def pending(self) -> int:
        """Storing and learning still running behind replies already sent."""
        return self._background.pending

    async def handle(self, event: MessageReceived, *, on_text: Callable[[str], Awaitable[None]] | None = None) -> Reply:
        """Answer one message. One person's messages are answered one at a time, in arrival order."""
        trace = current()
        correlation_id = trace[1] if trace and trace[0] == event.user.key else None
        with traced(event.user.key, correlation_id):
            async with self._turn(event.user.key):
                return await self._handle(event, on_text)

    @asynccontextmanager
    async def _turn(self, user_key: str) -> AsyncIterator[None]:
        """This person's turn: first among this process's tasks (FIFO), then among replicas (shared lock)."""
        async with self._locks(user_key):
            if self._person_locks is None:
                yield
            else:
                async with self._person_locks.hold(user_key):
                    yield

    async def _handle(self, event: MessageReceived, on_text: Callable[[str], Awaitable[None]] | None) -> Reply:
        started = time.perf_counter()
        user_key = event.user.key
        interaction_id = uuid.uuid4().hex
        limit = self._settings.limits.max_input_chars
        # Cut before cleaning too, so a megabyte of input never costs the event loop a character-by-character pass.
        text = truncate(clean_text(event.text[: limit * 2]), limit)
        if not text:
            self._telemetry.message_handled(event.user.platform, "empty", time.perf_counter() - started)
            return Reply(text=self._settings.empty_reply, interaction_id=interaction_id, user_key=user_key, ok=False)

        embedding, prompt = await self._assemble(event, text)
        self._telemetry.context_built(time.perf_counter() - started)

        asked = time.perf_counter()
        try:
            completion = await self._llm.complete(prompt, on_text=on_text)
            reply_text, ok, error = completion.text.strip() or "…", True, None
            self._telemetry.claude_called(
                time.perf_counter() - asked, completion.input_tokens, completion.output_tokens
            )
        except ClaudeError as exc:
            log.warning("Claude failed for %s: %s", user_key, exc)
            completion, reply_text, ok, error = None, self._settings.apology, False, exc.kind
            self._telemetry.error(f"claude_{exc.kind}")
        except Exception as exc:  # noqa: BLE001 - a broken model call must still leave the person an answer
            log.exception("Claude call failed unexpectedly for %s", user_key)
            completion, reply_text, ok, error = None, self._settings.apology, False, type(exc).__name__
            self._telemetry.error("claude_unexpected")

        now = time.time()
        turns = [
            Turn(
                role="user",
                author=event.author_name,
                text=text,
                user_key=user_key,
                interaction_id=interaction_id,
                at=now,
            )
        ]
        if ok:
            turns.append(
                Turn(
                    role="assistant",
                    author=ASSISTANT_NAME,
                    text=reply_text,
                    user_key=user_key,
                    interaction_id=interaction_id,
                    at=now,
                )
            )
        await self._safely("short-term append", self._short_term.append(event.conversation_key, turns), None)

        record = InteractionRecord(
            id=interaction_id,
            user_key=user_key,
            platform=event.user.platform,
            conversation_id=event.conversation_id,
            thread_id=event.thread_id,
            private=event.private,
            user_text=text,
            reply_text=reply_text if ok else "",
            topics=tuple(extract_topics(text)),
            ok=ok,
            error=error,
            model=completion.model if completion else self._llm.model,
            input_tokens=completion.input_tokens if completion else 0,
            output_tokens=completion.output_tokens if completion else 0,
            latency_ms=int((time.perf_counter() - started) * 1000),
            created_at=event.sent_at,
        )
        self._background.spawn(user_key, self._remember(event, record, embedding), name=f"remember-{interaction_id}")
        elapsed = time.perf_counter() - started
        self._telemetry.message_handled(event.user.platform, "answered" if ok else "failed", elapsed)
        log.info("%s message %s in %.0f ms", event.user.platform, "answered" if ok else "failed", elapsed * 1000)
        return Reply(text=reply_text, interaction_id=interaction_id, user_key=user_key, ok=ok)

    async def _assemble(self, event: MessageReceived, text: str) -> tuple[list[float] | None, Prompt]:
        """Gather context concurrently; a store that fails costs its part of the context, not the reply."""
        user_key = event.user.key
        limits = self._settings.limits
        scopes = recallable_scopes(event.private)

        async def embed() -> list[float]:
            [vector] = await self._embedder.embed([text])
            return vector

        # The model gets the message first; the word search and the reads start while it embeds.
        embedding_task = asyncio.ensure_future(embed())

        async def recall() -> tuple[list[float] | None, list[MemoryHit]]:
            try:
                hits = await self._long_term.search(
                    user_key, text, embedding_task, scopes=scopes, limit=limits.memory_results * 2
                )
            except BaseException:
                embedding_task.cancel()
                raise
            return await embedding_task, hits

        nothing_known: tuple[Profile | None, list[Pattern]] = (None, [])
        (embedding, hits), history, (profile, patterns) = await asyncio.gather(
            self._safely("memory recall", recall(), (None, [])),
            self._safely("short-term read", self._short_term.recent(event.conversation_key, limits.history_turns), []),
            self._safely(
                "profile read",
                self._records.known(user_key, scopes=scopes, patterns=self._settings.patterns_in_context),
                nothing_known,
            ),
        )
        in_history = {turn.interaction_id for turn in history}
        memories = [hit for hit in hits if hit.memory.id not in in_history][: limits.memory_results]
        profile = profile or Profile(user_key=user_key)
        prompt = build_prompt(
            event,
            text,
            history=history,
            memories=memories,
            interests=interests_for(profile, scopes),
            style=describe_style(profile.style),
            patterns=patterns,
            limits=limits,
        )
        return embedding, prompt

    async def _safely(self, what: str, work: Awaitable[T], default: T) -> T:
        try:
            return await work
        except Exception:  # noqa: BLE001 - reported, and the reply goes on without this part
            log.exception("%s failed; answering without it", what)
            self._telemetry.error("storage")
            return default

    async def _remember(self, event: MessageReceived, record: InteractionRecord, embedding: list[float] | None) -> None:
        """Store the exchange and learn from it, batched with others finishing at the same time."""
        memory = Memory(
            id=record.id,
            user_key=record.user_key,
            text=record.user_text,
            scope=scope_of(event.private),
            conversation_id=event.conversation_key,
            created_at=record.created_at,
            speaker=event.author_name,
            reply=record.reply_text,
        )
        await self._writer.write(
            Remembrance(record=record, memory=memory, embedding=embedding, display_name=event.display_name)
        )

    async def delivered(self, reply: Reply, refs: Sequence[MessageRef]) -> None:
        """Note where a reply was posted, so that reactions on it can be traced back to its interaction."""
        if refs:
            await self._safely("reply link", self._records.link_reply(reply.interaction_id, reply.user_key, refs), None)

    async def reaction_added(self, event: ReactionAdded) -> bool:
        """The asker's reaction on Rapport's reply sets that interaction's satisfaction; True if it counted."""
        score = score_for(event.emoji, self._settings.emoji_scores)
        link = await self._records.find_reply(event.message)
        if score is None or link is None or link.user_key != event.actor.key:
            return False
        await self._records.set_feedback(link.interaction_id, link.user_key, normalise_emoji(event.emoji), score)
        self._telemetry.feedback_recorded(polarity(score))
        return True

    async def reaction_removed(self, event: ReactionRemoved) -> bool:
        """Taking the reaction back undoes its feedback."""
        link = await self._records.find_reply(event.message)
        if link is None or link.user_key != event.actor.key:
            return False
        return await self._records.clear_feedback(link.interaction_id, normalise_emoji(event.emoji))

    async def insights(self, user_key: str) -> dict[str, Any] | None:
        """What Rapport knows about a person, or None for someone it has never met."""
        await self._background.settle(user_key)
        profile, patterns = await self._records.known(user_key, scopes=("private", "shared"), patterns=10)
        if profile is None and not await self._records.has_user(user_key):
            return None
        stats = await self._records.stats(user_key)
        return build_insights(profile or Profile(user_key=user_key), patterns, stats)

    async def forget(self, user_key: str) -> None:
        """Delete everything stored about a person, in every store, after their pending work lands."""
        async with self._turn(user_key):
            await self._background.settle(user_key)
            await self._records.forget_user(user_key)
            await self._long_term.forget_user(user_key)
            await self._short_term.forget_user(user_key)
        log.info("forgot everything about %s", user_key)

    async def drain(self, timeout: float) -> bool:
        """Wait for storing and learning behind replies already sent; False if time ran out."""
        return await self._background.drain(timeout)

    async def close(self) -> None:
        """Stop the memory writer (after `drain`)."""
        await self._writer.close()
