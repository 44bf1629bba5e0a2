"""Discord threads (a place's `threads`): a conversation started by a mention gets a thread of Rapport's own, where
it is answered without a mention, with the thread so far as its short-term context. The real discord.py against
the local fake Discord, the real core and storage; the decisions on plain values and recorded payloads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import discord
import pytest
import pytest_asyncio

from adapters.discord import DiscordAdapter
from adapters.discord.translate import (
    Verdict,
    decide,
    facts_of,
    in_new_thread,
    opens_thread,
    thread_name,
    to_event,
)
from bot.config import Settings
from bot.wiring import Services
from core.gate import facts_of as policy_facts
from tests.conftest import running, settings_on, settled
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.discord_api import FakeDiscord
from tests.test_discord_e2e import general
from tests.test_discord_translate import ALICE_ID, ASK_RAPPORT, BOT_ID, FACTS, Gateway, payload
from tests.test_operators import apply

# Adapter behaviour that does not depend on the store runs on the embedded set-up only (the suite's time is
# bounded); what a store could change (durability, audiences) runs on both.
EMBEDDED_ONLY = pytest.mark.parametrize("settings", ["embedded"], indirect=True)


QUESTION = "What should I pack for a weekend of hiking in the Alps?"


@pytest_asyncio.fixture(params=["embedded", "served"])
async def settings(
    request: pytest.FixtureRequest, tmp_path: Path, fake_claude: FakeAnthropic
) -> AsyncIterator[Settings]:
    """Both storage set-ups, with a policy file (empty: threads off) that a test rewrites."""
    path = tmp_path / "rapport.toml"
    path.write_text("")
    async with settings_on(request.param, tmp_path, fake_claude, RAPPORT_CONFIG=str(path)) as chosen:
        yield chosen


async def threads_on(services: Services, fake: FakeDiscord, more: str = "") -> None:
    await apply(services, f'[servers."discord:{fake.guilds[0]["id"]}"]\nthreads = true\n{more}')


async def ask(fake: FakeDiscord, who: dict[str, Any], text: str, *, channel_id: str) -> dict[str, Any]:
    """`who` mentions Rapport with `text`."""
    return await fake.say(who, f"<@{fake.bot['id']}> {text}", channel_id=channel_id, mentions=[fake.bot])


def started_threads(fake: FakeDiscord) -> list[Any]:
    return fake.rest("POST", r"/channels/[0-9]+/messages/[0-9]+/threads")


def history(claude: FakeAnthropic, index: int) -> list[tuple[str, str]]:
    """The conversation so far in a Claude request (role, text): every message before the one it answers."""
    return [
        (m["role"], m["content"] if isinstance(m["content"], str) else "".join(b["text"] for b in m["content"]))
        for m in claude.requests[index]["messages"][:-1]
    ]


# --- end to end -----------------------------------------------------------------------------------------------


@EMBEDDED_ONLY
async def test_a_mention_opens_a_thread_named_from_the_message_and_the_answer_is_in_it(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, services: Services
) -> None:
    await threads_on(services, discord_fake)
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    here = general(discord_fake)
    asked = await ask(discord_fake, alice, QUESTION, channel_id=here)
    thread = asked["id"]  # a thread started from a message has its id
    await discord_fake.until(lambda: discord_fake.shown(thread))
    await settled(services)

    (start,) = started_threads(discord_fake)
    assert start.path == f"/channels/{here}/messages/{asked['id']}/threads"
    assert start.body["name"] == QUESTION and start.body["auto_archive_duration"] == 10080
    assert discord_fake.threads[thread]["owner_id"] == discord_fake.bot["id"]
    assert discord_fake.shown(thread) == [f"Noted: [Alice] {QUESTION}"]
    assert not discord_fake.posted(here), "nothing is posted in the channel itself"
    (post,) = discord_fake.posted(thread)
    assert "message_reference" not in post.body  # in its own thread, the answer is no reply
    typing = discord_fake.rest("POST", rf"/channels/{thread}/typing")
    assert typing and discord_fake.calls.index(start) < discord_fake.calls.index(typing[0])


async def test_a_follow_up_in_rapports_thread_without_a_mention_is_answered_with_the_thread_so_far(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    here = general(discord_fake)
    # An allow list naming the channel admits its threads too (the thread's parents are matched).
    await threads_on(services, discord_fake, f'[access.allow]\nchannels = ["discord:{here}"]\n')
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    bob = discord_fake.user(discord_fake.snowflake(), "Bob")
    thread = (await ask(discord_fake, alice, QUESTION, channel_id=here))["id"]
    await discord_fake.until(lambda: discord_fake.shown(thread))
    await settled(services)
    first_answer = discord_fake.shown(thread)[0]

    # A stranger's thread in the same channel: Rapport is not its owner, so it takes no part unmentioned.
    chat = await discord_fake.say(bob, "weekend plans, anyone?", channel_id=here)
    theirs = (await discord_fake.open_thread(bob, chat, "weekend plans"))["id"]
    await discord_fake.say(alice, "Is the trail above the lake open in June?", channel_id=theirs)
    await discord_fake.say(alice, "And will it rain up there?", channel_id=thread)
    await discord_fake.until(lambda: len(discord_fake.shown(thread)) == 2)
    await settled(services)

    assert len(fake_claude.requests) == 2, "the follow-up in Rapport's thread only"
    assert "trail above the lake" not in json.dumps(fake_claude.requests)
    assert not discord_fake.posted(theirs) and not discord_fake.posted(here)
    assert discord_fake.shown(thread)[1] == "Noted: [Alice] And will it rain up there?"
    assert history(fake_claude, 1) == [("user", f"[Alice] {QUESTION}"), ("assistant", first_answer)]
    assert len(started_threads(discord_fake)) == 1, "the follow-up opens no thread of its own"

    # Mentioned in the stranger's thread, Rapport answers there (a thread opens no thread) as a reply.
    asked = await ask(discord_fake, alice, "Is the trail above the lake open in June?", channel_id=theirs)
    await discord_fake.until(lambda: discord_fake.posted(theirs))
    (post,) = discord_fake.posted(theirs)
    assert post.body["message_reference"]["message_id"] == int(asked["id"])
    assert len(started_threads(discord_fake)) == 1


@EMBEDDED_ONLY
async def test_with_threads_off_a_mention_is_answered_in_the_channel_and_a_thread_needs_a_mention(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    bob = discord_fake.user(discord_fake.snowflake(), "Bob")
    here = general(discord_fake)
    asked = await ask(discord_fake, alice, QUESTION, channel_id=here)
    await discord_fake.until(lambda: discord_fake.posted(here))
    (post,) = discord_fake.posted(here)
    assert post.body["message_reference"]["message_id"] == int(asked["id"])

    thread = (await discord_fake.open_thread(bob, asked, "packing"))["id"]  # people talk it over in a thread
    await discord_fake.say(alice, "I'd take a rain jacket too", channel_id=thread)
    await discord_fake.say(alice, "thanks!", channel_id=discord_fake.dm_channel(alice))  # after it, in her turn
    await discord_fake.until(lambda: discord_fake.posted(discord_fake.dm_channel(alice)))
    await settled(services)

    assert len(fake_claude.requests) == 2 and "rain jacket" not in json.dumps(fake_claude.requests)
    assert not started_threads(discord_fake) and not discord_fake.posted(thread)


@EMBEDDED_ONLY
async def test_a_channel_that_turns_threads_off_in_a_server_that_turns_them_on_is_answered_in_the_channel(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, services: Services
) -> None:
    here = general(discord_fake)
    await threads_on(services, discord_fake, f'[channels."discord:{here}"]\nthreads = false\n')
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    await ask(discord_fake, alice, QUESTION, channel_id=here)
    await discord_fake.until(lambda: discord_fake.posted(here))
    assert not started_threads(discord_fake)


async def test_a_thread_an_earlier_attempt_opened_gets_the_answer_exactly_once(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    await threads_on(services, discord_fake)
    discord_fake.refuse_posts = 2  # the thread opens, then the streamed start and the delivery are refused
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    here = general(discord_fake)
    thread = (await ask(discord_fake, alice, QUESTION, channel_id=here))["id"]
    await discord_fake.until(lambda: discord_fake.shown(thread), timeout=20)
    await settled(services)

    starts = started_threads(discord_fake)
    assert len(starts) >= 2, "the turn taken again asked for the thread again, and Discord said it was there"
    assert list(discord_fake.threads) == [thread]
    assert discord_fake.shown(thread) == [f"Noted: [Alice] {QUESTION}"]
    assert len(discord_fake.created) == 1 and not discord_fake.posted(here)
    assert len(fake_claude.requests) == 1


@EMBEDDED_ONLY
async def test_without_permission_to_open_a_thread_the_answer_is_a_reply_in_the_channel(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    await threads_on(services, discord_fake)
    discord_fake.refuse_threads = 1
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    here = general(discord_fake)
    asked = await ask(discord_fake, alice, QUESTION, channel_id=here)
    await discord_fake.until(lambda: discord_fake.shown(here))
    await settled(services)

    assert discord_fake.shown(here) == [f"Noted: [Alice] {QUESTION}"]
    (post,) = discord_fake.posted(here)
    assert post.body["message_reference"]["message_id"] == int(asked["id"])
    assert not discord_fake.threads and "could not open a thread" in caplog.text
    # the exchange is the channel's conversation, not that of the thread that never was
    assert [t.text for t in await services.short_term.recent(f"discord::{here}", 10)][:1] == [QUESTION]
    assert await services.short_term.recent(f"discord::{asked['id']}", 10) == []


@EMBEDDED_ONLY
async def test_a_thread_rapport_may_open_but_not_write_in_gets_the_answer_in_the_channel(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    await threads_on(services, discord_fake)
    discord_fake.mute_threads = True
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    here = general(discord_fake)
    asked = await ask(discord_fake, alice, QUESTION, channel_id=here)
    await discord_fake.until(lambda: discord_fake.shown(here))
    await settled(services)

    assert list(discord_fake.threads) == [asked["id"]] and discord_fake.shown(asked["id"]) == []
    assert discord_fake.shown(here) == [f"Noted: [Alice] {QUESTION}"]
    assert "could not post in the thread" in caplog.text


@EMBEDDED_ONLY
async def test_a_refused_mention_opens_no_thread(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    here = general(discord_fake)
    await threads_on(services, discord_fake, f'[access.block]\nchannels = ["discord:{here}"]\n')
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    await ask(discord_fake, alice, QUESTION, channel_id=here)
    await discord_fake.until(lambda: discord_fake.posted(discord_fake.dm_channel(alice)))  # the private note
    await settled(services)
    assert not started_threads(discord_fake) and not fake_claude.requests


async def test_after_a_restart_rapport_still_follows_its_thread(
    services: Services, discord_fake: FakeDiscord, fake_claude: FakeAnthropic
) -> None:
    await threads_on(services, discord_fake)
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    async with running(services, discord_fake) as adapter:
        await discord_fake.until(lambda: adapter.connected)
        thread = (await ask(discord_fake, alice, QUESTION, channel_id=general(discord_fake)))["id"]
        await discord_fake.until(lambda: discord_fake.shown(thread))
        await settled(services)

    async with running(services, discord_fake) as adapter:  # a new session: the thread is in GUILD_CREATE's list
        await discord_fake.until(lambda: adapter.connected)
        await discord_fake.say(alice, "And will it rain up there?", channel_id=thread)
        await discord_fake.until(lambda: len(discord_fake.shown(thread)) == 2)
        await settled(services)
    assert len(discord_fake.identifies) == 2
    assert history(fake_claude, 1)[0] == ("user", f"[Alice] {QUESTION}")


# --- the decisions, on plain values and recorded payloads -------------------------------------------------------


def test_a_message_in_rapports_own_thread_is_answered_without_a_mention_but_never_a_bots_or_a_notice() -> None:
    own = replace(FACTS, channel_id=11, parent_channel_id=10, in_own_thread=True)
    assert decide(replace(own, in_own_thread=False), bot_id=99) is Verdict.IGNORE
    assert decide(own, bot_id=99) is Verdict.ANSWER
    assert decide(replace(own, author_is_bot=True), bot_id=99) is Verdict.IGNORE
    assert decide(replace(own, author_id=99), bot_id=99) is Verdict.IGNORE
    assert decide(replace(own, ordinary=False), bot_id=99) is Verdict.IGNORE  # "thread created", pins …
    assert decide(replace(own, has_text=False, has_attachments=True), bot_id=99) is Verdict.ANSWER  # files are read
    assert decide(replace(own, has_text=False, has_stickers=True), bot_id=99) is Verdict.TEXT_ONLY


def test_only_a_mention_in_a_text_channel_opens_a_thread_and_only_where_threads_are_on() -> None:
    mention = replace(FACTS, mentions_bot=True, threadable=True)
    assert opens_thread(mention, Verdict.ANSWER, threads=True)
    assert not opens_thread(mention, Verdict.ANSWER, threads=False)
    assert not opens_thread(replace(mention, replies_to_bot=True), Verdict.ANSWER, threads=True)  # goes on there
    assert not opens_thread(replace(mention, mentions_bot=False), Verdict.ANSWER, threads=True)  # an opened channel
    assert not opens_thread(replace(mention, threadable=False), Verdict.ANSWER, threads=True)  # a thread, a DM
    assert not opens_thread(mention, Verdict.TEXT_ONLY, threads=True)
    assert not opens_thread(mention, Verdict.IGNORE, threads=True)


THREAD_OF_RAPPORT = {
    "id": "1160000000000000030",
    "type": 11,
    "guild_id": "1160000000000000001",
    "parent_id": str(ASK_RAPPORT),
    "owner_id": str(BOT_ID),
    "name": "packing for the Alps",
    "last_message_id": None,
    "message_count": 1,
    "member_count": 2,
    "rate_limit_per_user": 0,
    "flags": 0,
    "total_message_sent": 1,
    "thread_metadata": {
        "archived": False,
        "auto_archive_duration": 10080,
        "archive_timestamp": "2024-03-05T14:00:00.000000+00:00",
        "locked": False,
        "create_timestamp": "2024-03-05T14:00:00.000000+00:00",
    },
    "newly_created": True,
}


def test_recorded_messages_in_a_thread_are_answered_unmentioned_only_in_rapports_own(gateway: Gateway) -> None:
    stranger = gateway.message("message_create_thread")  # in Alice's thread, without a mention
    facts = facts_of(stranger, bot_id=BOT_ID, bot_name="Rapport")
    assert not facts.in_own_thread and not facts.threadable
    assert decide(facts, bot_id=BOT_ID) is Verdict.IGNORE

    gateway.state.parsers["THREAD_CREATE"](THREAD_OF_RAPPORT)
    frame = payload("message_create_thread")["d"] | {"channel_id": THREAD_OF_RAPPORT["id"]}
    gateway.events.clear()
    gateway.state.parsers["MESSAGE_CREATE"](frame)
    ((message,),) = [args for name, args in gateway.events if name == "message"]
    assert isinstance(message.channel, discord.Thread)
    facts = facts_of(message, bot_id=BOT_ID, bot_name="Rapport")
    assert facts.in_own_thread and decide(facts, bot_id=BOT_ID) is Verdict.ANSWER


def test_a_mention_in_a_channel_becomes_the_conversation_of_the_thread_its_message_starts(gateway: Gateway) -> None:
    message = gateway.message("message_create_mention")
    facts = facts_of(message, bot_id=BOT_ID, bot_name="Rapport")
    assert facts.threadable and facts.mentions_bot and not facts.in_own_thread
    event = to_event(message, bot_id=BOT_ID, bot_name="Rapport")
    threaded = in_new_thread(event)
    assert threaded.conversation_id == str(message.id) != event.conversation_id
    assert threaded.parents == (str(message.channel.id), *event.parents)
    assert threaded.audience == event.audience  # a public thread is read by whoever reads its channel
    assert threaded.message == event.message and threaded.user.user_id == str(ALICE_ID)
    # The policy sees the thread, then its channel: a channel's allow or block list applies in its threads too.
    assert policy_facts(threaded).channels[:2] == (f"discord:{message.id}", f"discord:{message.channel.id}")


def test_a_thread_is_named_by_the_first_words_within_discords_limit() -> None:
    assert thread_name("  What should I\npack?  ", "Alice") == "What should I pack?"
    long = thread_name("word " * 40, "Alice")
    assert len(long) <= 100 and long.endswith("word…")
    assert len(thread_name("x" * 300, "Alice")) == 100
    assert thread_name("", "Alice") == "Conversation with Alice"


@pytest.fixture
def gateway() -> Gateway:
    return Gateway()
