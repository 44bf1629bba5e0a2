"""/memory: each person reads and edits what Rapport knows about them, on Discord, Slack (command and Home tab) and
the console, with the real clients against the local fakes and the real stores."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from adapters.console import ConsoleAdapter
from adapters.discord import DiscordAdapter
from bot.config import Settings
from bot.wiring import Services
from tests.conftest import settings_on, settled
from tests.fakes.anthropic_api import FakeAnthropic, Use
from tests.fakes.discord_api import EPHEMERAL, FakeDiscord
from tests.fakes.slack_api import FakeSlackAPI
from tests.test_slack_http import payload, send_action, send_command, send_event


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    """A learning model that keeps everything said as a fact, in its words."""
    text = body["messages"][0]["content"]
    said = re.findall(r"^(E\d+) \([^)]*\) they said: (.*)$", text, re.MULTILINE)
    return {"changes": [{"action": "add", "kind": "fact", "text": words, "sources": [ref]} for ref, words in said]}


@pytest_asyncio.fixture(params=["embedded", "served"])
async def settings(
    request: pytest.FixtureRequest, tmp_path: Path, fake_claude: FakeAnthropic
) -> AsyncIterator[Settings]:
    """Learning is started by each test, so that no background sweep takes a scripted answer first."""
    fake_claude.tool_default = _echo
    async with settings_on(request.param, tmp_path, fake_claude, LEARNING="false") as chosen:
        yield chosen


async def _said(fake: FakeDiscord, user: dict[str, Any], texts: list[str]) -> list[dict[str, Any]]:
    dm = fake.dm_channel(user)
    said = []
    for text in texts:
        before = len(fake.shown(dm))
        said.append(await fake.say(user, text, channel_id=dm))
        await fake.until(lambda before=before: len(fake.shown(dm)) > before)
    return said


async def _edited(fake: FakeDiscord, interaction: dict[str, Any]) -> dict[str, Any]:
    """A click's answer: deferred at once (type 6), then the ephemeral message edited in place."""
    deferred = await _callback(fake, interaction)
    assert deferred["type"] == 6
    pattern = rf"/webhooks/\d+/{interaction['token']}/messages/@original"
    await fake.until(lambda: fake.rest("PATCH", pattern))
    return {"data": fake.rest("PATCH", pattern)[-1].body}


async def _callback(fake: FakeDiscord, interaction: dict[str, Any]) -> dict[str, Any]:
    pattern = rf"/interactions/{interaction['id']}/.+/callback"
    await fake.until(lambda: fake.rest("POST", pattern))
    (call,) = fake.rest("POST", pattern)
    body: dict[str, Any] = call.body
    return body


def _embed_text(body: dict[str, Any]) -> str:
    return json.dumps(body["data"].get("embeds") or [])


def _select(body: dict[str, Any]) -> dict[str, Any]:
    for row in body["data"]["components"]:
        for component in row["components"]:
            if component["type"] == 3:
                found: dict[str, Any] = component
                return found
    raise AssertionError("no select menu")


def _button(body: dict[str, Any], label: str) -> dict[str, Any]:
    for row in body["data"]["components"]:
        for component in row["components"]:
            if component.get("label") == label:
                found: dict[str, Any] = component
                return found
    raise AssertionError(f"no {label!r} button")


async def test_discord_memory_lists_the_model_and_a_deleted_item_stays_gone(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    user = f"discord:{alice['id']}"
    [lisbon_said, _] = await _said(discord_fake, alice, ["I live in Lisbon", "I play the cello"])
    await settled(services)
    assert await services.assistant.learner.learn(user)

    shown = await _callback(
        discord_fake, await discord_fake.slash(alice, "memory", channel_id=discord_fake.dm_channel(alice))
    )
    assert shown["type"] == 4 and shown["data"]["flags"] & EPHEMERAL
    assert "I live in Lisbon" in _embed_text(shown) and "I play the cello" in _embed_text(shown)
    menu = _select(shown)
    lisbon = next(o["value"] for o in menu["options"] if "Lisbon" in o["label"])

    # Someone else cannot act on Alice's menu (its id names her).
    general = discord_fake.guilds[0]["channels"][0]["id"]
    mallory = discord_fake.user(discord_fake.snowflake(), "Mallory")
    refused = await _callback(
        discord_fake, await discord_fake.select(mallory, menu["custom_id"], [lisbon], channel_id=general)
    )
    assert "someone else's" in refused["data"]["content"] and refused["data"]["flags"] & EPHEMERAL
    assert any("Lisbon" in i.text for i in await services.records.person_items(user, scopes=None))

    deleted = await _edited(
        discord_fake, await discord_fake.select(alice, menu["custom_id"], [lisbon], channel_id=general)
    )
    assert "Deleted." in _embed_text(deleted) and "Lisbon" not in _embed_text(deleted)
    assert "I play the cello" in _embed_text(deleted)
    assert "Lisbon" not in await _recalled(services, user, "where do I live? Lisbon")  # its source turn left recall
    assert "cello" in await _recalled(services, user, "which instrument, the cello?")  # the others stay

    # The next learning job says it again (the same words): the tombstone keeps it out.
    fake_claude.tool_script.append(
        Use({"changes": [{"action": "add", "kind": "fact", "text": "I live in Lisbon", "sources": ["E1"]}]})
    )
    await _said(discord_fake, alice, ["what do you know about me?"])
    await settled(services)
    assert "I play the cello" in json.dumps(fake_claude.requests[-1])
    assert "Lisbon" not in json.dumps(fake_claude.requests[-1])  # nor in the conversation so far
    assert await services.assistant.learner.learn(user)
    assert len(fake_claude.tool_requests) == 2
    current = [i.text for i in await services.records.person_items(user, scopes=None)]
    assert "I live in Lisbon" not in current and "I play the cello" in current
    await _said(discord_fake, alice, ["and now?"])
    assert "Lisbon" not in json.dumps(fake_claude.requests[-1])

    # Editing the message it came from, which is learned from again, does not bring it back either.
    await discord_fake.edit_message(lisbon_said, "I live in Lisbon, Portugal")
    await settled(services)
    await services.assistant.learner.learn(user)
    assert "Lisbon" not in json.dumps([i.text for i in await services.records.person_items(user, scopes=None)])


async def _recalled(services: Services, user: str, query: str) -> str:
    async def vector() -> list[float]:
        [embedded] = await services.embedder.embed([query])
        return embedded

    hits = await services.long_term.search(user, query, asyncio.ensure_future(vector()), scopes=None, limit=10)
    return json.dumps([hit.memory.text for hit in hits])


async def test_discord_memory_pauses_and_resumes_learning_and_shows_history(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    user = f"discord:{alice['id']}"
    dm = discord_fake.dm_channel(alice)
    await _said(discord_fake, alice, ["I work at Acme"])
    await settled(services)
    assert await services.assistant.learner.learn(user)
    [acme] = await services.records.person_items(user, scopes=None)
    fake_claude.tool_script.append(
        Use({"changes": [{"action": "supersede", "items": ["M1"], "text": "works at Globex", "sources": ["E1"]}]})
    )
    await _said(discord_fake, alice, ["I moved to Globex"])
    await settled(services)
    assert await services.assistant.learner.learn(user)

    shown = await _callback(discord_fake, await discord_fake.slash(alice, "memory", channel_id=dm))
    assert "works at Globex" in _embed_text(shown) and "I work at Acme" not in _embed_text(shown)
    history = await _edited(
        discord_fake, await discord_fake.click(alice, _button(shown, "Show history")["custom_id"], channel_id=dm)
    )
    assert "I work at Acme" in _embed_text(history) and acme.text == "I work at Acme"

    paused = await _edited(
        discord_fake, await discord_fake.click(alice, _button(shown, "Pause learning")["custom_id"], channel_id=dm)
    )
    assert "Learning paused" in _embed_text(paused) and await services.records.is_paused(user)
    calls = len(fake_claude.tool_requests)
    await _said(discord_fake, alice, ["I collect stamps"])
    await settled(services)
    await services.assistant.learner.learn(user)
    assert len(fake_claude.tool_requests) == calls  # paused: no learning call

    resumed = await _edited(
        discord_fake, await discord_fake.click(alice, _button(paused, "Resume learning")["custom_id"], channel_id=dm)
    )
    assert "Learning resumed" in _embed_text(resumed) and not await services.records.is_paused(user)
    await _said(discord_fake, alice, ["I also collect coins"])
    await settled(services)
    assert await services.assistant.learner.learn(user)
    assert len(fake_claude.tool_requests) == calls + 1
    assert "I collect stamps" not in fake_claude.tool_requests[-1]["messages"][0]["content"]  # said while paused


# --- Slack ---------------------------------------------------------------------------------------------------


def _home_opened() -> dict[str, Any]:
    body = payload("app_mention")
    body["event"] = {"type": "app_home_opened", "user": "U123", "channel": "D123", "tab": "home", "event_ts": "1.2"}
    body["event_id"] = "EvHome1"
    return body


def _published(api: FakeSlackAPI, user: str = "") -> list[str]:
    return [json.dumps(call["view"]) for call in api.called("views.publish") if not user or call["user_id"] == user]


async def test_slack_memory_command_and_home_tab_list_delete_and_follow_the_model(
    client: TestClient, slack_api: FakeSlackAPI, fake_claude: FakeAnthropic, services: Services
) -> None:
    user = "slack:T1:U123"
    dm = payload("message_im")
    dm["event"]["text"] = "I grow tomatoes"
    await send_event(client, dm)
    await slack_api.wait_for(lambda: slack_api.replied())
    await settled(services)
    assert await services.assistant.learner.learn(user)
    await slack_api.wait_for(lambda: slack_api.called("views.publish"))  # the model changed: the tab follows
    assert "I grow tomatoes" in _published(slack_api)[-1]

    await send_event(client, _home_opened())
    await slack_api.wait_for(lambda: len(slack_api.called("views.publish")) >= 2)
    home = json.loads(_published(slack_api)[-1])
    assert slack_api.called("views.publish")[-1]["user_id"] == "U123" and home["type"] == "home"
    [delete] = [b["accessory"] for b in home["blocks"] if "accessory" in b]

    command = dict(payload("command_insights"), command="/memory", response_url=slack_api.response_url("memory"))
    assert (await send_command(client, command)).status == 200
    await slack_api.wait_for(lambda: slack_api.responses)
    ((name, listed),) = slack_api.responses
    assert listed["response_type"] == "ephemeral" and "I grow tomatoes" in json.dumps(listed["blocks"])

    # A stranger's click deletes nothing of U123's (it acts on the clicker's own model)
    stranger = payload("block_actions_forget")
    stranger["user"] = {"id": "U456", "team_id": "T1"}
    stranger["actions"] = [{**delete, "action_id": delete["action_id"]}]
    stranger["container"] = {"type": "view", "view_id": "V1"}
    assert (await send_action(client, stranger)).status == 200
    await settled(services)
    assert [i.text for i in await services.records.person_items(user, scopes=None)] == ["I grow tomatoes"]

    mine = dict(stranger, user={"id": "U123", "team_id": "T1"})
    assert (await send_action(client, mine)).status == 200
    await slack_api.wait_for(lambda: "tomatoes" not in _published(slack_api, "U123")[-1])
    await settled(services)
    assert await services.records.person_items(user, scopes=None) == []
    assert all("tomatoes" not in view for view in _published(slack_api, "U456"))  # never shown to anyone else


# --- the console -----------------------------------------------------------------------------------------------


async def test_console_memory_lists_and_deletes_by_number_and_insights_read_as_text(services: Services) -> None:
    lines = iter(
        ["I keep bees", "I speak Welsh", "/memory", "/memory delete 1", "/memory delete 9", "/insights", "/quit"]
    )
    out: list[str] = []

    async def read() -> str | None:
        line = next(lines, None)
        if line == "/memory":
            await settled(services)
            assert await services.assistant.learner.learn("console:ana")
        return line

    await ConsoleAdapter(services.assistant, services.turns, user="ana", read_line=read, write=out.append).run()
    listing = next(text for text in out if text.startswith("What I know about you"))
    assert "1. I speak Welsh" in listing and "2. I keep bees" in listing  # newest first, numbered
    assert "Deleted: I speak Welsh" in out
    assert any("Give the number" in text for text in out)
    insights = next(text for text in out if text.startswith("Conversations:"))
    assert "I keep bees" in insights and "I speak Welsh" not in insights and not insights.lstrip().startswith("{")
    await asyncio.sleep(0)
