"""Secrets never appear in logs, in plain or JSON lines, in messages or tracebacks."""

from __future__ import annotations

import json
import logging

import pytest

from bot.logs import configure_logging
from bot.wiring import Services
from tests.fakes.chat import FakeChat


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_secret_values_are_masked(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", fmt, ["sk-ant-very-secret", "xoxb-123-456"])
    log = logging.getLogger("rapport.test")
    log.info("calling with key %s", "sk-ant-very-secret")
    try:
        raise RuntimeError("token xoxb-123-456 rejected")
    except RuntimeError:
        log.exception("slack failed")
    err = capsys.readouterr().err
    assert "sk-ant-very-secret" not in err and "xoxb-123-456" not in err
    assert err.count("***") >= 2
    if fmt == "json":
        # this test's own lines (a thread an earlier test left may write to stderr too, even mid-line)
        found = [json.loads(line[line.index('{"') :]) for line in err.splitlines() if '{"' in line]
        lines = [line for line in found if line.get("logger") == "rapport.test"]
        assert lines[0]["message"] == "calling with key ***"
        assert "exception" in lines[1]
    logging.getLogger().handlers.clear()


async def test_lines_about_a_message_carry_its_user_key_and_correlation_id(
    services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "json")
    await FakeChat(services).say("olga", "hello there")
    await services.assistant.drain(10)
    logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    about = [line for line in lines if line.get("user_key") == "fake:olga"]
    assert any("message answered" in line["message"] for line in about)
    assert len({line["correlation_id"] for line in about}) == 1
    assert all("hello there" not in line["message"] for line in lines), "no message text at INFO"


@pytest.mark.parametrize(("level", "expected"), [("DEBUG", logging.WARNING), ("ERROR", logging.ERROR)])
def test_log_level_reaches_the_noisy_libraries(level: str, expected: int) -> None:
    configure_logging(level, "plain")
    try:
        assert logging.getLogger().level == logging.getLevelName(level)
        for noisy in ("httpx", "tortoise", "chromadb", "aiosqlite"):
            assert logging.getLogger(noisy).level == expected, noisy
    finally:
        logging.getLogger().handlers.clear()
