"""The console adapter: a terminal conversation with /insights and /forget."""

from __future__ import annotations

from collections import deque

from adapters.console import ConsoleAdapter
from bot.wiring import Services
from core.assistant import AssistantSettings
from tests.fakes.anthropic_api import FakeAnthropic, Say


async def test_console_conversation_with_insights_and_forget(services: Services, fake_claude: FakeAnthropic) -> None:
    lines = deque(
        [
            "hello, I play the piano\n",
            "\n",
            "/insights\n",
            "/forget\n",
            "yes\n",
            "/insights\n",
            "/quit\n",
            "never read\n",
        ]
    )
    out: list[str] = []

    async def read() -> str | None:
        return lines.popleft() if lines else None

    fake_claude.script.append(Say("Lovely! What do you play?"))
    console = ConsoleAdapter(services.assistant, services.turns, user="ana", read_line=read, write=out.append)
    await console.run()
    assert console.user_key == "console:ana"
    assert "rapport> Lovely! What do you play?" in out
    insights = next(line for line in out if line.startswith("Conversations:"))
    assert "Interests: music" in insights, "insights show the learned interest, as readable text"
    assert AssistantSettings().forgotten in out
    assert out[-2] == "I don't know anything about you yet."
    assert out[-1] == "Bye."
    assert lines == deque(["never read\n"])
    assert len(fake_claude.requests) == 1, "blank lines and commands never reach Claude"
