"""Real worker processes in Slack HTTP mode: graceful shutdown mid-answer, and two replicas side by side."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg
import pytest_asyncio

from tests.conftest import REDIS_URL, eventually, fresh_postgres, redis_namespace
from tests.fakes.anthropic_api import FakeAnthropic, Say
from tests.fakes.slack_api import FakeSlackAPI
from tests.slackside import deliver, event, slack_env
from tests.workers import worker


@pytest_asyncio.fixture
async def slack_api() -> AsyncIterator[FakeSlackAPI]:
    api = FakeSlackAPI()
    await api.start()
    yield api
    await api.stop()


def old_payload_env(fake_claude: FakeAnthropic, slack_api: FakeSlackAPI) -> dict[str, str]:
    """The recorded payloads' times are years old: answered, not "too old to answer"."""
    return slack_env(fake_claude, slack_api) | {"STALE_AFTER_SECONDS": str(10 * 365 * 86_400)}


async def test_sigterm_mid_answer_delivers_it_stores_it_and_exits_zero(
    tmp_path: Path, fake_claude: FakeAnthropic, slack_api: FakeSlackAPI
) -> None:
    fake_claude.script.append(Say("Here is the answer you waited for.", delay=2.0))
    async with worker(tmp_path, **old_payload_env(fake_claude, slack_api)) as running:
        process, port = running.process, running.port
        async with aiohttp.ClientSession() as http:
            body = event("message_im", event_id="EvTERM", text="Tell me something slow", ts="1712345900.000100")
            assert await deliver(http, port, body) == 200
        await eventually(claude_is_answering(fake_claude), timeout=20)
        process.send_signal(signal.SIGTERM)
        code = await running.exited(30)
        output = running.output
    assert code == 0, output
    assert any("Here is the answer you waited for." in str(args.get("text")) for args in slack_api.posted()), output
    with sqlite3.connect(tmp_path / "data" / "rapport.sqlite3") as db:
        assert db.execute("SELECT user_text FROM interaction").fetchall() == [("Tell me something slow",)]


async def test_two_replicas_answer_each_event_once_and_share_memory(
    tmp_path: Path,
    fake_claude: FakeAnthropic,
    slack_api: FakeSlackAPI,
    chroma_server: str,  # noqa: F811
) -> None:
    async with fresh_postgres() as pg, redis_namespace() as prefix:
        shared = {
            **old_payload_env(fake_claude, slack_api),
            "DATABASE_URL": pg,
            "REDIS_URL": REDIS_URL,
            "REDIS_PREFIX": prefix,
            "CHROMA_URL": chroma_server,
        }
        async with worker(tmp_path / "a", **shared) as (_, port_a), worker(tmp_path / "b", **shared) as (_, port_b):
            async with aiohttp.ClientSession() as http:
                fact = event(
                    "app_mention",
                    event_id="EvFACT",
                    ts="1712346000.000100",
                    text="<@UBOT> note for later: our release codename is Marmalade",
                )
                # The same event reaches both replicas (a retry routed elsewhere by the load balancer).
                statuses = await asyncio.gather(deliver(http, port_a, fact), deliver(http, port_b, fact, retry=1))
                assert statuses == [200, 200]
                await slack_api.wait_for(lambda: len(answered_texts(slack_api)) >= 1)
                question = event(
                    "message_im", event_id="EvASK", ts="1712346100.000100", text="What is our release codename?"
                )
                await eventually(lambda: remembered(pg, "Marmalade"))  # storing runs behind the answer
                assert await deliver(http, port_b, question) == 200
                await slack_api.wait_for(lambda: len(answered_texts(slack_api)) >= 2)
                await asyncio.sleep(0.5)  # room for a duplicate answer to show, if there were one
    assert len(fake_claude.requests) == 2, "each event reached Claude once"
    assert len(answered_texts(slack_api)) == 2, "and was answered once"
    assert "release codename is Marmalade" in fake_claude.prompt_text(-1), "replica b recalled what a stored"


def claude_is_answering(fake: FakeAnthropic) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return fake.in_flight > 0

    return check


async def remembered(pg: str, word: str) -> bool:
    connection = await asyncpg.connect(pg)
    try:
        return bool(await connection.fetchval("SELECT count(*) FROM memory WHERE text LIKE $1", f"%{word}%"))
    finally:
        await connection.close()


def answered_texts(api: FakeSlackAPI) -> list[str]:
    """The answers people see now (a DM's grows by edits of one message)."""
    return [str(m.get("text")) for m in api.replied() if str(m.get("text", "")).startswith("Noted:")]
