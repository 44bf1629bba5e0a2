"""Slack's side of the process tests: signed Events API requests to a worker in HTTP mode, and what it shows."""

from __future__ import annotations

import copy
import itertools
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from slack_sdk.signature import SignatureVerifier

from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.slack_api import FakeSlackAPI

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "slack"
SECRET = "process-test-signing-secret"
_TS = itertools.count(1)


def now_ts() -> str:
    """A fresh Slack `ts`: now, and never the same twice."""
    return f"{int(time.time())}.{next(_TS):06d}"


def event(name: str, *, event_id: str, text: str, ts: str, **changes: Any) -> dict[str, Any]:
    """A recorded payload with this event id, text and ts (and other event fields changed)."""
    body: dict[str, Any] = copy.deepcopy(json.loads((FIXTURES / f"payload_{name}.json").read_text()))
    body["event_id"] = event_id
    body["event"]["text"] = text
    body["event"]["ts"] = body["event"]["event_ts"] = ts
    body["event"].update(changes)
    return body


def dm(person: int, text: str) -> dict[str, Any]:
    """Person U{person} writes `text` in their DM with Rapport (channel D{person}), now."""
    return event(
        "message_im",
        event_id=f"Ev{person}x{next(_TS)}",
        text=text,
        ts=now_ts(),
        user=f"U{person}",
        channel=f"D{person}",
    )


def reaction(person: int, channel: str, ts: str, emoji: str = "+1") -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(json.loads((FIXTURES / "payload_reaction_added.json").read_text()))
    body["event_id"] = f"EvR{next(_TS)}"
    body["event"] |= {
        "user": f"U{person}",
        "reaction": emoji,
        "item": {"type": "message", "channel": channel, "ts": ts},
    }
    body["event"]["event_ts"] = now_ts()
    return body


async def deliver(http: aiohttp.ClientSession, port: int, body: dict[str, Any], retry: int | None = None) -> int:
    raw = json.dumps(body)
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=raw) or "",
    }
    if retry is not None:
        headers["X-Slack-Retry-Num"] = str(retry)
    async with http.post(f"http://127.0.0.1:{port}/slack/events", data=raw, headers=headers) as response:
        return response.status


def slack_env(fake_claude: FakeAnthropic, slack_api: FakeSlackAPI) -> dict[str, str]:
    return {
        "ANTHROPIC_BASE_URL": fake_claude.url,
        "SLACK_BOT_TOKEN": "xoxb-process-test",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack_api.url,
        "CONSENT_NOTE": "",  # these tests compare answers whole (tests/test_person_model.py has the note)
    }
