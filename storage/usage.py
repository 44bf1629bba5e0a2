"""Operators' counters (core.ports.UsageCounters) on the database or Redis, and refusals (core.ports.Refusals).

Every replica shares them. Nothing here catches an error: the gate in the core holds each call to a deadline and
decides what a failure means (it lets the message through).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from redis.asyncio import Redis

from core.ports import RefusalRecord, Spent
from storage.database import Database, among
from storage.models import Refusal

__all__ = ["DatabaseUsage", "RedisUsage"]

# Windows are pruned by the hit that is every PRUNE_EVERY-th of its object, in a statement of its own: no timer,
# no background task, and a replica that counts nothing prunes nothing (another one does, or nothing is growing).
# A window is deleted once it has ended before the pruning hit's own window began: each row keeps its end, so windows
# of every length (a minute's rate, a day's notes) share the table.
PRUNE_EVERY = 100

DAY_TTL = 3 * 86_400
MONTH_TTL = 40 * 86_400
# How many of a period's biggest spenders `top` reads from Redis before keeping those of the prefix: the zset holds
# every subject of the period (people and servers of every platform), and a server's top people are among the
# first few hundred of all in practice; a prefix whose subjects all spend less than those is listed short.
TOP_SCAN = 500


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching what starts with `prefix`, its `%` and `_` taken literally (escaped by `\\`)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


class DatabaseUsage:
    """Implements core.ports.UsageCounters and core.ports.Refusals on PostgreSQL or SQLite (≥ 3.35: upserts
    with RETURNING)."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._hits = 0

    async def ping(self) -> None:
        await self._database.ping()

    async def hit(self, subject: str, start: int, window: int) -> int:
        # One statement: replicas counting in one window each get a count of their own, and none is lost.
        bind = self._database.params()
        sql = (
            f"INSERT INTO usage_window (subject, start, until, count) "
            f"VALUES ({bind(subject, int(start), int(start) + int(window))}, 1) "
            "ON CONFLICT (subject, start) DO UPDATE SET count = usage_window.count + 1 RETURNING count"
        )
        connection = self._database.connection()
        rows = await connection.execute_query_dict(sql, bind.values)
        self._hits += 1
        if self._hits % PRUNE_EVERY == 0:
            bind = self._database.params()
            await connection.execute_query(f"DELETE FROM usage_window WHERE until < {bind(int(start))}", bind.values)
        return int(rows[0]["count"])

    async def spend(self, periods: Sequence[str], subjects: Sequence[str], tokens: int, cost: float) -> None:
        if not tokens and not cost:
            return  # nothing spent: no row, so that `spent` leaves the subject out
        # Each pair once (PostgreSQL refuses to update a row twice in one statement), sorted so that replicas'
        # statements lock the rows in one order and never deadlock.
        pairs = sorted({(period, subject) for period in periods for subject in subjects})
        if not pairs:
            return
        bind = self._database.params()
        rows = ", ".join(f"({bind(period, subject, int(tokens), float(cost))})" for period, subject in pairs)
        await self._database.connection().execute_query(
            f"INSERT INTO usage_total (period, subject, tokens, cost) VALUES {rows} "
            "ON CONFLICT (period, subject) DO UPDATE SET "
            "tokens = usage_total.tokens + excluded.tokens, cost = usage_total.cost + excluded.cost",
            bind.values,
        )

    async def spent(self, period: str, subjects: Sequence[str]) -> dict[str, Spent]:
        if not subjects:
            return {}
        bind = self._database.params()
        sql = (
            f"SELECT subject, tokens, cost FROM usage_total WHERE period = {bind(period)}"
            f"{among(bind, 'subject', list(dict.fromkeys(subjects)))}"
        )
        rows = await self._database.connection().execute_query_dict(sql, bind.values)
        return {row["subject"]: Spent(tokens=int(row["tokens"]), cost=float(row["cost"])) for row in rows}

    async def top(self, period: str, prefix: str, limit: int) -> list[tuple[str, Spent]]:
        if limit <= 0:
            return []
        bind = self._database.params()
        sql = (
            f"SELECT subject, tokens, cost FROM usage_total WHERE period = {bind(period)} "
            f"AND subject LIKE {bind(_like_prefix(prefix))} ESCAPE '\\' "
        )
        if self._database.dialect == "sqlite":  # whose LIKE ignores the case of ASCII letters
            sql += f"AND substr(subject, 1, {bind(len(prefix))}) = {bind(prefix)} "
        sql += f"ORDER BY tokens DESC, subject LIMIT {int(limit)}"
        rows = await self._database.connection().execute_query_dict(sql, bind.values)
        return [(row["subject"], Spent(tokens=int(row["tokens"]), cost=float(row["cost"]))) for row in rows]

    async def refused(self, record: RefusalRecord) -> None:
        # Cut to the columns' lengths: a refusal is a log line, and a long id's tail is not worth an error.
        await Refusal.create(
            at=record.at,
            user_key=record.user_key[:191],
            platform=record.platform[:16],
            server=record.server[:64],
            channel=record.channel[:64],
            reason=record.reason[:32],
            using_db=self._database.connection(),
        )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisUsage:
    """Implements core.ports.UsageCounters on Redis: a counter per window, and per period a hash of totals and a
    zset of tokens per subject. A subject's cost is the hash field `{subject}|cost` (subjects hold no `|`)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _usage(self, period: str) -> str:
        return f"{self._prefix}:usage:{period}"

    def _top(self, period: str) -> str:
        return f"{self._prefix}:top:{period}"

    async def ping(self) -> None:
        await self._redis.ping()

    async def hit(self, subject: str, start: int, window: int) -> int:
        key = f"{self._prefix}:rate:{subject}:{int(start)}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, max(1, 2 * int(window)))
            count, _ = await pipe.execute()
        return int(count)

    async def spend(self, periods: Sequence[str], subjects: Sequence[str], tokens: int, cost: float) -> None:
        if not tokens and not cost:
            return  # nothing spent: no field, so that `spent` leaves the subject out
        if not periods or not subjects:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for period in dict.fromkeys(periods):
                usage, top = self._usage(period), self._top(period)
                for subject in dict.fromkeys(subjects):
                    pipe.hincrby(usage, subject, int(tokens))
                    pipe.hincrbyfloat(usage, f"{subject}|cost", float(cost))
                    pipe.zincrby(top, int(tokens), subject)
                # A day's totals (2026-12-01) are read for a day, a month's (2026-12) for a month: kept a little
                # longer than that, then Redis drops them.
                ttl = DAY_TTL if len(period) == 10 else MONTH_TTL
                pipe.expire(usage, ttl)
                pipe.expire(top, ttl)
            await pipe.execute()

    async def spent(self, period: str, subjects: Sequence[str]) -> dict[str, Spent]:
        wanted = list(dict.fromkeys(subjects))
        if not wanted:
            return {}
        values = await self._redis.hmget(self._usage(period), [f for s in wanted for f in (s, f"{s}|cost")])
        found: dict[str, Spent] = {}
        for i, subject in enumerate(wanted):
            tokens, cost = values[2 * i], values[2 * i + 1]
            if tokens is not None or cost is not None:
                found[subject] = Spent(tokens=int(tokens or 0), cost=float(cost or 0))
        return found

    async def top(self, period: str, prefix: str, limit: int) -> list[tuple[str, Spent]]:
        if limit <= 0:
            return []
        # withscores: (member, score) pairs, which redis-py's overloads do not tell apart from plain members.
        biggest = cast(
            list[tuple[str | bytes, float]],
            await self._redis.zrange(self._top(period), 0, TOP_SCAN - 1, desc=True, withscores=True),
        )
        chosen = sorted(
            ((name, int(score)) for member, score in biggest if (name := _text(member)).startswith(prefix)),
            key=lambda pair: (-pair[1], pair[0]),
        )[:limit]
        if not chosen:
            return []
        costs = await self._redis.hmget(self._usage(period), [f"{name}|cost" for name, _ in chosen])
        return [
            (name, Spent(tokens=tokens, cost=float(cost or 0)))
            for (name, tokens), cost in zip(chosen, costs, strict=True)
        ]
