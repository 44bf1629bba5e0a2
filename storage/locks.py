"""Per-person locks in Redis, shared by replicas: one person's turns never interleave across processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import LockError

__all__ = ["RedisPersonLocks"]


class RedisPersonLocks:
    """redis-py's Lock (SET NX PX + token-checked release).

    `timeout` frees the lock of a replica that died mid-answer; it must exceed the longest answer (Claude's
    timeout times its retries).
    """

    def __init__(self, redis: Redis, *, prefix: str = "rapport", timeout: float = 300.0, wait: float = 600.0) -> None:
        self._redis = redis
        self._prefix = prefix
        self._timeout = timeout
        self._wait = wait

    @asynccontextmanager
    async def hold(self, user_key: str) -> AsyncIterator[None]:
        lock = self._redis.lock(
            f"{self._prefix}:turn:{user_key}", timeout=self._timeout, sleep=0.02, blocking_timeout=self._wait
        )
        if not await lock.acquire():
            raise TimeoutError(f"waited {self._wait:.0f}s for {user_key}'s previous turn")
        try:
            yield
        finally:
            try:
                await lock.release()
            except LockError:  # expired while we held it: someone else may already hold a new one
                pass
