"""A person's BM25 postings kept in this process, with the database as the store they come from.

BM25 in SQL reads every posting of the question's terms on every message: at 10,000 memories that is about
3,000 postings and 6-13 ms of PostgreSQL CPU per message, competing with the embedding model for the same two
cores. The same postings held as arrays score in well under a millisecond. The database stays the store and
the ranker of record (`RelationalMemory.lexical` gives the same scores and order): this cache loads a person's
postings on their first search, keeps itself current with this process's own writes, and picks up what other
replicas wrote by `seq`, like the vector cache. A long history (more than `_COLD_LOAD` postings, about 20,000
memories) loads behind the answers, SQL scoring meanwhile; a person with more than `max_person` postings is
always scored in SQL.
"""

from __future__ import annotations

import asyncio
import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.ports import Memory, Scopes
from storage.database import Database
from storage.memory_store import K1, TERM_CHARS, B, RelationalMemory
from storage.people_cache import AudienceCodes, People, allowed_mask

__all__ = ["CachedLexicon"]

_PAGE = 5_000  # memories listed per round trip while loading
_CHUNK = 1_000  # memories whose postings are read per round trip (each read costs the event loop ~10 ms)
_COLD_LOAD = 300_000  # postings above which a person's first load runs behind the answers


@dataclass
class _Person:
    ids: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    scopes: array[int] = field(default_factory=lambda: array("h"))  # each memory's audience, as `codes` numbers it
    codes: AudienceCodes = field(default_factory=AudienceCodes)
    lengths: array[int] = field(default_factory=lambda: array("i"))
    # term -> (positions of the memories it occurs in, its frequency in each): 8 bytes a posting
    postings: dict[str, tuple[array[int], array[int]]] = field(default_factory=dict)
    size: int = 0  # postings held
    counted: int = 0  # of which the cache's total knows
    synced_seq: int = -1
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def extend(self, memory_id: str, scope: str, terms: Mapping[str, int], length: int) -> None:
        if memory_id in self.index:
            return
        position = self.index[memory_id] = len(self.ids)
        self.ids.append(memory_id)
        self.scopes.append(self.codes.number(scope))
        self.lengths.append(length)
        for term, tf in terms.items():
            entry = self.postings.get(term[:TERM_CHARS])
            if entry is None:
                entry = self.postings[term[:TERM_CHARS]] = (array("i"), array("i"))
            entry[0].append(position)
            entry[1].append(tf)
        self.size += len(terms)

    def score(self, terms: Sequence[str], scopes: Scopes, limit: int) -> list[tuple[str, float]]:
        """BM25 as `RelationalMemory.lexical` computes it: the same statistics, formula and order."""
        if not self.ids:
            return []
        allowed = allowed_mask(np.array(self.scopes, dtype=np.int16), self.codes.allowed(scopes))
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
        self, store: RelationalMemory, database: Database, *, max_postings: int = 6_000_000, max_person: int = 2_000_000
    ) -> None:
        self._store = store
        self._database = database
        self._max_person = max_person
        # 8 bytes a posting, plus the ids: about 100 MB when full
        self._people: People[_Person] = People(max_postings, _Person)

    @property
    def cached_postings(self) -> int:
        return self._people.held

    async def ping(self) -> None:
        await self._store.ping()

    async def close(self) -> None:
        """Stop loads still running behind (before the database closes)."""
        await self._people.close()

    async def add(self, memories: Sequence[Memory], terms: Sequence[Mapping[str, int]]) -> None:
        await self._store.add(memories, terms)
        for memory, counted in zip(memories, terms, strict=True):
            person = self._people.get(memory.user_key)
            if person is not None:  # keep a cached person current without a round trip
                person.extend(memory.id, memory.scope, counted, sum(counted.values()))
                self._people.account(memory.user_key, person)
        self._people.evict()

    async def lexical(
        self, user_key: str, terms: Sequence[str], *, scopes: Scopes, limit: int
    ) -> list[tuple[str, float]]:
        if not terms or (scopes is not None and not scopes) or limit <= 0:
            return []
        person = await self._cached(user_key)
        if person is None:  # still loading, or more postings than one person may hold here: SQL scores them
            return await self._store.lexical(user_key, terms, scopes=scopes, limit=limit)
        return person.score(terms, scopes, limit)

    async def _cached(self, user_key: str) -> _Person | None:
        if user_key in self._people.loading:
            return None
        if user_key not in self._people:
            # A person not held yet: their statistics row says how many postings a load would bring.
            bind = self._database.params()
            [row] = await self._database.connection().execute_query_dict(
                f"SELECT COALESCE(SUM(total_length), 0) AS size FROM memory_stats WHERE user_key = {bind(user_key)}",
                bind.values,
            )
            size = int(row["size"])
            if size > self._max_person:
                return None
            if size > _COLD_LOAD:
                self._people.load_behind(user_key, lambda: self._fresh(user_key), "postings")
                return None
        return await self._fresh(user_key)

    async def read(
        self, user_key: str, memory_ids: Sequence[str], *, around: Sequence[str], scopes: Scopes
    ) -> tuple[list[Memory], dict[str, list[Memory]]]:
        return await self._store.read(user_key, memory_ids, around=around, scopes=scopes)

    async def count(self, user_key: str) -> int:
        return await self._store.count(user_key)

    async def revise(self, user_key: str, memory_id: str, text: str, terms: Mapping[str, int]) -> Memory | None:
        revised = await self._store.revise(user_key, memory_id, text, terms)
        self._people.forget(user_key)
        return revised

    async def remove(self, user_key: str, memory_ids: Sequence[str]) -> None:
        """Gone from the store, and this person's postings let go (the next search loads them again; another
        replica's copy still names the ids, which `read` no longer finds)."""
        await self._store.remove(user_key, memory_ids)
        self._people.forget(user_key)

    async def forget_user(self, user_key: str) -> None:
        self._people.forget(user_key)
        await self._store.forget_user(user_key)

    async def _fresh(self, user_key: str) -> _Person | None:
        """This person's postings, brought up to date with memories other processes (or a restart) added."""
        person = self._people.touch(user_key)
        async with person.lock:
            while True:
                bind = self._database.params()
                rows = await self._database.connection().execute_query_dict(
                    f"SELECT seq, id, scope, length FROM memory WHERE user_key = {bind(user_key)} "
                    f"AND seq > {bind(person.synced_seq)} ORDER BY seq LIMIT {_PAGE}",
                    bind.values,
                )
                missing = [row for row in rows if row["id"] not in person.index]
                if person.size + sum(int(row["length"]) for row in missing) > self._max_person:
                    self._people.drop(user_key)
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
                if len(rows) < _PAGE:
                    break
        self._people.account(user_key, person)
        self._people.evict(keep=user_key)
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
