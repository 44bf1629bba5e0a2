"""The event ledger: platform event ids already taken, in Redis (shared by replicas) or in this process."""

from __future__ import annotations

import time
from collections import OrderedDict

from redis.asyncio import Redis

__all__ = ["InProcessLedger", "RedisLedger"]


class InProcessLedger:
    """For one process: remembers keys until they expire, at most `max_keys` of them."""

    def __init__(self, *, max_keys: int = 100_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max_keys = max_keys

    async def first_sighting(self, key: str, ttl_seconds: int = 86_400) -> bool:
        now = time.monotonic()
        while self._seen:
            oldest_key, expires = next(iter(self._seen.items()))
            if expires > now and len(self._seen) < self._max_keys:
                break
            del self._seen[oldest_key]
        known = self._seen.get(key)
        if known is not None and known > now:
            return False
        self._seen[key] = now + ttl_seconds
        self._seen.move_to_end(key)
        return True

    async def has_seen(self, key: str) -> bool:
        expires = self._seen.get(key)
        return expires is not None and expires > time.monotonic()

    async def forget(self, key: str) -> None:
        self._seen.pop(key, None)


class RedisLedger:
    """SET NX EX: atomic across every replica that shares the Redis."""

    def __init__(self, redis: Redis, *, prefix: str = "rapport") -> None:
        self._redis = redis
        self._prefix = prefix

    async def first_sighting(self, key: str, ttl_seconds: int = 86_400) -> bool:
        return bool(await self._redis.set(f"{self._prefix}:seen:{key}", b"1", nx=True, ex=ttl_seconds))

    async def has_seen(self, key: str) -> bool:
        return bool(await self._redis.exists(f"{self._prefix}:seen:{key}"))

    async def forget(self, key: str) -> None:
        await self._redis.delete(f"{self._prefix}:seen:{key}")
