"""Claude through the real SDK against the fake Messages API: plain, streaming, errors, settings."""

from __future__ import annotations

import ast
import asyncio
import warnings
from pathlib import Path

import pytest
from anthropic.resources.messages.messages import DEPRECATED_MODELS

from core.llm import DEFAULT_MODEL, Claude, ClaudeError, ClaudeSettings
from core.ports import Prompt
from tests.fakes.anthropic_api import Fail, FakeAnthropic, Say

PROMPT = Prompt(system=("be brief",), messages=({"role": "user", "content": "hi"},))
ROOT = Path(__file__).resolve().parent.parent


def _claude(fake: FakeAnthropic, **kw: object) -> Claude:
    values: dict[str, object] = {"api_key": "sk-test", "base_url": fake.url, "max_retries": 0, "timeout": 5}
    values.update(kw)
    return Claude(ClaudeSettings(**values))  # type: ignore[arg-type]


def test_default_model_is_not_deprecated() -> None:
    assert DEFAULT_MODEL not in DEPRECATED_MODELS


async def test_plain_request_carries_model_system_and_messages(fake_claude: FakeAnthropic) -> None:
    fake_claude.script.append(Say("Hello!"))
    claude = _claude(fake_claude, model="claude-haiku-4-5", max_tokens=77)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        completion = await claude.complete(PROMPT)
    assert completion.text == "Hello!" and completion.output_tokens > 0
    body = fake_claude.requests[0]
    assert body["model"] == "claude-haiku-4-5" and body["max_tokens"] == 77
    assert body["system"] == [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]
    assert "temperature" not in body
    sent = fake_claude.headers[0]
    assert sent.get("x-api-key") == "sk-test" or sent.get("authorization") == "Bearer sk-test"
    await claude.close()


async def test_temperature_is_sent_when_configured(fake_claude: FakeAnthropic) -> None:
    claude = _claude(fake_claude, temperature=0.2)
    await claude.complete(PROMPT)
    assert fake_claude.requests[0]["temperature"] == 0.2
    await claude.close()


async def test_streaming_hands_over_the_growing_text(fake_claude: FakeAnthropic) -> None:
    text = "A streamed answer that is long enough to arrive in several chunks."
    fake_claude.script.append(Say(text))
    seen: list[str] = []

    async def on_text(so_far: str) -> None:
        seen.append(so_far)

    claude = _claude(fake_claude)
    completion = await claude.complete(PROMPT, on_text=on_text)
    assert completion.text == text
    assert len(seen) > 2 and seen[-1] == text and all(text.startswith(s) for s in seen)
    assert fake_claude.requests[0]["stream"] is True
    await claude.close()


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, "rate_limited"), (500, "server_error"), (529, "overloaded"), (400, "bad_request"), (401, "auth")],
)
async def test_failures_are_sorted_into_kinds(fake_claude: FakeAnthropic, status: int, kind: str) -> None:
    fake_claude.script.append(Fail(status))
    claude = _claude(fake_claude)
    with pytest.raises(ClaudeError) as raised:
        await claude.complete(PROMPT)
    assert raised.value.kind == kind
    await claude.close()


async def test_retries_recover_from_a_passing_overload(fake_claude: FakeAnthropic) -> None:
    fake_claude.script.extend([Fail(529), Say("back")])
    claude = _claude(fake_claude, max_retries=2)
    assert (await claude.complete(PROMPT)).text == "back"
    assert len(fake_claude.requests) == 2
    await claude.close()


async def test_unreachable_api_is_a_connection_error() -> None:
    claude = Claude(ClaudeSettings(api_key="sk", base_url="http://127.0.0.1:9", max_retries=0, timeout=2))
    with pytest.raises(ClaudeError) as raised:
        await claude.complete(PROMPT)
    assert raised.value.kind == "connection"
    await claude.close()


FORBIDDEN_IN_CORE = {
    "discord",
    "slack_bolt",
    "slack_sdk",
    "tortoise",
    "redis",
    "chromadb",
    "aiohttp",
    "bot",
    "adapters",
    "storage",
    "sentence_transformers",
    "asyncpg",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_dependencies_flow_one_way() -> None:
    for path in (ROOT / "core").rglob("*.py"):
        assert not _imports(path) & FORBIDDEN_IN_CORE, f"{path} imports {_imports(path) & FORBIDDEN_IN_CORE}"
    for path in (ROOT / "storage").rglob("*.py"):
        assert not _imports(path) & {"bot", "adapters", "discord", "slack_bolt", "slack_sdk"}, path
    for path in (ROOT / "adapters").rglob("*.py"):
        assert not _imports(path) & {"bot", "storage", "tortoise", "redis", "chromadb"}, path


async def test_a_hung_claude_is_given_up_at_the_deadline_retries_included(fake_claude: FakeAnthropic) -> None:
    fake_claude.latency = 30.0  # every attempt hangs
    claude = _claude(fake_claude, timeout=1.0, max_retries=2, deadline=1.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ClaudeError) as caught:
        await claude.complete(PROMPT)
    assert caught.value.kind == "timeout"
    assert loop.time() - started < 2.5, "one deadline for the whole answer, not timeout x attempts"
    await claude.close()


async def test_a_stream_that_goes_silent_is_cut_at_the_gap_deadline(fake_claude: FakeAnthropic) -> None:
    fake_claude.script.append(Say("x" * 64, pause=3.0))
    seen: list[str] = []

    async def on_text(so_far: str) -> None:
        seen.append(so_far)

    claude = _claude(fake_claude, gap=0.5, deadline=30)
    with pytest.raises(ClaudeError) as caught:
        await claude.complete(PROMPT, on_text=on_text)
    assert caught.value.kind == "timeout" and seen == ["x" * 16], "what arrived before the silence was handed on"
    await claude.close()


async def test_the_conversation_so_far_ends_with_a_cache_breakpoint(fake_claude: FakeAnthropic) -> None:
    prompt = Prompt(
        system=("persona", "what you know"),
        messages=(
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "now"},
        ),
        stable_messages=2,
    )
    claude = _claude(fake_claude)
    await claude.complete(prompt)
    body = fake_claude.requests[0]
    assert [b.get("cache_control") for b in body["system"]] == [None, {"type": "ephemeral"}]
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}}],
    }
    assert body["messages"][0] == {"role": "user", "content": "a"} and body["messages"][2]["content"] == "now"
    await claude.close()
