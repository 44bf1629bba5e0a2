"""Memories in the relational database: one row each, holding the words, their BM25 terms and the vector.

A row is the whole of a memory, so that one read brings a person's index into a process (storage/memory_index.py)
and one statement writes it. The terms are packed as (64-bit term key, count) pairs and the vector as float16:
12 bytes a term and 768 bytes a vector, read without any per-term work (numpy takes the bytes as they are).
With a Chroma server (CHROMA_URL) the vectors live there instead, and the rows' `vector` is empty.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tortoise.transactions import in_transaction

from core.ports import Memory, Scopes
from core.recall import weight_of
from storage.database import Database, among, as_datetime
from storage.models import MemoryItem

__all__ = ["POSTING", "MemoryRows", "pack_terms", "pack_vector", "term_key"]

POSTING = np.dtype([("term", "<i8"), ("tf", "<i4")])
VECTOR = np.dtype("<f2")
_COLUMNS = "n.id, n.scope, n.conversation_id, n.created_at, n.speaker, n.text, n.reply"
INDEXED = "seq, id, scope, length, weight, terms, vector"  # what a process's index reads of a row


def term_key(term: str) -> int:
    """A stemmed term as a 64-bit number: the same in every process, and in practice never the same for two
    terms (a person has tens of thousands of distinct terms; a collision among them has odds of about 1e-10)."""
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=8).digest(), "little", signed=True)


def pack_terms(terms: Mapping[str, int]) -> bytes:
    packed = np.empty(len(terms), POSTING)
    packed["term"] = [term_key(term) for term in terms]
    packed["tf"] = list(terms.values())
    return packed.tobytes()


def pack_vector(vector: Sequence[float]) -> bytes:
    return np.asarray(vector, dtype=VECTOR).tobytes()


def _memory(user_key: str, row: Mapping[str, Any]) -> Memory:
    return Memory(
        id=row["id"],
        user_key=user_key,
        text=row["text"],
        scope=row["scope"],
        conversation_id=row["conversation_id"],
        created_at=as_datetime(row["created_at"]),
        speaker=row["speaker"],
        reply=row["reply"],
    )


_ROWS_PER_INSERT = 500  # 12 values a row: well within both drivers' limit on one statement's values


class MemoryRows:
    """The memory table: what the index writes and reads (`with_vectors`: False when a Chroma server keeps them)."""

    def __init__(self, database: Database, *, with_vectors: bool = True) -> None:
        self._database = database
        self._with_vectors = with_vectors

    async def ping(self) -> None:
        await self._database.ping()

    async def add(
        self,
        memories: Sequence[Memory],
        terms: Sequence[Mapping[str, int]],
        embeddings: Sequence[Sequence[float]],
        *,
        weights: Sequence[float] | None = None,
    ) -> list[int]:
        """The indexes of the memories stored now (a retried add skips those already stored). `weights`:
        core.recall.weight_of of each text, when the caller has it already.

        One statement for up to _ROWS_PER_INSERT memories (INSERT … ON CONFLICT DO NOTHING RETURNING id), not a
        read of the ids already stored, then the rows in a transaction of their own: that was four round trips on
        the path of every batch of answers stored (measured: 0.5 BEGIN and COMMIT per answer at 200 people), and
        a replica storing the same memory between the read and the insert failed the whole batch. A larger add
        is one transaction over its statements."""
        if not memories:
            return []
        if weights is None:
            weights = [weight_of(m.text) for m in memories]
        spans = [
            range(at, min(at + _ROWS_PER_INSERT, len(memories))) for at in range(0, len(memories), _ROWS_PER_INSERT)
        ]
        stored: set[str] = set()
        if len(spans) == 1:
            stored = await self._insert(self._database.connection(), memories, terms, embeddings, weights, spans[0])
        else:
            async with in_transaction(self._database.connection().connection_name) as connection:
                for span in spans:
                    stored |= await self._insert(connection, memories, terms, embeddings, weights, span)
        fresh = []
        for index, memory in enumerate(memories):
            if memory.id in stored:
                stored.discard(memory.id)  # the same memory twice in one add is stored once
                fresh.append(index)
        return fresh

    async def _insert(
        self,
        connection: Any,
        memories: Sequence[Memory],
        terms: Sequence[Mapping[str, int]],
        embeddings: Sequence[Sequence[float]],
        weights: Sequence[float],
        span: range,
    ) -> set[str]:
        bind = self._database.params()
        rows = []
        for i in span:
            memory = memories[i]
            vector = pack_vector(embeddings[i]) if self._with_vectors else None
            values = bind(
                memory.id,
                memory.user_key,
                memory.scope,
                memory.conversation_id[:191],
                memory.speaker[:191],
                memory.text,
                memory.reply,
                memory.created_at,
                sum(terms[i].values()),
                weights[i],
                pack_terms(terms[i]),
                vector,
            )
            rows.append(f"({values})")
        inserted = await connection.execute_query_dict(
            "INSERT INTO memory (id, user_key, scope, conversation_id, speaker, text, reply, created_at, length, "
            "weight, terms, vector) VALUES " + ", ".join(rows) + " ON CONFLICT (id) DO NOTHING RETURNING id",
            bind.values,
        )
        return {str(row["id"]) for row in inserted}

    async def heads(self, user_key: str, after: int, limit: int) -> list[dict[str, Any]]:
        """The seq and id of the person's rows past `after`, oldest first."""
        bind = self._database.params()
        return await self._database.connection().execute_query_dict(
            f"SELECT seq, id FROM memory WHERE user_key = {bind(user_key)} AND seq > {bind(after)} "
            f"ORDER BY seq LIMIT {int(limit)}",
            bind.values,
        )

    async def by_ids(self, user_key: str, memory_ids: Sequence[str]) -> list[dict[str, Any]]:
        """What the index reads of these rows of the person's."""
        if not memory_ids:
            return []
        bind = self._database.params()
        return await self._database.connection().execute_query_dict(
            f"SELECT {INDEXED} FROM memory WHERE user_key = {bind(user_key)} AND id IN ({bind(*memory_ids)})",
            bind.values,
        )

    async def older(self, user_key: str, before: int | None, limit: int) -> list[dict[str, Any]]:
        """The person's rows before `before` (None: the newest), newest first."""
        bind = self._database.params()
        person = f"user_key = {bind(user_key)}"  # bound first: the placeholders are numbered in order
        below = "" if before is None else f" AND seq < {bind(before)}"
        return await self._database.connection().execute_query_dict(
            f"SELECT {INDEXED} FROM memory WHERE {person}{below} ORDER BY seq DESC LIMIT {int(limit)}", bind.values
        )

    async def read(
        self, user_key: str, memory_ids: Sequence[str], *, around: Sequence[str], scopes: Scopes
    ) -> tuple[list[Memory], dict[str, list[Memory]]]:
        """The memories with these ids, and the turns just before and after each of `around` in its conversation:
        one round trip for both (the search asks for them at the same point, and two statements cost the event
        loop and the database twice the work)."""
        if (scopes is not None and not scopes) or not (memory_ids or around):
            return [], {}
        bind = self._database.params()
        parts: list[str] = []
        if around:

            def next_to(op: str, order: str) -> str:
                return (
                    "(SELECT o.seq FROM memory o WHERE o.user_key = m.user_key "
                    f"AND o.conversation_id = m.conversation_id AND o.seq {op} m.seq{among(bind, 'o.scope', scopes)} "
                    f"ORDER BY o.seq {order} LIMIT 1)"
                )

            anchors = (
                f"SELECT m.id AS anchor, {next_to('<', 'DESC')} AS before, {next_to('>', 'ASC')} AS after "
                f"FROM memory m WHERE m.user_key = {bind(user_key)} AND m.id IN ({bind(*around)})"
            )
            parts.append(
                f"SELECT a.anchor AS anchor, n.seq AS seq, {_COLUMNS} FROM ({anchors}) a "
                "JOIN memory n ON n.seq IN (a.before, a.after)"
            )
        if memory_ids:
            parts.append(
                f"SELECT NULL AS anchor, n.seq AS seq, {_COLUMNS} FROM memory n WHERE n.user_key = {bind(user_key)} "
                f"{among(bind, 'n.scope', scopes)} AND n.id IN ({bind(*memory_ids)})"
            )
        sql = " UNION ALL ".join(parts) + " ORDER BY anchor, seq"
        rows = await self._database.connection().execute_query_dict(sql, bind.values)
        found: list[Memory] = []
        neighbours: dict[str, list[Memory]] = {}
        for row in rows:
            memory = _memory(user_key, row)
            if row["anchor"] is None:
                found.append(memory)
            else:
                neighbours.setdefault(row["anchor"], []).append(memory)
        return found, neighbours

    async def count(self, user_key: str) -> int:
        return await MemoryItem.filter(user_key=user_key).count()

    async def revise(
        self, user_key: str, memory_id: str, text: str, terms: Mapping[str, int], embedding: Sequence[float]
    ) -> Memory | None:
        """The row's words, terms and vector in one statement (a retried edit does it again, never half). The row
        keeps its seq: another process's index keeps the old words' terms for it until it reloads the person,
        and `read` shows the new words."""
        row = await MemoryItem.filter(user_key=user_key, id=memory_id).first()
        if row is None:
            return None
        row.text, row.reply, row.length, row.weight = text, "", sum(terms.values()), weight_of(text)
        row.terms = pack_terms(terms)
        row.vector = pack_vector(embedding) if self._with_vectors else None
        await row.save(update_fields=["text", "reply", "length", "weight", "terms", "vector"])
        return Memory(
            id=row.id,
            user_key=user_key,
            text=text,
            scope=row.scope,
            conversation_id=row.conversation_id,
            created_at=row.created_at,
            speaker=row.speaker,
        )

    async def without_vectors(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Rows past seq `after` that hold no vector, oldest first."""
        bind = self._database.params()
        return await self._database.connection().execute_query_dict(
            f"SELECT seq, id, user_key, speaker, text FROM memory WHERE vector IS NULL AND seq > {bind(after)} "
            f"ORDER BY seq LIMIT {int(limit)}",
            bind.values,
        )

    async def set_vectors(self, vectors: Mapping[str, Sequence[float]]) -> None:
        """Vectors for rows that had none (memories from before vectors lived in the rows)."""
        if not vectors:
            return
        bind = self._database.params()
        # Only where there is still none: an edit meanwhile wrote the new words' vector.
        statement = f"UPDATE memory SET vector = {bind(b'')} WHERE id = {bind('')} AND vector IS NULL"
        await self._database.connection().execute_many(
            statement, [[pack_vector(vector), memory_id] for memory_id, vector in vectors.items()]
        )

    async def remove(self, user_key: str, memory_ids: Sequence[str]) -> None:
        if memory_ids:
            await MemoryItem.filter(user_key=user_key, id__in=list(memory_ids)).delete()

    async def forget_user(self, user_key: str) -> None:
        await MemoryItem.filter(user_key=user_key).delete()
