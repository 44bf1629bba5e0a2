"""Operators' usage counters and refusal records on SQLite, PostgreSQL and Redis (storage/usage.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from tortoise.exceptions import IntegrityError

from core.ports import RefusalRecord, Spent, UsageCounters
from storage.database import Database
from storage.records import RelationalRecords
from storage.usage import PRUNE_EVERY, DatabaseUsage, RedisUsage
from tests.conftest import REDIS_URL, database_at, fresh_postgres, redis_namespace

ROOT = Path(__file__).resolve().parent.parent
MONTH, DAY = "2026-12", "2026-12-01"


@dataclass
class Backend:
    kind: str
    usage: UsageCounters
    url: str  # the database's, or Redis's
    prefix: str = ""  # Redis's keys


@pytest_asyncio.fixture(params=["sqlite", "postgres", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "redis":
            prefix = await stack.enter_async_context(redis_namespace())  # its keys deleted afterwards
            redis = Redis.from_url(REDIS_URL)
            stack.push_async_callback(redis.aclose)
            yield Backend(request.param, RedisUsage(redis, prefix), REDIS_URL, prefix)
            return
        if request.param == "sqlite":
            url = f"sqlite://{tmp_path}/db/rapport.sqlite3"
        else:
            url = await stack.enter_async_context(fresh_postgres())
        db = Database(url)
        await db.open()
        stack.push_async_callback(db.close)
        yield Backend(request.param, DatabaseUsage(db), url)


# A replica in a process of its own: each line it reads is a [subject, start, window, n] to hit n times at once,
# answered by a line of the counts it saw.
_REPLICA = """
import asyncio, json, sys
from storage.database import Database
from storage.usage import DatabaseUsage

async def main() -> None:
    db = Database(sys.argv[1])
    await db.open(migrate=False)
    usage = DatabaseUsage(db)
    await usage.ping()
    print("ready", flush=True)
    while line := await asyncio.to_thread(sys.stdin.readline):
        subject, start, window, n = json.loads(line)
        counts = await asyncio.gather(*(usage.hit(subject, start, window) for _ in range(n)))
        print(json.dumps(counts), flush=True)
    await db.close()

asyncio.run(main())
"""

Hits = Callable[[str, int, int, int], Awaitable[list[int]]]


@asynccontextmanager
async def another_replica(backend: Backend) -> AsyncIterator[Hits]:
    """Another client of the same store, as a second replica has: `hits(subject, start, window, n)` hits n times at
    once through it."""
    if backend.kind == "redis":
        redis = Redis.from_url(backend.url)
        try:
            usage = RedisUsage(redis, backend.prefix)
            await usage.ping()

            async def hits_here(subject: str, start: int, window: int, n: int) -> list[int]:
                return list(await asyncio.gather(*(usage.hit(subject, start, window) for _ in range(n))))

            yield hits_here
        finally:
            await redis.aclose()
        return
    # Every Database of one process shares tortoise's connections: a client of its own is a process of its own.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _REPLICA, backend.url, stdin=PIPE, stdout=PIPE, cwd=ROOT
    )
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout
    try:
        assert (await asyncio.wait_for(stdout.readline(), 60)).strip() == b"ready"

        async def hits_there(subject: str, start: int, window: int, n: int) -> list[int]:
            stdin.write(json.dumps([subject, start, window, n]).encode() + b"\n")
            await stdin.drain()
            return list(json.loads(await asyncio.wait_for(stdout.readline(), 60)))

        yield hits_there
    finally:
        stdin.close()
        try:
            assert await asyncio.wait_for(process.wait(), 30) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite://{tmp_path}/db/rapport.sqlite3"
        else:
            url = await stack.enter_async_context(fresh_postgres())
        db = Database(url)
        await db.open()
        stack.push_async_callback(db.close)
        yield db


async def test_hits_count_up_within_a_window_and_start_again_in_the_next(backend: Backend) -> None:
    usage = backend.usage
    assert [await usage.hit("person:a", 1_000_020, 60) for _ in range(3)] == [1, 2, 3]
    assert await usage.hit("person:b", 1_000_020, 60) == 1, "another subject counts on its own"
    assert await usage.hit("person:a", 1_000_080, 60) == 1
    assert await usage.hit("person:a", 1_000_080, 60) == 2


async def test_concurrent_hits_from_two_replicas_are_each_counted_once(backend: Backend) -> None:
    async with another_replica(backend) as hits_there:
        here = asyncio.gather(*(backend.usage.hit("server:s", 2_000_000, 60) for _ in range(25)))
        there, mine = await asyncio.gather(hits_there("server:s", 2_000_000, 60, 25), here)
        assert sorted(there + list(mine)) == list(range(1, 51)), "every hit saw a count of its own"
        assert await hits_there("server:s", 2_000_000, 60, 1) == [51]


async def test_spending_adds_up_per_period_and_subject_and_only_what_is_asked_is_read(backend: Backend) -> None:
    usage = backend.usage
    await usage.spend([MONTH, DAY], ["person:a", "server:s"], 100, 0.5)
    await usage.spend([MONTH], ["person:a"], 20, 0.25)
    await usage.spend([DAY], ["server:s"], 0, 0.0)  # nothing spent: no row for it

    assert await usage.spent(MONTH, ["person:a", "server:s", "person:unknown"]) == {
        "person:a": Spent(tokens=120, cost=0.75),
        "server:s": Spent(tokens=100, cost=0.5),
    }
    assert await usage.spent(MONTH, ["server:s"]) == {"server:s": Spent(tokens=100, cost=0.5)}
    assert await usage.spent(DAY, ["person:a", "server:s"]) == {
        "person:a": Spent(tokens=100, cost=0.5),
        "server:s": Spent(tokens=100, cost=0.5),
    }
    assert await usage.spent("2026-11", ["person:a"]) == {}
    assert await usage.spent(MONTH, []) == {}


async def test_top_spenders_are_ordered_by_tokens_within_the_prefix(backend: Backend) -> None:
    usage = backend.usage
    for subject, tokens in [("slack:T1:U1", 300), ("slack:T1:U2", 500), ("slack:T1:U3", 100), ("slack:T2:U9", 900)]:
        await usage.spend([MONTH], [subject], tokens, tokens / 1000)
    assert await usage.top(MONTH, "slack:T1:", 2) == [
        ("slack:T1:U2", Spent(tokens=500, cost=0.5)),
        ("slack:T1:U1", Spent(tokens=300, cost=0.3)),
    ]
    assert [s for s, _ in await usage.top(MONTH, "slack:T1:", 10)] == ["slack:T1:U2", "slack:T1:U1", "slack:T1:U3"]
    assert await usage.top(MONTH, "discord:", 10) == []
    assert await usage.top(DAY, "slack:T1:", 10) == [], "another period"


async def test_a_prefix_with_like_wildcards_is_taken_literally(backend: Backend) -> None:
    usage = backend.usage
    for subject, tokens in [("a_b:1", 10), ("axb:2", 50), ("A_B:3", 70), ("a%:4", 20), ("az:5", 90)]:
        await usage.spend([MONTH], [subject], tokens, 0.0)
    assert [s for s, _ in await usage.top(MONTH, "a_b:", 10)] == ["a_b:1"]
    assert [s for s, _ in await usage.top(MONTH, "a%", 10)] == ["a%:4"]
    assert [s for s, _ in await usage.top(MONTH, "a\\", 10)] == []


async def test_redis_counters_expire(tmp_path: Path) -> None:
    async with redis_namespace() as prefix:
        redis = Redis.from_url(REDIS_URL)
        try:
            usage = RedisUsage(redis, prefix)
            await usage.hit("person:a", 3_000_000, 60)
            assert 0 < await redis.ttl(f"{prefix}:rate:person:a:3000000") <= 120
            await usage.spend([MONTH, DAY], ["person:a"], 5, 0.01)
            for key, days in [(f"usage:{MONTH}", 40), (f"top:{MONTH}", 40), (f"usage:{DAY}", 3), (f"top:{DAY}", 3)]:
                assert days * 86_400 - 60 < await redis.ttl(f"{prefix}:{key}") <= days * 86_400, key
        finally:
            await redis.aclose()


async def test_windows_that_have_ended_are_pruned_and_long_ones_kept(database: Database) -> None:
    usage = DatabaseUsage(database)
    await usage.hit("person:a", 0, 60)  # ended long before the newest hit: deleted
    await usage.hit("note:b", 0, 86_400)  # a day's window that started then: still running, kept
    await usage.hit("person:c", 9_950, 60)  # running when the newest hit's window began: kept
    for _ in range(PRUNE_EVERY - 4):
        await usage.hit("person:a", 10_000, 60)
    rows = await database.connection().execute_query_dict("SELECT subject FROM usage_window ORDER BY subject")
    assert len(rows) == 4, "not pruned before the hundredth hit"
    await usage.hit("person:a", 10_000, 60)
    rows = await database.connection().execute_query_dict(
        "SELECT subject, start FROM usage_window ORDER BY subject, start"
    )
    assert [(r["subject"], r["start"]) for r in rows] == [("note:b", 0), ("person:a", 10_000), ("person:c", 9_950)]


async def _columns(database: Database, table: str) -> dict[str, str]:
    connection = database.connection()
    if database.dialect == "sqlite":
        rows = await connection.execute_query_dict(f"PRAGMA table_info({table})")
        return {r["name"]: r["type"].lower() for r in rows}
    rows = await connection.execute_query_dict(
        f"SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '{table}'"
    )
    return {r["column_name"]: r["data_type"].lower() for r in rows}


async def test_a_refusal_is_recorded_without_any_text_of_the_message(database: Database) -> None:
    at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    record = RefusalRecord(user_key="slack:T1:U1", platform="slack", server="T1", channel="C5", reason="limit", at=at)
    await DatabaseUsage(database).refused(record)

    columns = await _columns(database, "refusal")
    assert set(columns) == {"id", "at", "user_key", "platform", "server", "channel", "reason"}
    assert not [name for name, kind in columns.items() if "text" in kind], "no column could hold a message"
    rows = await database.connection().execute_query_dict(
        "SELECT user_key, platform, server, channel, reason FROM refusal"
    )
    assert rows == [
        {"user_key": "slack:T1:U1", "platform": "slack", "server": "T1", "channel": "C5", "reason": "limit"}
    ]


async def test_forgetting_a_person_keeps_their_usage(database: Database) -> None:
    usage = DatabaseUsage(database)
    await usage.spend([MONTH, DAY], ["slack:T1:U1", "person:slack:T1:U1"], 40, 0.2)
    await RelationalRecords(database).forget_user("slack:T1:U1")
    kept = {"slack:T1:U1": Spent(tokens=40, cost=0.2), "person:slack:T1:U1": Spent(tokens=40, cost=0.2)}
    assert await usage.spent(MONTH, list(kept)) == kept
    assert await usage.spent(DAY, list(kept)) == kept


async def test_the_usage_migration_applies_on_a_fresh_database(tmp_path: Path) -> None:
    for sqlite in (tmp_path / "fresh.sqlite3", None):
        async with contextlib.AsyncExitStack() as stack:
            url = await stack.enter_async_context(database_at("0007_person_model", sqlite))
            db = Database(url)
            await db.open(migrate=False)
            stack.push_async_callback(db.close)
            assert await _columns(db, "usage_total") == {}, "not there before 0008"
            await db.migrate()
            assert set(await _columns(db, "usage_total")) == {"id", "period", "subject", "tokens", "cost"}
            assert set(await _columns(db, "usage_window")) == {"id", "subject", "start", "until", "count"}
            bind = db.params()
            insert = (
                f"INSERT INTO usage_total (period, subject, tokens, cost) VALUES ({bind(MONTH, 'person:a', 1, 0.0)})"
            )
            await db.connection().execute_query(insert, bind.values)
            with pytest.raises(IntegrityError):  # one row per period and subject
                await db.connection().execute_query(insert, bind.values)
            assert await DatabaseUsage(db).hit("person:a", 60, 60) == 1
