"""What the core needs from the outside world, as small Protocols that storage (or a test) implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from core.events import MessageRef

__all__ = [
    "Completion",
    "Embedder",
    "EventLedger",
    "FeedbackStore",
    "InteractionRecord",
    "InteractionStats",
    "InteractionStore",
    "LanguageModel",
    "LongTermMemory",
    "Memory",
    "MemoryHit",
    "MemoryStore",
    "Pattern",
    "PersonLocks",
    "PatternStore",
    "Profile",
    "ProfileStore",
    "Prompt",
    "Records",
    "ReplyLink",
    "Scope",
    "ShortTermMemory",
    "Telemetry",
    "Turn",
    "VectorIndex",
]

Scope = Literal["private", "shared"]


# --- records -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Turn:
    """One side of an exchange in a conversation's short-term memory.

    `user_key` is the person the exchange belongs to (for the assistant's turns too), so that forgetting a
    person removes both what they said and what Rapport answered them.
    """

    role: Literal["user", "assistant"]
    author: str
    text: str
    user_key: str
    interaction_id: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Memory:
    """A long-term memory: what a person said, with what Rapport answered, its scope and its time."""

    id: str
    user_key: str
    text: str
    scope: Scope
    conversation_id: str
    created_at: datetime
    speaker: str = ""
    reply: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryHit:
    memory: Memory
    score: float


@dataclass(slots=True, kw_only=True)
class Profile:
    """What Rapport has learned about a person.

    `interests` counts topics per scope ({"python": {"shared": 2, "private": 1}}) so that a shared-channel
    prompt only sees interests the person showed where everyone could read them.
    """

    user_key: str
    display_name: str = ""
    interests: dict[str, dict[str, int]] = field(default_factory=dict)
    style: dict[str, float] = field(default_factory=dict)
    message_count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Pattern:
    kind: str
    value: str
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractionRecord:
    id: str
    user_key: str
    platform: str
    conversation_id: str
    thread_id: str | None
    private: bool
    user_text: str
    reply_text: str
    topics: tuple[str, ...]
    ok: bool
    error: str | None
    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: int
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyLink:
    """Which interaction (and whose) a delivered reply message belongs to."""

    interaction_id: str
    user_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractionStats:
    total_interactions: int
    average_satisfaction: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Prompt:
    """A request ready for Claude: the system text and alternating user/assistant messages."""

    system: str
    messages: tuple[dict[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    text: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str | None = None


# --- ports ---------------------------------------------------------------------------------------


class ShortTermMemory(Protocol):
    """The recent turns of each conversation, bounded and expiring."""

    async def recent(self, conversation_key: str, limit: int) -> list[Turn]: ...

    async def append(self, conversation_key: str, turns: Sequence[Turn]) -> None: ...

    async def forget_user(self, user_key: str) -> None: ...

    async def ping(self) -> None: ...


class LongTermMemory(Protocol):
    """Everything a person told Rapport, searchable by meaning and by words (core.recall.Recall)."""

    async def add(self, memories: Sequence[Memory], embeddings: Sequence[Sequence[float]]) -> None: ...

    async def search(
        self,
        user_key: str,
        query: str,
        embedding: Sequence[float] | Awaitable[Sequence[float]],
        *,
        scopes: Sequence[Scope],
        limit: int,
    ) -> list[MemoryHit]:
        """The person's memories most relevant to `query`; `embedding` may still be on its way (the word search
        does not wait for it)."""
        ...

    async def count(self, user_key: str) -> int: ...

    async def forget_user(self, user_key: str) -> None: ...

    async def ping(self) -> None: ...


class VectorIndex(Protocol):
    """Vectors of every person's memories in one index, always filtered by person and scope; we pass our own
    embeddings."""

    async def add(self, memories: Sequence[Memory], embeddings: Sequence[Sequence[float]]) -> None: ...

    async def nearest(
        self,
        user_key: str,
        embedding: Sequence[float] | Awaitable[Sequence[float]],
        *,
        scopes: Sequence[Scope],
        limit: int,
    ) -> list[tuple[str, float]]:
        """(memory id, cosine similarity), best first. The embedding may still be on its way (an awaitable): an
        index with work that does not need it (a cache's freshness check) does that first."""
        ...

    async def forget_user(self, user_key: str) -> None: ...

    async def ping(self) -> None: ...


class MemoryStore(Protocol):
    """The memories themselves, their order within each conversation, and a BM25 index over their terms."""

    async def add(self, memories: Sequence[Memory], terms: Sequence[Mapping[str, int]]) -> None: ...

    async def lexical(
        self, user_key: str, terms: Sequence[str], *, scopes: Sequence[Scope], limit: int
    ) -> list[tuple[str, float]]:
        """(memory id, BM25 score), best first, over this person's memories in these scopes."""
        ...

    async def read(
        self, user_key: str, memory_ids: Sequence[str], *, around: Sequence[str], scopes: Sequence[Scope]
    ) -> tuple[list[Memory], dict[str, list[Memory]]]:
        """The memories with these ids, and for each id in `around` the memories just before and after it in the
        same conversation."""
        ...

    async def count(self, user_key: str) -> int: ...

    async def forget_user(self, user_key: str) -> None: ...

    async def ping(self) -> None: ...


class EventLedger(Protocol):
    """Which platform events were already taken, so that a redelivery is never answered twice.

    Shared by every replica when it lives in Redis.
    """

    async def first_sighting(self, key: str, ttl_seconds: int = 86_400) -> bool:
        """True the first time `key` is seen (and records it); False for every later sighting."""
        ...

    async def has_seen(self, key: str) -> bool:
        """True while `key` is recorded (e.g. a thread Rapport takes part in)."""
        ...

    async def forget(self, key: str) -> None:
        """Un-record `key`, for an event that was claimed but could not be accepted."""
        ...


class PersonLocks(Protocol):
    """Holds one person's turn, so that two replicas never interleave the same person's messages."""

    def hold(self, user_key: str) -> AbstractAsyncContextManager[None]: ...


class Embedder(Protocol):
    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class ProfileStore(Protocol):
    async def get_profiles(self, user_keys: Sequence[str]) -> dict[str, Profile]: ...

    async def save_profiles(self, profiles: Sequence[Profile]) -> None: ...


class InteractionStore(Protocol):
    async def save_interactions(self, records: Sequence[InteractionRecord]) -> None:
        """Insert, or overwrite by id (a retried save must not fail)."""
        ...

    async def link_reply(self, interaction_id: str, user_key: str, refs: Sequence[MessageRef]) -> None: ...

    async def find_reply(self, ref: MessageRef) -> ReplyLink | None: ...

    async def stats(self, user_key: str) -> InteractionStats: ...


class PatternStore(Protocol):
    async def bump_patterns(self, rows: Sequence[tuple[str, str, str, str]]) -> None:
        """Count one more sighting of each (user key, scope, kind, value)."""
        ...


class FeedbackStore(Protocol):
    async def set_feedback(self, interaction_id: str, user_key: str, emoji: str, score: float) -> None: ...

    async def clear_feedback(self, interaction_id: str, emoji: str) -> bool: ...


class Records(ProfileStore, InteractionStore, PatternStore, FeedbackStore, Protocol):
    """The relational store: profiles, interactions, patterns and feedback, plus the person-wide chores."""

    async def known(
        self, user_key: str, *, scopes: Sequence[Scope], patterns: int
    ) -> tuple[Profile | None, list[Pattern]]:
        """The person's profile (None if never seen) and up to `patterns` of their most frequent patterns, with
        counts summed over `scopes`."""
        ...

    async def forget_user(self, user_key: str) -> None: ...

    async def has_user(self, user_key: str) -> bool: ...

    async def ping(self) -> None: ...


class LanguageModel(Protocol):
    """Claude, or anything that answers a Prompt the same way."""

    model: str

    async def complete(
        self, prompt: Prompt, *, on_text: Callable[[str], Awaitable[None]] | None = None
    ) -> Completion: ...


class Telemetry(Protocol):
    """Where the core reports what it did; `bot/` backs it with Prometheus."""

    def message_handled(self, platform: str, outcome: str, seconds: float) -> None: ...

    def context_built(self, seconds: float) -> None: ...

    def claude_called(self, seconds: float, input_tokens: int, output_tokens: int) -> None: ...

    def feedback_recorded(self, polarity: str) -> None: ...

    def stored(self, seconds: float) -> None:
        """The storing and learning behind one reply took this long."""
        ...

    def error(self, kind: str) -> None: ...
