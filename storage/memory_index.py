"""Long-term memory's one index: the people this process talks to, each held as arrays of their memories' terms
and vectors, fed by one read of the memory rows.

Each memory row holds its terms and its vector (storage/memory_store.py), so one query brings in everything a
person's search needs, and BM25 and cosine are both computed here, in numpy, from the same entry:
- the first search of a person reads their newest rows (`_FIRST`) before it answers; an older history loads
  behind, a page at a time, and until it has, the search covers the memories loaded so far (the newest);
- every search then reads only the rows past the newest it holds (with a short look back, so that a row another
  replica committed late is not missed): the one freshness read;
- a process's own writes go straight into its entries.
People are held least recently used first out, under a cap on their total size in bytes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.ports import Candidates, Memory, Scopes
from storage.long_term import ChromaVectors
from storage.memory_store import POSTING, VECTOR, MemoryRows, pack_terms, term_key
from storage.people_cache import AudienceCodes, People, allowed_mask

__all__ = ["MemoryIndex"]

log = logging.getLogger(__name__)

K1 = 1.2
B = 0.75
_FIRST = 12_000  # rows read before a person's first answer (about 60 ms at 10,000 memories); older ones load behind
_PAGE = 5_000  # rows a page while loading behind, or catching up
_LOOK_BACK = 1_000  # seqs re-read below the newest held: a row numbered earlier may commit later (replicas)
_OFF_LOOP = 20_000  # memories above which a search runs in a thread
_TAIL = 20_000  # postings appended since the last sort, above which they are merged into the sorted ones
_SOURCE_PAUSE = 10.0  # seconds before a vector source that failed is asked again


class _Grown:
    """A numpy array with room to grow into: appending a few rows must not copy all of them (15 MB at 10,000
    memories, on the event loop, after every message)."""

    def __init__(self, dtype: Any, width: int | None = None) -> None:
        self.data = np.empty((0,) if width is None else (0, width), dtype=dtype)
        self.n = 0

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.n]

    def extend(self, values: np.ndarray) -> None:
        need = self.n + len(values)
        if need > len(self.data):
            grown = np.empty((max(need, int(self.n * 1.5), 64), *self.data.shape[1:]), dtype=self.data.dtype)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[self.n : need] = values
        self.n = need


@dataclass(frozen=True, slots=True)
class _View:
    """What a search reads of an entry, fixed when it starts (a search in a thread sees no later change)."""

    ids: list[str]
    allowed: np.ndarray
    lengths: np.ndarray
    sorted_terms: np.ndarray
    sorted_positions: np.ndarray
    sorted_tf: np.ndarray
    tail_terms: np.ndarray
    tail_positions: np.ndarray
    tail_tf: np.ndarray
    vectors: np.ndarray | None
    has_vector: np.ndarray

    def lexical(self, keys: Sequence[int], limit: int) -> list[tuple[str, float]]:
        """Textbook BM25 (k1 1.2, b 0.75) over the memories the audiences allow, their own statistics."""
        allowed, lengths = self.allowed, self.lengths
        documents = float(allowed.sum())
        total = float(lengths[allowed].sum())
        average = total / documents if documents > 0 and total > documents else 1.0
        scores = np.zeros(len(self.ids))
        matched = np.zeros(len(self.ids), dtype=bool)
        for key in sorted(set(keys)):
            low = int(np.searchsorted(self.sorted_terms, key, side="left"))
            high = int(np.searchsorted(self.sorted_terms, key, side="right"))
            positions, tf = self.sorted_positions[low:high], self.sorted_tf[low:high]
            if len(self.tail_terms):
                hit = self.tail_terms == key
                positions = np.concatenate([positions, self.tail_positions[hit]])
                tf = np.concatenate([tf, self.tail_tf[hit]])
            keep = allowed[positions]
            positions, tf = positions[keep], tf[keep].astype(np.float64)
            df = len(positions)
            if df == 0:
                continue
            idf = math.log(1 + (documents - df + 0.5) / (df + 0.5))
            scores[positions] += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * lengths[positions] / average))
            matched[positions] = True
        found = np.flatnonzero(matched)
        if len(found) > limit:
            # Everything scoring at least the limit-th best, so that ties at the edge are broken by id.
            edge = np.partition(scores[found], len(found) - limit)[len(found) - limit]
            found = found[scores[found] >= edge]
        ranked = sorted(((self.ids[i], float(scores[i])) for i in found), key=lambda hit: (-hit[1], hit[0]))
        return ranked[:limit]

    def nearest(self, query: np.ndarray, limit: int) -> list[tuple[str, float]]:
        if self.vectors is None or len(query) != self.vectors.shape[1]:
            return []
        searchable = self.allowed & self.has_vector
        count = min(limit, int(searchable.sum()))
        if count == 0:
            return []
        scores = self.vectors @ query
        scores[~searchable] = -np.inf
        top = np.argpartition(-scores, count - 1)[:count]
        top = top[np.argsort(-scores[top])]
        return [(self.ids[i], float(scores[i])) for i in top]


@dataclass
class _Person:
    ids: list[str] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)
    codes: AudienceCodes = field(default_factory=AudienceCodes)
    scopes: _Grown = field(default_factory=lambda: _Grown(np.int16))  # audiences, as `codes` numbers them
    lengths: _Grown = field(default_factory=lambda: _Grown(np.float64))
    vectors: _Grown | None = None  # float32 (converting float16 for each search cost more than the product)
    has_vector: _Grown = field(default_factory=lambda: _Grown(bool))
    # Postings sorted by term key (searched by bisection), and those appended since, scanned whole.
    sorted_terms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sorted_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    sorted_tf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    tail_terms: _Grown = field(default_factory=lambda: _Grown(np.int64))
    tail_positions: _Grown = field(default_factory=lambda: _Grown(np.int32))
    tail_tf: _Grown = field(default_factory=lambda: _Grown(np.int32))
    newest: int = -1  # the highest seq held
    oldest: int | None = None  # the lowest seq held, while older rows are still to load
    complete: bool = False  # every row up to `newest` held
    without_vector: set[int] = field(default_factory=set)  # positions whose vector a source must still give
    counted: int = 0  # of `size`, what the cache's total already includes
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def size(self) -> int:
        """Bytes held, about."""
        width = 0 if self.vectors is None else self.vectors.data.shape[1] * 4
        return len(self.ids) * (width + 80) + (len(self.sorted_terms) + self.tail_terms.n) * 16

    def append(
        self,
        ids: Sequence[str],
        scopes: Sequence[str],
        lengths: Sequence[int],
        terms: Sequence[bytes | None],
        vectors: Sequence[np.ndarray | None],
    ) -> list[int]:
        """Memories not held yet (the rest are skipped); returns the positions given without a vector."""
        fresh = [i for i, memory_id in enumerate(ids) if memory_id not in self.position]
        if not fresh:
            return []
        start = len(self.ids)
        for offset, i in enumerate(fresh):
            self.position[ids[i]] = start + offset
            self.ids.append(ids[i])
        self.scopes.extend(np.array([self.codes.number(scopes[i]) for i in fresh], np.int16))
        self.lengths.extend(np.array([lengths[i] for i in fresh], np.float64))
        packed = [terms[i] or b"" for i in fresh]
        postings = np.frombuffer(b"".join(packed), POSTING)
        counts = np.array([len(p) // POSTING.itemsize for p in packed], np.int64)
        self.tail_terms.extend(postings["term"])
        self.tail_positions.extend(np.repeat(np.arange(start, start + len(fresh), dtype=np.int32), counts))
        self.tail_tf.extend(postings["tf"])
        if self.tail_terms.n > max(_TAIL, len(self.sorted_terms) // 4):
            self._merge()
        given = [vectors[i] for i in fresh]
        width = next((len(v) for v in given if v is not None), None)
        if self.vectors is None and width is not None:
            self.vectors = _Grown(np.float32, width)
            self.vectors.extend(np.zeros((start, width), np.float32))
        missing = [start + offset for offset, v in enumerate(given) if v is None or len(v) != width]
        if self.vectors is not None:
            rows = np.zeros((len(fresh), self.vectors.data.shape[1]), np.float32)
            for offset, v in enumerate(given):
                if v is not None and len(v) == rows.shape[1]:
                    rows[offset] = v
            self.vectors.extend(rows)
        has = np.ones(len(fresh), bool)
        has[[p - start for p in missing]] = False
        self.has_vector.extend(has)
        return missing

    def give_vectors(self, found: Mapping[str, np.ndarray]) -> None:
        for memory_id, vector in found.items():
            position = self.position.get(memory_id)
            if position is None:
                continue
            if self.vectors is None:
                self.vectors = _Grown(np.float32, len(vector))
                self.vectors.extend(np.zeros((len(self.ids), len(vector)), np.float32))
            if len(vector) == self.vectors.data.shape[1]:
                self.vectors.data[position] = vector
                self.has_vector.data[position] = True
                self.without_vector.discard(position)

    def _merge(self) -> None:
        terms = np.concatenate([self.sorted_terms, self.tail_terms.view])
        order = np.argsort(terms, kind="stable")
        self.sorted_terms = terms[order]
        self.sorted_positions = np.concatenate([self.sorted_positions, self.tail_positions.view])[order]
        self.sorted_tf = np.concatenate([self.sorted_tf, self.tail_tf.view])[order]
        self.tail_terms, self.tail_positions, self.tail_tf = _Grown(np.int64), _Grown(np.int32), _Grown(np.int32)

    def view(self, scopes: Scopes) -> _View:
        return _View(
            ids=self.ids,
            allowed=allowed_mask(self.scopes.view, self.codes.allowed(scopes)),
            lengths=self.lengths.view,
            sorted_terms=self.sorted_terms,
            sorted_positions=self.sorted_positions,
            sorted_tf=self.sorted_tf,
            tail_terms=self.tail_terms.view,
            tail_positions=self.tail_positions.view,
            tail_tf=self.tail_tf.view,
            vectors=None if self.vectors is None else self.vectors.view,
            has_vector=self.has_vector.view,
        )


def _vectors_of(rows: Sequence[Mapping[str, Any]]) -> list[np.ndarray | None]:
    return [None if row["vector"] is None else np.frombuffer(row["vector"], VECTOR) for row in rows]


class MemoryIndex:
    """Implements core.ports.MemoryIndex over the memory rows, with the people searched held in this process.

    `source`: a Chroma store that keeps the vectors the rows do not (a server, through CHROMA_URL).
    """

    def __init__(
        self,
        rows: MemoryRows,
        *,
        source: ChromaVectors | None = None,
        max_bytes: int = 600 * 2**20,
        source_timeout: float = 2.0,
    ) -> None:
        self._rows = rows
        self._source = source
        self._source_timeout = source_timeout
        self._source_down: tuple[float, str] | None = None  # (until when, why)
        self._people: People[_Person] = People(max_bytes, _Person)

    @property
    def held_bytes(self) -> int:
        return self._people.held

    def loading(self, user_key: str) -> bool:
        return user_key in self._people.loading

    async def ping(self) -> None:
        await self._rows.ping()
        if self._source is not None:
            await self._source.ping()

    async def close(self) -> None:
        await self._people.close()
        if self._source is not None:
            await asyncio.to_thread(self._source.close)

    async def add(
        self, memories: Sequence[Memory], terms: Sequence[Mapping[str, int]], embeddings: Sequence[Sequence[float]]
    ) -> None:
        """Rows first, then the vectors' store when it is another one: a memory is never found by a vector
        without its words to show. A retried add stores nothing twice."""
        await self._rows.add(memories, terms, embeddings)
        if self._source is not None:
            await self._source.add(memories, embeddings)
        by_person: dict[str, list[int]] = {}
        for index, memory in enumerate(memories):
            by_person.setdefault(memory.user_key, []).append(index)
        for user_key, indexes in by_person.items():
            person = self._people.get(user_key)
            if person is None:
                continue
            # Into the entry without a round trip; the freshness read skips them by id.
            given = [np.asarray(embeddings[i], np.float32) for i in indexes]
            person.append(
                [memories[i].id for i in indexes],
                [memories[i].scope for i in indexes],
                [sum(terms[i].values()) for i in indexes],
                [pack_terms(terms[i]) for i in indexes],
                given,
            )
            # A retry of an add whose vectors failed to reach their store: the entry read the row meanwhile.
            person.give_vectors({memories[i].id: v for i, v in zip(indexes, given, strict=True)})
            self._people.account(user_key, person)
        self._people.evict()

    async def candidates(
        self,
        user_key: str,
        terms: Sequence[str],
        embedding: Awaitable[Sequence[float] | None],
        *,
        scopes: Scopes,
        limit: int,
    ) -> Candidates:
        person = await self._fresh(user_key)
        view = person.view(scopes)
        keys = [term_key(term) for term in terms]
        large = len(view.ids) > _OFF_LOOP
        lexical = await asyncio.to_thread(view.lexical, keys, limit) if large else view.lexical(keys, limit)
        vector = await embedding
        nearest: list[tuple[str, float]] = []
        if vector is not None:
            query = np.asarray(vector, dtype=np.float32)
            nearest = await asyncio.to_thread(view.nearest, query, limit) if large else view.nearest(query, limit)
        unsearched = None
        if person.without_vector:
            why = self._source_down[1] if self._source_down else "no store holds their vectors"
            unsearched = f"{len(person.without_vector)} memories searched by words only: {why}"
        return Candidates(vector=nearest, lexical=lexical, unsearched=unsearched)

    async def read(
        self, user_key: str, memory_ids: Sequence[str], *, around: Sequence[str], scopes: Scopes
    ) -> tuple[list[Memory], dict[str, list[Memory]]]:
        return await self._rows.read(user_key, memory_ids, around=around, scopes=scopes)

    async def count(self, user_key: str) -> int:
        return await self._rows.count(user_key)

    async def revise(
        self, user_key: str, memory_id: str, text: str, terms: Mapping[str, int], embedding: Sequence[float]
    ) -> Memory | None:
        self._people.forget(user_key)  # the next search reads the person again, with the new terms
        if self._source is not None:
            await self._source.remove(user_key, [memory_id])
        revised = await self._rows.revise(user_key, memory_id, text, terms, embedding)
        if revised is not None and self._source is not None:
            await self._source.add([revised], [embedding])
        self._people.forget(user_key)
        return revised

    async def remove(self, user_key: str, memory_ids: Sequence[str]) -> None:
        """Gone from the rows (and the vectors' store), and this person let go here: the next search reads them
        again. Another process's entry still names the ids, which `read` no longer finds."""
        self._people.forget(user_key)
        if self._source is not None:
            await self._source.remove(user_key, memory_ids)
        await self._rows.remove(user_key, memory_ids)
        self._people.forget(user_key)

    async def forget_user(self, user_key: str) -> None:
        self._people.forget(user_key)
        if self._source is not None:
            await self._source.forget_user(user_key)
        await self._rows.forget_user(user_key)
        self._people.forget(user_key)

    def let_go(self, user_key: str) -> None:
        """Read this person anew at their next search (their rows changed underneath: vectors moved in)."""
        self._people.forget(user_key)

    async def _fresh(self, user_key: str) -> _Person:
        """This person's entry, with every row newer than it held (and, the first time, the newest rows)."""
        person = self._people.touch(user_key)
        async with person.lock:
            if person.newest < 0 and not person.complete:
                rows = await self._rows.older(user_key, None, _FIRST)
                self._take(person, rows)
                if len(rows) < _FIRST:
                    person.complete = True
                else:
                    person.oldest = min(int(row["seq"]) for row in rows)
                    self._people.load_behind(user_key, lambda: self._load_older(user_key, person), "memories")
            else:
                after = max(person.newest - _LOOK_BACK, -1)
                while True:
                    rows = await self._rows.newer(user_key, after, _PAGE)
                    self._take(person, rows)
                    if len(rows) < _PAGE:
                        break
                    after = int(rows[-1]["seq"])
            if person.without_vector:
                await self._ask_source(user_key, person)
        self._people.account(user_key, person)
        self._people.evict(keep=user_key)
        return person

    async def _load_older(self, user_key: str, person: _Person) -> None:
        """The rest of a long history, newest first, a page at a time (searches go on between pages)."""
        while person.oldest is not None and self._people.get(user_key) is person:
            async with person.lock:
                rows = await self._rows.older(user_key, person.oldest, _PAGE)
                self._take(person, rows)
                person.oldest = min((int(row["seq"]) for row in rows), default=None) if len(rows) == _PAGE else None
            self._people.account(user_key, person)
            self._people.evict(keep=user_key)
        person.complete = person.oldest is None

    def _take(self, person: _Person, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        missing = person.append(
            [row["id"] for row in rows],
            [row["scope"] for row in rows],
            [int(row["length"]) for row in rows],
            [row["terms"] for row in rows],
            _vectors_of(rows),
        )
        person.without_vector.update(missing)
        person.newest = max(person.newest, max(int(row["seq"]) for row in rows))

    async def _ask_source(self, user_key: str, person: _Person) -> None:
        """Vectors the rows do not hold, from the store that does; a store that fails is left alone a while."""
        if self._source is None or (self._source_down is not None and time.monotonic() < self._source_down[0]):
            return
        ids = [person.ids[p] for p in sorted(person.without_vector)]
        try:
            async with asyncio.timeout(self._source_timeout):
                found, _, matrix = await self._source.vectors(user_key, ids)
        except Exception as exc:  # noqa: BLE001 - searched by words alone until it answers again
            why = f"the vector store is unavailable ({type(exc).__name__}: {exc})".strip()[:200]
            if self._source_down is None:
                log.warning("%s; memories without their vectors are searched by words only", why)
            self._source_down = (time.monotonic() + _SOURCE_PAUSE, why)
            return
        self._source_down = None
        person.give_vectors({memory_id: matrix[i] for i, memory_id in enumerate(found)})
