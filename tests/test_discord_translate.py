"""Discord translation on recorded gateway payloads, replayed through discord.py's own parser (no network)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import discord
import pytest

from adapters.discord.commands import forget_button_id, parse_forget_button
from adapters.discord.translate import (
    TEXT_ONLY_NOTE,
    MessageFacts,
    Verdict,
    decide,
    facts_of,
    insights_embed,
    reaction_event,
    render_text,
    reply_chunks,
    to_event,
)
from core.events import ChainMessage, MessageRef, ReactionAdded, ReactionRemoved, UserRef

FIXTURES = Path(__file__).parent / "fixtures" / "discord"
BOT_ID = 1187654321098765432
ALICE_ID = 1170000000000000001
GENERAL = 1160000000000000010
ASK_RAPPORT = 1160000000000000012
DM_CHANNEL = 1190000000000000001


def payload(name: str) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads((FIXTURES / f"payload_{name}.json").read_text())
    return frame


class Gateway:
    """discord.py's connection state fed recorded frames, collecting what it dispatches."""

    def __init__(self) -> None:
        intents = discord.Intents.none()
        intents.guilds = intents.guild_messages = intents.dm_messages = True
        intents.guild_reactions = intents.dm_reactions = intents.message_content = True
        self.state = discord.Client(intents=intents)._connection
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.state.dispatch = lambda event, *args: self.events.append((event, args))
        self.state.user = discord.ClientUser(state=self.state, data=payload("ready")["d"]["user"])
        self.replay("guild_create")

    def replay(self, name: str) -> tuple[Any, ...]:
        """Parse one recorded frame; the arguments of the first event it dispatched."""
        frame = payload(name)
        self.events.clear()
        self.state.parsers[frame["t"]](frame["d"])
        return self.events[0][1]

    def message(self, name: str) -> discord.Message:
        (message,) = self.replay(name)
        assert isinstance(message, discord.Message)
        return message

    def verdict(self, name: str, allowed: frozenset[int] = frozenset()) -> Verdict:
        message = self.message(name)
        ref = message.reference
        referenced = ref.resolved if ref is not None and isinstance(ref.resolved, discord.Message) else None
        facts = facts_of(message, bot_id=BOT_ID, bot_name="Rapport", referenced=referenced)
        return decide(facts, bot_id=BOT_ID, allowed_channel_ids=allowed)


@pytest.fixture
def gateway() -> Gateway:
    return Gateway()


# --- when it answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "verdict"),
    [
        ("message_create_dm", Verdict.ANSWER),
        ("message_create_mention", Verdict.ANSWER),
        ("message_create_role_mention", Verdict.ANSWER),
        ("message_create_reply", Verdict.ANSWER),
        ("message_create_chatter", Verdict.IGNORE),
        ("message_create_thread", Verdict.IGNORE),
        ("message_create_other_bot", Verdict.IGNORE),
        ("message_create_system", Verdict.IGNORE),
        ("message_create_attachment_only", Verdict.ANSWER),  # its files are read (core.files)
    ],
)
def test_recorded_messages_are_answered_only_when_addressed(gateway: Gateway, fixture: str, verdict: Verdict) -> None:
    assert gateway.verdict(fixture) is verdict


def test_an_allowed_channel_opens_it_and_its_threads_to_every_message(gateway: Gateway) -> None:
    assert gateway.verdict("message_create_chatter", frozenset({GENERAL})) is Verdict.ANSWER
    assert gateway.verdict("message_create_thread", frozenset({ASK_RAPPORT})) is Verdict.ANSWER
    assert gateway.verdict("message_create_other_bot", frozenset({GENERAL})) is Verdict.IGNORE


FACTS = MessageFacts(
    author_id=1,
    author_is_bot=False,
    ordinary=True,
    private=False,
    channel_id=10,
    parent_channel_id=None,
    mentions_bot=False,
    replies_to_bot=False,
    has_text=True,
    has_attachments=False,
)


def test_decision_on_plain_values() -> None:
    assert decide(FACTS, bot_id=99) is Verdict.IGNORE
    assert decide(replace(FACTS, private=True), bot_id=99) is Verdict.ANSWER
    assert decide(replace(FACTS, mentions_bot=True), bot_id=99) is Verdict.ANSWER
    assert decide(replace(FACTS, replies_to_bot=True), bot_id=99) is Verdict.ANSWER
    assert decide(FACTS, bot_id=99, allowed_channel_ids={10}) is Verdict.ANSWER
    assert decide(replace(FACTS, channel_id=11, parent_channel_id=10), bot_id=99, allowed_channel_ids={10}) is (
        Verdict.ANSWER
    )
    # never its own messages, nor another bot's, nor a system notice, even in a DM
    assert decide(replace(FACTS, private=True, author_id=99), bot_id=99) is Verdict.IGNORE
    assert decide(replace(FACTS, private=True, author_is_bot=True), bot_id=99) is Verdict.IGNORE
    assert decide(replace(FACTS, private=True, ordinary=False), bot_id=99) is Verdict.IGNORE
    # files alone are answered (they are read); a sticker alone gets the note; text with either is answered
    only_files = replace(FACTS, private=True, has_text=False, has_attachments=True)
    assert decide(only_files, bot_id=99) is Verdict.ANSWER
    only_sticker = replace(FACTS, private=True, has_text=False, has_stickers=True)
    assert decide(only_sticker, bot_id=99) is Verdict.TEXT_ONLY
    assert decide(replace(only_sticker, has_text=True), bot_id=99) is Verdict.ANSWER
    assert decide(replace(only_sticker, has_attachments=True), bot_id=99) is Verdict.ANSWER


# --- payload -> neutral event ------------------------------------------------------------------


def test_dm_becomes_a_private_event(gateway: Gateway) -> None:
    message = gateway.message("message_create_dm")
    event = to_event(message, bot_id=BOT_ID, bot_name="Rapport")
    assert event.user == UserRef(platform="discord", user_id=str(ALICE_ID))
    assert event.user.key == f"discord:{ALICE_ID}"
    assert event.private is True
    assert event.display_name == "Alice"
    assert event.text == "Hi! Can you recommend a good book on Python?"
    assert event.conversation_id == str(DM_CHANNEL)
    assert event.thread_id is None
    assert event.message == MessageRef(platform="discord", channel_id=str(DM_CHANNEL), message_id="1210000000000000101")
    assert event.sent_at == discord.utils.snowflake_time(1210000000000000101)
    assert event.sent_at.tzinfo is not None and event.sent_at < datetime.now(UTC)


def test_mention_is_stripped_and_other_mentions_read_as_names(gateway: Gateway) -> None:
    event = to_event(gateway.message("message_create_mention"), bot_id=BOT_ID, bot_name="Rapport")
    assert event.private is False
    assert event.conversation_id == str(GENERAL)
    assert event.display_name == "Ali"  # the server nickname
    assert event.text == "what do you think of @Bob's idea in #random? cc @Moderators :pepe_think:"


def test_the_bots_role_mention_counts_as_a_mention_and_is_stripped(gateway: Gateway) -> None:
    event = to_event(gateway.message("message_create_role_mention"), bot_id=BOT_ID, bot_name="Rapport")
    assert event.text == "are you there?"


def test_reply_chain_is_handed_over_oldest_first(gateway: Gateway) -> None:
    message = gateway.message("message_create_reply")
    assert message.reference is not None
    earlier = message.reference.resolved
    assert isinstance(earlier, discord.Message)
    event = to_event(message, bot_id=BOT_ID, bot_name="Rapport", chain=[earlier])
    assert event.text == "Is it good for beginners too?"
    assert event.reply_chain == (
        ChainMessage(
            author="Rapport",
            text="A classic is *Fluent Python* by Luciano Ramalho.",
            from_assistant=True,
            author_id=str(BOT_ID),
        ),
    )


def test_a_thread_is_a_shared_conversation_of_its_own(gateway: Gateway) -> None:
    event = to_event(gateway.message("message_create_thread"), bot_id=BOT_ID, bot_name="Rapport")
    assert event.private is False
    assert event.conversation_id == "1160000000000000020"
    assert event.thread_id is None


def test_render_text_on_plain_strings() -> None:
    def render(content: str) -> str:
        return render_text(content, bot_id=123456789012345678, bot_name="Rapport", users={223456789012345678: "Bob"})

    assert render("<@123456789012345678> hello") == "hello"
    assert render("<@!123456789012345678>, hello") == "hello"
    assert render("hello <@123456789012345678>") == "hello"
    assert render("ask <@123456789012345678> about <@223456789012345678>") == "ask Rapport about @Bob"
    assert render("who is <@323456789012345678>?") == "who is <@323456789012345678>?"  # unknown: left as is
    assert render("<@123456789012345678>") == ""
    assert render("<a:dance:123456789012345678> ok") == ":dance: ok"


# --- reactions ---------------------------------------------------------------------------------


def test_reaction_on_rapports_reply_becomes_feedback(gateway: Gateway) -> None:
    (raw,) = gateway.replay("message_reaction_add")
    event = reaction_event(raw, bot_id=BOT_ID)
    assert event == ReactionAdded(
        actor=UserRef(platform="discord", user_id=str(ALICE_ID)),
        message=MessageRef(platform="discord", channel_id=str(GENERAL), message_id="1210000000000000200"),
        emoji="👍",  # skin tone off, as the core's table spells it
    )


def test_reaction_in_a_dm_and_its_removal(gateway: Gateway) -> None:
    (raw,) = gateway.replay("message_reaction_add_dm")
    added = reaction_event(raw, bot_id=BOT_ID)
    assert isinstance(added, ReactionAdded) and added.emoji == "❤"
    (raw,) = gateway.replay("message_reaction_remove")
    removed = reaction_event(raw, bot_id=BOT_ID)
    assert isinstance(removed, ReactionRemoved)
    assert removed.message.message_id == "1210000000000000200" and removed.emoji == "👍"


def test_reactions_that_are_not_feedback_material_are_dropped(gateway: Gateway) -> None:
    (raw,) = gateway.replay("message_reaction_add_other_message")
    assert reaction_event(raw, bot_id=BOT_ID) is None  # on someone else's message
    (raw,) = gateway.replay("message_reaction_add")
    assert reaction_event(raw, bot_id=ALICE_ID) is None  # Rapport's own reaction
    (raw,) = gateway.replay("message_reaction_add_custom")
    custom = reaction_event(raw, bot_id=BOT_ID)
    assert isinstance(custom, ReactionAdded) and custom.emoji == "partyparrot"  # passed on; the core scores it


# --- reply -> what is sent ---------------------------------------------------------------------


def test_reply_chunks_fit_and_keep_everything() -> None:
    text = ("A sentence that goes on. " * 30 + "\n\n") * 6
    chunks = reply_chunks(text)
    assert len(chunks) > 1 and all(len(chunk) <= 2000 for chunk in chunks)
    assert "".join(chunks) == text
    assert reply_chunks("   ") == ["…"]
    assert TEXT_ONLY_NOTE and len(TEXT_ONLY_NOTE) < 2000


def test_insights_embed_shows_a_persons_own_insights() -> None:
    embed = insights_embed(
        {
            "user_key": "discord:1",
            "display_name": "Alice",
            "total_interactions": 3,
            "average_satisfaction": 0.9,
            "interests": ["python", "hiking"],
            "topic_distribution": {"python": 2, "hiking": 1},
            "communication_style": {"length": "brief", "tone": "casual"},
            "top_patterns": [{"kind": "time_of_day", "value": "evening", "count": 3}],
        }
    ).to_dict()
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Conversations"] == "3"
    assert fields["Satisfaction"].startswith("+0.90")
    assert fields["Interests"] == "python, hiking"
    assert fields["Topics"] == "python (2), hiking (1)"
    assert "evening" in fields["Patterns"]
    assert all(len(value) <= 1024 for value in fields.values())
    assert "Nothing yet" in (insights_embed(None).description or "")


def test_long_insight_values_are_kept_within_discords_field_limit() -> None:
    embed = insights_embed({"total_interactions": 1, "interests": ["x" * 300] * 10}).to_dict()
    assert all(len(field["value"]) <= 1024 for field in embed["fields"])


def test_forget_buttons_carry_their_meaning_in_the_custom_id() -> None:
    assert parse_forget_button(forget_button_id("yes", ALICE_ID)) == (True, ALICE_ID)
    assert parse_forget_button(forget_button_id("no", ALICE_ID)) == (False, ALICE_ID)
    assert parse_forget_button("something:else") is None
    assert parse_forget_button("rapport:forget:yes:12x") is None
