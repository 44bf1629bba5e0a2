"""End to end: the real discord.py client against a fake Discord on 127.0.0.1, the real core and storage.

platform (fake gateway) → adapter → core → fake Claude → adapter → platform (fake REST), on both storage set-ups.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from adapters.discord import DiscordAdapter
from adapters.discord.split import split_pieces
from bot.wiring import Services
from core.assistant import LEARNING_PAUSED, LEARNING_RESUMED, AssistantSettings
from tests.conftest import eventually, running, settled
from tests.fakes.anthropic_api import FakeAnthropic, Say
from tests.fakes.discord_api import EPHEMERAL, MESSAGE_CONTENT_INTENT, FakeDiscord


def general(fake: FakeDiscord) -> str:
    return str(fake.guilds[0]["channels"][0]["id"])


def last_user_text(claude: FakeAnthropic, index: int = -1) -> str:
    content = claude.requests[index]["messages"][-1]["content"]
    return content if isinstance(content, str) else str(content)


async def test_connects_identifies_and_syncs_commands_to_the_server(
    rapport: DiscordAdapter, discord_fake: FakeDiscord
) -> None:
    assert rapport.connected and rapport.problem is None
    (identify,) = discord_fake.identifies
    assert identify["token"] == "fake-token"
    assert identify["intents"] & MESSAGE_CONTENT_INTENT
    assert discord_fake.gateway_queries[0]["encoding"] == "json" and discord_fake.gateway_queries[0]["v"] == "10"
    guild_id = discord_fake.guilds[0]["id"]
    (sync,) = discord_fake.rest("PUT", rf"/applications/\d+/guilds/{guild_id}/commands")
    assert {command["name"] for command in sync.body} == {"insights", "forget", "learning", "memory", "rapport"}
    [operators] = [command for command in sync.body if command["name"] == "rapport"]
    assert int(operators["default_member_permissions"]) == 1 << 5 and operators["dm_permission"] is False
    [learning] = [command for command in sync.body if command["name"] == "learning"]
    [action] = learning["options"]
    assert [choice["value"] for choice in action["choices"]] == ["pause", "resume"]


async def test_a_dm_is_answered_as_a_reply_while_typing(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic
) -> None:
    fake_claude.latency = 0.3
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    asked = await discord_fake.say(alice, "Hello Rapport, I love hiking.", channel_id=dm)
    await discord_fake.until(lambda: discord_fake.shown(dm) == ["Noted: Hello Rapport, I love hiking."])

    (post,) = discord_fake.posted(dm)  # posted as soon as the answer began, then edited to the whole of it
    assert post.body["message_reference"]["message_id"] == int(asked["id"])
    assert post.body["allowed_mentions"] == {"parse": [], "replied_user": False}  # nobody is pinged
    typing = discord_fake.rest("POST", rf"/channels/{dm}/typing")
    assert typing and discord_fake.calls.index(typing[0]) < discord_fake.calls.index(post)
    assert "a private conversation" in fake_claude.prompt_text()
    assert last_user_text(fake_claude) == "Hello Rapport, I love hiking."


async def test_a_mention_is_answered_and_chatter_and_own_messages_are_ignored(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    bob = discord_fake.user(discord_fake.snowflake(), "Bob")
    channel = general(discord_fake)
    await discord_fake.say(bob, "anyone up for lunch?", channel_id=channel)
    asked = await discord_fake.say(
        alice, f"<@{discord_fake.bot['id']}> what's a good lunch spot?", channel_id=channel, mentions=[discord_fake.bot]
    )
    await discord_fake.until(lambda: discord_fake.posted(channel))
    (post,) = discord_fake.posted(channel)
    assert post.body["message_reference"]["message_id"] == int(asked["id"])
    assert post.body["allowed_mentions"]["replied_user"] is False
    assert last_user_text(fake_claude) == "[Alice] what's a good lunch spot?"

    # Rapport's own reply came back through the gateway; a later message shows it and the chatter were let be
    await discord_fake.say(bob, "thanks", channel_id=discord_fake.dm_channel(bob))
    await discord_fake.until(lambda: len(discord_fake.posted()) == 2)
    assert len(fake_claude.requests) == 2
    assert all("lunch?" not in last_user_text(fake_claude, i) for i in range(2))


async def test_a_reply_to_rapport_is_answered_with_the_reply_chain(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    bob = discord_fake.user(discord_fake.snowflake(), "Bob")
    channel = general(discord_fake)
    # from before Rapport last started: neither is in discord.py's cache
    announcement = discord_fake.message(bob, "The meetup is on Friday at the old library.", channel_id=channel)
    noted = discord_fake.message(discord_fake.bot, "Thanks Bob, noted.", channel_id=channel, reply_to=announcement)

    await discord_fake.say(alice, "When was that again?", channel_id=channel, reply_to=noted)
    await discord_fake.until(lambda: discord_fake.posted(channel))
    assert discord_fake.rest("GET", rf"/channels/{channel}/messages/{announcement['id']}")  # followed back via REST
    prompt = fake_claude.prompt_text()
    assert "The meetup is on Friday at the old library." in prompt
    assert "Thanks Bob, noted." in prompt
    assert prompt.index("old library") < prompt.index("noted.") < prompt.index("When was that again?")


async def test_a_long_answer_is_split_and_every_part_counts_for_feedback(
    rapport: DiscordAdapter, services: Services, discord_fake: FakeDiscord, fake_claude: FakeAnthropic
) -> None:
    code = "\n".join(f"    print('line {i}')" for i in range(120))
    answer = "Here you go.\n\n" + "Some explanation first. " * 60 + f"\n\n```python\ndef main():\n{code}\n```\n\nEnjoy!"
    fake_claude.script.append(Say(answer))
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    await discord_fake.say(alice, "Write me a long script please", channel_id=dm)
    pieces = split_pieces(answer)
    await discord_fake.until(lambda: discord_fake.shown(dm) == [piece.text for piece in pieces])
    await settled(services)

    posts = [call.body for call in discord_fake.posted(dm)]
    shown = discord_fake.shown(dm)
    assert len(posts) == len(shown) >= 3, "each part posted once (and edited as it grew)"
    assert all(len(part) <= 2000 and part.count("```") % 2 == 0 for part in shown)
    assert "message_reference" in posts[0] and all("message_reference" not in post for post in posts[1:])
    assert "".join(piece.body for piece in pieces) == answer  # nothing lost or reordered, fences aside
    assert shown[1].startswith("```python\n") or shown[2].startswith("```python\n")

    middle = discord_fake.created[1]  # a reaction on any part of the answer is feedback on it
    await discord_fake.react(alice, middle, "👍")
    user_key = f"discord:{alice['id']}"

    async def satisfied() -> bool:
        found = await services.assistant.insights(user_key)
        return found is not None and found["average_satisfaction"] == 1.0

    await eventually(satisfied)


async def test_the_askers_reaction_is_feedback_and_removing_it_undoes_it(
    rapport: DiscordAdapter, services: Services, discord_fake: FakeDiscord
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    bob = discord_fake.user(discord_fake.snowflake(), "Bob")
    channel = general(discord_fake)
    await discord_fake.say(alice, f"<@{discord_fake.bot['id']}> hi", channel_id=channel, mentions=[discord_fake.bot])
    await discord_fake.until(lambda: discord_fake.created)
    reply = discord_fake.created[0]
    user_key = f"discord:{alice['id']}"

    async def satisfaction() -> Any:
        found = await services.assistant.insights(user_key)
        return found and found["average_satisfaction"]

    await discord_fake.react(bob, reply, "👎")  # not the asker: no feedback
    await discord_fake.react(alice, reply, "👎")
    await eventually(lambda: _equals(satisfaction(), -1.0))
    await discord_fake.react(alice, reply, "👎", remove=True)
    await eventually(lambda: _equals(satisfaction(), None))


async def test_a_reaction_as_soon_as_the_reply_appears_still_counts(
    rapport: DiscordAdapter, services: Services, discord_fake: FakeDiscord
) -> None:
    discord_fake.post_latency = 0.5  # she sees the reply before Rapport hears back from the API
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    await discord_fake.say(alice, "quick question", channel_id=discord_fake.dm_channel(alice))
    await discord_fake.until(lambda: discord_fake.created)
    await discord_fake.react(alice, discord_fake.created[0], "🎉")

    async def satisfaction() -> Any:
        found = await services.assistant.insights(f"discord:{alice['id']}")
        return found and found["average_satisfaction"]

    await eventually(lambda: _equals(satisfaction(), 1.0))


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_slash_insights_answers_with_an_ephemeral_embed(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, services: Services
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    await discord_fake.say(alice, "I enjoy python and hiking", channel_id=dm)
    await discord_fake.until(lambda: discord_fake.posted(dm))
    await settled(services)  # learned by the turn's job, just behind the answer

    interaction = await discord_fake.slash(alice, "insights", channel_id=general(discord_fake))
    token = interaction["token"]
    await discord_fake.until(lambda: discord_fake.rest("POST", rf"/webhooks/\d+/{token}"))
    (callback,) = discord_fake.rest("POST", rf"/interactions/{interaction['id']}/{token}/callback")
    assert callback.body["type"] == 5 and callback.body["data"]["flags"] & EPHEMERAL  # "thinking…", only to her
    (followup,) = discord_fake.rest("POST", rf"/webhooks/\d+/{token}")
    assert followup.body["flags"] & EPHEMERAL
    (embed,) = followup.body["embeds"]
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Conversations"] == "1"
    assert fields["Interests"]  # what the core learned from her message


async def test_slash_forget_confirms_with_buttons_then_deletes_everything(
    rapport: DiscordAdapter, services: Services, discord_fake: FakeDiscord
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    bob = discord_fake.user(discord_fake.snowflake(), "Bob")
    dm = discord_fake.dm_channel(alice)
    await discord_fake.say(alice, "Remember that I like tea", channel_id=dm)
    await discord_fake.until(lambda: discord_fake.posted(dm))
    await settled(services)  # kept by the turn's job, just behind the answer
    user_key = f"discord:{alice['id']}"
    assert await services.assistant.insights(user_key) is not None

    asked = await discord_fake.slash(alice, "forget", channel_id=dm)
    await discord_fake.until(lambda: discord_fake.rest("POST", rf"/interactions/{asked['id']}/.+/callback"))
    (question,) = discord_fake.rest("POST", rf"/interactions/{asked['id']}/.+/callback")
    assert question.body["type"] == 4 and question.body["data"]["flags"] & EPHEMERAL
    buttons = {b["label"]: b["custom_id"] for row in question.body["data"]["components"] for b in row["components"]}
    assert set(buttons) == {"Delete everything", "Keep it"}

    intruder = await discord_fake.click(bob, buttons["Delete everything"], channel_id=dm)
    await discord_fake.until(lambda: discord_fake.rest("POST", rf"/interactions/{intruder['id']}/.+/callback"))
    assert await services.assistant.insights(user_key) is not None  # only Alice's own click counts

    clicked = await discord_fake.click(alice, buttons["Delete everything"], channel_id=dm)
    await discord_fake.until(
        lambda: discord_fake.rest("PATCH", rf"/webhooks/\d+/{clicked['token']}/messages/@original")
    )
    (update,) = discord_fake.rest("POST", rf"/interactions/{clicked['id']}/.+/callback")
    assert update.body["type"] == 7 and update.body["data"]["components"] == []
    (done,) = discord_fake.rest("PATCH", rf"/webhooks/\d+/{clicked['token']}/messages/@original")
    assert done.body["content"].startswith("Done")
    assert await services.assistant.insights(user_key) is None


async def test_one_persons_messages_are_answered_in_order_while_others_go_on(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic
) -> None:
    fake_claude.script.extend(
        [Say("answer one", delay=2.0), Say("answer to bob"), Say("answer two"), Say("answer three")]
    )
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    bob = discord_fake.user(discord_fake.snowflake(), "Bob")
    dm = discord_fake.dm_channel(alice)
    await discord_fake.say(alice, "one", channel_id=dm)
    await discord_fake.until(lambda: fake_claude.requests)  # hers is with Claude (slowly)
    await discord_fake.say(alice, "two", channel_id=dm)
    await discord_fake.say(bob, "hi from bob", channel_id=discord_fake.dm_channel(bob))
    await discord_fake.say(alice, "three", channel_id=dm)
    await discord_fake.until(lambda: len(discord_fake.posted()) == 4)

    assert [last_user_text(fake_claude, i) for i in range(4)] == ["one", "hi from bob", "two", "three"]
    assert [call.body["content"] for call in discord_fake.posted(dm)] == ["answer one", "answer two", "answer three"]


async def test_files_alone_that_cannot_be_read_get_a_note_naming_them_without_asking_claude(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    # the test adapter may download from nowhere (tests.conftest.running): the CDN address is not fetched
    await discord_fake.say(alice, "", channel_id=dm, attachments=[discord_fake.attachment("holiday.png")])
    await discord_fake.until(lambda: discord_fake.posted(dm))
    note = discord_fake.posted(dm)[0].body["content"]
    assert note.startswith("_(I couldn't read holiday.png: ") and note != AssistantSettings().empty_reply
    assert fake_claude.requests == []


async def test_a_reply_discord_refuses_is_delivered_later_and_the_next_message_waits_its_turn(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic
) -> None:
    discord_fake.refuse_posts = 1
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    await discord_fake.say(alice, "first", channel_id=dm)
    await discord_fake.say(alice, "second", channel_id=dm)
    await discord_fake.until(lambda: len(discord_fake.created) == 2)
    assert [m["content"] for m in discord_fake.created] == ["Noted: first", "Noted: second"]
    assert len(discord_fake.posted(dm)) == 3, "the refused post, then both"
    assert [last_user_text(fake_claude, i) for i in range(2)] == ["first", "second"], "Claude was asked once each"
    assert rapport.connected


async def test_a_resumed_session_replaying_a_message_does_not_answer_it_twice(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    asked = await discord_fake.say(alice, "just once please", channel_id=dm)
    await discord_fake.until(lambda: discord_fake.posted(dm))

    discord_fake.replay_on_resume = 2  # her message and Rapport's echo are delivered again
    await discord_fake.drop(4000)
    await discord_fake.until(lambda: asked in [frame["d"] for frame in discord_fake.replayed])
    await discord_fake.say(alice, "and now this", channel_id=dm)
    await discord_fake.until(lambda: len(discord_fake.posted(dm)) == 2)
    assert [last_user_text(fake_claude, i) for i in range(len(fake_claude.requests))] == [
        "just once please",
        "and now this",
    ]
    assert len(discord_fake.identifies) == 1  # the session was resumed, not started anew
    await discord_fake.until(lambda: rapport.connected)


async def test_missing_message_content_intent_keeps_the_process_up_with_one_clear_line(
    services: Services, discord_fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    discord_fake.message_content_allowed = False
    caplog.set_level(logging.INFO, logger="adapters.discord")
    async with running(services, discord_fake) as adapter:
        await discord_fake.until(lambda: adapter.problem is not None and "Message Content" in adapter.problem)
        assert not adapter.connected
        assert "Developer Portal → Bot → Privileged Gateway Intents" in (adapter.problem or "")
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "enable the Message Content intent" in errors[0].getMessage()
        assert errors[0].exc_info is None  # one line, no traceback


async def test_a_sharded_replica_connects_its_own_shards(
    services: Services, discord_fake: FakeDiscord, fake_claude: FakeAnthropic
) -> None:
    async with running(services, discord_fake, shard_count=2, shard_ids=(1,)) as adapter:
        await discord_fake.until(lambda: adapter.connected)
        assert [identify["shard"] for identify in discord_fake.identifies] == [[1, 2]]
        alice = discord_fake.user(discord_fake.snowflake(), "Alice")
        channel = general(discord_fake)
        await discord_fake.say(
            alice, f"<@{discord_fake.bot['id']}> hello", channel_id=channel, mentions=[discord_fake.bot]
        )
        await discord_fake.until(lambda: discord_fake.posted(channel))
    assert not adapter.connected and adapter.problem is not None


async def test_slash_learning_pauses_and_resumes_for_the_person_who_asks_only(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, services: Services
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    bob = discord_fake.user(discord_fake.snowflake(), "Bob")
    for who, action in ((alice, "pause"), (bob, "resume")):
        asked = await discord_fake.slash(
            who, "learning", channel_id=general(discord_fake), options=[{"name": "action", "type": 3, "value": action}]
        )
        callback = rf"/interactions/{asked['id']}/.+/callback"
        await discord_fake.until(lambda callback=callback: discord_fake.rest("POST", callback))  # type: ignore[misc]
        (answer,) = discord_fake.rest("POST", callback)
        assert answer.body["type"] == 4 and answer.body["data"]["flags"] & EPHEMERAL
        assert answer.body["data"]["content"] == (LEARNING_PAUSED if action == "pause" else LEARNING_RESUMED)
    assert await services.records.is_paused(f"discord:{alice['id']}")
    assert not await services.records.is_paused(f"discord:{bob['id']}")
