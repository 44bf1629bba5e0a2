"""Slack over Socket Mode: the real slack_sdk client connects to a local fake socket server and acknowledges."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from adapters.slack import SlackAdapter, SlackConfig
from adapters.slack.blocks import FORGET_CONFIRM
from adapters.slack.delivery import THINKING
from bot.wiring import Services
from tests.conftest import eventually, settled
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_socket import FakeSocketServer

FIXTURES = Path(__file__).parent / "fixtures" / "slack"


def payload(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"payload_{name}.json").read_text())
    return data


@pytest_asyncio.fixture
async def socket_server() -> AsyncIterator[FakeSocketServer]:
    server = FakeSocketServer()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def slack_api(socket_server: FakeSocketServer) -> AsyncIterator[FakeSlackAPI]:
    api = FakeSlackAPI(socket_url=socket_server.url)
    await api.start()
    yield api
    await api.stop()


@pytest_asyncio.fixture
async def adapter(
    services: Services, slack_api: FakeSlackAPI, socket_server: FakeSocketServer
) -> AsyncIterator[SlackAdapter]:
    config = SlackConfig(bot_token="xoxb-test-token", app_token="xapp-test-token", api_url=slack_api.url)
    slack = SlackAdapter(services.assistant, services.turns, config)
    assert slack.socket_mode
    await slack.start()
    await socket_server.wait_connected()
    await eventually(_async(lambda: slack.connected))
    yield slack
    await slack.stop()
    assert await slack.drain(15)


def _async(check: Any) -> Any:
    async def wrapped() -> bool:
        return bool(check())

    return wrapped


def answers(api: FakeSlackAPI) -> list[dict[str, Any]]:
    return api.replied()


async def test_socket_mode_connects_with_the_app_token(adapter: SlackAdapter, slack_api: FakeSlackAPI) -> None:
    assert adapter.connected and adapter.problem is None
    [opened] = [call for call in slack_api.calls if call.method == "apps.connections.open"]
    assert opened.token == "xapp-test-token"
    assert {call.token for call in slack_api.calls if call.method == "auth.test"} == {"xoxb-test-token"}


async def test_a_dm_over_the_socket_is_acknowledged_and_answered_once(
    adapter: SlackAdapter,
    socket_server: FakeSocketServer,
    slack_api: FakeSlackAPI,
    fake_claude: FakeAnthropic,
    services: Services,
) -> None:
    fake_claude.latency = 0.5
    first = await socket_server.send("events_api", payload("message_im"))
    assert await socket_server.ack(first) == {"envelope_id": first}
    assert not answers(slack_api)  # acknowledged before the answer exists
    retried = await socket_server.send("events_api", payload("message_im"), retry_attempt=1)
    assert await socket_server.ack(retried) == {"envelope_id": retried}

    await slack_api.wait_for(lambda: len(answers(slack_api)) == 1)
    await settled(services)
    [placeholder] = slack_api.called("chat.postMessage")
    assert placeholder["channel"] == "D1" and placeholder["text"] == THINKING
    [answer] = answers(slack_api)  # the placeholder, edited as the answer grew
    assert answer["ts"] == slack_api.results("chat.postMessage")[0]["ts"] and "modal" in answer["text"]
    assert {u["ts"] for u in slack_api.called("chat.update")} == {answer["ts"]}
    assert len(fake_claude.requests) == 1


async def test_slash_commands_are_answered_through_the_socket(
    adapter: SlackAdapter, socket_server: FakeSocketServer
) -> None:
    command = dict(payload("command_insights"), command="/forget")
    envelope = await socket_server.send("slash_commands", command)
    ack = await socket_server.ack(envelope)
    assert ack["payload"]["response_type"] == "ephemeral"
    assert ack["payload"]["blocks"][-1]["elements"][0]["action_id"] == FORGET_CONFIRM


async def test_stop_taking_closes_the_socket(adapter: SlackAdapter, socket_server: FakeSocketServer) -> None:
    await adapter.stop_taking()
    assert not adapter.connected and adapter.problem == "stopped"
    await eventually(_async(lambda: not socket_server.connected))
    assert await adapter.drain(5)
    await adapter.stop()


async def test_a_rejected_app_token_shows_in_ready(services: Services, slack_api: FakeSlackAPI) -> None:
    slack_api.errors["apps.connections.open"] = "invalid_auth"
    config = SlackConfig(bot_token="xoxb-test-token", app_token="xapp-revoked", api_url=slack_api.url)
    slack = SlackAdapter(services.assistant, services.turns, config)
    await slack.start()
    try:
        await eventually(_async(lambda: "apps.connections.open failed: invalid_auth" in (slack.problem or "")))
        assert not slack.connected and "SLACK_APP_TOKEN" in (slack.problem or "")
    finally:
        await slack.stop()
