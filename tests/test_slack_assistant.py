"""Slack's assistant pane, with the real slack-bolt (its AsyncAssistant) and slack_sdk against the local fakes: signed
requests in HTTP mode, the fake Web API's assistant.threads.* methods, the fake Claude.

Opening a thread → a greeting and suggested prompts (shaped by the person's own interests); a message there → the
thread's status while Rapport works, the answer in the thread, its title once; and what the pane's middleware would
otherwise take from the rest of the adapter (edits in DM threads, events no listener is for) still works.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient
from slack_bolt.request.payload_utils import is_other_message_sub_event_in_assistant_thread

from adapters.slack.assistant_view import GREETING, STARTERS, STATUS, suggested_prompts, thread_title
from adapters.slack.translate import message_key
from bot.config import Settings
from bot.wiring import Services
from core.entries import interaction_id_for
from core.ports import InboxFull
from tests.conftest import eventually, settings_on, settled
from tests.fakes.anthropic_api import FakeAnthropic, Say
from tests.fakes.slack_api import FakeSlackAPI
from tests.test_slack_http import payload, post, send_event

# Adapter behaviour that does not depend on the store runs on the embedded set-up only (the suite's time is
# bounded); what a store could change (durability, audiences) runs on both.
EMBEDDED_ONLY = pytest.mark.parametrize("settings", ["embedded"], indirect=True)


THREAD = "1712346000.000100"  # the pane's thread (payload_assistant_thread_started.json)
FIRST = "1712346010.000300"  # the first message in it (payload_message_assistant_thread.json)
ASKED = "What should I cook tonight with leeks and a lemon?"


def _interested(body: dict[str, Any]) -> dict[str, Any]:
    """A learning model that hears an interest in what someone says they love."""
    said = re.findall(r"^(E\d+) \([^)]*\) they said: (.*)$", body["messages"][0]["content"], re.MULTILINE)
    return {
        "changes": [
            {"action": "add", "kind": "interest", "text": "loves jazz piano", "about": "jazz piano", "sources": [ref]}
            for ref, words in said
            if "love" in words
        ]
    }


@pytest_asyncio.fixture(params=["embedded", "served"])
async def settings(
    request: pytest.FixtureRequest, tmp_path: Path, fake_claude: FakeAnthropic
) -> AsyncIterator[Settings]:
    """Learning is started by the test that needs it, so that no background sweep races it."""
    fake_claude.tool_default = _interested
    async with settings_on(request.param, tmp_path, fake_claude, LEARNING="false") as chosen:
        yield chosen


def opened(user: str = "U123", channel: str = "D1", thread: str = THREAD, event_id: str = "Ev01PANE") -> dict[str, Any]:
    body = payload("assistant_thread_started")
    body["event_id"] = event_id
    body["event"]["assistant_thread"] |= {"user_id": user, "channel_id": channel, "thread_ts": thread}
    return body


def in_pane(text: str = ASKED, ts: str = FIRST, event_id: str = "Ev01PANEMSG") -> dict[str, Any]:
    body = payload("message_assistant_thread")
    body["event_id"] = event_id
    body["event"] |= {"text": text, "ts": ts, "event_ts": ts}
    return body


def prompts_for(api: FakeSlackAPI, channel: str) -> list[dict[str, str]]:
    [call] = [c for c in api.called("assistant.threads.setSuggestedPrompts") if c["channel_id"] == channel]
    prompts: list[dict[str, str]] = call["prompts"]
    return prompts


def answers_in(api: FakeSlackAPI, thread: str) -> list[dict[str, Any]]:
    """Rapport's finished replies in the thread, without its greeting."""
    return [m for m in api.replied() if m.get("thread_ts") == thread and m["text"] != GREETING]


def index_of(api: FakeSlackAPI, method: str) -> int:
    return next(i for i, call in enumerate(api.calls) if call.method == method)


# --- opening a thread --------------------------------------------------------------------------------


@EMBEDDED_ONLY
async def test_a_new_thread_gets_a_greeting_and_the_general_prompts_for_someone_new(
    client: TestClient, slack_api: FakeSlackAPI, services: Services
) -> None:
    response = await post(client, json.dumps(opened()))
    assert response.status == 200
    await slack_api.wait_for(lambda: bool(slack_api.called("assistant.threads.setSuggestedPrompts")))
    [greeting] = slack_api.called("chat.postMessage")
    assert greeting["text"] == GREETING and (greeting["channel"], greeting["thread_ts"]) == ("D1", THREAD)
    [call] = slack_api.called("assistant.threads.setSuggestedPrompts")
    assert call["thread_ts"] == THREAD and call["title"]
    assert prompts_for(slack_api, "D1") == list(STARTERS)


async def test_the_prompts_come_from_the_persons_own_interests_and_never_reach_anyone_else(
    client: TestClient, slack_api: FakeSlackAPI, services: Services
) -> None:
    said = payload("message_im")
    said["event"]["text"] = "I love jazz piano, Bill Evans above all"
    await send_event(client, said)
    await slack_api.wait_for(lambda: bool(slack_api.replied()))
    await settled(services)
    assert await services.assistant.learner.learn("slack:T1:U123")
    assert await services.assistant.interests("slack:T1:U123") == ["jazz piano", "music"]

    await send_event(client, opened())
    await send_event(client, opened(user="U456", channel="D2", event_id="Ev02PANE"))  # someone Rapport never met
    await slack_api.wait_for(lambda: len(slack_api.called("assistant.threads.setSuggestedPrompts")) == 2)
    ada, grace = prompts_for(slack_api, "D1"), prompts_for(slack_api, "D2")
    assert [p["title"] for p in ada[:2]] == ["What's new in jazz piano?", "What's new in music?"]
    assert ada[2:] == list(STARTERS[:2]) and len(ada) == 4
    assert grace == list(STARTERS) and grace != ada
    assert "jazz" not in json.dumps(grace)


def test_prompts_and_titles_stay_short() -> None:
    long_interest = "the history of twentieth-century chamber music in central Europe and beyond"
    [prompt, *_] = suggested_prompts([long_interest])
    assert len(prompt["title"]) < 60 and prompt["title"].endswith("…?")
    assert thread_title("\n  What should I cook tonight?\nI have leeks") == "What should I cook tonight?"
    assert len(thread_title("word " * 40)) <= 61 and thread_title("") == "A conversation with Rapport"


# --- a message in the thread -------------------------------------------------------------------------


async def test_a_message_in_the_thread_shows_a_status_then_is_answered_there_and_names_the_thread_once(
    client: TestClient, slack_api: FakeSlackAPI, fake_claude: FakeAnthropic, services: Services
) -> None:
    # the thread's parent is Slack's own (subtype assistant_app_thread): never part of what was said
    slack_api.replies[("D1", THREAD)] = [
        {"type": "message", "subtype": "assistant_app_thread", "user": "UBOT", "text": "New chat", "ts": THREAD}
    ]
    await send_event(client, opened())
    await slack_api.wait_for(lambda: bool(slack_api.called("assistant.threads.setSuggestedPrompts")))
    await send_event(client, in_pane())
    await slack_api.wait_for(lambda: len(answers_in(slack_api, THREAD)) == 1)
    await settled(services)

    [status] = slack_api.called("assistant.threads.setStatus")
    assert (status["channel_id"], status["thread_ts"], status["status"]) == ("D1", THREAD, STATUS)
    assert status["loading_messages"], "the pane cycles through these while Rapport works"
    assert index_of(slack_api, "assistant.threads.setStatus") < index_of(slack_api, "chat.startStream")
    [answer] = answers_in(slack_api, THREAD)
    assert answer["channel"] == "D1" and "leeks and a lemon" in answer["text"]
    assert not slack_api.statuses, "the reply ends the status"
    [title] = slack_api.called("assistant.threads.setTitle")
    assert (title["channel_id"], title["thread_ts"], title["title"]) == ("D1", THREAD, ASKED)
    first_prompt = fake_claude.prompt_text(0)
    assert "I'm Rapport" in first_prompt, "the thread so far (its greeting) was read"
    assert "New chat" not in first_prompt

    await send_event(client, in_pane("And a dessert to go with it?", ts="1712346020.000400", event_id="Ev01PANE2"))
    await slack_api.wait_for(lambda: len(answers_in(slack_api, THREAD)) == 2)
    await settled(services)
    assert len(slack_api.called("assistant.threads.setStatus")) == 2
    assert len(slack_api.called("assistant.threads.setTitle")) == 1, "named once, from its first message"
    assert len(slack_api.called("conversations.replies")) == 1, "then the thread is Rapport's own memory"
    second = json.dumps(fake_claude.requests[1]["messages"])
    assert "leeks and a lemon" in second and "Noted: What should I cook" in second, second
    assert "And a dessert" in second


@EMBEDDED_ONLY
async def test_the_status_is_cleared_when_the_answer_cannot_be_posted_and_the_answer_follows_later(
    client: TestClient, slack_api: FakeSlackAPI, services: Services
) -> None:
    slack_api.errors |= {"chat.startStream": "fatal_error", "chat.postMessage": "fatal_error"}
    await send_event(client, in_pane())

    def statuses() -> list[str]:
        return [call["status"] for call in slack_api.called("assistant.threads.setStatus")]

    await slack_api.wait_for(lambda: statuses() == [STATUS, ""])
    assert not slack_api.statuses
    slack_api.errors.clear()  # Slack is back: the turn tries again (Claude is not asked again)
    await slack_api.wait_for(lambda: len(answers_in(slack_api, THREAD)) == 1, timeout=20)
    await settled(services)


async def test_a_resumed_answer_that_only_edits_what_was_shown_still_ends_the_status(
    client: TestClient, slack_api: FakeSlackAPI, fake_claude: FakeAnthropic, services: Services
) -> None:
    """The first attempt's stream starts, then Slack fails; the turn taken again edits that message into the whole
    answer (no new post, which is what ends a status on Slack's side), so Rapport ends the status itself (a turn
    taken over after a crash sets it again first)."""
    fake_claude.script.append(Say("Leeks, lemon and thyme make a lovely soup. " * 8, pause=0.01))  # in pieces
    slack_api.errors |= {"chat.appendStream": "fatal_error", "chat.stopStream": "fatal_error"}
    await send_event(client, in_pane())

    def statuses() -> list[str]:
        return [call["status"] for call in slack_api.called("assistant.threads.setStatus")]

    await slack_api.wait_for(lambda: statuses() == [STATUS, ""])  # the stream began, then could not be finished
    slack_api.errors.clear()
    await slack_api.wait_for(lambda: bool(slack_api.called("chat.update")), timeout=20)
    await settled(services)
    assert len(slack_api.called("chat.startStream")) == 1 and not slack_api.called("chat.postMessage")
    assert statuses() == [STATUS, "", ""]
    last_status = max(i for i, call in enumerate(slack_api.calls) if call.method == "assistant.threads.setStatus")
    assert last_status > index_of(slack_api, "chat.update"), "ended by Rapport after the edit that finished it"
    assert not slack_api.statuses, "the status ends with the answer"


async def test_a_message_the_inbox_cannot_keep_gets_503_through_the_assistant_listener(
    client: TestClient, slack_api: FakeSlackAPI, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def full(incoming: Any) -> Any:
        raise InboxFull("spool full")

    monkeypatch.setattr(services.turns, "accept", full)
    response = await post(client, json.dumps(in_pane()))
    assert response.status == 503, "bolt's automatic acknowledgement keeps the listener's answer"
    assert not slack_api.called("assistant.threads.setStatus")


# --- what the pane's middleware must leave to the rest of the adapter ----------------------------------


@EMBEDDED_ONLY
async def test_an_edit_in_a_dm_thread_still_reaches_the_change_handling(
    client: TestClient, slack_api: FakeSlackAPI, services: Services
) -> None:
    await send_event(client, in_pane())
    await slack_api.wait_for(lambda: len(answers_in(slack_api, THREAD)) == 1)
    await settled(services)
    kept = interaction_id_for(message_key("T1", "D1", FIRST))
    assert await services.records.said(kept) == ("slack:T1:U123", ASKED)

    edited = copy.deepcopy(payload("message_changed"))
    edited["event_id"] = "Ev01PANEEDIT"
    edited["event"]["message"] |= {"text": "What should I cook tonight with leeks?", "ts": FIRST, "thread_ts": THREAD}
    edited["event"]["previous_message"] |= {"text": ASKED, "ts": FIRST, "thread_ts": THREAD}
    assert is_other_message_sub_event_in_assistant_thread(edited), "what bolt's Assistant would acknowledge unheard"
    await send_event(client, edited)

    async def changed() -> bool:
        return await services.records.said(kept) == ("slack:T1:U123", "What should I cook tonight with leeks?")

    await eventually(changed)
    await settled(services)


@EMBEDDED_ONLY
async def test_an_event_rapport_does_not_use_is_acknowledged_in_time(
    client: TestClient, slack_api: FakeSlackAPI, fake_claude: FakeAnthropic
) -> None:
    unused = copy.deepcopy(payload("message_im"))
    unused["event_id"] = "Ev01EMOJI"
    unused["event"] = {"type": "emoji_changed", "subtype": "add", "name": "partyparrot", "event_ts": "1712346100.0001"}
    assert (await post(client, json.dumps(unused))).status == 200  # bolt alone: 404, and Slack retries
    moved = await post(client, json.dumps(payload("assistant_thread_context_changed")))
    assert moved.status == 200
    assert {call.method for call in slack_api.calls} == {"auth.test"}, "nothing saved, nothing looked up"
    assert not fake_claude.requests


def test_the_manifest_turns_on_the_assistant_pane_with_its_scope_and_events() -> None:
    yaml = pytest.importorskip("yaml")
    manifest = yaml.safe_load((Path(__file__).parent.parent / "slack-manifest.yml").read_text())
    view = manifest["features"]["assistant_view"]
    assert view["assistant_description"] and 1 <= len(view["suggested_prompts"]) <= 4
    assert all(p["title"] and p["message"] for p in view["suggested_prompts"])
    assert "assistant:write" in manifest["oauth_config"]["scopes"]["bot"]
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"assistant_thread_started", "assistant_thread_context_changed", "message.im"} <= events
