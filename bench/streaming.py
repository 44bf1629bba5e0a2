"""Streaming and prompt caching: how soon a reply's first text is visible, how many edits a long reply costs on
each platform, and what share of a long conversation's input Claude's cache would read.

The real adapters (discord.py, slack-bolt's app in HTTP mode) against the local fakes, with a fake Claude in this
process that streams in pieces at a set pace and simulates the prompt cache as documented (a prefix up to a
breakpoint, 5-minute expiry, at least 1,024 tokens).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from adapters.discord import DiscordAdapter, DiscordConfig
from adapters.slack import SlackAdapter, SlackConfig
from bench.stats import summary_ms
from bot.config import Settings
from bot.http import AppState, make_app
from bot.wiring import Services, build_services
from tests.fakes.anthropic_api import FakeAnthropic, Say
from tests.fakes.chat import FakeChat
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.slack_api import FakeSlackAPI
from tests.slackside import SECRET, dm, event, now_ts

__all__ = ["measure_streaming"]


@asynccontextmanager
async def _stack(scratch: str, claude: FakeAnthropic, model: object) -> Any:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        ANTHROPIC_API_KEY="sk-bench",
        ANTHROPIC_BASE_URL=claude.url,
        CLAUDE_MAX_RETRIES=0,
        DATABASE_URL=f"sqlite://{scratch}/bench.sqlite3",
        CHROMA_PATH=f"{scratch}/chroma",
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


async def _discord(services: Services, claude: FakeAnthropic, answers: int, text: str, pause: float) -> dict[str, Any]:
    fake = FakeDiscord()
    fake.add_guild()
    await fake.start()
    adapter = DiscordAdapter(
        services.assistant, services.turns, DiscordConfig(token="t", api_base=fake.api_base, guild_id=None)
    )
    await adapter.start()
    first: list[float] = []
    took: list[float] = []
    try:
        await fake.until(lambda: adapter.connected, timeout=60)
        for i in range(answers):
            person = fake.user(fake.snowflake(), f"P{i}")
            channel = fake.dm_channel(person)
            pieces = len(claude.first_pieces)
            claude.script.append(Say(text, pause=pause))
            await fake.say(person, f"question {i}", channel_id=channel)
            await fake.until(lambda: len(fake.posted(channel)) >= 1 and len(claude.first_pieces) > pieces, 60)
            [post, *_] = fake.posted(channel)
            first.append(post.at - claude.first_pieces[pieces])
            started = time.monotonic()
            await fake.until(lambda: "".join(fake.shown(channel)).replace("\n", "") != "" and _whole(fake, channel, text), 60)
            took.append(time.monotonic() - started)
        edits = len(fake.edits())
        posts = len(fake.posted())
    finally:
        await adapter.stop()
        await fake.stop()
    seconds = sum(took) + sum(first)
    return {
        "first_visible_ms": summary_ms(first),
        "edits_per_answer": round(edits / answers, 1),
        "messages_per_answer": round(posts / answers, 1),
        "edits_per_second": round(edits / seconds, 2) if seconds else None,
    }


def _whole(fake: FakeDiscord, channel: str, text: str) -> bool:
    from adapters.discord.split import split_message

    return fake.shown(channel) == split_message(text)


async def _slack(
    services: Services, claude: FakeAnthropic, answers: int, text: str, pause: float, *, thread: bool
) -> dict[str, Any]:
    api = FakeSlackAPI()
    await api.start()
    adapter = SlackAdapter(
        services.assistant, services.turns, SlackConfig(bot_token="xoxb-b", signing_secret=SECRET, api_url=api.url)
    )
    await adapter.start()
    first: list[float] = []
    took: list[float] = []
    state = AppState(services=services, adapters=[adapter], slack_events=adapter.handle_http)
    try:
        async with TestClient(TestServer(make_app(state))) as client:
            for i in range(answers):
                pieces, calls = len(claude.first_pieces), len(api.calls)
                claude.script.append(Say(text, pause=pause))
                if thread:
                    body = event("app_mention", event_id=f"EvB{i}", text=f"<@UBOT> question {i}", ts=now_ts(),
                                 user=f"U{i}", channel=f"C{i}")  # fmt: skip
                    channel = f"C{i}"
                    visible = ("chat.startStream",)
                else:
                    body = dm(i, f"question {i}")
                    channel = f"D{i}"
                    visible = ("chat.update",)
                raw = json.dumps(body)
                stamp = str(int(time.time()))
                from slack_sdk.signature import SignatureVerifier

                headers = {
                    "Content-Type": "application/json",
                    "X-Slack-Request-Timestamp": stamp,
                    "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=raw) or "",
                }
                await client.post("/slack/events", data=raw.encode(), headers=headers)
                await api.wait_for(lambda: any(c.method in visible for c in api.calls[calls:]), 60)
                shown_at = next(c.at for c in api.calls[calls:] if c.method in visible)
                first.append(shown_at - claude.first_pieces[pieces])
                started = time.monotonic()
                await api.wait_for(lambda: _slack_done(api, channel, thread), 60)
                took.append(time.monotonic() - started)
    finally:
        await adapter.stop()
        await api.stop()
    method = "chat.appendStream" if thread else "chat.update"
    edits = len(api.called(method))
    seconds = sum(took) + sum(first)
    return {
        "first_visible_ms": summary_ms(first),
        "edits_per_answer": round(edits / answers, 1),
        "edits_per_second": round(edits / seconds, 2) if seconds else None,
        "edited_with": method,
    }


def _slack_done(api: FakeSlackAPI, channel: str, thread: bool) -> bool:
    if thread:
        return any(c.method == "chat.stopStream" and c.args.get("channel") == channel for c in api.calls)
    shown = api.shown(channel)
    return bool(shown) and all(m["text"] != "_Thinking…_" for m in shown) and _settled_update(api, channel)


def _settled_update(api: FakeSlackAPI, channel: str) -> bool:
    return any(c.method == "chat.update" and c.args.get("channel") == channel for c in api.calls[-3:])


async def _cache_share(services: Services, claude: FakeAnthropic, turns: int) -> dict[str, Any]:
    """A conversation of `turns` messages, of lengths people write and answers of lengths Claude gives."""
    chat = FakeChat(services)
    start = len(claude.usages)
    for i in range(turns):
        claude.script.append(Say(_text(900)))  # an answer of ~220 tokens
        await chat.say("reader", f"Question {i}: " + _text(240))
    usages = claude.usages[start:]
    read = sum(u["cache_read_input_tokens"] for u in usages)
    written = sum(u["cache_creation_input_tokens"] for u in usages)
    plain = sum(u["input_tokens"] for u in usages)
    return {
        "turns": turns,
        "input_tokens": read + written + plain,
        "read_from_cache_share": round(read / (read + written + plain), 3) if usages else None,
        "written_to_cache_share": round(written / (read + written + plain), 3) if usages else None,
    }


async def measure_streaming(*, answers: int, turns: int, long_chars: int, long_seconds: float) -> dict[str, Any]:
    from storage.embeddings import default_model_path, load_model

    model = await asyncio.to_thread(load_model, default_model_path())
    claude = FakeAnthropic()
    await claude.start()
    try:
        with tempfile.TemporaryDirectory(prefix="rapport-streaming-") as scratch:
            async with _stack(scratch, claude, model) as services:
                short, pause = _text(400), 0.01
                long_pause = long_seconds / max(long_chars // 16, 1)
                results = {
                    "first_visible": {
                        "discord": await _discord(services, claude, answers, short, pause),
                        "slack_thread": await _slack(services, claude, answers, short, pause, thread=True),
                        "slack_dm": await _slack(services, claude, answers, short, pause, thread=False),
                    },
                    "long_answer": {
                        "chars": long_chars,
                        "seconds": long_seconds,
                        "discord": await _discord(services, claude, 1, _text(long_chars), long_pause),
                        "slack_thread": await _slack(services, claude, 1, _text(long_chars), long_pause, thread=True),
                        "slack_dm": await _slack(services, claude, 1, _text(long_chars), long_pause, thread=False),
                    },
                }
            with tempfile.TemporaryDirectory(prefix="rapport-cache-", dir=Path(scratch).parent) as second:
                async with _stack(second, claude, model) as services:
                    results["cache"] = await _cache_share(services, claude, turns)
    finally:
        await claude.stop()
    return results
