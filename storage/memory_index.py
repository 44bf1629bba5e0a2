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
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from core.background import stop_tasks
from core.ports import Candidates, Memory, Scopes
from core.recall import weight_of
from storage.long_term import ChromaVectors
from storage.memory_store import POSTING, VECTOR, MemoryRows, pack_terms, term_key
from storage.people_cache import AudienceCodes, People, allowed_mask

__all__ = ["MemoryIndex"]

log = logging.getLogger(__name__)

K1 = 1.2
B = 0.75
_FIRST = 12_000  # a person with at most this many memories is read whole before their first answer
_FIRST_OF_MANY = 3_000  # of a longer history, the newest read before it; the rest load behind
_PAGE = 5_000  # rows a page while loading behind, or catching up
_LOOK_BACK = 1_000  # seqs looked at again below the newest held: a row numbered earlier may commit later
_OFF_LOOP = 20_000  # memories above which a search runs in a thread
_PARSE_OFF_LOOP = 1_000  # rows above which a page is unpacked in a thread
# Postings kept unsorted (scanned whole by each search: about 1 ms per 100,000 for a question's terms), above which
# they are sorted into a segment of their own. A person read whole at once stays below it: sorting 150,000
# postings cost 25 ms of a first answer. The pages of a long history, read behind, are sorted as they come.
_TAIL = 300_000
_SOURCE_PAUSE = 10.0  # seconds before a vector source that failed is asked again
_SOURCE_INLINE = 500  # vectors a search waits for from the source; more are fetched behind it
_SOURCE_BEHIND = 60.0  # seconds a fetch behind the searches may take


class _Grown:
    """A numpy array with room to grow into: appending a few rows must not copy all of them (15 MB at 10,000
    memories, on the event loop, after every message)."""

    def __init__(self, dtype: Any, width: int | None = None) -> None:
        self.data = np.empty((0,) if width is None else (0, width), dtype=dtype)
        self.n = 0

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.n]

    def reserve(self, rows: int) -> None:
        if rows > len(self.data):
            grown = np.empty((rows, *self.data.shape[1:]), dtype=self.data.dtype)
            grown[: self.n] = self.data[: self.n]
            self.data = grown

    def extend(self, values: np.ndarray) -> None:
        need = self.n + len(values)
        if need > len(self.data):
            self.reserve(max(need, int(self.n * 1.25), self.n + 64))
        self.data[self.n : need] = values
        self.n = need


@dataclass(frozen=True, slots=True)
class _Segment:
    """Postings sorted by term key, searched by bisection: (term keys, memory positions, counts)."""

    terms: np.ndarray
    positions: np.ndarray
    tf: np.ndarray

    @staticmethod
    def sorted(terms: np.ndarray, positions: np.ndarray, tf: np.ndarray) -> _Segment:
        order = np.argsort(terms)
        return _Segment(terms[order], positions[order], tf[order])

    def find(self, key: int) -> tuple[np.ndarray, np.ndarray]:
        low = int(np.searchsorted(self.terms, key, side="left"))
        high = int(np.searchsorted(self.terms, key, side="right"))
        return self.positions[low:high], self.tf[low:high]


@dataclass(frozen=True, slots=True)
class _Page:
    """Rows unpacked into arrays (positions counted from the page's first row), ready to append."""

    ids: list[str]
    seqs: list[int]
    scopes: list[str]
    lengths: np.ndarray
    weights: np.ndarray  # core.recall.weight_of
    vectors: np.ndarray | None  # float32, one row a memory (zeros where `has_vector` is False)
    has_vector: np.ndarray
    postings: _Segment | None  # sorted, for a page large enough to be a segment
    terms: np.ndarray  # otherwise the postings as they came (term keys, positions, counts)
    positions: np.ndarray
    tf: np.ndarray


def _unpacked(rows: Sequence[Mapping[str, Any]], *, sort: bool = False) -> _Page:
    """A page of memory rows as arrays (`sort`: its postings as a segment of their own): no per-term work, the
    terms come packed."""
    packed = [row["terms"] or b"" for row in rows]
    postings = np.frombuffer(b"".join(packed), POSTING)
    counts = np.array([len(p) // POSTING.itemsize for p in packed], np.int64)
    positions = np.repeat(np.arange(len(rows), dtype=np.int32), counts)
    terms, tf = postings["term"].copy(), postings["tf"].astype(np.int32)
    raw = [row["vector"] or b"" for row in rows]
    width = next((len(v) // VECTOR.itemsize for v in raw if v), None)
    vectors, has = None, np.zeros(len(rows), bool)
    if width is not None:
        size = width * VECTOR.itemsize
        has = np.array([len(v) == size for v in raw], bool)
        if has.all():  # the usual page: one conversion of all its bytes
            vectors = np.frombuffer(b"".join(raw), VECTOR).reshape(len(rows), width).astype(np.float32)
        else:
            vectors = np.zeros((len(rows), width), np.float32)
            for i in np.flatnonzero(has):
                vectors[i] = np.frombuffer(raw[i], VECTOR)
    segment = _Segment.sorted(terms, positions, tf) if sort else None
    return _Page(
        ids=[row["id"] for row in rows],
        seqs=[int(row["seq"]) for row in rows],
        scopes=[row["scope"] for row in rows],
        lengths=np.array([row["length"] for row in rows], np.float64),
        weights=np.array([1.0 if row.get("weight") is None else row["weight"] for row in rows], np.float64),
        vectors=vectors,
        has_vector=has,
        postings=segment,
        terms=terms,
        positions=positions,
        tf=tf,
    )


def _given_page(
    memories: Sequence[Memory], terms: Sequence[Mapping[str, int]], weights: Sequence[float], vectors: np.ndarray
) -> _Page:
    """This process's own new memories, as a page (their seqs are not known here: the freshness read skips them)."""
    rows = [
        {
            "id": m.id,
            "seq": -1,
            "scope": m.scope,
            "length": sum(t.values()),
            "weight": w,
            "terms": pack_terms(t),
            "vector": None,
        }
        for m, t, w in zip(memories, terms, weights, strict=True)
    ]
    page = _unpacked(rows)
    return replace(page, vectors=vectors, has_vector=np.ones(len(memories), bool))


@dataclass(frozen=True, slots=True)
class _View:
    """What a search reads of an entry, fixed when it starts (a search in a thread sees no later change)."""

    ids: list[str]
    allowed: np.ndarray
    lengths: np.ndarray
    weights: np.ndarray
    segments: list[_Segment]
    tail_terms: np.ndarray
    tail_positions: np.ndarray
    tail_tf: np.ndarray
    vectors: np.ndarray | None
    has_vector: np.ndarray

    def lexical(self, keys: Sequence[int], limit: int) -> list[tuple[str, float]]:
        """Textbook BM25 (k1 1.2, b 0.75) over the memories the audiences allow, their own statistics, each times
        its memory's weight (core.recall.weight_of)."""
        allowed, lengths = self.allowed, self.lengths
        documents = float(allowed.sum())
        total = float(lengths[allowed].sum())
        average = total / documents if documents > 0 and total > documents else 1.0
        scores = np.zeros(len(self.ids))
        matched = np.zeros(len(self.ids), dtype=bool)
        for key in sorted(set(keys)):
            found = [segment.find(key) for segment in self.segments]
            if len(self.tail_terms):
                hit = self.tail_terms == key
                found.append((self.tail_positions[hit], self.tail_tf[hit]))
            if not found:
                continue
            positions = np.concatenate([p for p, _ in found])
            tf = np.concatenate([t for _, t in found]).astype(np.float64)
            keep = allowed[positions]
            positions, tf = positions[keep], tf[keep]
            df = len(positions)
            if df == 0:
                continue
            idf = math.log(1 + (documents - df + 0.5) / (df + 0.5))
            scores[positions] += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * lengths[positions] / average))
            matched[positions] = True
        scores *= self.weights
        found_at = np.flatnonzero(matched)
        if len(found_at) > limit:
            # Everything scoring at least the limit-th best, so that ties at the edge are broken by id.
            edge = np.partition(scores[found_at], len(found_at) - limit)[len(found_at) - limit]
            found_at = found_at[scores[found_at] >= edge]
        ranked = sorted(((self.ids[i], float(scores[i])) for i in found_at), key=lambda hit: (-hit[1], hit[0]))
        return ranked[:limit]

    def nearest(self, query: np.ndarray, limit: int) -> list[tuple[str, float]]:
        if self.vectors is None or len(query) != self.vectors.shape[1]:
            return []
        searchable = self.allowed & self.has_vector
        count = min(limit, int(searchable.sum()))
        if count == 0:
            return []
        scores = self.vectors @ query
        scores = np.where(scores > 0, scores * self.weights, scores)  # a weight lowers a score, never raises one
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
    weights: _Grown = field(default_factory=lambda: _Grown(np.float64))
    vectors: _Grown | None = None  # float32 (converting float16 for each search cost more than the product)
    has_vector: _Grown = field(default_factory=lambda: _Grown(bool))
    # Postings in sorted segments (a page each, or the tail once it grew), and those appended since, scanned whole.
    segments: list[_Segment] = field(default_factory=list)
    tail_terms: _Grown = field(default_factory=lambda: _Grown(np.int64))
    tail_positions: _Grown = field(default_factory=lambda: _Grown(np.int32))
    tail_tf: _Grown = field(default_factory=lambda: _Grown(np.int32))
    newest: int = -1  # the highest seq held
    oldest: int | None = None  # the lowest seq held, while older rows are still to load
    read: bool = False  # read once (the newest rows, or all of them)
    expected: int = 0  # memories the person had at that read, and room for some more
    without_vector: set[int] = field(default_factory=set)  # positions whose vector a source must still give
    lacking: set[int] = field(default_factory=set)  # of those, the ones the source did not have when asked
    counted: int = 0  # of `size`, what the cache's total already includes
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def size(self) -> int:
        """Bytes held: the arrays with their room to grow, and about 200 a memory for its id (the string, the list
        and the dictionary entry)."""
        arrays = [
            self.scopes,
            self.lengths,
            self.weights,
            self.has_vector,
            self.tail_terms,
            self.tail_positions,
            self.tail_tf,
        ]
        held = sum(a.data.nbytes for a in arrays) + (0 if self.vectors is None else self.vectors.data.nbytes)
        held += sum(s.terms.nbytes + s.positions.nbytes + s.tf.nbytes for s in self.segments)
        return held + 200 * len(self.ids)

    def reserve(self, memories: int, width: int | None) -> None:
        """Room for a history of this size, so that loading it copies nothing."""
        for grown in (self.scopes, self.lengths, self.weights, self.has_vector):
            grown.reserve(memories)
        if width is not None:
            if self.vectors is None:
                self.vectors = _Grown(np.float32, width)
                self.vectors.extend(np.zeros((len(self.ids), width), np.float32))
            self.vectors.reserve(memories)

    def append(self, page: _Page) -> None:
        """The page's memories not held yet (the rest are skipped)."""
        keep = np.array([memory_id not in self.position for memory_id in page.ids], bool)
        if not keep.any():
            return
        if not keep.all():
            page = _kept(page, keep)
        start = len(self.ids)
        if self.vectors is None and page.vectors is not None:
            self.reserve(start, page.vectors.shape[1])  # the memories held so far have none
        for offset, memory_id in enumerate(page.ids):
            self.position[memory_id] = start + offset
            self.ids.append(memory_id)
        self.scopes.extend(np.array([self.codes.number(scope) for scope in page.scopes], np.int16))
        self.lengths.extend(page.lengths)
        self.weights.extend(page.weights)
        if page.postings is not None:
            p = page.postings
            self.segments.append(_Segment(p.terms, p.positions + np.int32(start), p.tf))
        else:
            self.tail_terms.extend(page.terms)
            self.tail_positions.extend(page.positions + np.int32(start))
            self.tail_tf.extend(page.tf)
            if self.tail_terms.n > _TAIL:
                self.segments.append(_Segment.sorted(self.tail_terms.view, self.tail_positions.view, self.tail_tf.view))
                self.tail_terms, self.tail_positions, self.tail_tf = (
                    _Grown(np.int64),
                    _Grown(np.int32),
                    _Grown(np.int32),
                )
        has = page.has_vector.copy()
        if self.vectors is not None:
            width = self.vectors.data.shape[1]
            if page.vectors is not None and page.vectors.shape[1] == width:
                self.vectors.extend(page.vectors)
            else:
                self.vectors.extend(np.zeros((len(page.ids), width), np.float32))
                has[:] = False
        self.has_vector.extend(has)
        self.without_vector.update(int(i) + start for i in np.flatnonzero(~has))
        self.newest = max(self.newest, *page.seqs)

    def give_vectors(self, found: Mapping[str, np.ndarray]) -> None:
        for memory_id, vector in found.items():
            position = self.position.get(memory_id)
            if position is None:
                continue
            if self.vectors is None:  # the first vector given (a Chroma store keeps them): room for them all
                self.reserve(max(self.expected, len(self.ids)), len(vector))
            assert self.vectors is not None
            if len(vector) == self.vectors.data.shape[1]:
                self.vectors.data[position] = vector
                self.has_vector.data[position] = True
                self.without_vector.discard(position)
                self.lacking.discard(position)

    def view(self, scopes: Scopes) -> _View:
        return _View(
            ids=self.ids,
            allowed=allowed_mask(self.scopes.view, self.codes.allowed(scopes)),
            lengths=self.lengths.view,
            weights=self.weights.view,
            segments=list(self.segments),
            tail_terms=self.tail_terms.view,
            tail_positions=self.tail_positions.view,
            tail_tf=self.tail_tf.view,
            vectors=None if self.vectors is None else self.vectors.view,
            has_vector=self.has_vector.view,
        )


def _kept(page: _Page, keep: np.ndarray) -> _Page:
    """The page without the rows `keep` leaves out, its positions renumbered."""
    renumber = np.cumsum(keep, dtype=np.int32) - 1
    wanted = keep[page.positions] if len(page.positions) else np.zeros(0, bool)
    terms, positions, tf = page.terms[wanted], renumber[page.positions[wanted]], page.tf[wanted]
    indexes = np.flatnonzero(keep)
    return _Page(
        ids=[page.ids[i] for i in indexes],
        seqs=[page.seqs[i] for i in indexes],
        scopes=[page.scopes[i] for i in indexes],
        lengths=page.lengths[keep],
        weights=page.weights[keep],
        vectors=None if page.vectors is None else page.vectors[keep],
        has_vector=page.has_vector[keep],
        postings=None if page.postings is None else _Segment.sorted(terms, positions, tf),
        terms=terms,
        positions=positions,
        tf=tf,
    )


async def _page_of(rows: Sequence[Mapping[str, Any]], *, sort: bool = False) -> _Page:
    if len(rows) > _PARSE_OFF_LOOP:
        return await asyncio.to_thread(_unpacked, rows, sort=sort)
    return _unpacked(rows, sort=sort)


class MemoryIndex:
    """Implements core.ports.MemoryIndex over the memory rows, with the people searched held in this process.

    `source`: a Chroma store that keeps the vectors the rows do not (a server, through CHROMA_URL).
    """

    def __init__(
        self,
        rows: MemoryRows,
        *,
        source: ChromaVectors | None = None,
        max_bytes: int = 384 * 2**20,
        source_timeout: float = 2.0,
    ) -> None:
        self._rows = rows
        self._source = source
        self._source_timeout = source_timeout
        self._source_down: tuple[float, str] | None = None  # (until when, why)
        self._fetching: dict[str, asyncio.Task[None]] = {}  # vectors being fetched behind the searches
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
        await stop_tasks(list(self._fetching.values()))
        if self._source is not None:
            await asyncio.to_thread(self._source.close)

    async def add(
        self, memories: Sequence[Memory], terms: Sequence[Mapping[str, int]], embeddings: Sequence[Sequence[float]]
    ) -> None:
        """Rows first, then the vectors' store when it is another one: a memory is never found by a vector
        without its words to show. A retried add stores nothing twice."""
        weights = [weight_of(m.text) for m in memories]  # once, for the rows and for the entries held here
        await self._rows.add(memories, terms, embeddings, weights=weights)
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
            given = np.asarray([embeddings[i] for i in indexes], np.float32)
            held = [memories[i] for i in indexes]
            person.append(_given_page(held, [terms[i] for i in indexes], [weights[i] for i in indexes], given))
            # A retry of an add whose vectors failed to reach their store: the entry read the row meanwhile.
            person.give_vectors({memories[i].id: given[n] for n, i in enumerate(indexes)})
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
            if self._source_down:
                why = self._source_down[1]
            elif person.lacking:
                why = "the vector store does not have them"
            else:
                why = "their vectors are still to be moved into the database"
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
        """Read this person anew at their next search (what a restart leaves)."""
        self._people.forget(user_key)

    def vectors_moved(self, user_key: str, vectors: Mapping[str, Sequence[float]]) -> None:
        """Vectors written into rows that had none (storage/vector_import.py): a held entry takes them as they are."""
        person = self._people.get(user_key)
        if person is not None:
            person.give_vectors({memory_id: np.asarray(v, np.float32) for memory_id, v in vectors.items()})

    async def _fresh(self, user_key: str) -> _Person:
        """This person's entry, with every row newer than it held (the first time: all of them, or the newest)."""
        person = self._people.touch(user_key)
        async with person.lock:
            if not person.read:
                await self._first_read(user_key, person)
            else:
                await self._catch_up(user_key, person)
            if person.without_vector:
                await self._ask_source(user_key, person)
        self._people.account(user_key, person)
        self._people.evict(keep=user_key)
        return person

    async def _first_read(self, user_key: str, person: _Person) -> None:
        total = await self._rows.count(user_key)
        limit = _FIRST if total <= _FIRST else _FIRST_OF_MANY
        rows = await self._rows.older(user_key, None, limit)
        page = await _page_of(rows)
        person.expected = total + _PAGE
        if len(rows) == limit:  # more may be older (or have come since the count)
            person.reserve(person.expected, None if page.vectors is None else page.vectors.shape[1])
        person.append(page)
        person.read = True
        if len(rows) == limit and self._people.get(user_key) is person:
            person.oldest = min(page.seqs)
            self._people.load_behind(user_key, lambda: self._load_older(user_key, person), "memories")

    async def _catch_up(self, user_key: str, person: _Person) -> None:
        """The ids of the rows past the newest held (and a little before it): those not held are read whole."""
        after = max(person.newest - _LOOK_BACK, -1)
        while True:
            heads = await self._rows.heads(user_key, after, _PAGE)
            missing = [head["id"] for head in heads if head["id"] not in person.position]
            for start in range(0, len(missing), _PAGE):
                person.append(await _page_of(await self._rows.by_ids(user_key, missing[start : start + _PAGE])))
            if heads:
                person.newest = max(person.newest, int(heads[-1]["seq"]))
            if len(heads) < _PAGE:
                return
            after = int(heads[-1]["seq"])

    async def _load_older(self, user_key: str, person: _Person) -> None:
        """The rest of a long history, newest first, a page at a time, unpacked in a thread: searches go on
        meanwhile (over what is held), and never wait for a page."""
        while person.oldest is not None:
            rows = await self._rows.older(user_key, person.oldest, _PAGE)
            page = await _page_of(rows, sort=True)
            if self._people.get(user_key) is not person:
                return  # let go meanwhile
            person.append(page)
            person.oldest = min(page.seqs) if len(rows) == _PAGE else None
            self._people.account(user_key, person)
            self._people.evict(keep=user_key)

    async def _ask_source(self, user_key: str, person: _Person) -> None:
        """Vectors the rows do not hold, from the store that does: a few while the search waits, many behind it
        (a long history's first read); a store that fails is left alone a while."""
        if self._source is None or (self._source_down is not None and time.monotonic() < self._source_down[0]):
            return
        if len(person.without_vector - person.lacking) <= _SOURCE_INLINE:
            await self._fetch(user_key, person, self._source_timeout)
        elif user_key not in self._fetching:

            async def behind() -> None:
                try:
                    if self._people.get(user_key) is person:
                        await self._fetch(user_key, person, _SOURCE_BEHIND)
                finally:
                    if self._fetching.get(user_key) is asyncio.current_task():
                        del self._fetching[user_key]

            self._fetching[user_key] = asyncio.create_task(behind(), name=f"fetch-vectors-{user_key}")

    async def _fetch(self, user_key: str, person: _Person, timeout: float) -> None:
        assert self._source is not None
        asked = sorted(person.without_vector - person.lacking)
        if not asked:
            return
        ids = [person.ids[p] for p in asked]
        try:
            async with asyncio.timeout(timeout):
                found, _, matrix = await self._source.vectors(user_key, ids)
        except Exception as exc:  # noqa: BLE001 - searched by words alone until it answers again
            why = f"the vector store is unavailable ({type(exc).__name__}: {exc})".strip()[:200]
            if self._source_down is None:
                log.warning("%s; memories without their vectors are searched by words only", why)
            self._source_down = (time.monotonic() + _SOURCE_PAUSE, why)
            return
        self._source_down = None
        person.give_vectors({memory_id: matrix[i] for i, memory_id in enumerate(found)})
        # Not asked again (the writer's retry gives them, or the next read of the person asks anew).
        person.lacking.update(p for p in asked if p in person.without_vector)
