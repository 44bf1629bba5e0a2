"""Several replicas on one PostgreSQL, Redis and Chroma server: shared memory, one answer per event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from bot.wiring import Services, build_services
from core.entries import Incoming
from core.events import MessageReceived, UserRef
from core.ports import Memory
from tests.conftest import REDIS_URL, fresh_postgres, make_settings, ready, redis_namespace, shut
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.chat import FakeChat, FakePlatform


@pytest_asyncio.fixture
async def two_replicas(
    tmp_path: Path, fake_claude: FakeAnthropic, embedding_model: Any, chroma_server: str
) -> AsyncIterator[tuple[Services, Services]]:
    async with fresh_postgres() as pg, redis_namespace() as prefix:
        replicas = []
        for name in ("a", "b"):
            settings = make_settings(
                tmp_path / name,
                fake_claude,
                DATABASE_URL=pg,
                REDIS_URL=REDIS_URL,
                REDIS_PREFIX=prefix,
                CHROMA_URL=chroma_server,
            )
            replica = await build_services(settings, model=embedding_model)
            replica.start()
            replicas.append(replica)
        yield replicas[0], replicas[1]
        await shut(*replicas)


async def _texts(services: Services, hits: list[tuple[str, float]]) -> list[Memory]:
    found, _ = await services.index.read("fake:alice", [i for i, _ in hits], around=[], scopes=None)
    return found


async def test_memory_written_through_one_replica_is_recalled_through_the_other(
    two_replicas: tuple[Services, Services], fake_claude: FakeAnthropic
) -> None:
    a, b = two_replicas
    await FakeChat(a).say("alice", "My daughter's name is Clementine and she plays the oboe.")
    await a.assistant.drain(10)
    await FakeChat(b, platform="fake").say("alice", "What instrument does my daughter play?")
    assert "Clementine and she plays the oboe" in fake_claude.prompt_text()
    # The rows hold no vectors with a Chroma server: b found this one there, not only by its words.
    [query] = await b.embedder.embed(["What instrument does my daughter play?"])
    found = await b.index.candidates("fake:alice", [], ready(query), scopes=None, limit=5)
    assert found.unsearched is None and any("oboe" in m.text for m in await _texts(b, found.vector))


async def test_an_event_is_taken_by_exactly_one_replica_and_answered_once(
    two_replicas: tuple[Services, Services], fake_claude: FakeAnthropic
) -> None:
    a, b = two_replicas
    chats = [FakeChat(a), FakeChat(b)]
    event = MessageReceived(
        user=UserRef(platform="fake", user_id="cy"), text="only once", conversation_id="dm-cy", private=True
    )
    incoming = Incoming(key="fake:message:dm-cy:1", event=event)
    waits = [replica.assistant.outcomes.expect(incoming.key) for replica in (a, b)]
    claims = await asyncio.gather(*(r.turns.accept(incoming) for r in (a, b, a, b)))
    assert [c.fresh for c in claims].count(True) == 1
    done, _ = await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    assert done and len(chats) == 2
    await asyncio.sleep(0.3)
    assert len(fake_claude.requests) == 1


async def test_one_persons_turns_do_not_interleave_across_replicas(
    two_replicas: tuple[Services, Services], fake_claude: FakeAnthropic
) -> None:
    fake_claude.latency = 0.1
    seen = FakePlatform()
    chats = [FakeChat(replica, seen=seen, shared=True) for replica in two_replicas]
    await asyncio.gather(*(chats[i % 2].say("bea", f"turn {i}") for i in range(4)))
    # Each Claude call ends before the next begins: their request windows never overlap.
    assert len(fake_claude.requests) == 4
    assert fake_claude.max_in_flight == 1
