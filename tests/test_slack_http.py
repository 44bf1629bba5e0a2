"""Slack in HTTP mode: signed requests to the real handler on the worker's aiohttp app, the Web API a local fake.

Slack request → bolt (signature, ack) → adapter → core → fake Claude → adapter → fake Slack Web API.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from slack_sdk.signature import SignatureVerifier

from adapters.slack import SlackAdapter, SlackConfig
from adapters.slack.blocks import FORGET_CANCEL, FORGET_CONFIRM, FORGOTTEN, KEPT
from adapters.slack.delivery import THINKING
from bot.wiring import Services
from core.assistant import LEARNING_PAUSED, LEARNING_RESUMED
from tests.conftest import SLACK_SECRET as SECRET
from tests.conftest import eventually, settled
from tests.fakes.anthropic_api import FakeAnthropic, Say
from tests.fakes.slack_api import FakeSlackAPI

FIXTURES = Path(__file__).parent / "fixtures" / "slack"
ASKER = "slack:T1:U123"
MENTION_TS = "1712345678.000100"


def payload(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"payload_{name}.json").read_text())
    return data


def signature_headers(body: str, *, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    """What Slack sends: v0=HMAC-SHA256(secret, "v0:{timestamp}:{body}"), built with slack_sdk's own verifier."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    assert signature is not None
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}


async def post(
    client: TestClient, body: str, *, content_type: str = "application/json", retry: int | None = None, **signing: Any
) -> ClientResponse:
    headers = {"Content-Type": content_type, **signature_headers(body, **signing)}
    if retry is not None:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    return await client.post("/slack/events", data=body.encode(), headers=headers)


async def send_event(client: TestClient, body: dict[str, Any], **kwargs: Any) -> ClientResponse:
    response = await post(client, json.dumps(body), **kwargs)
    assert response.status == 200, await response.text()
    return response


async def send_command(client: TestClient, body: dict[str, Any]) -> ClientResponse:
    return await post(client, urlencode(body), content_type="application/x-www-form-urlencoded")


async def send_action(client: TestClient, body: dict[str, Any]) -> ClientResponse:
    form = urlencode({"payload": json.dumps(body)})
    return await post(client, form, content_type="application/x-www-form-urlencoded")


def answers(api: FakeSlackAPI) -> list[dict[str, Any]]:
    """The answers as people see them: what replaced the placeholders, the messages after them, finished streams."""
    return api.replied()


async def answered(api: FakeSlackAPI, services: Services, count: int = 1) -> list[dict[str, Any]]:
    """The answers once `count` of them are there and the turns are through (a DM's reply grows by edits)."""
    await api.wait_for(lambda: len(answers(api)) >= count)
    await settled(services)
    return answers(api)


async def satisfaction(services: Services) -> float | None:
    insights = await services.assistant.insights(ASKER)
    assert insights is not None
    value: float | None = insights["average_satisfaction"]
    return value


# --- the handshake and bad input ---------------------------------------------------------------------


async def test_url_verification_is_answered(client: TestClient) -> None:
    response = await send_event(client, payload("url_verification"))
    assert (await response.json())["challenge"] == payload("url_verification")["challenge"]


async def test_a_bad_signature_is_refused(
    client: TestClient, slack_api: FakeSlackAPI, fake_claude: FakeAnthropic
) -> None:
    body = json.dumps(payload("app_mention"))
    refused = [
        await post(client, body, secret="not-the-secret"),
        await post(client, body, timestamp=int(time.time()) - 10 * 60),  # stale: a replay
        await client.post("/slack/events", data=body, headers={"Content-Type": "application/json"}),
        await client.post(
            "/slack/events", data=body, headers={"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"}
        ),
        await post(client, "{not json", secret="not-the-secret"),
    ]
    assert [response.status for response in refused] == [401] * len(refused)
    await asyncio.sleep(0)
    assert not slack_api.posted() and not fake_claude.requests


async def test_malformed_payloads_get_an_error_status_not_a_crash(client: TestClient, slack_api: FakeSlackAPI) -> None:
    no_event_id = payload("app_mention")
    del no_event_id["event_id"]
    no_user = payload("message_im")
    del no_user["event"]["user"]
    statuses = [
        (await post(client, "{not json")).status,
        (await post(client, b"\xff\xfe".decode("latin-1"))).status,
        (await post(client, json.dumps({"type": "event_callback", "event": "not an object"}))).status,
        (await post(client, json.dumps(no_event_id))).status,
        (await post(client, json.dumps(no_user))).status,
    ]
    assert all(400 <= status < 500 for status in statuses), statuses
    assert statuses[0] == 400 and statuses[3] == 400 and statuses[4] == 400
    assert (await client.get("/health")).status == 200
    assert not slack_api.posted()


# --- when it answers ---------------------------------------------------------------------------------


async def test_a_mention_is_answered_in_a_thread_and_acknowledged_first(
    client: TestClient, slack_api: FakeSlackAPI, fake_claude: FakeAnthropic, services: Services
) -> None:
    fake_claude.latency = 1.0
    started = time.monotonic()
    await send_event(client, payload("app_mention"))
    assert time.monotonic() - started < 3.0
    assert not slack_api.called("chat.startStream")  # acknowledged before the answer exists

    [answer] = await answered(slack_api, services)
    [stream] = slack_api.called("chat.startStream")  # a reply in the thread, streamed: no placeholder
    assert {k: stream[k] for k in ("channel", "thread_ts")} == {"channel": "C1", "thread_ts": MENTION_TS}
    assert not slack_api.called("chat.postMessage")
    assert answer["metadata"]["event_type"] == "rapport_reply", "named, so a resumed turn finds it"
    assert answer["channel"] == "C1" and answer["ts"] == "1800000000.000001" and answer["thread_ts"] == MENTION_TS
    assert answer["text"].startswith("Noted: [Ada] what's a good book about jazz & improvisation?")  # Markdown
    prompt = fake_claude.prompt_text()
    assert "<@UBOT>" not in prompt and "[Ada] what's a good book about jazz & improvisation?" in prompt
    assert slack_api.called("users.info") == [{"user": "U123"}]


async def test_follow_ups_in_its_thread_are_answered_without_a_mention(
    client: TestClient, slack_api: FakeSlackAPI, fake_claude: FakeAnthropic, services: Services
) -> None:
    await send_event(client, payload("app_mention"))
    await answered(slack_api, services)
    await send_event(client, payload("message_mention"))  # the same mention, as a message event: not again
    await send_event(client, payload("message_thread_reply"))
    other_thread = payload("message_thread_reply")
    other_thread["event_id"] = "Ev01ELSEWHERE"
    other_thread["event"] |= {"thread_ts": "1712300000.000001", "ts": "1712345950.000001"}
    await send_event(client, other_thread)  # a thread Rapport is not in
    await send_event(client, payload("message_channel"))  # a channel message without a mention

    first, follow_up = await answered(slack_api, services, 2)
    assert [m["thread_ts"] for m in (first, follow_up)] == [MENTION_TS, MENTION_TS]
    assert "and one for beginners?" in follow_up["text"]
    assert "and one for beginners?" in fake_claude.prompt_text()
    assert "jazz" in fake_claude.prompt_text()  # the thread's earlier exchange is in its short-term memory
    assert len(fake_claude.requests) == 2


async def test_a_mention_inside_someone_elses_thread_reads_the_thread(
    client: TestClient, slack_api: FakeSlackAPI, fake_claude: FakeAnthropic, services: Services
) -> None:
    slack_api.replies[("C1", "1712345600.000200")] = [
        {
            "type": "message",
            "user": "U123",
            "text": "which saxophonist should I start with?",
            "ts": "1712345600.000200",
        },
        {"type": "message", "user": "U456", "text": "what do you think, <@UBOT|rapport>?", "ts": "1712345700.000300"},
    ]
    await send_event(client, payload("app_mention_in_thread"))
    [answer] = await answered(slack_api, services)
    assert answer["thread_ts"] == "1712345600.000200"
    assert "[Ada] which saxophonist should I start with?" in fake_claude.prompt_text()


async def test_a_dm_is_answered_directly(client: TestClient, slack_api: FakeSlackAPI, services: Services) -> None:
    await send_event(client, payload("message_im"))
    [answer] = await answered(slack_api, services)
    [placeholder] = slack_api.called("chat.postMessage")
    assert placeholder["text"] == THINKING and "thread_ts" not in placeholder  # at the top level of the DM
    assert answer["channel"] == "D1" and "modal" in answer["text"]
    await settled(services)  # storing is the entry's job, just behind the answer
    insights = await services.assistant.insights(ASKER)
    assert insights is not None and insights["total_interactions"] == 1


async def test_its_own_and_other_bots_messages_edits_and_deletions_are_ignored(
    client: TestClient, slack_api: FakeSlackAPI, fake_claude: FakeAnthropic, adapter: SlackAdapter, services: Services
) -> None:
    for name in ("message_own", "message_bot", "message_changed", "message_deleted", "message_channel"):
        await send_event(client, payload(name))
    await settled(services)
    assert not slack_api.posted() and not fake_claude.requests


async def test_a_retried_event_is_answered_once(
    client: TestClient, slack_api: FakeSlackAPI, fake_claude: FakeAnthropic, adapter: SlackAdapter, services: Services
) -> None:
    fake_claude.latency = 0.5
    await send_event(client, payload("app_mention"))
    await send_event(client, payload("app_mention"), retry=1)  # Slack did not see the first ack in time
    await answered(slack_api, services)
    await send_event(client, payload("app_mention"), retry=2)  # and once more, after the answer
    await settled(services)
    assert len(slack_api.called("chat.startStream")) == 1 and len(slack_api.called("chat.stopStream")) == 1
    assert not slack_api.called("chat.postMessage") and len(answers(slack_api)) == 1
    assert len(fake_claude.requests) == 1


# --- how it answers ----------------------------------------------------------------------------------


async def test_a_long_answer_is_split_into_messages_in_the_thread(
    client: TestClient, slack_api: FakeSlackAPI, fake_claude: FakeAnthropic, services: Services, adapter: SlackAdapter
) -> None:
    sections = [f"## Part {i}\n\n" + f"This is **sentence** {i}. " * 60 for i in range(8)]
    code = "```python\n" + "\n".join(f"print({i})" for i in range(300)) + "\n```"
    # Streamed in pieces with a breath between them, as Claude does: the stream opens before the answer is whole.
    fake_claude.script.append(Say("\n\n".join(sections) + "\n\n" + code + "\n\nThe end.", pause=0.001))
    await send_event(client, payload("app_mention"))
    await slack_api.wait_for(lambda: any("The end." in a.get("text", "") for a in answers(slack_api)))
    await settled(services)
    chunks = answers(slack_api)
    assert len(chunks) >= 3
    first, *rest = chunks
    [stream] = slack_api.called("chat.startStream")
    assert first["text"].startswith("## Part 0") and len(first["text"]) <= 12_000, "streamed, as Markdown"
    assert all(args["thread_ts"] == MENTION_TS for args in chunks)
    assert all(len(args["text"]) <= 3000 for args in rest), "past one stream's limit, in messages after it"
    assert all(args["text"].count("```") % 2 == 0 for args in chunks)
    text = "".join(args["text"] for args in chunks)
    assert all(f"Part {i}" in text for i in range(8)) and all(f"print({i})" in text for i in range(300))
    # every part points back at the interaction: a reaction on the last one is feedback too
    await settled(services)  # the parts are linked to the interaction once all are posted
    last = payload("reaction_added")
    last["event"]["item"]["ts"] = slack_api.results("chat.postMessage")[-1]["ts"]
    await send_event(client, last)
    await eventually(lambda: _satisfaction_is(services, 1.0))


async def _satisfaction_is(services: Services, value: float | None) -> bool:
    return await satisfaction(services) == value


# --- feedback and commands ---------------------------------------------------------------------------


async def test_a_reaction_by_the_asker_is_feedback_and_removing_it_undoes_it(
    client: TestClient, slack_api: FakeSlackAPI, services: Services, adapter: SlackAdapter
) -> None:
    await send_event(client, payload("app_mention"))
    [answer] = await answered(slack_api, services)
    await settled(services)  # a person reacts to what they see: after the answer is fully delivered
    assert payload("reaction_added")["event"]["item"]["ts"] == answer["ts"]

    by_someone_else = copy.deepcopy(payload("reaction_added"))
    by_someone_else["event_id"] = "Ev01OTHERS"
    by_someone_else["event"]["user"] = "U456"
    await send_event(client, by_someone_else)
    await send_event(client, payload("reaction_added"))
    await eventually(lambda: _satisfaction_is(services, 1.0))

    await send_event(client, payload("reaction_removed"))
    await eventually(lambda: _satisfaction_is(services, None))


async def test_insights_are_answered_ephemerally(
    client: TestClient, slack_api: FakeSlackAPI, services: Services
) -> None:
    await send_event(client, payload("message_im"))
    await answered(slack_api, services)
    await settled(services)
    command = dict(payload("command_insights"), response_url=slack_api.response_url("insights"))
    response = await send_command(client, command)
    assert response.status == 200 and not await response.text()  # acknowledged at once, with nothing shown
    await slack_api.wait_for(lambda: bool(slack_api.responses))
    [(name, message)] = slack_api.responses
    assert name == "insights" and message["response_type"] == "ephemeral"
    assert message["blocks"][0]["type"] == "header"
    assert "*Conversations*\n1" in json.loads(json.dumps(message["blocks"][1]))["fields"][0]["text"]


async def test_forget_asks_first_then_deletes_everything(
    client: TestClient, slack_api: FakeSlackAPI, services: Services
) -> None:
    await send_event(client, payload("message_im"))
    await answered(slack_api, services)
    await settled(services)
    assert await services.assistant.insights(ASKER) is not None

    command = dict(payload("command_insights"), command="/forget", response_url=slack_api.response_url("forget"))
    response = await send_command(client, command)
    assert response.status == 200
    asked = await response.json()
    assert asked["response_type"] == "ephemeral"
    assert [e["action_id"] for e in asked["blocks"][-1]["elements"]] == [FORGET_CONFIRM, FORGET_CANCEL]

    keep = payload("block_actions_forget")
    keep["actions"][0]["action_id"] = FORGET_CANCEL
    keep["response_url"] = slack_api.response_url("keep")
    assert (await send_action(client, keep)).status == 200
    confirm = dict(payload("block_actions_forget"), response_url=slack_api.response_url("confirm"))
    assert (await send_action(client, confirm)).status == 200
    await slack_api.wait_for(lambda: len(slack_api.responses) == 2)
    said = dict(slack_api.responses)
    assert said["keep"]["text"] == KEPT and said["confirm"]["text"] == FORGOTTEN
    assert said["confirm"]["replace_original"] is True
    assert await services.assistant.insights(ASKER) is None


# --- lifecycle ---------------------------------------------------------------------------------------


async def test_ready_reports_slack(client: TestClient, adapter: SlackAdapter) -> None:
    assert adapter.connected and adapter.problem is None and not adapter.socket_mode
    response = await client.get("/ready")
    assert response.status == 200 and "slack" in (await response.json())["adapters"]


async def test_a_rejected_token_shows_in_ready(services: Services, slack_api: FakeSlackAPI) -> None:
    slack_api.errors["auth.test"] = "invalid_auth"
    config = SlackConfig(bot_token="xoxb-revoked", signing_secret=SECRET, api_url=slack_api.url)
    slack = SlackAdapter(services.assistant, services.turns, config)
    await slack.start()
    try:
        assert not slack.connected
        assert slack.problem is not None and "invalid_auth" in slack.problem and "SLACK_BOT_TOKEN" in slack.problem
    finally:
        await slack.stop()


async def test_shutdown_refuses_new_events_and_still_delivers_answers_under_way(
    client: TestClient, adapter: SlackAdapter, slack_api: FakeSlackAPI, fake_claude: FakeAnthropic, services: Services
) -> None:
    fake_claude.latency = 1.0
    await send_event(client, payload("message_im"))
    await adapter.stop_taking()
    assert not adapter.connected and adapter.problem == "stopped"
    response = await post(client, json.dumps(payload("app_mention")))
    assert response.status == 503  # Slack delivers it again, to a replica that is up
    await settled(services)
    [answer] = answers(slack_api)
    assert answer["channel"] == "D1" and len(fake_claude.requests) == 1
    await adapter.stop()


def test_it_needs_a_way_to_receive_events(services: Services) -> None:
    with pytest.raises(ValueError, match="SLACK_APP_TOKEN .* or SLACK_SIGNING_SECRET"):
        SlackAdapter(services.assistant, services.turns, SlackConfig(bot_token="xoxb-x"))


async def test_slash_learning_pauses_and_resumes_learning_ephemerally(
    client: TestClient, slack_api: FakeSlackAPI, services: Services
) -> None:
    said = []
    for text in ("pause", "resume", "sideways", "PAUSE "):
        response = await send_command(client, dict(payload("command_insights"), command="/learning", text=text))
        assert response.status == 200
        body = await response.json()
        assert body["response_type"] == "ephemeral"
        said.append(body["text"])
        if text == "pause":
            assert await services.records.is_paused(ASKER)
        if text == "resume":
            assert not await services.records.is_paused(ASKER)
    assert said[:2] == [LEARNING_PAUSED, LEARNING_RESUMED]
    assert "/learning pause" in said[2], "anything else: how to use it"
    assert said[3] == LEARNING_PAUSED and await services.records.is_paused(ASKER)
