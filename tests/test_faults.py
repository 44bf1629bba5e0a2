"""Bad weather, with real worker processes in Slack HTTP mode on a PostgreSQL cluster and a Redis of their own:
SIGKILL and SIGTERM mid-answer, the same event at two replicas, PostgreSQL stopped under traffic, Redis killed
mid-answer, a hung Claude, and a reaction on the placeholder while Claude answers.

Each event is a DM from its own person (U{i} in D{i}) unless a test says otherwise, so "answered exactly once"
reads as: D{i} shows exactly one message of Rapport's, and it is the answer to question {i}.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from adapters.slack.delivery import THINKING
from bot.wiring import build_services
from core.assistant import AssistantSettings
from storage.long_term import ChromaVectors, open_chroma
from tests.conftest import IN_CI, eventually, make_settings, shut
from tests.fakes.anthropic_api import FakeAnthropic, Say, Use
from tests.fakes.chat import FakeChat
from tests.fakes.slack_api import FakeSlackAPI
from tests.private_services import PrivateChroma, PrivatePostgres, PrivateRedis, missing_tools
from tests.slackside import deliver, dm, event, now_ts, reaction, slack_env
from tests.workers import Running, worker

APOLOGY = AssistantSettings().apology


@pytest.fixture(scope="module")
def fault_tools() -> None:
    problem = missing_tools()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"the fault tests cannot run: {problem}", pytrace=False)
        pytest.skip(problem)


@pytest_asyncio.fixture(scope="module")
async def cluster(fault_tools: None) -> AsyncIterator[PrivatePostgres]:
    postgres = PrivatePostgres()
    await postgres.create()
    try:
        yield postgres
    finally:
        await postgres.drop()


@pytest_asyncio.fixture
async def redis_server(tmp_path: Path, fault_tools: None) -> AsyncIterator[PrivateRedis]:
    redis = PrivateRedis(tmp_path / "redis")
    await redis.start()
    yield redis
    await redis.kill()


@pytest_asyncio.fixture
async def slack_api() -> AsyncIterator[FakeSlackAPI]:
    api = FakeSlackAPI()
    await api.start()
    yield api
    await api.stop()


@pytest_asyncio.fixture
async def env(
    cluster: PrivatePostgres, redis_server: PrivateRedis, fake_claude: FakeAnthropic, slack_api: FakeSlackAPI
) -> dict[str, str]:
    return slack_env(fake_claude, slack_api) | {
        "DATABASE_URL": await cluster.database(),
        "REDIS_URL": redis_server.url,
        "TURN_LEASE_SECONDS": "3",  # a killed process's turns are taken over within this
        "CLAUDE_MAX_RETRIES": "0",
        "SHUTDOWN_TIMEOUT": "3",
    }


def shown(api: FakeSlackAPI, person: int) -> list[str]:
    """What D{person} shows of Rapport now, oldest first."""
    return [str(m.get("text")) for m in api.shown(f"D{person}")]


def answered_once(api: FakeSlackAPI, people: range) -> bool:
    return all(shown(api, i) == [f"Noted: question {i}"] for i in people)


async def interactions(cluster: PrivatePostgres, url: str) -> int:
    [row] = await cluster.query(url, "SELECT COUNT(*) AS n FROM interaction")
    return int(row["n"])


async def send(running: Running, bodies: list[dict[str, object]]) -> list[int]:
    async with aiohttp.ClientSession() as http:
        return [await deliver(http, running.port, body) for body in bodies]


async def claude_has(fake: FakeAnthropic, count: int) -> None:
    async def check() -> bool:
        return fake.in_flight >= count

    await eventually(check, timeout=30)


async def test_sigkill_with_20_events_acknowledged_answers_each_exactly_once_after_restart(
    tmp_path: Path, env: dict[str, str], cluster: PrivatePostgres, fake_claude: FakeAnthropic, slack_api: FakeSlackAPI
) -> None:
    fake_claude.latency = 30.0
    async with worker(tmp_path, **env) as first:
        assert await send(first, [dm(i, f"question {i}") for i in range(20)]) == [200] * 20
        await claude_has(fake_claude, 20)
        first.process.kill()
        await first.exited(10)
    assert all(shown(slack_api, i) == [THINKING] for i in range(20)), "acknowledged, and only thinking so far"
    fake_claude.latency = 0.05
    started = time.monotonic()
    async with worker(tmp_path, **env) as second:
        await slack_api.wait_for(lambda: answered_once(slack_api, range(20)), timeout=60)
        recovered_in = time.monotonic() - started
        await asyncio.sleep(1.0)  # room for a second answer to show, if there were one
        assert answered_once(slack_api, range(20)), second.output
        await eventually(lambda: _equals(interactions(cluster, env["DATABASE_URL"]), 20))
    placeholders = [args for args in slack_api.called("chat.postMessage") if args.get("text") == THINKING]
    assert len(placeholders) == 20, "the restarted process took up the placeholders it found, posting none"
    assert recovered_in < 30


async def test_sigkill_mid_stream_leaves_one_complete_message_per_reply_after_restart(
    tmp_path: Path, env: dict[str, str], fake_claude: FakeAnthropic, slack_api: FakeSlackAPI
) -> None:
    slow = "A reply that takes its time to arrive, piece by piece, as Claude writes it. " * 8
    fake_claude.script += [Say(slow, pause=0.25), Say(slow, pause=0.25)]  # ~40 pieces: ~10 s each
    mention = event("app_mention", event_id="EvSTREAM", text="<@UBOT> tell me slowly", ts=now_ts(), user="U1")
    thread = str(mention["event"]["ts"])
    async with worker(tmp_path, **env) as first:
        assert await send(first, [dm(0, "question 0"), mention]) == [200, 200]
        # both replies are visible and growing: the DM's placeholder edited, the thread's message streaming
        await slack_api.wait_for(
            lambda: bool(slack_api.called("chat.update") and slack_api.called("chat.appendStream")), 30
        )
        await asyncio.sleep(1.5)  # a few more pieces shown
        first.process.kill()
        await first.exited(10)
    [streaming] = [m for m in slack_api.shown("C1") if m.get("thread_ts") == thread]
    assert streaming.get("streaming") and streaming["text"] and shown(slack_api, 0) != [THINKING]
    async with worker(tmp_path, **env):
        await slack_api.wait_for(lambda: len(slack_api.replied()) == 2, timeout=30)
        await asyncio.sleep(1.0)  # room for a second message to show, if there were one
    assert shown(slack_api, 0) == ["Noted: question 0"], "the DM's one message, edited to the whole reply"
    in_thread = [m for m in slack_api.shown("C1") if m.get("thread_ts") == thread]
    assert [m["text"] for m in in_thread] == ["Noted: [U1] tell me slowly"], "the streamed message, finished"
    assert in_thread[0]["ts"] == streaming["ts"] and not in_thread[0].get("streaming")
    assert len(slack_api.called("chat.startStream")) == 1 and not [
        c for c in slack_api.called("chat.postMessage") if c.get("channel") == "C1"
    ], "nothing posted again"


async def test_sigterm_while_claude_takes_15s_exits_zero_in_time_and_the_next_process_finishes_all(
    tmp_path: Path, env: dict[str, str], cluster: PrivatePostgres, fake_claude: FakeAnthropic, slack_api: FakeSlackAPI
) -> None:
    fake_claude.latency = 15.0
    async with worker(tmp_path, **env) as first:
        assert await send(first, [dm(i, f"question {i}") for i in range(20)]) == [200] * 20
        await claude_has(fake_claude, 20)
        stopped = time.monotonic()
        first.process.send_signal(signal.SIGTERM)
        code = await first.exited(20)
        assert code == 0, first.output
        assert time.monotonic() - stopped < 3 + 4, "within the grace period (SHUTDOWN_TIMEOUT=3) and a little"
    fake_claude.latency = 0.05
    async with worker(tmp_path, **env) as second:
        await slack_api.wait_for(lambda: answered_once(slack_api, range(20)), timeout=30)
        await asyncio.sleep(1.0)
        assert answered_once(slack_api, range(20)), second.output
        await eventually(lambda: _equals(interactions(cluster, env["DATABASE_URL"]), 20))


async def test_the_same_event_at_two_replicas_at_once_and_again_after_a_restart_is_answered_once(
    tmp_path: Path,
    env: dict[str, str],
    fake_claude: FakeAnthropic,
    slack_api: FakeSlackAPI,
    chroma_server: str,
    cluster: PrivatePostgres,
) -> None:
    # A lease that no stall of a loaded machine outlasts: a lapsed lease is another way to ask Claude twice (the
    # process that held it finishes its entry), and not what this test is about.
    shared = env | {"CHROMA_URL": chroma_server, "TURN_LEASE_SECONDS": "15"}
    fake_claude.latency = 0.5
    body = dm(0, "question 0")
    async with worker(tmp_path / "a", **shared) as a, worker(tmp_path / "b", **shared) as b:
        async with aiohttp.ClientSession() as http:
            statuses = await asyncio.gather(deliver(http, a.port, body), deliver(http, b.port, body, retry=1))
        assert statuses == [200, 200]
        await slack_api.wait_for(lambda: answered_once(slack_api, range(1)))
        # The restart comes after the exchange is kept. A streamed reply can show its whole text a moment before
        # its answer is written down, and a process killed in that moment leaves a turn that the next one resumes
        # by asking Claude again (test_sigkill_... covers that case): not what this test is about.
        await eventually(lambda: _equals(interactions(cluster, env["DATABASE_URL"]), 1))
        b.process.kill()
        await b.exited(10)
    async with worker(tmp_path / "b", **shared) as b_again:
        assert await send(b_again, [body]) == [200]
        await asyncio.sleep(1.5)
    asked = [(r["system"][-1]["text"][-60:], r["messages"][-1]) for r in fake_claude.requests]
    said = f"Claude was asked: {asked}\nA:\n{a.output}\nB:\n{b.output}\nB again:\n{b_again.output}"
    assert answered_once(slack_api, range(1)), said
    assert len(fake_claude.requests) == 1, said


async def test_postgres_stopped_for_20s_under_traffic_every_exchange_is_answered_and_stored(
    tmp_path: Path, env: dict[str, str], cluster: PrivatePostgres, fake_claude: FakeAnthropic, slack_api: FakeSlackAPI
) -> None:
    fake_claude.latency = 0.2
    sent = 0
    async with worker(tmp_path, **env) as running:

        async def traffic(seconds: float) -> None:
            nonlocal sent
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                assert await send(running, [dm(sent, f"question {sent}")]) == [200], running.output
                sent += 1
                await asyncio.sleep(0.5)  # two messages a second

        await traffic(4)
        await cluster.stop()
        try:
            await traffic(20)
        finally:
            await cluster.start()
        await traffic(4)
        await slack_api.wait_for(lambda: answered_once(slack_api, range(sent)), timeout=60)
        await eventually(lambda: _equals(interactions(cluster, env["DATABASE_URL"]), sent), timeout=60)
        lines = [line for line in running.output.splitlines() if "database" in line and "WARNING" in line]
        assert 2 <= len(lines) <= 6, "a line when it went and one when it came back, not one per message"
        assert "Traceback" not in running.output
    assert sent >= 50


async def test_redis_killed_mid_answer_never_turns_an_answer_into_an_apology(
    tmp_path: Path, env: dict[str, str], redis_server: PrivateRedis, fake_claude: FakeAnthropic, slack_api: FakeSlackAPI
) -> None:
    fake_claude.latency = 1.0
    async with worker(tmp_path, **env) as running:
        assert await send(running, [dm(i, f"question {i}") for i in range(10)]) == [200] * 10
        await claude_has(fake_claude, 10)
        await redis_server.kill()
        await slack_api.wait_for(lambda: answered_once(slack_api, range(10)), timeout=30)
        assert await send(running, [dm(i, f"question {i}") for i in range(10, 15)]) == [200] * 5, "and it goes on"
        await slack_api.wait_for(lambda: answered_once(slack_api, range(15)), timeout=30)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{running.port}/ready") as response:
                ready = await response.json()
        assert response.status == 200 and ready["status"] == "degraded", ready
        assert any(part.startswith("short-term memory") for part in ready["degraded"]), ready
    assert not any(APOLOGY in text for i in range(15) for text in shown(slack_api, i))


async def test_a_hung_claude_gets_the_apology_within_its_deadline_and_the_next_message_comes_right_after(
    tmp_path: Path, env: dict[str, str], fake_claude: FakeAnthropic, slack_api: FakeSlackAPI
) -> None:
    fake_claude.script.append(Say("never in time", delay=70.0))
    fake_claude.script.append(Say("Noted: question 1"))
    async with worker(tmp_path, **env, CLAUDE_DEADLINE="3", CLAUDE_TIMEOUT="70") as running:
        started = time.monotonic()
        first, second = dm(0, "question 0"), dm(0, "question 1")
        assert await send(running, [first, second]) == [200, 200]
        await slack_api.wait_for(lambda: shown(slack_api, 0) == [APOLOGY, "Noted: question 1"], timeout=30)
        elapsed = time.monotonic() - started
    assert elapsed < 3 + 3, "the apology at the deadline, and the next message just after it"


async def test_the_askers_reaction_on_the_placeholder_while_claude_answers_counts_once_the_reply_is_there(
    tmp_path: Path, env: dict[str, str], cluster: PrivatePostgres, fake_claude: FakeAnthropic, slack_api: FakeSlackAPI
) -> None:
    fake_claude.latency = 2.0
    async with worker(tmp_path, **env) as running:
        assert await send(running, [dm(0, "question 0")]) == [200]
        await slack_api.wait_for(lambda: shown(slack_api, 0) == [THINKING])
        placeholder = str(slack_api.shown("D0")[0]["ts"])
        assert await send(running, [reaction(7, "D0", placeholder), reaction(0, "D0", placeholder)]) == [200, 200]
        await slack_api.wait_for(lambda: answered_once(slack_api, range(1)))

        async def counted() -> bool:
            rows = await cluster.query(env["DATABASE_URL"], "SELECT user_key, score FROM feedback")
            return [(r["user_key"], r["score"]) for r in rows] == [("slack:T1:U0", 1.0)]

        await eventually(counted, timeout=15)  # the asker's counts; the stranger's (U7) does not


async def test_a_full_spool_while_postgres_is_down_tells_slack_to_deliver_again(
    tmp_path: Path, env: dict[str, str], cluster: PrivatePostgres, fake_claude: FakeAnthropic, slack_api: FakeSlackAPI
) -> None:
    async with worker(tmp_path, **env, SPOOL_MAX_EVENTS="2") as running:
        await cluster.stop()
        bodies = [dm(i, f"question {i}") for i in range(3)]
        try:
            statuses = await send(running, bodies)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{running.port}/ready") as response:
                    ready_status = response.status
        finally:
            await cluster.start()
        assert statuses == [200, 200, 503], running.output
        assert ready_status == 503, "a full spool cannot take events: not ready"
        await slack_api.wait_for(lambda: answered_once(slack_api, range(2)), timeout=30)
        assert shown(slack_api, 2) == []
        assert await send(running, [bodies[2]]) == [200], "Slack's redelivery is taken"
        await slack_api.wait_for(lambda: answered_once(slack_api, range(3)), timeout=30)


def _true(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def wrapped() -> bool:
        return check()

    return wrapped


async def _equals(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]


async def _vectors_in(url: str, user_key: str) -> int:
    """How many of the person's vectors the Chroma server holds (a client of its own, as another replica's)."""
    server = ChromaVectors(await asyncio.to_thread(open_chroma, path="", url=url))
    return await server.count(user_key)


async def test_with_chroma_down_recall_is_the_word_search_and_vectors_are_written_when_it_returns(
    tmp_path: Path, fake_claude: FakeAnthropic, embedding_model: Any
) -> None:
    chroma = PrivateChroma(tmp_path / "chroma-server")
    await chroma.start()
    services = await build_services(make_settings(tmp_path, fake_claude, CHROMA_URL=chroma.url), model=embedding_model)
    services.start()
    chat = FakeChat(services)
    try:
        await chat.say("ada", "My locker code at the climbing gym is 4417.", channel="gym")
        await services.assistant.drain(10)
        assert await _vectors_in(chroma.url, "fake:ada") == 1
        await chroma.kill()
        await chat.say("ada", "Note that my sister Ottilie lives in Ghent.", channel="gym")
        await eventually(_true(lambda: services.health.is_down("storing")))  # its text is in, its vector is not
        # Asked elsewhere, so that only long-term memory can bring these back (not the conversation's own turns).
        posted = await chat.say("ada", "Where does my sister Ottilie live?", channel="family")
        assert posted.reply.ok and "sister Ottilie lives in Ghent" in fake_claude.prompt_text()
        assert services.health.is_down("vector index"), "its vector was not there to be found: words alone"
        await chat.say("ada", "What is my locker code at the gym?", channel="family")
        assert "locker code at the climbing gym is 4417" in fake_claude.prompt_text()
        await chroma.start()

        async def vectors_written() -> bool:
            try:
                return await _vectors_in(chroma.url, "fake:ada") == 4
            except Exception:  # noqa: BLE001 - the client reconnects on a later call
                return False

        await eventually(vectors_written, timeout=60)
        assert await services.long_term.count("fake:ada") == 4, "each memory once"
    finally:
        await shut(services)
        await chroma.kill()


async def test_sigkill_mid_learning_call_loses_nothing_and_the_next_process_learns_it(
    tmp_path: Path, env: dict[str, str], cluster: PrivatePostgres, fake_claude: FakeAnthropic, slack_api: FakeSlackAPI
) -> None:
    learning = env | {"LEARN_BATCH": "2", "LEARN_DEADLINE_SECONDS": "4"}  # a killed process's lease lapses in 8 s
    url = env["DATABASE_URL"]

    async def count(sql: str) -> int:
        [row] = await cluster.query(url, sql)
        return int(row[0])

    async def learned_once() -> bool:
        items = await count("SELECT COUNT(*) FROM person_item WHERE ended = ''")
        return items == 1 and await count("SELECT COUNT(*) FROM interaction WHERE learn = 1") == 2

    async def asked_to_learn() -> bool:
        return len(fake_claude.tool_requests) >= 1

    fake_claude.tool_script.append(Use({"changes": [{"action": "add", "text": "never kept", "sources": ["E1"]}]}, 30))
    async with worker(tmp_path, **learning) as first:
        assert await send(first, [dm(1, "my boat is called Petrel"), dm(1, "she is moored in Brest")]) == [200, 200]
        await eventually(asked_to_learn, timeout=30)
        first.process.kill()
        await first.exited(10)
    assert await count("SELECT COUNT(*) FROM person_item") == 0
    assert await count("SELECT COUNT(*) FROM interaction WHERE learn = 0") == 2, "still waiting: nothing lost"
    fake_claude.tool_default = lambda body: {
        "changes": [{"action": "add", "text": "has a boat called Petrel, moored in Brest", "sources": ["E1", "E2"]}]
    }
    async with worker(tmp_path, **learning):
        await eventually(learned_once, timeout=45)
    assert len(fake_claude.tool_requests) == 2, "learned from once more, by the next process, and only once"
