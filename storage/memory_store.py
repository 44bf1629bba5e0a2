"""Memories in the relational database, with a BM25 index kept in plain tables.

Written here rather than taken from SQLite FTS5 and PostgreSQL full-text search: those are two different
rankers (PostgreSQL's ts_rank has no IDF), so recall would change with the backend. Postings in ordinary
tables give the same BM25 on both, with per-person statistics, and stay consistent across replicas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tortoise.expressions import F
from tortoise.transactions import in_transaction

from core.ports import Memory, Scopes
from storage.database import Database, among, as_datetime
from storage.models import MemoryItem, MemoryStats, MemoryTerm

__all__ = ["B", "K1", "TERM_CHARS", "RelationalMemory"]

K1 = 1.2
B = 0.75
TERM_CHARS = 64  # a posting's term column is this wide; longer (rare, junk) terms are cut


_COLUMNS = "n.id, n.scope, n.conversation_id, n.created_at, n.speaker, n.text, n.reply"


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


class RelationalMemory:
    """Implements core.ports.MemoryStore."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def ping(self) -> None:
        await self._database.ping()

    async def add(self, memories: Sequence[Memory], terms: Sequence[Mapping[str, int]]) -> None:
        # A retried add must not index a memory twice.
        known = {str(i) for i in await MemoryItem.filter(id__in=[m.id for m in memories]).values_list("id", flat=True)}
        fresh = [(m, t) for m, t in zip(memories, terms, strict=True) if m.id not in known]
        if not fresh:
            return
        # One transaction: a memory is never visible without its postings and statistics (the postings cache
        # relies on it), and a failed add leaves nothing behind for the retry to skip.
        async with in_transaction(self._database.connection().connection_name) as connection:
            await MemoryTerm.bulk_create(
                [
                    MemoryTerm(
                        user_key=m.user_key,
                        scope=m.scope,
                        term=term[:TERM_CHARS],
                        memory_id=m.id,
                        tf=count,
                        length=sum(t.values()),
                    )
                    for m, t in fresh
                    for term, count in t.items()
                ],
                batch_size=2_000,
                using_db=connection,
            )
            totals: dict[tuple[str, str], tuple[int, int]] = {}
            for m, t in fresh:
                documents, length = totals.get((m.user_key, m.scope), (0, 0))
                totals[(m.user_key, m.scope)] = (documents + 1, length + sum(t.values()))
            bind = self._database.params()
            # Sorted: replicas' transactions take the statistics rows' locks in one order, so never deadlock.
            tuples = [f"({bind(*key, *sums)})" for key, sums in sorted(totals.items())]
            await connection.execute_query(
                "INSERT INTO memory_stats (user_key, scope, documents, total_length) VALUES "
                + ", ".join(tuples)
                + " ON CONFLICT (user_key, scope) DO UPDATE SET "
                "documents = memory_stats.documents + excluded.documents, "
                "total_length = memory_stats.total_length + excluded.total_length",
                bind.values,
            )
            # The memory row last: its seq is taken just before the commit, so caches that follow seq (see
            # storage/lexicon_cache.py) rarely see a later seq committed before it.
            await MemoryItem.bulk_create(
                [
                    MemoryItem(
                        id=m.id,
                        user_key=m.user_key,
                        scope=m.scope,
                        conversation_id=m.conversation_id[:191],
                        speaker=m.speaker[:191],
                        text=m.text,
                        reply=m.reply,
                        created_at=m.created_at,
                        length=sum(t.values()),
                    )
                    for m, t in fresh
                ],
                using_db=connection,
            )

    async def lexical(
        self, user_key: str, terms: Sequence[str], *, scopes: Scopes, limit: int
    ) -> list[tuple[str, float]]:
        """BM25 over this person's memories in these scopes, in one statement: the collection's size and average
        length, each term's document frequency and the scores come from one round trip."""
        unique = sorted(set(terms))
        if not unique or limit <= 0 or (scopes is not None and not scopes):
            return []
        bind = self._database.params()

        real = "DOUBLE PRECISION"  # REAL affinity on SQLite, float8 on PostgreSQL (numeric arithmetic is slow)
        average = "(CASE WHEN s.n > 0 AND s.total > s.n THEN s.total / s.n ELSE 1.0 END)"
        # The postings are read once (from the covering index), each term's IDF is computed once from their
        # count, and the per-posting arithmetic is all in floats.
        sql = (
            f"WITH s AS (SELECT CAST(COALESCE(SUM(documents), 0) AS {real}) AS n, "
            f"CAST(COALESCE(SUM(total_length), 0) AS {real}) AS total "
            f"FROM memory_stats WHERE user_key = {bind(user_key)}{among(bind, 'scope', scopes)}), "
            f"p AS (SELECT memory_id, term, CAST(tf AS {real}) AS tf, CAST(length AS {real}) AS length "
            f"FROM memory_term WHERE user_key = {bind(user_key)}{among(bind, 'scope', scopes)} "
            f"AND term IN ({bind(*unique)})), "
            f"d AS (SELECT p.term AS term, COUNT(*) AS df FROM p GROUP BY p.term), "
            f"w AS (SELECT d.term AS term, ln(1 + (s.n - d.df + 0.5) / (d.df + 0.5)) AS idf, {average} AS avgl "
            f"FROM d CROSS JOIN s) "
            f"SELECT p.memory_id AS memory_id, SUM(w.idf * p.tf * {K1 + 1} "
            f"/ (p.tf + {K1} * ({1 - B} + {B} * p.length / w.avgl))) AS score "
            f"FROM p JOIN w ON w.term = p.term GROUP BY p.memory_id ORDER BY score DESC, p.memory_id LIMIT {int(limit)}"
        )
        rows = await self._database.connection().execute_query_dict(sql, bind.values)
        return [(row["memory_id"], float(row["score"])) for row in rows]

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

    async def revise(self, user_key: str, memory_id: str, text: str, terms: Mapping[str, int]) -> Memory | None:
        """In one transaction (a retried edit does it again, never half): the row's words, its postings and its
        share of the statistics. The row keeps its seq: another replica's postings cache keeps the old words' terms
        for it until it reloads, and `read` shows the new words."""
        length = sum(terms.values())
        async with in_transaction(self._database.connection().connection_name) as connection:
            row = await MemoryItem.filter(user_key=user_key, id=memory_id).using_db(connection).first()
            if row is None:
                return None
            await (
                MemoryStats.filter(user_key=user_key, scope=row.scope)
                .using_db(connection)
                .update(total_length=F("total_length") + (length - row.length))
            )
            await MemoryTerm.filter(user_key=user_key, memory_id=memory_id).using_db(connection).delete()
            await MemoryTerm.bulk_create(
                [
                    MemoryTerm(
                        user_key=user_key,
                        scope=row.scope,
                        term=term[:TERM_CHARS],
                        memory_id=memory_id,
                        tf=count,
                        length=length,
                    )
                    for term, count in terms.items()
                ],
                using_db=connection,
            )
            row.text, row.reply, row.length = text, "", length
            await row.save(using_db=connection, update_fields=["text", "reply", "length"])
        return Memory(
            id=row.id,
            user_key=user_key,
            text=text,
            scope=row.scope,
            conversation_id=row.conversation_id,
            created_at=row.created_at,
            speaker=row.speaker,
        )

    async def remove(self, user_key: str, memory_ids: Sequence[str]) -> None:
        if not memory_ids:
            return
        async with in_transaction(self._database.connection().connection_name) as connection:
            rows = await MemoryItem.filter(user_key=user_key, id__in=list(memory_ids)).using_db(connection)
            for row in rows:
                await (
                    MemoryStats.filter(user_key=user_key, scope=row.scope)
                    .using_db(connection)
                    .update(documents=F("documents") - 1, total_length=F("total_length") - row.length)
                )
            ids = [row.id for row in rows]
            await MemoryTerm.filter(user_key=user_key, memory_id__in=ids).using_db(connection).delete()
            await MemoryItem.filter(user_key=user_key, id__in=ids).using_db(connection).delete()

    async def forget_user(self, user_key: str) -> None:
        for model in (MemoryTerm, MemoryStats, MemoryItem):
            await model.filter(user_key=user_key).delete()
