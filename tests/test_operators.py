"""The operators' policy end to end: the real discord.py and slack-bolt against the local fakes, the real core and
storage (SQLite; PostgreSQL and Redis), a policy file that is written and reloaded as an operator would."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from adapters.discord import DiscordAdapter
from bot.config import Settings
from bot.wiring import Services, build_services
from core.entries import Incoming
from core.events import ChainMessage, MessageReceived, UserRef
from core.policy import Access, Facts, access_refusal
from tests.conftest import (
    REDIS_URL,
    eventually,
    fresh_postgres,
    make_settings,
    redis_namespace,
    running,
    settings_on,
    settled,
    shut,
)
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.discord_api import EPHEMERAL, FakeDiscord
from tests.fakes.slack_api import FakeSlackAPI
from tests.test_discord_e2e import general
from tests.test_slack_http import payload, send_command, send_event

MANAGE_GUILD = str(1 << 5)


@pytest_asyncio.fixture(params=["embedded", "served"])
async def settings(
    request: pytest.FixtureRequest, tmp_path: Path, fake_claude: FakeAnthropic
) -> AsyncIterator[Settings]:
    """Both storage set-ups, with a policy file (empty: today's behaviour) that each test rewrites."""
    path = tmp_path / "rapport.toml"
    path.write_text("")
    async with settings_on(request.param, tmp_path, fake_claude, RAPPORT_CONFIG=str(path)) as chosen:
        yield chosen


async def apply(services: Services, text: str) -> None:
    """What an operator does: edit the file; the watcher reloads it (here at once, as on SIGHUP)."""
    await asyncio.to_thread(Path(services.settings.rapport_config).write_text, text)
    assert services.policy_watcher is not None
    assert await services.policy_watcher.reload()
    assert services.gate.box.problem is None


async def kept_anywhere(services: Services, words: str, *, places: tuple[str, ...] = ()) -> list[str]:
    """Every table, spool file and short-term conversation that holds `words` (`places`: conversation keys to
    look in besides those the inbox knows): what a refused person wrote must be in none."""
    connection = services.database.connection()
    found = []
    columns = (
        ("inbox", "event"),
        ("inbox", "route"),
        ("interaction", "user_text"),
        ("memory", "text"),
        ("person_item", "text"),
    )
    for table, column in columns:
        rows = await connection.execute_query_dict(f"SELECT {column} AS v FROM {table}")  # noqa: S608 - fixed names
        if any(words.lower() in str(row["v"]).lower() for row in rows):
            found.append(table)
    spool = Path(services.settings.spool_dir or services.settings.data_dir / "spool")
    if await asyncio.to_thread(_in_files, spool, words):
        found.append("spool")
    for key in sorted({*await _conversations(services), *places}):
        if any(words in turn.text for turn in await services.short_term.recent(key, 100)):
            found.append(f"short-term {key}")
    return found


def _in_files(folder: Path, words: str) -> bool:
    return folder.exists() and any(words in f.read_text(errors="replace") for f in folder.rglob("*") if f.is_file())


async def _conversations(services: Services) -> list[str]:
    rows = await services.database.connection().execute_query_dict("SELECT event FROM inbox")
    keys = set()
    for row in rows:
        event = json.loads(row["event"])
        if event.get("type") == "message":
            keys.add(f"{event['user']['platform']}:{event['user'].get('scope', '')}:{event['conversation_id']}")
    return sorted(keys)


async def refusals(services: Services) -> list[dict[str, Any]]:
    rows = await services.database.connection().execute_query_dict(
        "SELECT user_key, platform, server, channel, reason FROM refusal ORDER BY id"
    )
    return [dict(row) for row in rows]


def mention(fake: FakeDiscord) -> dict[str, Any]:
    return {"mentions": [fake.bot]}


def to_bot(fake: FakeDiscord, text: str) -> str:
    return f"<@{fake.bot['id']}> {text}"


@pytest_asyncio.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    guild = fake.add_guild(channels=("general", "random"))
    fake.add_role(guild, "members")
    fake.add_role(guild, "muted")
    await fake.start()
    yield fake
    await fake.stop()


def role(fake: FakeDiscord, name: str) -> str:
    return next(r["id"] for r in fake.guilds[0]["roles"] if r["name"] == name)


def channel(fake: FakeDiscord, name: str) -> str:
    return next(c["id"] for c in fake.guilds[0]["channels"] if c["name"] == name)


# --- access ----------------------------------------------------------------------------------------------


async def test_a_blocked_user_gets_no_claude_call_nothing_kept_and_one_private_note(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    mallory = discord_fake.user(discord_fake.snowflake(), "Mallory")
    await apply(services, f'[access.block]\nusers = ["discord:{mallory["id"]}"]\n')
    here = general(discord_fake)
    await discord_fake.say(
        mallory, to_bot(discord_fake, "my secret plan is zanzibar"), channel_id=here, **mention(discord_fake)
    )
    map_file = [discord_fake.attachment("zanzibar-map.png")]  # its name and address are none of Rapport's either
    await discord_fake.say(
        mallory, to_bot(discord_fake, "zanzibar again"), channel_id=here, attachments=map_file, **mention(discord_fake)
    )
    await discord_fake.say(alice, to_bot(discord_fake, "hello there"), channel_id=here, **mention(discord_fake))
    await discord_fake.until(lambda: discord_fake.posted(here))
    await settled(services)

    assert len(fake_claude.requests) == 1 and "hello there" in json.dumps(fake_claude.requests[0]["messages"])
    assert await kept_anywhere(services, "zanzibar") == []
    assert {"inbox", "interaction", "memory"} <= set(await kept_anywhere(services, "hello there"))  # the check sees
    # One note, by DM, for two refused messages (never a public scolding in the channel).
    dm = discord_fake.dm_channel(mallory)
    assert discord_fake.shown(dm) == [services.gate.box.current.access.note]
    assert [post.body["content"] for post in discord_fake.posted(here)] == ["Noted: [Alice] hello there"]
    assert (
        await refusals(services)
        == [
            {
                "user_key": f"discord:{mallory['id']}",
                "platform": "discord",
                "server": f"discord:{discord_fake.guilds[0]['id']}",
                "channel": f"discord:{here}",
                "reason": "blocked_user",
            }
        ]
        * 2
    )
    assert 'rapport_refusals_total{reason="blocked_user"} 2.0' in services.metrics.render().decode()


async def test_a_role_allow_list_admits_its_members_and_a_blocked_role_or_channel_is_refused(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    members, muted = role(discord_fake, "members"), role(discord_fake, "muted")
    await apply(
        services,
        f'[access]\nnote = ""\n[access.allow]\nroles = ["discord:{members}"]\n'
        f'[access.block]\nroles = ["discord:{muted}"]\nchannels = ["discord:{channel(discord_fake, "random")}"]\n',
    )
    ann, bob, carol = (discord_fake.user(discord_fake.snowflake(), name) for name in ("Ann", "Bob", "Carol"))
    here, random = general(discord_fake), channel(discord_fake, "random")
    say = discord_fake.say
    await say(ann, to_bot(discord_fake, "ann asks"), channel_id=here, roles=[members], **mention(discord_fake))
    await say(bob, to_bot(discord_fake, "bob asks"), channel_id=here, **mention(discord_fake))  # no role: not allowed
    await say(
        carol, to_bot(discord_fake, "carol asks"), channel_id=here, roles=[members, muted], **mention(discord_fake)
    )
    await say(ann, to_bot(discord_fake, "ann in random"), channel_id=random, roles=[members], **mention(discord_fake))
    await say(ann, to_bot(discord_fake, "ann again"), channel_id=here, roles=[members], **mention(discord_fake))
    await discord_fake.until(lambda: len(discord_fake.posted(here)) == 2)
    await settled(services)

    asked = [json.dumps(request["messages"]) for request in fake_claude.requests]
    assert len(asked) == 2 and "ann asks" in asked[0] and "ann again" in asked[1]
    for words in ("bob asks", "carol asks", "ann in random"):
        assert await kept_anywhere(services, words, places=(f"discord::{random}", f"discord::{here}")) == []
    reasons = sorted(r["reason"] for r in await refusals(services))  # the three were screened concurrently
    assert reasons == ["blocked_place", "blocked_user", "not_allowed_user"]
    assert not discord_fake.posted(random) and not discord_fake.posted(discord_fake.dm_channel(bob))  # silence


async def test_dms_can_be_turned_off(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    await apply(services, '[access]\ndms = false\nnote = "I only answer in the server."\n')
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    await discord_fake.say(alice, "a private question", channel_id=dm)
    await discord_fake.until(lambda: discord_fake.shown(dm))
    await settled(services)
    assert discord_fake.shown(dm) == ["I only answer in the server."]
    assert not fake_claude.requests and await kept_anywhere(services, "private question") == []


# --- limits and budgets ------------------------------------------------------------------------------------


async def test_the_per_minute_limit_refuses_with_a_friendly_note_and_no_claude_call(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    await apply(services, "[limits]\nmessages_per_minute = 2\n")
    minute = 1_800_000_000 // 60 * 60 + 5  # a fixed time well inside one minute
    services.gate.clock = lambda: minute
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    for n in range(4):
        await discord_fake.say(alice, f"question {n}", channel_id=dm)
        await discord_fake.until(lambda n=n: len(discord_fake.shown(dm)) >= min(n + 1, 3))
    await settled(services)
    shown = discord_fake.shown(dm)
    assert shown[:2] == ["Noted: question 0", "Noted: question 1"]
    assert len(shown) == 3 and "2 messages a minute" in shown[2] and "in 55 seconds" in shown[2]  # once, not twice
    assert len(fake_claude.requests) == 2
    assert await kept_anywhere(services, "question 2") == [] and await kept_anywhere(services, "question 3") == []

    services.gate.clock = lambda: minute + 60  # the next minute
    await discord_fake.say(alice, "question 4", channel_id=dm)
    await discord_fake.until(lambda: len(discord_fake.shown(dm)) == 4)
    assert discord_fake.shown(dm)[3] == "Noted: question 4"


async def test_the_daily_budget_counts_answer_and_learning_tokens_refuses_once_spent_and_resets_at_midnight_utc(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    await apply(services, "[limits]\ntokens_per_day = 50\n")
    evening = datetime(2026, 12, 1, 23, 59, 0, tzinfo=UTC).timestamp()
    services.gate.clock = lambda: evening
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    user = f"discord:{alice['id']}"
    dm = discord_fake.dm_channel(alice)
    await discord_fake.say(alice, "first question", channel_id=dm)
    await discord_fake.until(lambda: len(discord_fake.shown(dm)) == 1)
    await settled(services)
    spent = sum(sum(usage.values()) for usage in fake_claude.usages)
    assert spent > 50  # one answer is over this small budget
    assert (await services.gate.month_of(user))["tokens"] == spent

    # Learning waits for the budget like answers do: no learning call while it is spent.
    assert not await services.assistant.learner.learn(user, quiet=True)
    assert not fake_claude.tool_requests

    await discord_fake.say(alice, "second question", channel_id=dm)
    await discord_fake.until(lambda: len(discord_fake.shown(dm)) == 2)
    note = discord_fake.shown(dm)[1]
    assert "today's limit" in note and "in 60 seconds" in note and "00:00 UTC" in note and "/forget" in note
    assert len(fake_claude.requests) == 1

    # /forget deletes memories, not usage: still refused (in silence now: the note was given this hour).
    await services.assistant.forget(user)
    await discord_fake.say(alice, "third question", channel_id=dm)
    await eventually(lambda: _refused_count(services, 2))
    await settled(services)
    assert len(fake_claude.requests) == 1 and (await services.gate.month_of(user))["tokens"] == spent

    services.gate.clock = lambda: evening + 120  # 00:01 UTC: a new day
    await discord_fake.say(alice, "fourth question", channel_id=dm)
    await discord_fake.until(lambda: len(discord_fake.shown(dm)) == 3)
    await settled(services)
    assert discord_fake.shown(dm)[2] == "Noted: fourth question" and len(discord_fake.shown(dm)) == 3


async def _refused_count(services: Services, count: int) -> bool:
    return len(await refusals(services)) >= count


async def test_a_server_budget_is_shared_by_its_members(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    await apply(services, '[access]\nnote = ""\n[limits]\nserver_tokens_per_day = 10\n')
    ann, bob = (discord_fake.user(discord_fake.snowflake(), name) for name in ("Ann", "Bob"))
    here = general(discord_fake)
    await discord_fake.say(ann, to_bot(discord_fake, "ann spends it"), channel_id=here, **mention(discord_fake))
    await discord_fake.until(lambda: len(discord_fake.posted(here)) == 1)
    await settled(services)
    await discord_fake.say(bob, to_bot(discord_fake, "bob too?"), channel_id=here, **mention(discord_fake))
    await discord_fake.until(lambda: discord_fake.shown(discord_fake.dm_channel(bob)))
    assert "today's limit of what I can do here" in discord_fake.shown(discord_fake.dm_channel(bob))[0]
    # Bob's own DM is no server's: answered.
    await discord_fake.say(bob, "in private then", channel_id=discord_fake.dm_channel(bob))
    await discord_fake.until(lambda: len(discord_fake.shown(discord_fake.dm_channel(bob))) == 2)
    assert len(fake_claude.requests) == 2


@pytest.mark.parametrize("store", ["redis", "database"])
async def test_two_replicas_share_the_counters(
    store: str, tmp_path: Path, fake_claude: FakeAnthropic, embedding_model: Any, chroma_server: str
) -> None:
    """Two processes on one PostgreSQL (and one Redis, when set: then the counters are there): the fourth message
    within a minute is refused whichever replica takes it."""
    path = tmp_path / "rapport.toml"
    path.write_text("[limits]\nmessages_per_minute = 3\n")
    async with fresh_postgres() as pg, redis_namespace() as prefix:
        shared: dict[str, Any] = {"DATABASE_URL": pg, "CHROMA_URL": chroma_server, "RAPPORT_CONFIG": str(path)}
        if store == "redis":
            shared |= {"REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix}
        replicas = [
            await build_services(make_settings(tmp_path / name, fake_claude, **shared), model=embedding_model)
            for name in ("a", "b")
        ]
        try:
            outcomes = []
            for n, replica in enumerate([*replicas, *replicas]):
                assert type(replica.gate._counters).__name__.lower().startswith(store)
                replica.gate.clock = lambda: 1_800_000_010
                event = MessageReceived(
                    user=UserRef(platform="discord", user_id="42"), text=f"hi {n}", conversation_id="7", private=True
                )
                outcomes.append(await replica.gate.screen(Incoming(key=f"discord:message:7:{n}", event=event)))
            assert [o is not None and "refused" not in o.route for o in outcomes] == [True, True, True, False]
        finally:
            await shut(*replicas)


async def test_a_failing_counter_store_lets_messages_through_and_says_so(
    tmp_path: Path, fake_claude: FakeAnthropic, embedding_model: Any
) -> None:
    """Redis down (a port nothing listens on): the limits cannot be checked, so the person is answered; the metric
    and /ready say that the counters are unavailable."""
    from tests.conftest import free_port

    path = tmp_path / "rapport.toml"
    path.write_text("[limits]\nmessages_per_minute = 1\n")
    settings = make_settings(
        tmp_path, fake_claude, RAPPORT_CONFIG=str(path), REDIS_URL=f"redis://127.0.0.1:{free_port()}"
    )
    services = await build_services(settings, model=embedding_model)
    try:
        for n in range(3):
            event = MessageReceived(
                user=UserRef(platform="slack", scope="T1", user_id="U1"),
                text=f"hi {n}",
                conversation_id="D1",
                private=True,
            )
            assert await services.gate.screen(Incoming(key=f"k{n}", event=event)) is not None
        assert 'rapport_errors_total{kind="usage_unchecked"} 3.0' in services.metrics.render().decode()
        _, degraded = await services.storage_problems()
        assert any(line.startswith("usage counters:") for line in degraded)
    finally:
        await services.close()


# --- persona and model per place ------------------------------------------------------------------------------


async def test_a_channel_persona_and_model_reach_that_channels_requests_only(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    server = discord_fake.guilds[0]["id"]
    random = channel(discord_fake, "random")
    await apply(
        services,
        f'[servers."discord:{server}"]\nname = "test-server"\npersona = "Answer in British English."\n'
        f'[channels."discord:{random}"]\npersona = "Talk like a pirate."\nmodel = "claude-haiku-5-5"\n',
    )
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    here = general(discord_fake)
    await discord_fake.say(alice, to_bot(discord_fake, "in general"), channel_id=here, **mention(discord_fake))
    await discord_fake.until(lambda: discord_fake.posted(here))
    await discord_fake.say(alice, to_bot(discord_fake, "in random"), channel_id=random, **mention(discord_fake))
    await discord_fake.until(lambda: discord_fake.posted(random))
    await discord_fake.say(alice, "in a DM", channel_id=discord_fake.dm_channel(alice))
    await discord_fake.until(lambda: discord_fake.posted(discord_fake.dm_channel(alice)))
    await settled(services)

    general_request, random_request, dm_request = fake_claude.requests
    system = [json.dumps(request["system"]) for request in fake_claude.requests]
    assert general_request["model"] == services.settings.claude_model == dm_request["model"]
    assert random_request["model"] == "claude-haiku-5-5"
    assert "British English" in system[0] and "pirate" not in system[0]
    assert "pirate" in system[1] and "British English" not in system[1]  # the most specific persona wins
    assert "pirate" not in system[2] and "British English" not in system[2]  # a DM is no server's
    metrics = services.metrics.render().decode()
    assert 'rapport_claude_cost_usd_total{kind="answer",model="claude-haiku-5-5",place="test-server"}' in metrics
    assert 'place="dm"' in metrics and str(alice["id"]) not in metrics


# --- the admin view -------------------------------------------------------------------------------------------


async def test_rapport_shows_settings_and_top_spenders_to_server_managers_only(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    await apply(services, '[limits]\ntokens_per_day = 100000\n[defaults]\npersona = "Be brief."\n')
    alice, boss = (discord_fake.user(discord_fake.snowflake(), name) for name in ("Alice", "Boss"))
    here = general(discord_fake)
    await discord_fake.say(alice, to_bot(discord_fake, "spend a little"), channel_id=here, **mention(discord_fake))
    await discord_fake.until(lambda: discord_fake.posted(here))
    await settled(services)

    denied = await discord_fake.slash(alice, "rapport", channel_id=here)
    await discord_fake.until(lambda: discord_fake.rest("POST", rf"/interactions/{denied['id']}/.+/callback"))
    (refusal,) = discord_fake.rest("POST", rf"/interactions/{denied['id']}/.+/callback")
    assert refusal.body["data"]["flags"] & EPHEMERAL and "manage this server" in refusal.body["data"]["content"]

    shown = await discord_fake.slash(boss, "rapport", channel_id=here, permissions=MANAGE_GUILD)
    token = shown["token"]
    await discord_fake.until(lambda: discord_fake.rest("POST", rf"/webhooks/\d+/{token}"))
    (report,) = discord_fake.rest("POST", rf"/webhooks/\d+/{token}")
    text = report.body["content"]
    assert report.body["flags"] & EPHEMERAL
    assert "tokens per day 100,000" in text and "Be brief." in text and services.settings.claude_model in text
    assert f"1. <@{alice['id']}>" in text and "rapport.toml" in text
    assert "sk-test" not in text  # never a secret


async def test_insights_show_the_persons_own_usage_this_month(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    await discord_fake.say(alice, "hello", channel_id=dm)
    await discord_fake.until(lambda: discord_fake.posted(dm))
    await settled(services)
    user = f"discord:{alice['id']}"
    insights = await services.assistant.insights(user)
    assert insights is not None
    usage = insights["usage"]
    answered = sum(sum(u.values()) for u in fake_claude.usages)
    assert usage["tokens"] == answered > 0
    assert usage["month"] == datetime.now(UTC).strftime("%Y-%m") and usage["cost_usd"] > 0

    # A learning call's tokens are the person's too (answers and learning share one budget).
    assert await services.assistant.learner.learn(user, quiet=True) and len(fake_claude.tool_requests) == 1
    learned = services.assistant.learner.tokens
    assert learned > 0 and (await services.gate.month_of(user))["tokens"] == answered + learned


# --- Slack ----------------------------------------------------------------------------------------------------


async def test_slack_a_blocked_workspace_member_is_told_ephemerally_and_nothing_is_kept(
    client: TestClient, slack_api: FakeSlackAPI, fake_claude: FakeAnthropic, services: Services
) -> None:
    await apply(services, '[access.block]\nusers = ["slack:T1:U123"]\n')
    mention = payload("app_mention")
    mention["event"]["text"] = "<@UBOT> remember the codeword albatross"
    await send_event(client, mention)
    await slack_api.wait_for(lambda: slack_api.called("chat.postEphemeral"))
    await settled(services)
    (note,) = slack_api.called("chat.postEphemeral")
    assert note["user"] == "U123" and note["text"] == services.gate.box.current.access.note
    assert not fake_claude.requests and await kept_anywhere(services, "albatross") == []
    assert not slack_api.posted()


async def test_slack_rapport_is_for_workspace_admins_only(
    client: TestClient, slack_api: FakeSlackAPI, services: Services
) -> None:
    command = dict(payload("command_insights"), command="/rapport")
    command["response_url"] = slack_api.response_url("denied")
    assert (await send_command(client, command)).status == 200
    await slack_api.wait_for(lambda: len(slack_api.responses) == 1)
    slack_api.admins.add(command["user_id"])
    command["response_url"] = slack_api.response_url("shown")
    assert (await send_command(client, command)).status == 200
    await slack_api.wait_for(lambda: len(slack_api.responses) == 2)
    said = dict(slack_api.responses)
    assert "Only workspace admins" in said["denied"]["text"]
    assert "*Policy*" in said["shown"]["text"] and "*Today*" in said["shown"]["text"]
    assert said["shown"]["response_type"] == "ephemeral"


# --- the file ---------------------------------------------------------------------------------------------------


def test_an_invalid_policy_file_stops_the_start_with_one_line_per_mistake(tmp_path: Path) -> None:
    path = tmp_path / "rapport.toml"
    path.write_text('[limits]\nmessages_per_minute = -1\n[access.allow]\nusers = ["bob"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAPPORT", "DISCORD", "SLACK"))}
    env |= {"RAPPORT_CONFIG": str(path), "ANTHROPIC_API_KEY": "sk-test-not-real"}
    done = subprocess.run(
        [sys.executable, "-m", "bot"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("rapport: rapport.toml: access.allow.users[0]")
    assert lines[1].startswith("rapport: rapport.toml: limits.messages_per_minute")


async def test_an_invalid_reload_keeps_the_last_good_policy_and_ready_says_so(services: Services) -> None:
    await apply(services, "[limits]\nmessages_per_minute = 5\n")
    await asyncio.to_thread(
        Path(services.settings.rapport_config).write_text, "[limits]\nmessages_per_minute = 'many'\n"
    )
    assert services.policy_watcher is not None
    assert not await services.policy_watcher.reload()
    assert services.gate.box.current.limits.messages_per_minute == 5
    _, degraded = await services.storage_problems()
    assert any(line.startswith("policy: rapport.toml is invalid") for line in degraded)


async def test_the_console_is_never_refused(services: Services) -> None:
    await apply(services, '[access]\ndms = false\n[access.allow]\nusers = ["discord:1"]\n')
    event = MessageReceived(
        user=UserRef(platform="console", user_id="me"), text="hi", conversation_id="c", private=True
    )
    incoming = Incoming(key="console:1", event=event)
    assert await services.gate.screen(incoming) is incoming


async def test_a_refused_message_is_answered_once_after_a_restart(
    settings: Settings, embedding_model: Any, discord_fake: FakeDiscord, fake_claude: FakeAnthropic
) -> None:
    """A refusal's note is an inbox entry like any reply: a process that stops before delivering it leaves it to
    the next, which delivers it once and asks Claude nothing."""
    first = await build_services(settings, model=embedding_model)
    await apply(first, '[access]\ndms = false\nnote = "Not in DMs, sorry."\n')
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    message = discord_fake.message(alice, "a question", channel_id=dm)
    event = MessageReceived(
        user=UserRef(platform="discord", user_id=alice["id"]), text="a question", conversation_id=dm, private=True
    )
    route = {"channel": dm, "message": message["id"], "guild": None, "deeper": None}
    screened = await first.gate.screen(Incoming(key=f"discord:message:{dm}:{message['id']}", event=event, route=route))
    assert screened is not None and screened.event.text == "" and screened.route["refused"] == "Not in DMs, sorry."
    await first.inbox.accept(screened)  # written down; the process stops before its turn runs
    await first.close()

    second = await build_services(settings, model=embedding_model)
    second.start()
    try:
        async with running(second, discord_fake) as adapter:
            await discord_fake.until(lambda: adapter.connected)
            await discord_fake.until(lambda: discord_fake.shown(dm) == ["Not in DMs, sorry."])
            await settled(second)
            await asyncio.sleep(0.3)
            assert discord_fake.shown(dm) == ["Not in DMs, sorry."] and not fake_claude.requests
    finally:
        await shut(second)


# --- what the review found -----------------------------------------------------------------------------------


def test_an_allow_list_constrains_only_the_platform_it_names_and_a_slack_dm_belongs_to_its_workspace() -> None:
    access = Access.model_validate({"allow": {"roles": ["discord:5"], "servers": ["slack:T1"]}})
    slack = Facts(user="slack:T1:U1", platform="slack", private=False, server="slack:T1", channels=("slack:C1",))
    assert access_refusal(access, slack) is None  # a Discord role list says nothing about Slack
    discord = Facts(user="discord:1", platform="discord", private=False, server="discord:9", channels=("discord:2",))
    assert access_refusal(access, discord).reason == "not_allowed_user"  # type: ignore[union-attr]
    other_workspace = Facts(user="slack:T9:U1", platform="slack", private=True, server="slack:T9")
    assert access_refusal(access, other_workspace).reason == "not_allowed_place"  # type: ignore[union-attr]
    assert access_refusal(access, Facts(user="slack:T1:U1", platform="slack", private=True, server="slack:T1")) is None


async def test_a_blocked_persons_words_quoted_in_a_reply_reach_no_prompt_and_no_store(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    alice, mallory = (discord_fake.user(discord_fake.snowflake(), name) for name in ("Alice", "Mallory"))
    await apply(services, f'[access]\nnote = ""\n[access.block]\nusers = ["discord:{mallory["id"]}"]\n')
    here = general(discord_fake)
    said = await discord_fake.say(mallory, "the vault code is 7734", channel_id=here)
    await discord_fake.say(
        alice, to_bot(discord_fake, "is that right?"), channel_id=here, reply_to=said, **mention(discord_fake)
    )
    await discord_fake.until(lambda: discord_fake.posted(here))
    await settled(services)
    assert "is that right?" in json.dumps(fake_claude.requests[0]["messages"])
    assert "7734" not in json.dumps(fake_claude.requests[0]) and await kept_anywhere(services, "7734") == []
    # The same reply to someone not blocked keeps the quote (the filter is what removed it).
    bob = discord_fake.user(discord_fake.snowflake(), "Bob")
    said = await discord_fake.say(bob, "the meeting is at 4711", channel_id=here)
    await discord_fake.say(
        alice, to_bot(discord_fake, "and that?"), channel_id=here, reply_to=said, **mention(discord_fake)
    )
    await discord_fake.until(lambda: len(discord_fake.posted(here)) == 2)
    assert "4711" in json.dumps(fake_claude.requests[1]["messages"])


def test_a_quoted_author_is_dropped_only_when_refused_by_name() -> None:
    from core.gate import _refused_by_name

    roles_only = Access.model_validate({"allow": {"roles": ["discord:5"]}})
    facts = Facts(user="discord:1", platform="discord", private=False, server="discord:9", channels=("discord:2",))
    assert not _refused_by_name(roles_only, facts)  # their roles are unknown here: kept
    named = Access.model_validate({"allow": {"users": ["discord:2"]}, "block": {"users": ["discord:3"]}})
    assert _refused_by_name(named, facts) and _refused_by_name(named, dataclasses.replace(facts, user="discord:3"))
    assert ChainMessage(author="x", text="y").author_id == ""


async def test_messages_waiting_when_the_budget_runs_out_get_no_claude_call(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    """Three messages accepted while under budget: the first answer spends it, so the other two are not answered
    (the budget is asked again before Claude is), and the person is told once."""
    await apply(services, "[limits]\ntokens_per_day = 50\n")
    fake_claude.latency = 0.5
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    for n in range(3):
        await discord_fake.say(alice, f"queued {n}", channel_id=dm)
    await discord_fake.until(lambda: len(discord_fake.shown(dm)) == 2)
    await settled(services)
    await asyncio.sleep(0.3)
    shown = discord_fake.shown(dm)
    # Which of the three is taken first is the gateway's and the inbox's business; one is answered, once.
    assert re.fullmatch(r"Noted: queued [0-2]", shown[0]) and "today's limit" in shown[1] and len(shown) == 2
    assert len(fake_claude.requests) == 1


async def test_an_answer_whose_first_delivery_fails_is_charged_once(
    rapport: DiscordAdapter, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, services: Services
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    discord_fake.refuse_posts = 2  # the streamed start and the first delivery are refused; the turn tries again
    await discord_fake.say(alice, "hello", channel_id=dm)
    await discord_fake.until(lambda: discord_fake.shown(dm) == ["Noted: hello"], timeout=20)
    await settled(services)
    [taken] = await services.database.connection().execute_query_dict("SELECT taken FROM inbox WHERE kind = 'message'")
    assert taken["taken"] >= 2, "the delivery was tried again, without asking Claude again"
    assert len(fake_claude.requests) == 1
    spent = sum(sum(usage.values()) for usage in fake_claude.usages)
    assert (await services.gate.month_of(f"discord:{alice['id']}"))["tokens"] == spent > 0


async def test_a_refusal_in_a_slack_thread_does_not_make_rapport_follow_that_thread(
    client: TestClient, slack_api: FakeSlackAPI, fake_claude: FakeAnthropic, services: Services
) -> None:
    await apply(services, '[access.block]\nusers = ["slack:T1:U456"]\n')
    await send_event(client, payload("app_mention_in_thread"))  # U456, blocked, calls Rapport into a thread
    await slack_api.wait_for(lambda: slack_api.called("chat.postEphemeral"))
    follow_up = payload("message_thread_reply")
    follow_up["event"] |= {"thread_ts": "1712345600.000200", "ts": "1712345950.000600", "event_ts": "1712345950.000600"}
    follow_up["event_id"] = "EvFollowUp1"
    await send_event(client, follow_up)  # U123, allowed, without a mention
    await settled(services)
    assert not fake_claude.requests and not slack_api.posted()
    assert not await services.turns.knows_thread("slack", "C1", "1712345600.000200")
