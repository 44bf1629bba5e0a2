"""A person's BM25 postings kept in this process, with the database as the store they come from.

BM25 in SQL reads every posting of the question's terms on every message: at 10,000 memories that is about
3,000 postings and 6-13 ms of PostgreSQL CPU per message, competing with the embedding model for the same two
cores. The same postings held as arrays score in well under a millisecond. The database stays the store and
the ranker of record (`RelationalMemory.lexical` gives the same scores and order): this cache loads a person's
postings on their first search, keeps itself current with this process's own writes, and picks up what other
replicas wrote by `seq`, like the vector cache. A person with more postings than `max_person` is scored in SQL.
"""

from __future__ import annotations

import asyncio
import math
from array import array
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.ports import Memory, Scope
from storage.database import Database
from storage.memory_store import K1, TERM_CHARS, B, RelationalMemory

__all__ = ["CachedLexicon"]

_SCOPE_CODE = {"private": 0, "shared": 1}
_CHUNK = 1_000  # memories whose postings are read per round trip while loading (bounds each read's loop time)


@dataclass
class _Person:
    ids: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    scopes: array[int] = field(default_factory=lambda: array("b"))
    lengths: array[int] = field(default_factory=lambda: array("i"))
    # term -> (positions of the memories it occurs in, its frequency in each): 8 bytes a posting
    postings: dict[str, tuple[array[int], array[int]]] = field(default_factory=dict)
    size: int = 0  # postings held
    synced_seq: int = -1
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def extend(self, memory_id: str, scope: str, terms: Mapping[str, int], length: int) -> None:
        if memory_id in self.index:
            return
        position = self.index[memory_id] = len(self.ids)
        self.ids.append(memory_id)
        self.scopes.append(_SCOPE_CODE[scope])
        self.lengths.append(length)
        for term, tf in terms.items():
            entry = self.postings.get(term[:TERM_CHARS])
            if entry is None:
                entry = self.postings[term[:TERM_CHARS]] = (array("i"), array("i"))
            entry[0].append(position)
            entry[1].append(tf)
        self.size += len(terms)

    def score(self, terms: Sequence[str], scopes: Sequence[Scope], limit: int) -> list[tuple[str, float]]:
        """BM25 as `RelationalMemory.lexical` computes it: the same statistics, formula and order."""
        if not self.ids:
            return []
        allowed = np.isin(np.array(self.scopes, dtype=np.int8), [_SCOPE_CODE[s] for s in scopes])
        lengths = np.array(self.lengths, dtype=np.float64)
        documents = float(allowed.sum())
        total = float(lengths[allowed].sum())
        average = total / documents if documents > 0 and total > documents else 1.0
        scores = np.zeros(len(self.ids))
        matched = np.zeros(len(self.ids), dtype=bool)
        for term in sorted(set(terms)):
            entry = self.postings.get(term)
            if entry is None:
                continue
            positions = np.array(entry[0], dtype=np.int64)
            tf = np.array(entry[1], dtype=np.float64)
            keep = allowed[positions]
            positions, tf = positions[keep], tf[keep]
            df = len(positions)
            if df == 0:
                continue
            idf = math.log(1 + (documents - df + 0.5) / (df + 0.5))
            scores[positions] += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * lengths[positions] / average))
            matched[positions] = True
        found = np.flatnonzero(matched)
        if len(found) > limit:
            # Everything scoring at least the limit-th best, so that ties at the edge are broken by id as in SQL.
            edge = np.partition(scores[found], len(found) - limit)[len(found) - limit]
            found = found[scores[found] >= edge]
        ranked = sorted(((self.ids[i], float(scores[i])) for i in found), key=lambda hit: (-hit[1], hit[0]))
        return ranked[:limit]


class CachedLexicon:
    """Implements core.ports.MemoryStore: `RelationalMemory` with its BM25 answered from cached postings."""

    def __init__(
        self, store: RelationalMemory, database: Database, *, max_postings: int = 4_000_000, max_person: int = 400_000
    ) -> None:
        self._store = store
        self._database = database
        self._max_postings = max_postings
        self._max_person = max_person
        self._people: OrderedDict[str, _Person] = OrderedDict()

    @property
    def cached_postings(self) -> int:
        return sum(person.size for person in self._people.values())

    async def ping(self) -> None:
        await self._store.ping()

    async def add(self, memories: Sequence[Memory], terms: Sequence[Mapping[str, int]]) -> None:
        await self._store.add(memories, terms)
        for memory, counted in zip(memories, terms, strict=True):
            person = self._people.get(memory.user_key)
            if person is not None:  # keep a cached person current without a round trip
                person.extend(memory.id, memory.scope, counted, sum(counted.values()))
        self._evict()

    async def lexical(
        self, user_key: str, terms: Sequence[str], *, scopes: Sequence[Scope], limit: int
    ) -> list[tuple[str, float]]:
        if not terms or not scopes or limit <= 0:
            return []
        person = await self._fresh(user_key)
        if person is None:  # more postings than one person may hold here: PostgreSQL or SQLite scores them
            return await self._store.lexical(user_key, terms, scopes=scopes, limit=limit)
        return person.score(terms, scopes, limit)

    async def neighbours(
        self, user_key: str, memory_ids: Sequence[str], *, scopes: Sequence[Scope]
    ) -> dict[str, list[Memory]]:
        return await self._store.neighbours(user_key, memory_ids, scopes=scopes)

    async def fetch(self, user_key: str, memory_ids: Sequence[str], *, scopes: Sequence[Scope]) -> list[Memory]:
        return await self._store.fetch(user_key, memory_ids, scopes=scopes)

    async def count(self, user_key: str) -> int:
        return await self._store.count(user_key)

    async def forget_user(self, user_key: str) -> None:
        self._people.pop(user_key, None)
        await self._store.forget_user(user_key)

    async def _fresh(self, user_key: str) -> _Person | None:
        """This person's postings, brought up to date with memories other processes (or a restart) added."""
        person = self._people.get(user_key)
        if person is None:
            person = self._people[user_key] = _Person()
        self._people.move_to_end(user_key)
        async with person.lock:
            bind = self._database.params()
            rows = await self._database.connection().execute_query_dict(
                f"SELECT seq, id, scope, length FROM memory WHERE user_key = {bind(user_key)} "
                f"AND seq > {bind(person.synced_seq)} ORDER BY seq",
                bind.values,
            )
            missing = [row for row in rows if row["id"] not in person.index]
            if person.size + sum(int(row["length"]) for row in missing) > self._max_person:
                self._people.pop(user_key, None)
                return None
            for start in range(0, len(missing), _CHUNK):
                chunk = missing[start : start + _CHUNK]
                terms = await self._postings(user_key, [row["id"] for row in chunk])
                for row in chunk:
                    person.extend(row["id"], row["scope"], terms.get(row["id"], {}), int(row["length"]))
            if rows:
                # A memory's row, postings and statistics are written in one transaction, so every memory
                # seen here came with its postings.
                person.synced_seq = max(person.synced_seq, int(rows[-1]["seq"]))
        self._evict(keep=user_key)
        return person

    async def _postings(self, user_key: str, memory_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        bind = self._database.params()
        rows = await self._database.connection().execute_query_dict(
            f"SELECT memory_id, term, tf FROM memory_term WHERE user_key = {bind(user_key)} "
            f"AND memory_id IN ({bind(*memory_ids)})",
            bind.values,
        )
        found: dict[str, dict[str, int]] = {}
        for row in rows:
            found.setdefault(row["memory_id"], {})[row["term"]] = int(row["tf"])
        return found

    def _evict(self, keep: str | None = None) -> None:
        total = self.cached_postings
        while total > self._max_postings and len(self._people) > 1:
            user_key, person = next(iter(self._people.items()))
            if user_key == keep:
                self._people.move_to_end(user_key)
                continue
            del self._people[user_key]
            total -= person.size
