"""The HTTP surface: health, readiness, Prometheus metrics and the insights API."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from bot.http import AppState, make_app
from bot.logs import configure_logging
from bot.metrics import Metrics, watch_loop
from bot.wiring import Services
from tests.fakes.chat import FakeChat

TOKEN = "insights-token-for-tests"


class StubAdapter:
    """Stands in for a platform adapter: only its connection state matters here."""

    name = "stub"

    def __init__(self, connected: bool, problem: str | None = None) -> None:
        self.connected = connected
        self.problem = problem

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@pytest_asyncio.fixture
async def state(services: Services) -> AppState:
    return AppState(services=services, insights_token=TOKEN)


@pytest_asyncio.fixture
async def client(state: AppState) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_app(state))) as test_client:
        yield test_client


async def test_health_and_ready(client: TestClient, state: AppState) -> None:
    assert (await client.get("/health")).status == 200
    response = await client.get("/ready")
    assert response.status == 200, await response.text()
    state.adapters = [StubAdapter(False, "Message Content intent is off")]
    response = await client.get("/ready")
    assert response.status == 503
    assert "stub: Message Content intent is off" in (await response.json())["problems"]


async def test_ready_is_503_while_starting_and_names_a_store_that_is_down(services: Services) -> None:
    async with TestClient(TestServer(make_app(AppState()))) as client:
        response = await client.get("/ready")
        assert response.status == 503 and "starting" in (await response.json())["problems"][0]
        assert (await client.get("/health")).status == 200
    await services.database.close()
    async with TestClient(TestServer(make_app(AppState(services=services)))) as client:
        response = await client.get("/ready")
        body = await response.json()
        # Events are still taken (the spool holds them) and answered: degraded, not unavailable.
        assert response.status == 200 and body["status"] == "degraded", body
        assert any(p.startswith("database") and "spool" in p for p in body["degraded"]), body


async def test_metrics_parse_and_move(client: TestClient, services: Services) -> None:
    chat = FakeChat(services)
    posted = await chat.say("uma", "hello, tell me about jazz")
    await chat.react("uma", posted, "👍")
    text = await (await client.get("/metrics")).text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("rapport_messages_total", (("outcome", "answered"), ("platform", "fake")))] == 1
    assert samples[("rapport_feedback_total", (("polarity", "positive"),))] == 1
    assert samples[("rapport_claude_seconds_count", ())] == 1
    assert samples[("rapport_claude_tokens_total", (("direction", "input"),))] > 0


async def test_insights_api_needs_the_token(client: TestClient, services: Services) -> None:
    await FakeChat(services).say("vic", "I love python programming")
    url = "/api/v1/insights/fake:vic"
    assert (await client.get(url)).status == 401
    assert (await client.get(url, headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await client.get(url, headers={"Authorization": f"Basic {TOKEN}"})).status == 401
    response = await client.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200
    body = await response.json()
    assert body["total_interactions"] == 1 and body["interests"] == ["programming"]
    assert set(body) >= {
        "top_patterns",
        "total_interactions",
        "average_satisfaction",
        "topic_distribution",
        "interests",
        "communication_style",
    }
    missing = await client.get("/api/v1/insights/fake:nobody", headers={"Authorization": f"Bearer {TOKEN}"})
    assert missing.status == 404 and "error" in await missing.json()


async def test_insights_api_is_disabled_without_a_token(services: Services) -> None:
    async with TestClient(TestServer(make_app(AppState(services=services)))) as client:
        response = await client.get("/api/v1/insights/fake:x", headers={"Authorization": "Bearer "})
        assert response.status == 404
        assert "disabled" in (await response.json())["error"]


async def test_a_user_key_with_control_characters_is_a_bad_request(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for bad in ("fake:%00x", "fake:a%0Ab", "fake:%1Bz", "nocolon", "x" * 300):
        response = await client.get(f"/api/v1/insights/{bad}", headers=headers)
        assert response.status == 400, bad
        assert "user key" in (await response.json())["error"]


async def test_an_oversized_header_is_one_warning_line_not_a_traceback(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "plain")
    try:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert b" 400 " in status_line or b" 431 " in status_line, status_line
        await asyncio.sleep(0.05)
        assert (await client.get("/health")).status == 200, "the server goes on"
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "aiohttp.server" in line]
        assert len(lines) == 1, lines
        assert "WARNING" in lines[0] and "malformed HTTP request" in lines[0] and "aaaa" not in lines[0]
        assert "Traceback" not in err
    finally:
        logging.getLogger().handlers.clear()


async def test_the_loop_lag_probe_sees_the_loop_held() -> None:
    """rapport_event_loop_lag_seconds: a loop held for 0.3 s shows as one late wake-up of about that much."""
    metrics = Metrics()
    probe = asyncio.create_task(watch_loop(metrics, every=0.02))
    await asyncio.sleep(0.1)
    time.sleep(0.3)  # noqa: ASYNC251 - holding the loop is the point
    await asyncio.sleep(0.1)
    probe.cancel()
    samples = {
        sample.labels.get("le"): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        if family.name == "rapport_event_loop_lag_seconds"
        for sample in family.samples
        if sample.name.endswith("_bucket")
    }
    assert samples["+Inf"] >= 4  # it kept waking up
    assert samples["+Inf"] - samples["0.25"] == 1  # the one wake-up the held loop made late
