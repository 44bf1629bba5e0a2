"""A person's memory vectors kept hot in this process, with Chroma as the store they come from.

Measured on the 2-core machine, Chroma's local query filtered by person costs 50-150 ms once the collection
holds 100,000 vectors (its metadata filter grows with the whole collection), while a dot product over one
person's 10,000 vectors costs about a millisecond. So Chroma keeps every vector (shared by replicas through
CHROMA_URL) and each process caches the people it is talking to, bounded, least recently used first out.
Freshness across replicas comes from the database: memories newer than the cache's last `seq` are fetched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.ports import Memory, Scopes
from storage.database import Database
from storage.long_term import ChromaVectors, resolved
from storage.people_cache import AudienceCodes, People, allowed_mask

__all__ = ["CachedVectors"]


_OFF_LOOP = 20_000  # vectors above which a search runs in a thread
# Vectors above which a person's first load runs behind, with Chroma's own search answering meanwhile: reading
# them all from Chroma took 2 s at 10,000 and 30 s at 100,000 (the context benchmark). Below it the first search
# waits for the load: Chroma's filtered search is slower than the cache, and slower still while a load runs.
_COLD_LOAD = 20_000


@dataclass
class _Person:
    ids: list[str] = field(default_factory=list)
    known: set[str] = field(default_factory=set)
    scopes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))  # audiences, as `codes` has them
    codes: AudienceCodes = field(default_factory=AudienceCodes)
    # float32, not float16: converting 10,000 float16 rows for each search cost 13 ms of the event loop, the
    # product itself 0.4 ms. Rows past len(ids) are room to grow into: appending one memory's vector must not
    # copy the whole matrix (15 MB at 10,000 memories, on the event loop, after every message).
    room: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    synced_seq: int = -1
    counted: int = 0  # vectors the cache's total knows of
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def vectors(self) -> np.ndarray:
        return self.room[: len(self.ids)]

    @property
    def size(self) -> int:
        return len(self.ids)

    def extend(self, ids: Sequence[str], scopes: Sequence[str], vectors: np.ndarray) -> None:
        fresh = [i for i, memory_id in enumerate(ids) if memory_id not in self.known]
        if not fresh:
            return
        new = vectors[fresh].astype(np.float32)
        used = len(self.ids)
        if used + len(new) > len(self.room):
            grown = np.empty((max(used + len(new), int(used * 1.5), 64), new.shape[1]), dtype=np.float32)
            if used:
                grown[:used] = self.room[:used]
            self.room = grown
        self.room[used : used + len(new)] = new
        numbers = np.array([self.codes.number(scopes[i]) for i in fresh], np.int16)
        self.scopes = np.concatenate([self.scopes, numbers])
        for i in fresh:
            self.ids.append(ids[i])
            self.known.add(ids[i])

    def nearest(self, query: np.ndarray, scopes: Scopes, limit: int) -> list[tuple[str, float]]:
        if not self.ids:
            return []
        allowed = allowed_mask(self.scopes, self.codes.allowed(scopes))
        scores = self.vectors @ query
        scores[~allowed] = -np.inf
        count = min(limit, int(allowed.sum()))
        if count == 0:
            return []
        top = np.argpartition(-scores, count - 1)[:count]
        top = top[np.argsort(-scores[top])]
        return [(self.ids[i], float(scores[i])) for i in top]


class CachedVectors:
    """Implements core.ports.VectorIndex over ChromaVectors, with a bounded in-process cache per person."""

    def __init__(self, chroma: ChromaVectors, database: Database, *, max_vectors: int = 250_000) -> None:
        self._chroma = chroma
        self._database = database
        self._people: People[_Person] = People(max_vectors, _Person)

    @property
    def cached_vectors(self) -> int:
        return self._people.held

    async def ping(self) -> None:
        await self._chroma.ping()

    async def close(self) -> None:
        await self._people.close()
        await asyncio.to_thread(self._chroma.close)

    async def count(self, user_key: str) -> int:
        return await self._chroma.count(user_key)

    async def add(self, memories: Sequence[Memory], embeddings: Sequence[Sequence[float]]) -> None:
        await self._chroma.add(memories, embeddings)
        by_person: dict[str, list[int]] = {}
        for index, memory in enumerate(memories):
            by_person.setdefault(memory.user_key, []).append(index)
        matrix = np.asarray(embeddings, dtype=np.float32)
        for user_key, indexes in by_person.items():
            person = self._people.get(user_key)
            if person is not None:  # keep a cached person current without a round trip
                person.extend([memories[i].id for i in indexes], [memories[i].scope for i in indexes], matrix[indexes])
                self._people.account(user_key, person)
        self._people.evict()

    async def nearest(
        self,
        user_key: str,
        embedding: Sequence[float] | Awaitable[Sequence[float]],
        *,
        scopes: Scopes,
        limit: int,
    ) -> list[tuple[str, float]]:
        if limit <= 0 or (scopes is not None and not scopes):
            await resolved(embedding)
            return []
        # The freshness check (a database round trip) runs while the message is still being embedded.
        person = None if user_key in self._people.loading else await self._fresh(user_key)
        vector = await resolved(embedding)
        if person is None:  # still loading, or one person larger than the whole cache: ask Chroma
            return await self._chroma.nearest(user_key, vector, scopes=scopes, limit=limit)
        query = np.asarray(vector, dtype=np.float32)
        if len(person.ids) > _OFF_LOOP:
            return await asyncio.to_thread(person.nearest, query, scopes, limit)
        return person.nearest(query, scopes, limit)

    async def remove(self, user_key: str, memory_ids: Sequence[str]) -> None:
        self._people.forget(user_key)
        await self._chroma.remove(user_key, memory_ids)

    async def forget_user(self, user_key: str) -> None:
        self._people.forget(user_key)
        await self._chroma.forget_user(user_key)

    async def _fresh(self, user_key: str, *, behind: bool = False) -> _Person | None:
        """This person's cache, brought up to date with memories other processes (or a restart) added; None when
        Chroma must answer instead (a long history still loading, or one larger than the whole cache)."""
        person = self._people.touch(user_key)
        async with person.lock:
            bind = self._database.params()
            rows = await self._database.connection().execute_query_dict(
                f"SELECT seq, id, scope FROM memory WHERE user_key = {bind(user_key)} "
                f"AND seq > {bind(person.synced_seq)} ORDER BY seq",
                bind.values,
            )
            missing = [row["id"] for row in rows if row["id"] not in person.known]
            if len(person.ids) + len(missing) > self._people.capacity:
                self._people.drop(user_key)
                return None
            if person.synced_seq < 0 and len(missing) > _COLD_LOAD and not behind:
                self._people.load_behind(user_key, lambda: self._fresh(user_key, behind=True), "vectors")
                return None
            if missing:
                ids, _, vectors = await self._chroma.vectors(user_key, None if person.synced_seq < 0 else missing)
                # Audiences from the database's rows, never from Chroma's metadata: the rows are what a migration
                # places, and what every read is filtered by again.
                audiences = {row["id"]: row["scope"] for row in rows}
                known = [i for i, memory_id in enumerate(ids) if memory_id in audiences]
                person.extend([ids[i] for i in known], [audiences[ids[i]] for i in known], vectors[known])
            for row in rows:  # advance only past memories whose vectors arrived (one may still be on its way)
                if row["id"] not in person.known:
                    break
                person.synced_seq = int(row["seq"])
        self._people.account(user_key, person)
        self._people.evict(keep=user_key)
        return person
