"""Short-term memory: the recent turns of each conversation, in Redis or in this process."""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, replace

from redis.asyncio import Redis

from core.health import Health
from core.ports import ShortTermMemory, Turn

__all__ = ["InProcessShortTerm", "RedisShortTerm", "ResilientShortTerm"]

PART = "short-term memory"


# KEYS: the conversation's list, its count, then each person's set of conversations.
# ARGV: max turns, ttl, the conversation key, how many turns, then the turns as JSON.
_APPEND = """
local count = tonumber(ARGV[4])
local first = redis.call('INCRBY', KEYS[2], count) - count
for i = 1, count do
  local turn = cjson.decode(ARGV[4 + i])
  turn['number'] = first + i - 1
  redis.call('RPUSH', KEYS[1], cjson.encode(turn))
end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
for i = 3, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[3])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return first
"""


def _dump(turn: Turn) -> str:
    return json.dumps(asdict(turn), ensure_ascii=False)


def _load(raw: str | bytes) -> Turn:
    return Turn(**json.loads(raw))


class InProcessShortTerm:
    """For one process on the embedded defaults: bounded per conversation, expiring, and LRU-capped overall."""

    def __init__(self, *, max_turns: int = 40, ttl_seconds: float = 86_400, max_conversations: int = 10_000) -> None:
        self._max_turns = max_turns
        self._ttl = ttl_seconds
        self._max_conversations = max_conversations
        self._conversations: OrderedDict[str, tuple[float, deque[Turn]]] = OrderedDict()
        self._counted: dict[str, int] = {}  # turns each conversation has had, for their numbers

    async def ping(self) -> None:
        return None

    async def recent(self, conversation_key: str, limit: int) -> list[Turn]:
        entry = self._conversations.get(conversation_key)
        if entry is None:
            return []
        touched, turns = entry
        if time.monotonic() - touched > self._ttl:
            del self._conversations[conversation_key]
            return []
        return list(turns)[-limit:] if limit > 0 else []

    async def append(self, conversation_key: str, turns: Sequence[Turn]) -> None:
        entry = self._conversations.pop(conversation_key, None)
        alive = entry is not None and time.monotonic() - entry[0] <= self._ttl
        stored = entry[1] if entry is not None and alive else deque(maxlen=self._max_turns)
        first = self._counted.get(conversation_key, 0) if alive else 0
        stored.extend(replace(turn, number=first + i) for i, turn in enumerate(turns))
        self._counted[conversation_key] = first + len(turns)
        self._conversations[conversation_key] = (time.monotonic(), stored)
        while len(self._conversations) > self._max_conversations:
            gone, _ = self._conversations.popitem(last=False)
            self._counted.pop(gone, None)

    async def unsay(self, user_key: str, interaction_id: str) -> None:
        for key, (touched, turns) in list(self._conversations.items()):
            if any(t.interaction_id == interaction_id and t.user_key == user_key for t in turns):
                kept = deque((t for t in turns if t.interaction_id != interaction_id), maxlen=self._max_turns)
                self._conversations[key] = (touched, kept)

    async def forget_user(self, user_key: str) -> None:
        for key, (touched, turns) in list(self._conversations.items()):
            kept = deque((t for t in turns if t.user_key != user_key), maxlen=self._max_turns)
            if kept:
                self._conversations[key] = (touched, kept)
            else:
                del self._conversations[key]


class RedisShortTerm:
    """Shared by every replica: a capped list per conversation and, per person, the conversations they are in."""

    def __init__(
        self, redis: Redis, *, prefix: str = "rapport", max_turns: int = 40, ttl_seconds: int = 86_400
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._max_turns = max_turns
        self._ttl = ttl_seconds
        self._append = redis.register_script(_APPEND)

    def _conversation(self, conversation_key: str) -> str:
        return f"{self._prefix}:st:conv:{conversation_key}"

    def _person(self, user_key: str) -> str:
        return f"{self._prefix}:st:user:{user_key}"

    def _count(self, conversation_key: str) -> str:
        return f"{self._prefix}:st:count:{conversation_key}"

    async def ping(self) -> None:
        await self._redis.ping()

    async def recent(self, conversation_key: str, limit: int) -> list[Turn]:
        if limit <= 0:
            return []
        raw = await self._redis.lrange(self._conversation(conversation_key), -limit, -1)
        return [_load(item) for item in raw]

    async def append(self, conversation_key: str, turns: Sequence[Turn]) -> None:
        """One script: the turns numbered from the conversation's count (atomically, whichever replica appends),
        pushed, the list trimmed, the people noted; all with the expiry."""
        if not turns:
            return
        people = sorted({turn.user_key for turn in turns})
        keys = [self._conversation(conversation_key), self._count(conversation_key), *map(self._person, people)]
        await self._append(
            keys=keys, args=[self._max_turns, self._ttl, conversation_key, len(turns), *map(_dump, turns)]
        )

    async def unsay(self, user_key: str, interaction_id: str) -> None:
        for conversation_key in await self._redis.smembers(self._person(user_key)):
            name = conversation_key.decode() if isinstance(conversation_key, bytes) else conversation_key
            key = self._conversation(name)
            for raw in await self._redis.lrange(key, 0, -1):
                turn = _load(raw)
                if turn.interaction_id == interaction_id and turn.user_key == user_key:
                    await self._redis.lrem(key, 0, raw)  # type: ignore[arg-type]

    async def forget_user(self, user_key: str) -> None:
        person = self._person(user_key)
        for conversation_key in await self._redis.smembers(person):
            name = conversation_key.decode() if isinstance(conversation_key, bytes) else conversation_key
            key = self._conversation(name)
            for raw in await self._redis.lrange(key, 0, -1):
                if _load(raw).user_key == user_key:
                    await self._redis.lrem(key, 0, raw)  # type: ignore[arg-type]
        await self._redis.delete(person)


class ResilientShortTerm:
    """Redis first, within a deadline; while it does not answer, the conversation's turns as the inbox has them
    (the database), so answers go on with their history. One log line when Redis goes and one when it is back."""

    def __init__(
        self,
        primary: ShortTermMemory,
        fallback: Callable[[str, int], Awaitable[list[Turn]]],
        *,
        health: Health,
        timeout: float = 1.0,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._health = health
        self._timeout = timeout

    async def ping(self) -> None:
        await asyncio.wait_for(self._primary.ping(), self._timeout)

    async def recent(self, conversation_key: str, limit: int) -> list[Turn]:
        try:
            async with asyncio.timeout(self._timeout):
                turns = await self._primary.recent(conversation_key, limit)
        except Exception as exc:  # noqa: BLE001 - any failure: the database has the turns too
            self._health.down(PART, f"{type(exc).__name__}: {exc}".strip())
            return await self._fallback(conversation_key, limit)
        self._health.up(PART)
        return turns

    async def append(self, conversation_key: str, turns: Sequence[Turn]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._primary.append(conversation_key, turns)
        except Exception as exc:  # noqa: BLE001 - the inbox keeps the exchange; only Redis's copy lacks it
            self._health.down(PART, f"{type(exc).__name__}: {exc}".strip())
            return
        self._health.up(PART)

    async def unsay(self, user_key: str, interaction_id: str) -> None:
        await self._primary.unsay(user_key, interaction_id)  # raised: the job is tried again

    async def forget_user(self, user_key: str) -> None:
        await self._primary.forget_user(user_key)  # a forget must reach every store: a failure is raised
