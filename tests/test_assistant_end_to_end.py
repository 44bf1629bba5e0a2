"""The core end to end: real storage on each backend, the real embedding model, the real SDK against a fake Claude."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.wiring import Services, build_services
from core.assistant import AssistantSettings
from core.entries import Answer, Incoming
from core.events import MessageReceived, UserRef
from tests.conftest import eventually, make_settings, ready, shut
from tests.fakes.anthropic_api import Fail, FakeAnthropic, Say
from tests.fakes.chat import FakeChat


@pytest.fixture
def chat(services: Services) -> FakeChat:
    return FakeChat(services)


async def test_fact_from_one_turn_reaches_claude_in_a_later_one(chat: FakeChat, fake_claude: FakeAnthropic) -> None:
    await chat.say("alice", "My sister's name is Marguerite and she lives in Lisbon.")
    await chat.say("alice", "What should I get my sister for her birthday?")
    later = fake_claude.requests[-1]
    roles = [m["role"] for m in later["messages"]]
    assert roles == ["user", "assistant", "user"], "recent turns go to Claude as real alternating messages"
    assert "Marguerite" in later["messages"][0]["content"]


async def test_fact_is_recalled_from_long_term_memory_in_a_new_conversation(
    chat: FakeChat, services: Services, fake_claude: FakeAnthropic
) -> None:
    await chat.say("alice", "I am allergic to peanuts, please remember that.")
    await services.assistant.drain(10)
    await chat.say("alice", "Any snack ideas for a peanut-free picnic?", channel="general")
    # The first message was a DM, so it must NOT be recalled in a shared channel ...
    assert "allergic" not in fake_claude.prompt_text()
    await chat.say("alice", "I also love hiking in the Alps.", channel="general")
    await services.assistant.drain(10)
    await chat.say("alice", "Which snacks would be good for a picnic?")
    # ... but in a new DM both her DM and her public words are hers to hear back.
    prompt = fake_claude.prompt_text()
    assert "allergic to peanuts" in prompt


async def test_what_a_told_rapport_is_never_recalled_for_b(
    chat: FakeChat, services: Services, fake_claude: FakeAnthropic
) -> None:
    await chat.say("alice", "My bank PIN hint is the colour turquoise-walrus.")
    await chat.say("alice", "The walrus is my favourite animal, turquoise walrus forever.", channel="general")
    await services.assistant.drain(10)
    await chat.say("bob", "What is the turquoise walrus thing about?")
    await chat.say("bob", "Tell me about the turquoise walrus", channel="random")
    for index in (-2, -1):
        assert "walrus is my" not in fake_claude.prompt_text(index)
        assert "PIN" not in fake_claude.prompt_text(index)
    assert await services.long_term.count("fake:alice") == 2


async def test_dm_fact_never_reaches_a_shared_channel_reply(
    chat: FakeChat, services: Services, fake_claude: FakeAnthropic
) -> None:
    await chat.say("carol", "Secret: I am interviewing at another company on Friday. Interview prep tips?")
    await services.assistant.drain(10)
    await chat.say("carol", "Any tips for an interview on Friday?", channel="team")
    prompt = fake_claude.prompt_text()
    assert "another company" not in prompt
    assert "Secret" not in prompt
    # The profile learned "work" from the DM; the shared prompt must not show DM-only interests either.
    assert "Interests: work" not in prompt


async def test_shared_channel_turns_of_others_are_fair_context(chat: FakeChat, fake_claude: FakeAnthropic) -> None:
    await chat.say("dave", "The release is planned for Thursday.", channel="eng")
    await chat.say("erin", "When is the release again?", channel="eng")
    prompt = fake_claude.prompt_text()
    assert "[Dave] The release is planned for Thursday." in prompt
    assert "[Erin] When is the release again?" in prompt


async def test_feedback_is_set_by_the_asker_and_undone_on_removal(chat: FakeChat, services: Services) -> None:
    posted = await chat.say("frank", "Recommend me a jazz album please")
    assert await chat.react("frank", posted, "👍")
    assert not await chat.react("grace", posted, "👎"), "someone else's reaction changes nothing"
    assert not await chat.react("frank", posted, "🦄"), "an emoji with no meaning changes nothing"
    insights = await services.assistant.insights("fake:frank")
    assert insights is not None and insights["average_satisfaction"] == 1.0
    assert await chat.unreact("frank", posted, "👍")
    insights = await services.assistant.insights("fake:frank")
    assert insights is not None and insights["average_satisfaction"] is None


async def test_insights_reflect_what_was_learned(chat: FakeChat, services: Services) -> None:
    await chat.say("heidi", "Can you help me debug this python function?")
    await chat.say("heidi", "I want to learn guitar and play some jazz songs.")
    second = await chat.say("heidi", "More python: how do I refactor a class?")
    await chat.react("heidi", second, "+1")
    insights = await services.assistant.insights("fake:heidi")
    assert insights is not None
    assert insights["total_interactions"] == 3
    assert insights["topic_distribution"] == {"music": 1, "programming": 2}
    assert insights["interests"][0] == "programming"
    assert insights["average_satisfaction"] == 1.0
    assert {"kind": "topic", "value": "programming", "count": 2} in insights["top_patterns"]
    assert set(insights["communication_style"]) == {"length", "tone", "emoji", "questions"}
    assert await services.assistant.insights("fake:nobody") is None


async def test_forget_leaves_nothing_in_any_store(
    chat: FakeChat, services: Services, fake_claude: FakeAnthropic
) -> None:
    posted = await chat.say("ivan", "Remember that my cat is called Biscuit.")
    await chat.say("ivan", "Biscuit likes tuna.", channel="pets")
    await chat.say("judy", "Hello there", channel="pets")
    await chat.react("ivan", posted, "❤️")
    await services.assistant.forget("fake:ivan")

    assert await services.assistant.insights("fake:ivan") is None
    assert await services.long_term.count("fake:ivan") == 0
    [query] = await services.embedder.embed(["my cat Biscuit"])
    found = await services.index.candidates("fake:ivan", ["biscuit"], ready(query), scopes=None, limit=5)
    assert found.vector == [] and found.lexical == [], "no vector and no term of theirs is held anywhere"
    assert not await services.records.has_user("fake:ivan")
    assert await services.records.find_reply(posted.ref) is None
    for conversation in ("fake::dm-ivan", "fake::pets"):
        turns = await services.short_term.recent(conversation, 100)
        assert all(turn.user_key != "fake:ivan" for turn in turns)
    assert [t.text for t in await services.short_term.recent("fake::pets", 100)][0] == "Hello there"
    assert await services.assistant.insights("fake:judy") is not None, "others are untouched"
    await chat.say("ivan", "What is my cat called?")
    assert "Biscuit" not in fake_claude.prompt_text()


@pytest.mark.parametrize("status", [429, 500, 529])
async def test_claude_failure_gives_an_apology_and_keeps_the_message(
    chat: FakeChat,
    services: Services,
    fake_claude: FakeAnthropic,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_claude.script.extend([Fail(status), Fail(status)])  # the SDK retries once (CLAUDE_MAX_RETRIES=1)
    posted = await chat.say("kim", "My favourite colour is vermilion.")
    assert not posted.reply.ok
    assert "sorry" in posted.reply.text.lower()
    assert len(fake_claude.requests) == 2, "the SDK's own retry was used"
    assert any("Claude failed for fake:kim" in r.getMessage() for r in caplog.records)

    async def stored() -> bool:
        insights = await services.assistant.insights("fake:kim")
        return insights is not None and insights["total_interactions"] == 1

    await eventually(stored)
    fake_claude.script.append(Say("Vermilion it is."))
    await chat.say("kim", "What colour did I mention?")
    assert "vermilion" in fake_claude.prompt_text()


async def test_claude_timeout_gives_an_apology(chat: FakeChat, fake_claude: FakeAnthropic, services: Services) -> None:
    services.llm._client = services.llm._client.with_options(timeout=0.3, max_retries=0)  # type: ignore[attr-defined]
    fake_claude.script.append(Say("too late", delay=2))
    posted = await chat.say("lena", "Hello?")
    assert not posted.reply.ok and "sorry" in posted.reply.text.lower()


async def test_empty_and_binary_input_get_a_polite_reply(chat: FakeChat, fake_claude: FakeAnthropic) -> None:
    posted = await chat.say("mo", "  \x00\x01\x02  ")
    assert not posted.reply.ok and "text" in posted.reply.text
    assert fake_claude.requests == []


async def test_huge_input_is_truncated_not_sent_whole(chat: FakeChat, fake_claude: FakeAnthropic) -> None:
    await chat.say("ned", "word " * 200_000)
    sent = fake_claude.requests[-1]["messages"][-1]["content"]
    assert len(sent) <= 8_000
    assert sent.endswith("[… message truncated]")


async def test_one_persons_messages_are_answered_in_order_without_interleaving(
    chat: FakeChat, fake_claude: FakeAnthropic
) -> None:
    fake_claude.latency = 0.05
    await asyncio.gather(*(chat.say("pia", f"message number {i}") for i in range(5)))
    texts = [request["messages"][-1]["content"] for request in fake_claude.requests]
    assert texts == [f"message number {i}" for i in range(5)]
    # Each request saw every earlier turn: no two of her turns were in flight together.
    assert [len(request["messages"]) for request in fake_claude.requests] == [1, 3, 5, 7, 9]


async def test_a_message_too_old_to_answer_gets_a_short_note_and_is_still_remembered(
    tmp_path: Path, fake_claude: FakeAnthropic, embedding_model: Any
) -> None:
    services = await build_services(
        make_settings(tmp_path, fake_claude, STALE_AFTER_SECONDS=900), model=embedding_model
    )
    services.start()
    try:
        chat = FakeChat(services)
        two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
        posted = await chat.say("quin", "Remind me to call the plumber about the boiler.", sent_at=two_hours_ago)
        assert posted.reply.text == AssistantSettings().stale_note and not posted.reply.ok
        assert fake_claude.requests == [], "no late answer"
        await services.assistant.drain(10)
        await chat.say("quin", "What about the boiler?")
        assert "call the plumber about the boiler" in fake_claude.prompt_text(), "the message was kept all the same"
    finally:
        await shut(services)


async def test_an_entry_taken_again_and_again_is_answered_with_the_apology_and_let_go(
    chat: FakeChat, fake_claude: FakeAnthropic, services: Services
) -> None:
    """A message whose turn stopped the process each time (taken by turn after turn, never answered)."""
    event = MessageReceived(
        user=UserRef(platform="fake", user_id="rae"), text="the poison pill", conversation_id="dm-rae", private=True
    )
    incoming = Incoming(key="fake:message:dm-rae:poison", event=event)
    await services.inbox.accept(incoming)  # in the inbox, not yet taken by any turn
    for _ in range(AssistantSettings().max_takes):
        taken = await services.inbox.next_entry("fake:rae")
        assert taken is not None and taken.key == incoming.key
    outcome = services.assistant.outcomes.expect(incoming.key)
    services.turns.wake("fake:rae")
    answer = await asyncio.wait_for(outcome, 10)
    assert isinstance(answer, Answer) and answer.text == AssistantSettings().apology and not answer.ok
    assert fake_claude.requests == []
    posted = await chat.say("rae", "and now a normal message")
    assert posted.reply.ok, "the next one is answered"
