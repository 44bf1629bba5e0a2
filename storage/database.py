"""The relational database: tortoise configuration, migrations, and the connection's lifetime."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.context import TortoiseContext
from tortoise.migrations.api import migrate as run_migrations

__all__ = ["DEFAULT_DATABASE_URL", "Database", "Params", "among", "as_datetime", "tortoise_config"]

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite://data/rapport.sqlite3"
APP = "rapport"
# asyncpg's pool: tortoise's default of 5 connections queued every query behind the others at 200 people (the
# load benchmark); `?maxsize=N` in DATABASE_URL overrides it.
POOL_SIZE = 40
# pg_advisory_lock key: "RAPPORT" in ASCII, so that replicas starting together migrate one at a time.
MIGRATION_LOCK = 0x52415050_4F5254


def _dialect(url: str) -> str:
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgres", "postgresql", "asyncpg"):
        return "postgres"
    raise ValueError(f"unsupported database URL scheme {scheme!r} (use postgres:// or sqlite://)")


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release a pooled connection without asyncpg's reset query (a second round trip after every query).

    Rapport sets no session state, listens to nothing and takes advisory locks only on a connection of its own
    (migrations), so the reset has nothing to undo; a transaction left open by a cancelled task is rolled back.
    """
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


def tortoise_config(url: str) -> dict[str, Any]:
    """Tortoise's config for one database URL.

    The connection is named after its dialect: tortoise caches compiled SQL by connection name, so a
    process (the test suite) that opens SQLite and then PostgreSQL must not reuse one name for both.
    """
    dialect = _dialect(url)
    connection: str | dict[str, Any] = url
    if dialect == "postgres":
        connection = expand_db_url(url)
        connection["credentials"].setdefault("maxsize", POOL_SIZE)
        connection["credentials"]["reset"] = _keep_session
    return {
        "connections": {dialect: connection},
        "apps": {
            APP: {
                "models": ["storage.models"],
                "migrations": "storage.migrations",
                "default_connection": dialect,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def _ensure_sqlite_dir(url: str) -> None:
    if _dialect(url) == "sqlite":
        path = url.split("://", 1)[1].split("?", 1)[0]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def as_datetime(value: datetime | str) -> datetime:
    """A timestamp column read by raw SQL: asyncpg gives a datetime, SQLite the ISO text tortoise wrote."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Params:
    """The values of one raw statement: each call binds some and returns their placeholders, numbered in order
    of appearance, so one value list serves asyncpg's `$n` and SQLite's `?` alike."""

    def __init__(self, dialect: str) -> None:
        self.values: list[Any] = []
        self._numbered = dialect == "postgres"

    def __call__(self, *items: Any) -> str:
        first = len(self.values) + 1
        self.values.extend(items)
        if self._numbered:
            return ", ".join(f"${first + i}" for i in range(len(items)))
        return ", ".join("?" for _ in items)


def among(bind: Params, column: str, values: Sequence[str] | None) -> str:
    """` AND column IN (...)`, or nothing for None (no filter): how audience filters are written."""
    if values is None:
        return ""
    return f" AND {column} IN ({bind(*values)})" if values else " AND 1 = 0"


class Database:
    """Owns the tortoise context for the process.

    Tortoise keeps its state in a context variable, which tasks created before `open` cannot see; the global
    fallback makes the one database of the process visible to every task (aiohttp handlers, adapters).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = _dialect(url)
        self._context: TortoiseContext | None = None

    async def migrate(self) -> None:
        """Apply every committed migration that the database has not seen yet, one replica at a time."""
        _ensure_sqlite_dir(self.url)
        async with self._migration_lock(), TortoiseContext():
            await run_migrations(config=tortoise_config(self.url))
        log.info("database migrations applied (%s)", self.dialect)

    @asynccontextmanager
    async def _migration_lock(self) -> AsyncIterator[None]:
        """On PostgreSQL a session advisory lock; SQLite serialises writers by itself."""
        if self.dialect != "postgres":
            yield
            return
        connection = await asyncpg.connect("postgresql://" + self.url.split("://", 1)[1])
        try:
            await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            yield
        finally:
            await connection.close()  # ends the session, which releases the lock

    async def open(self, *, migrate: bool = True) -> None:
        if migrate:
            await self.migrate()
        _ensure_sqlite_dir(self.url)
        self._context = await Tortoise.init(config=tortoise_config(self.url), _enable_global_fallback=True)

    def connection(self) -> BaseDBAsyncClient:
        if self._context is None:
            raise RuntimeError("database is not open")
        return self._context.db()

    def params(self) -> Params:
        return Params(self.dialect)

    async def ping(self) -> None:
        await self.connection().execute_query("SELECT 1")

    async def close(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            await context.close_connections()
            try:
                context.__exit__(None, None, None)
            except ValueError:  # closed from another task than the one that opened it: nothing to reset
                pass
