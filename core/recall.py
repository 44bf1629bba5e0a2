"""Long-term recall: vectors and BM25 side by side, fused, with neighbouring turns and recency where asked.

Plain cosine over MiniLM embeddings misses names, numbers and rare words; BM25 misses paraphrase. Each finds
what the other does not, so both run and their normalised scores are fused. Evidence in a dialogue often sits
next to the turn that matches (a question and its answer), so the neighbours of strong hits get a share of
their score. The same `Recall` serves the assistant and the retrieval evaluation (bench/memory.py).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import snowballstemmer

from core.health import Health
from core.ports import Embed, Memory, MemoryHit, MemoryIndex, Scopes

__all__ = [
    "Recall",
    "RecallSettings",
    "document_of",
    "embedded_text",
    "fuse",
    "said_by",
    "terms_of",
    "wants_recent",
    "weight_of",
]

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.UNICODE)
_STEMMER = snowballstemmer.stemmer("english")
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
    off on once only or other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours yourself yourselves s t don't i'm it's
    also get got like really yeah yes oh ok okay well much many one""".split()
)
VECTORS = "vector index"
_RECENT = re.compile(r"\b(recent(ly)?|latest|last|lately|yesterday|today|this (week|month|morning)|ago|now)\b", re.I)


def terms_of(text: str) -> list[str]:
    """Lower-cased, stop-worded, Snowball-stemmed words: the one tokenizer for indexing and for questions."""
    words = [w.replace("’", "'") for w in _WORD.findall(text.lower())]
    kept = [w.split("'", 1)[0] if w.endswith(("'s", "'d", "'ll", "'re", "'ve")) else w for w in words]
    return [str(stem) for stem in _STEMMER.stemWords([w for w in kept if w not in STOPWORDS and len(w) < 40])]


def document_of(memory: Memory) -> str:
    """What is indexed for a memory: who said it, when, and what (the time helps questions that ask when)."""
    speaker = f"{memory.speaker}: " if memory.speaker else ""
    return f"[{memory.created_at:%d %B %Y}] {speaker}{memory.text}"


def said_by(speaker: str, text: str) -> str:
    """What is embedded for words someone said: "Speaker: text". The name ties "my" and "I" to the person a
    question names; MiniLM over "Speaker: text" finds evidence in multi-speaker dialogue far more often than over
    the bare words (docs/retrieval-study.md). A message's embedding doubles as its memory's, so the query side
    is embedded the same way (core.assistant)."""
    return f"{speaker}: {text}" if speaker else text


def embedded_text(memory: Memory) -> str:
    """What a memory's vector is computed from (the writer, an edit, a row filled in later, the evaluation)."""
    return said_by(memory.speaker, memory.text)


def weight_of(text: str) -> float:
    """How much a memory's words can hold, as a factor on both halves' scores: n / (n + 1) for n content terms.
    "Later!" or "Wait, really?" (one term, or none) said by the person a question names matched it on that name
    alone, in the vector half (a short text's embedding is mostly its speaker) and in BM25 (a short document
    scores highest), and filled the top places; a sentence with a fact in it keeps 0.8 and more. The index
    applies it before it takes its best candidates (storage/memory_index.py)."""
    n = len(terms_of(text))
    return n / (n + 1)


def wants_recent(question: str) -> bool:
    return bool(_RECENT.search(question))


@dataclass(frozen=True, slots=True, kw_only=True)
class RecallSettings:
    candidates: int = 50
    # 0.6 / 0.4 since memories are embedded with their speaker (the 0.45 / 0.55 before was chosen for a weaker
    # vector half): docs/retrieval-study.md recommended it with that change, and it holds on a second dev set.
    vector_weight: float = 0.6
    lexical_weight: float = 0.4
    neighbour_share: float = 0.35
    recency_weight: float = 0.15


def _normalised(scored: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Scores scaled into 0..1 by the list's own best and worst, so lists of different units can be added."""
    if not scored:
        return {}
    values = [score for _, score in scored]
    top, bottom = max(values), min(values)
    span = top - bottom
    if span <= 1e-12:
        return {memory_id: 1.0 for memory_id, _ in scored}
    return {memory_id: (score - bottom) / span for memory_id, score in scored}


def fuse(
    vector: Sequence[tuple[str, float]], lexical: Sequence[tuple[str, float]], settings: RecallSettings
) -> dict[str, float]:
    """Weighted sum of min-max normalised scores; an id missing from one list gets 0 from it."""
    v, lex = _normalised(vector), _normalised(lexical)
    return {
        memory_id: settings.vector_weight * v.get(memory_id, 0.0) + settings.lexical_weight * lex.get(memory_id, 0.0)
        for memory_id in v.keys() | lex.keys()
    }


def _with_neighbours(
    scores: dict[str, float], neighbours: Mapping[str, Sequence[str]], share: float
) -> dict[str, float]:
    """Each strong hit lends `share` of its score to the turns just before and after it."""
    boosted = dict(scores)
    for memory_id, around in neighbours.items():
        for neighbour in around:
            boosted[neighbour] = boosted.get(neighbour, 0.0) + share * scores.get(memory_id, 0.0)
    return boosted


def _with_recency(scores: dict[str, float], memories: Mapping[str, Memory], weight: float) -> dict[str, float]:
    times = [m.created_at for m in memories.values()]
    if not times:
        return scores
    oldest, newest = min(times), max(times)
    span = (newest - oldest).total_seconds() or 1.0

    def age_share(moment: datetime) -> float:
        return (moment - oldest).total_seconds() / span

    return {
        memory_id: score + weight * age_share(memories[memory_id].created_at) if memory_id in memories else score
        for memory_id, score in scores.items()
    }


class Recall:
    """Implements core.ports.LongTermMemory over a memory index: the one ranker of what it finds."""

    def __init__(
        self,
        *,
        index: MemoryIndex,
        settings: RecallSettings | None = None,
        health: Health | None = None,
        vector_timeout: float = 5.0,
    ) -> None:
        self._index = index
        self._settings = settings or RecallSettings()
        self._health = health or Health()
        self._vector_timeout = vector_timeout

    async def ping(self) -> None:
        await self._index.ping()

    async def add(self, memories: Sequence[Memory], embeddings: Sequence[Sequence[float]]) -> None:
        await self._index.add(memories, [Counter(terms_of(document_of(m))) for m in memories], embeddings)

    async def search(
        self,
        user_key: str,
        query: str,
        embedding: Awaitable[Sequence[float]],
        *,
        scopes: Scopes,
        limit: int,
    ) -> list[MemoryHit]:
        if limit <= 0 or (scopes is not None and not scopes):
            return []
        settings = self._settings
        vector = asyncio.ensure_future(self._in_time(embedding))
        try:
            found = await self._index.candidates(
                user_key, terms_of(query), vector, scopes=scopes, limit=settings.candidates
            )
        except BaseException:
            vector.cancel()
            raise
        if found.unsearched:
            self._health.down(VECTORS, found.unsearched)
        scores = fuse(found.vector, found.lexical, settings)
        if not scores:
            return []
        before = sorted(scores, key=scores.__getitem__, reverse=True)
        # Neighbour boosts only raise scores, so the final `limit * 3` lie among the best `limit * 3` before them
        # and the neighbours of the strongest: both are read at once.
        rows, around = await self._index.read(
            user_key, before[: limit * 3], around=before[: max(limit, 10)], scopes=scopes
        )
        memories = {m.id: m for m in rows}
        for near in around.values():
            memories.update((m.id, m) for m in near)
        scores = _with_neighbours(scores, {k: [m.id for m in v] for k, v in around.items()}, settings.neighbour_share)
        ranked = sorted(scores, key=scores.__getitem__, reverse=True)[: limit * 3]
        if wants_recent(query):
            scores = _with_recency(scores, {i: memories[i] for i in ranked if i in memories}, settings.recency_weight)
        ranked = sorted((i for i in ranked if i in memories), key=scores.__getitem__, reverse=True)[:limit]
        return [MemoryHit(memory=memories[memory_id], score=scores[memory_id]) for memory_id in ranked]

    async def _in_time(self, embedding: Awaitable[Sequence[float]]) -> Sequence[float] | None:
        """The query's embedding; while none comes in time, recall is the word search alone."""
        try:
            async with asyncio.timeout(self._vector_timeout):
                vector = await embedding
        except Exception as exc:  # noqa: BLE001 - the model failed or is slow: the lexical half still answers
            self._health.down(VECTORS, f"{type(exc).__name__}: {exc}".strip()[:200])
            return None
        self._health.up(VECTORS)
        return vector

    async def count(self, user_key: str) -> int:
        return await self._index.count(user_key)

    async def revise(self, user_key: str, memory_id: str, text: str | None, embed: Embed | None = None) -> bool:
        """The words, terms and vector change together (or the memory goes); a retried edit finishes. `embed`
        computes the new vector from the text to embed (embedded_text: the memory's speaker and its new words)."""
        if text is None or embed is None:
            await self._index.remove(user_key, [memory_id])
            return True
        found, _ = await self._index.read(user_key, [memory_id], around=[], scopes=None)
        if not found:
            return False
        revised = replace(found[0], text=text, reply="")
        terms = Counter(terms_of(document_of(revised)))
        embedding = await embed(embedded_text(revised))
        return await self._index.revise(user_key, memory_id, text, terms, embedding) is not None

    async def forget_user(self, user_key: str) -> None:
        await self._index.forget_user(user_key)
