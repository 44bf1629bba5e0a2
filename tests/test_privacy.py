"""Privacy by audience, with the real slack-bolt and discord.py against the fakes, on both backends: what was said
in a place reaches only replies whose readers could already read it there (core.privacy)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from adapters.slack import SlackAdapter, SlackConfig
from bot.http import AppState, make_app
from bot.wiring import Services
from tests.conftest import running, settled
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.slack_api import FakeSlackAPI
from tests.test_slack_http import SECRET, payload, send_event

_TS = itertools.count(1)


@pytest_asyncio.fixture
async def slack(services: Services) -> AsyncIterator[tuple[TestClient, FakeSlackAPI]]:
    api = FakeSlackAPI()
    await api.start()
    api.channels = {
        "C1": {"is_channel": True},  # a public channel
        "C2": {"is_channel": True},  # another
        "G1": {"is_private": True},  # a private channel
        "G2": {"is_mpim": True, "is_private": True},  # a group DM
        "CX": {"is_channel": True, "is_ext_shared": True},  # a public channel shared with another company
    }
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


async def _say(client: TestClient, api: FakeSlackAPI, services: Services, channel: str, text: str) -> None:
    """U123 says `text` in `channel` (a mention, or in their DM D1), and waits until it is answered and stored."""
    if channel.startswith("D"):
        body = copy.deepcopy(payload("message_im"))
        body["event"]["text"] = text
    else:
        body = copy.deepcopy(payload("app_mention"))
        body["event"] |= {"channel": channel, "text": f"<@UBOT> {text}"}
    ts = f"1712400000.{next(_TS):06d}"
    body["event"]["ts"] = body["event"]["event_ts"] = ts
    body["event_id"] = f"EvP{ts}"
    before = len(api.posted())
    await send_event(client, body)
    await api.wait_for(lambda: any(args.get("text", "") != "_Thinking…_" for args in api.posted()[before:]))
    await settled(services)


async def test_slack_what_was_said_in_a_private_channel_stays_with_its_readers(
    slack: tuple[TestClient, FakeSlackAPI], services: Services, fake_claude: FakeAnthropic
) -> None:
    client, api = slack
    await _say(client, api, services, "G1", "for this team only: the vault phrase is plum-kettle-42")
    await _say(client, api, services, "C1", "what is the vault phrase?")
    assert "plum-kettle-42" not in fake_claude.prompt_text(), "private channel -> public channel: never"
    await _say(client, api, services, "G1", "remind me, what was the vault phrase?")
    assert "plum-kettle-42" in fake_claude.prompt_text(), "the same private channel: yes"
    await _say(client, api, services, "D1", "what was that vault phrase again?")
    assert "plum-kettle-42" in fake_claude.prompt_text(), "the person's DM: everything of theirs"


async def test_slack_a_group_dm_a_dm_and_a_shared_channel_never_reach_a_public_channel(
    slack: tuple[TestClient, FakeSlackAPI], services: Services, fake_claude: FakeAnthropic
) -> None:
    client, api = slack
    await _say(client, api, services, "G2", "between us three: the boat code is 7719")
    await _say(client, api, services, "D1", "my allergist's name is Dr Okonkwo")
    await _say(client, api, services, "CX", "the partner's launch date is March ninth")
    await _say(client, api, services, "C1", "what is the boat code, my allergist's name and the launch date?")
    prompt = fake_claude.prompt_text()
    assert "7719" not in prompt and "Okonkwo" not in prompt and "March ninth" not in prompt


async def test_slack_a_public_channel_is_known_in_the_other_public_channels_and_the_dm(
    slack: tuple[TestClient, FakeSlackAPI], services: Services, fake_claude: FakeAnthropic
) -> None:
    client, api = slack
    await _say(client, api, services, "C1", "note for everyone: the offsite is in Porto")
    await _say(client, api, services, "C2", "where is the offsite?")
    assert "offsite is in Porto" in fake_claude.prompt_text(), "public -> public of the same workspace"
    await _say(client, api, services, "D1", "where was the offsite again?")
    assert "offsite is in Porto" in fake_claude.prompt_text(), "public -> the person's DM"


async def test_slack_an_interest_shown_in_a_private_channel_is_not_in_a_public_prompt(
    slack: tuple[TestClient, FakeSlackAPI], services: Services, fake_claude: FakeAnthropic
) -> None:
    client, api = slack
    await _say(client, api, services, "G1", "I love jazz piano concerts")
    await _say(client, api, services, "C1", "hello")
    assert "music" not in fake_claude.system_text()
    await _say(client, api, services, "G1", "hello again")
    assert "Interests: music" in fake_claude.system_text()
    await _say(client, api, services, "D1", "hi")
    assert "Interests: music" in fake_claude.system_text()


@pytest_asyncio.fixture
async def two_servers() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    fake.add_guild(name="A", channels=("general", "staff"), members_only=("staff",))
    fake.add_guild(name="B", channels=("lobby",))
    await fake.start()
    yield fake
    await fake.stop()


def _channel(fake: FakeDiscord, guild: int, index: int) -> str:
    return str(fake.guilds[guild]["channels"][index]["id"])


async def _mention(fake: FakeDiscord, services: Services, author: dict[str, Any], channel: str, text: str) -> None:
    before = len(fake.created)
    await fake.say(author, f"<@{fake.bot['id']}> {text}", channel_id=channel, mentions=[fake.bot])
    await fake.until(lambda: len(fake.created) > before)
    await settled(services)


async def test_discord_another_server_and_a_members_only_channel_never_reach_a_public_channel(
    services: Services, two_servers: FakeDiscord, fake_claude: FakeAnthropic
) -> None:
    fake = two_servers
    async with running(services, fake) as adapter:
        await fake.until(lambda: adapter.connected)
        alice = fake.user(fake.snowflake(), "Alice")
        general, staff, lobby = _channel(fake, 0, 0), _channel(fake, 0, 1), _channel(fake, 1, 0)
        await _mention(fake, services, alice, general, "my locker combination is 3141")
        await _mention(fake, services, alice, staff, "the staff door code is 2718")
        await _mention(fake, services, alice, lobby, "what is my locker combination?")
        assert "3141" not in fake_claude.prompt_text(), "server A -> server B: never"
        await _mention(fake, services, alice, general, "what is the staff door code?")
        assert "2718" not in fake_claude.prompt_text(), "a members-only channel -> a public one: never"
        assert "a shared channel" in fake_claude.prompt_text()
        await _mention(fake, services, alice, staff, "and the staff door code?")
        assert "staff door code is 2718" in fake_claude.prompt_text(), "the same members-only channel: yes"
        await fake.say(alice, "what were my locker combination and the door code?", channel_id=fake.dm_channel(alice))
        await fake.until(lambda: len(fake_claude.requests) == 6)
        prompt = fake_claude.prompt_text()
        assert "locker combination is 3141" in prompt and "staff door code is 2718" in prompt, "a DM: all of hers"
