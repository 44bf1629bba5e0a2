"""The console adapter: a conversation with Rapport in a terminal, as the private user `console:<name>`.

It goes the way every platform's messages go (inbox, the person's turn, a delivery port that prints), and waits
for each answer before it reads the next line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from core.assistant import Assistant
from core.entries import Entry, Incoming
from core.events import ForgetRequested, MessageReceived, MessageRef, UserRef
from core.turns import Turns

__all__ = ["ConsoleAdapter"]

HELP = (
    "Type a message and press Enter. Commands: /insights, /forget, /learning pause, /learning resume, /help, "
    "/quit (or Ctrl-D)."
)
PLATFORM = "console"
WAIT = 300.0  # seconds the console waits for one answer (Claude's own deadline comes first)


async def _stdin_line() -> str | None:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return line if line else None


def _stdout(text: str) -> None:
    print(text, flush=True)


class _Printed:
    """core.ports.Delivery for the console: the reply is printed."""

    def __init__(self, entry: Entry, write: Callable[[str], None]) -> None:
        self._entry = entry
        self._write = write

    async def prepare(self, event: MessageReceived) -> MessageReceived:
        return event

    @asynccontextmanager
    async def working(self, *, streamed: bool = False) -> AsyncIterator[list[MessageRef]]:
        yield []

    def stream(self, placeholder: Sequence[MessageRef], started: Callable[[list[MessageRef]], Awaitable[None]]) -> None:
        return None  # shown whole

    async def deliver(self, text: str, *, placeholder: Sequence[MessageRef]) -> list[MessageRef]:
        self._write(f"rapport> {text}")
        event = self._entry.event
        channel = event.conversation_id if isinstance(event, MessageReceived) else ""
        return [MessageRef(platform=PLATFORM, channel_id=channel, message_id=f"r{self._entry.seq}")]

    async def notify(self, text: str) -> None:
        self._write(text)


class ConsoleAdapter:
    name = "console"

    def __init__(
        self,
        assistant: Assistant,
        turns: Turns,
        *,
        user: str,
        read_line: Callable[[], Awaitable[str | None]] = _stdin_line,
        write: Callable[[str], None] = _stdout,
    ) -> None:
        self._assistant = assistant
        self._turns = turns
        self._user = UserRef(platform=PLATFORM, user_id=user)
        self._read = read_line
        self._write = write
        assistant.deliver_with(PLATFORM, lambda entry: _Printed(entry, self._write))

    @property
    def user_key(self) -> str:
        return self._user.key

    async def run(self) -> None:
        """Talk until /quit or end of input."""
        self._write(f"Rapport is listening as {self._user.key}. {HELP}")
        while (line := await self._read()) is not None:
            text = line.strip()
            if text in ("/quit", "/exit"):
                break
            if text == "/help":
                self._write(HELP)
            elif text == "/insights":
                await self._insights()
            elif text == "/forget":
                await self._forget()
            elif text in ("/learning pause", "/learning resume"):
                self._write(await self._assistant.set_learning(self._user.key, paused=text.endswith("pause")))
            elif text:
                await self._answer(text)
        self._write("Bye.")

    async def _through_turn(self, key: str, incoming: Incoming) -> None:
        done = self._assistant.outcomes.expect(key)
        await self._turns.accept(incoming)
        await asyncio.wait_for(done, WAIT)

    async def _answer(self, text: str) -> None:
        message_id = uuid.uuid4().hex  # a key of its own: the inbox keeps earlier sessions' keys
        event = MessageReceived(
            user=self._user,
            display_name=self._user.user_id,
            text=text,
            conversation_id=self._user.user_id,
            private=True,
            message=MessageRef(platform=PLATFORM, channel_id=self._user.user_id, message_id=message_id),
            sent_at=datetime.now(UTC),
        )
        key = f"console:message:{message_id}"
        await self._through_turn(key, Incoming(key=key, event=event))

    async def _insights(self) -> None:
        insights = await self._assistant.insights(self._user.key)
        if insights is None:
            self._write("I don't know anything about you yet.")
        else:
            self._write(json.dumps(insights, indent=2, ensure_ascii=False))

    async def _forget(self) -> None:
        self._write("This deletes everything I know about you. Type 'yes' to confirm:")
        answer = await self._read()
        if answer is not None and answer.strip().lower() in ("y", "yes"):
            key = f"console:forget:{uuid.uuid4().hex}"
            await self._through_turn(key, Incoming(key=key, event=ForgetRequested(user=self._user)))
        else:
            self._write("Kept everything.")
