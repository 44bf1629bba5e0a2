"""Streaming and prompt caching: how soon a reply's first text is visible, how many edits a long reply costs on
each platform, what share of a long conversation's input Claude's cache would read, and what streaming costs
Rapport in CPU.

The real adapters (discord.py; slack-bolt's app in HTTP mode) against the local fakes, with a fake Claude in this
process that streams in pieces of 16 characters at a set pace and simulates the prompt cache as documented (a
prefix up to a breakpoint or up to 20 blocks before one, 5 minutes from its last use, at least 1,024 tokens).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from slack_sdk.signature import SignatureVerifier

from adapters.discord import DiscordAdapter, DiscordConfig
from adapters.discord.split import split_message
from adapters.slack import SlackAdapter, SlackConfig
from adapters.slack.outbox import answer_chunks
from bench.load import measure_load
from bench.platform import STREAMING
from bench.stack import real_stack
from bench.stats import summary_ms
from bot.config import Settings
from bot.http import AppState, make_app
from bot.wiring import Services, build_services
from tests.fakes.anthropic_api import FakeAnthropic, Say
from tests.fakes.chat import FakeChat
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.slack_api import FakeSlackAPI
from tests.slackside import SECRET, dm, event, now_ts

__all__ = ["measure_streaming", "measure_streaming_cpu"]

PIECE = 16  # characters per streamed piece (the fake's)


@asynccontextmanager
async def _stack(scratch: str, claude: FakeAnthropic, model: object) -> AsyncIterator[Services]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        ANTHROPIC_API_KEY="sk-bench",
        ANTHROPIC_BASE_URL=claude.url,
        CLAUDE_MAX_RETRIES=0,
        CLAUDE_MAX_TOKENS=4096,
        DATABASE_URL=f"sqlite://{scratch}/bench.sqlite3",
        CHROMA_PATH=f"{scratch}/chroma",
        CONSENT_NOTE="",  # each answer is compared whole with what was scripted
    )
    services = await build_services(settings, model=model)
    services.start()
    try:
        yield services
    finally:
        await services.turns.stop_taking()
        await services.turns.drain(30)
        await services.assistant.drain(30)
        await services.close()


def _text(length: int) -> str:
    sentence = "A streamed reply grows a few words at a time, as Claude writes it. "
    return (sentence * (length // len(sentence) + 1))[:length]


def _rates(edits: int, answers: int, seconds: float) -> dict[str, Any]:
    return {
        "edits_per_answer": round(edits / answers, 1),
        "edits_per_second": round(edits / seconds, 2) if seconds else None,
    }


async def _discord(services: Services, claude: FakeAnthropic, answers: int, text: str, pause: float) -> dict[str, Any]:
    """Each answer to a new person's DM: first visible = the reply's first POST after Claude's first piece."""
    fake = FakeDiscord()
    fake.add_guild()
    await fake.start()
    config = DiscordConfig(token="t", api_base=fake.api_base, guild_id=None)
    adapter = DiscordAdapter(services.assistant, services.turns, config)
    await adapter.start()
    first: list[float] = []
    seconds = 0.0
    try:
        await fake.until(lambda: adapter.connected, timeout=60)
        for i in range(answers):
            person = fake.user(fake.snowflake(), f"P{i}")
            channel = fake.dm_channel(person)
            pieces = len(claude.first_pieces)
            claude.script.append(Say(text, pause=pause))
            await fake.say(person, f"question {i}", channel_id=channel)
            await fake.until(_discord_began(fake, claude, channel, pieces), 60)
            began = claude.first_pieces[pieces]
            first.append(fake.posted(channel)[0].at - began)
            await fake.until(_discord_whole(fake, channel, text), 60)
            seconds += time.monotonic() - began
        edits, posts = len(fake.edits()), len(fake.posted())
    finally:
        await adapter.stop()
        await fake.stop()
    return {"first_visible_ms": summary_ms(first), "messages_per_answer": round(posts / answers, 1)} | _rates(
        edits, answers, seconds
    )


def _discord_began(fake: FakeDiscord, claude: FakeAnthropic, channel: str, pieces: int) -> Any:
    return lambda: bool(fake.posted(channel)) and len(claude.first_pieces) > pieces


def _discord_whole(fake: FakeDiscord, channel: str, text: str) -> Any:
    return lambda: fake.shown(channel) == split_message(text)


def _signed(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body)
    stamp = str(int(time.time()))
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=raw) or ""
    headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}
    return raw.encode(), headers


async def _slack(
    services: Services, claude: FakeAnthropic, answers: int, text: str, pause: float, *, thread: bool
) -> dict[str, Any]:
    """In a thread (a mention): first visible = chat.startStream; at the top of a DM: the placeholder's first
    chat.update."""
    api = FakeSlackAPI()
    await api.start()
    config = SlackConfig(bot_token="xoxb-b", signing_secret=SECRET, api_url=api.url)
    adapter = SlackAdapter(services.assistant, services.turns, config)
    await adapter.start()
    first: list[float] = []
    seconds = 0.0
    visible = "chat.startStream" if thread else "chat.update"
    edited = "chat.appendStream" if thread else "chat.update"
    state = AppState(services=services, adapters=[adapter], slack_events=adapter.handle_http)
    try:
        async with TestClient(TestServer(make_app(state))) as client:
            for i in range(answers):
                pieces, calls = len(claude.first_pieces), len(api.calls)
                claude.script.append(Say(text, pause=pause))
                if thread:
                    channel = f"C{i}"
                    body = event("app_mention", event_id=f"EvB{i}", text=f"<@UBOT> question {i}", ts=now_ts(),
                                 user=f"U{i}", channel=channel)  # fmt: skip
                else:
                    channel, body = f"D{i}", dm(i, f"question {i}")
                raw, headers = _signed(body)
                await client.post("/slack/events", data=raw, headers=headers)
                await api.wait_for(_slack_began(api, claude, visible, calls, pieces), 60)
                began = claude.first_pieces[pieces]
                first.append(next(c.at for c in api.calls[calls:] if c.method == visible) - began)
                await api.wait_for(_slack_whole(api, channel, text), 60)
                seconds += time.monotonic() - began
    finally:
        await adapter.stop()
        await api.stop()
    return {"first_visible_ms": summary_ms(first), "edited_with": edited} | _rates(
        len(api.called(edited)), answers, seconds
    )


def _slack_began(api: FakeSlackAPI, claude: FakeAnthropic, method: str, calls: int, pieces: int) -> Any:
    return lambda: len(claude.first_pieces) > pieces and any(c.method == method for c in api.calls[calls:])


def _slack_whole(api: FakeSlackAPI, channel: str, text: str) -> Any:
    """The reply is finished: its stream stopped, or the DM shows exactly its parts."""
    parts = answer_chunks(text)

    def whole() -> bool:
        stopped = any(c.method == "chat.stopStream" and c.args.get("channel") == channel for c in api.calls)
        return stopped or [m["text"] for m in api.shown(channel)] == parts

    return whole


async def _cache_share(services: Services, claude: FakeAnthropic, turns: int) -> dict[str, Any]:
    """A conversation of `turns` messages (~60 tokens each) and answers (~220 tokens each)."""
    chat = FakeChat(services)
    start = len(claude.usages)
    for i in range(turns):
        claude.script.append(Say(_text(900)))
        await chat.say("reader", f"Question {i}: " + _text(240))
    usages = claude.usages[start:]
    read = sum(u["cache_read_input_tokens"] for u in usages)
    written = sum(u["cache_creation_input_tokens"] for u in usages)
    total = read + written + sum(u["input_tokens"] for u in usages)
    return {
        "turns": turns,
        "cache_minimum_tokens": claude.cache.minimum,
        "input_tokens": total,
        "read_from_cache_share": round(read / total, 3) if total else None,
        "written_to_cache_share": round(written / total, 3) if total else None,
        "target_read_share": 0.6,
    }


async def measure_streaming(*, answers: int, turns: int, long_chars: int, long_seconds: float) -> dict[str, Any]:
    from storage.embeddings import default_model_path, load_model

    model = await asyncio.to_thread(load_model, default_model_path())
    claude = FakeAnthropic()
    await claude.start()
    short, pause = _text(400), 0.01
    long_text, long_pause = _text(long_chars), long_seconds / max(long_chars // PIECE, 1)
    try:
        with tempfile.TemporaryDirectory(prefix="rapport-streaming-") as scratch:
            async with _stack(scratch, claude, model) as services:
                first_visible = {
                    "discord": await _discord(services, claude, answers, short, pause),
                    "slack_thread": await _slack(services, claude, answers, short, pause, thread=True),
                    "slack_dm": await _slack(services, claude, answers, short, pause, thread=False),
                    "target_p95_ms": 50,
                }
                long_answer = {
                    "chars": long_chars,
                    "seconds": long_seconds,
                    "discord": await _discord(services, claude, 1, long_text, long_pause),
                    "slack_thread": await _slack(services, claude, 1, long_text, long_pause, thread=True),
                    "slack_dm": await _slack(services, claude, 1, long_text, long_pause, thread=False),
                }
        with tempfile.TemporaryDirectory(prefix="rapport-cache-") as scratch:
            async with _stack(scratch, claude, model) as services:
                cache = await _cache_share(services, claude, turns)
    finally:
        await claude.stop()
    return {"first_visible": first_visible, "long_answer": long_answer, "cache": cache}


async def measure_streaming_cpu(
    *, people: int, seconds: float, claude_latency: float, answer_chars: int, rounds: int
) -> dict[str, Any]:
    """CPU per answer with streaming off and on, alternating in one process on one stack (the same caches and
    tables), `rounds` times each; answers of about `answer_chars` characters (streamed in 16-character pieces)."""
    runs: list[dict[str, Any]] = []
    async with real_stack(latency=claude_latency, answer_chars=answer_chars) as services:
        for round_ in range(rounds):
            for on in (False, True):
                STREAMING.on = on
                try:
                    run = await measure_load(
                        services,
                        people=people,
                        seconds=seconds,
                        claude_latency=claude_latency,
                        tag=f"stream{int(on)}r{round_}",
                        warmup=min(5.0, seconds / 4),
                    )
                finally:
                    STREAMING.on = False
                runs.append({"streaming": on, "round": round_} | run)
    return {"people": people, "answer_chars": answer_chars, "claude_latency_s": claude_latency, "runs": runs}
