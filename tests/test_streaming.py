"""Answers shown as Claude writes them, with the real discord.py and slack-bolt/slack_sdk against the fakes, and the
prompt ordered so that Claude's cache can keep what a conversation repeats."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from adapters.discord import DiscordAdapter
from adapters.discord.split import split_message
from adapters.slack import SlackAdapter, SlackConfig
from adapters.slack.delivery import THINKING
from adapters.slack.outbox import answer_chunks
from bot.http import AppState, make_app
from bot.wiring import Services
from core.assistant import AssistantSettings
from storage.models import Interaction
from tests.conftest import settled
from tests.fakes.anthropic_api import FakeAnthropic, Say
from tests.fakes.chat import FakeChat
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.slack_api import FakeSlackAPI
from tests.test_slack_http import SECRET, payload, send_event

FENCE = "```"
CUT_OFF = AssistantSettings().cut_off


def long_answer() -> str:
    """About 6,000 characters: prose, then a code block across Discord's 2,000-character limit, then prose."""
    prose = [f"Paragraph {i}: " + "the quick brown fox jumps over the lazy dog. " * 9 for i in range(6)]
    code = FENCE + "python\n" + "\n".join(f"value_{i} = {i} * 2  # a line of code" for i in range(60)) + "\n" + FENCE
    return "\n\n".join([*prose[:3], code, *prose[3:], "The end."])


async def _reply_stored(services: Services) -> str:
    await settled(services)
    [row] = await Interaction.all()
    return row.reply_text


async def test_discord_streams_a_long_answer_into_messages_with_an_edit_a_second_at_most(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    text = long_answer()
    fake_claude.script.append(Say(text, pause=0.008))  # ~380 pieces over ~3 s
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    discord_fake.limit_edits = 1  # one 429 on the way: discord.py waits retry_after and goes on
    await discord_fake.say(alice, "tell me a long story", channel_id=dm)
    await discord_fake.until(lambda: bool(discord_fake.created))
    first_seen = time.monotonic()
    await discord_fake.until(lambda: discord_fake.shown(dm) == split_message(text), timeout=30)
    done = time.monotonic()
    assert first_seen - fake_claude.first_pieces[0] < 0.5, "the first text appears as soon as Claude starts"
    shown = discord_fake.shown(dm)
    assert len(shown) >= 3 and all(len(part) <= 2000 and part.count(FENCE) % 2 == 0 for part in shown)
    edits = len(discord_fake.edits(dm))
    assert edits <= (done - first_seen + 1) * len(shown) + len(shown), "about an edit a second per message"
    assert len(discord_fake.posted(dm)) == len(shown), "each part posted once, then edited"
    assert await _reply_stored(services) == text, "the stored reply is the text the person saw"


async def test_discord_a_claude_failure_mid_answer_leaves_an_honest_complete_message(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    text = "Here is the first part of a longer answer that will not arrive whole, sadly. " * 3
    fake_claude.script.append(Say(text, pause=0.05, break_after=6))
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    await discord_fake.say(alice, "go on", channel_id=dm)
    arrived = text[: 6 * 16]
    expected = f"{arrived.rstrip()}\n\n{CUT_OFF}"
    await discord_fake.until(lambda: discord_fake.shown(dm) == [expected], timeout=15)
    assert await _reply_stored(services) == expected


@pytest_asyncio.fixture
async def slack(services: Services) -> AsyncIterator[tuple[TestClient, FakeSlackAPI]]:
    api = FakeSlackAPI()
    await api.start()
    adapter = SlackAdapter(
        services.assistant, services.turns, SlackConfig(bot_token="xoxb-t", signing_secret=SECRET, api_url=api.url)
    )
    await adapter.start()
    state = AppState(services=services, adapters=[adapter], slack_events=adapter.handle_http)
    async with TestClient(TestServer(make_app(state))) as client:
        yield client, api
    await settled(services)
    await adapter.stop()
    await api.stop()


async def test_slack_streams_into_a_thread_with_its_streaming_methods(
    slack: tuple[TestClient, FakeSlackAPI], fake_claude: FakeAnthropic, services: Services
) -> None:
    client, api = slack
    text = long_answer()[:3_000]
    fake_claude.script.append(Say(text, pause=0.01))
    await send_event(client, payload("app_mention"))
    await api.wait_for(lambda: any(m["text"] == text and not m.get("streaming") for m in api.shown("C1")), 30)
    assert api.first_calls("chat.startStream") - fake_claude.first_pieces[0] < 0.5
    [started] = api.called("chat.startStream")
    assert started["thread_ts"] == "1712345678.000100" and started["recipient_user_id"] == "U123"
    [stopped] = api.called("chat.stopStream")
    assert stopped["metadata"]["event_type"] == "rapport_reply", "named, so a resumed turn finds it"
    assert len(api.called("chat.appendStream")) <= 6, "an append a second at most (~3 s of text)"
    assert not [m for m in api.shown("C1") if m["text"] == THINKING], "no placeholder in a thread"
    assert await _reply_stored(services) == text


async def test_slack_edits_the_placeholder_of_a_dm_as_the_answer_grows_and_never_to_nothing(
    slack: tuple[TestClient, FakeSlackAPI], fake_claude: FakeAnthropic, services: Services
) -> None:
    client, api = slack
    text = long_answer()[:2_500]
    fake_claude.script.append(Say(text, pause=0.01))
    await send_event(client, payload("message_im"))
    final = answer_chunks(text)
    await api.wait_for(lambda: [m["text"] for m in api.shown("D1")] == final, 30)
    updates = api.called("chat.update")
    assert 2 <= len(updates) <= 6 and all(u["text"].strip() for u in updates)
    [placeholder] = [c for c in api.called("chat.postMessage") if c["text"] == THINKING]
    assert all(u["ts"] == api.results("chat.postMessage")[0]["ts"] for u in updates)
    assert placeholder["channel"] == "D1"
    assert await _reply_stored(services) == text


async def test_the_cached_prefix_holds_from_turn_to_turn_and_across_a_history_window_drop(
    services: Services, fake_claude: FakeAnthropic
) -> None:
    fake_claude.cache.minimum = 0  # every breakpoint counts here, however short (Claude's own minimum is 1,024)
    chat = FakeChat(services)
    for i in range(16):  # 32 turns: the 20-turn window moves on twice
        await chat.say("ana", f"message number {i}, with a few more words to it")
    requests = fake_claude.requests
    settled_in = 3  # the first turns teach the profile (a block of the stable part); then it stays as it is
    for before, after, usage in zip(
        requests[settled_in:], requests[settled_in + 1 :], fake_claude.usages[settled_in + 1 :], strict=False
    ):
        assert after["system"] == before["system"], "the stable part does not change from turn to turn"
        assert usage["cache_read_input_tokens"] > 0
    grew = [u["cache_read_input_tokens"] for u in fake_claude.usages]
    assert max(grew) > grew[1], "the conversation so far is read from the cache, not only the system part"
    drops = [i for i in range(settled_in + 1, len(grew)) if grew[i] < grew[i - 1]]
    assert drops, "the window dropped old turns (in a block)"
    for i in drops:
        assert grew[i] > 0, "across a drop, the system part is still read from the cache"


def test_what_a_slack_stream_shows_is_always_a_beginning_of_its_finished_message() -> None:
    """However far a long reply has arrived, the streamed part is a beginning of what the finished message holds
    (else the finished reply cannot be appended, and the message is rewritten as a plain one)."""
    from adapters.slack.delivery import _growing, _streamable

    text = "\n\n".join(f"## Part {i}\n\n" + f"This is **sentence** {i}. " * 60 for i in range(14)) + "\n\nThe end."
    final = _streamable(text)
    assert len(final) < len(text)  # the reply is longer than one streamed message
    for end in range(0, len(text) + 1, 37):
        assert final.startswith(_growing(text[:end])), end
