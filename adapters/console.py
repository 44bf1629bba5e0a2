"""The console adapter: a conversation with Rapport in a terminal, as the private user `console:<name>`."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from itertools import count

from core.assistant import Assistant
from core.events import MessageReceived, MessageRef, UserRef

__all__ = ["ConsoleAdapter"]

HELP = "Type a message and press Enter. Commands: /insights, /forget, /help, /quit (or Ctrl-D)."


async def _stdin_line() -> str | None:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return line if line else None


def _stdout(text: str) -> None:
    print(text, flush=True)


class ConsoleAdapter:
    name = "console"

    def __init__(
        self,
        assistant: Assistant,
        *,
        user: str,
        read_line: Callable[[], Awaitable[str | None]] = _stdin_line,
        write: Callable[[str], None] = _stdout,
    ) -> None:
        self._assistant = assistant
        self._user = UserRef(platform="console", user_id=user)
        self._read = read_line
        self._write = write
        self._ids = count(1)

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
            elif text:
                await self._answer(text)
        self._write("Bye.")

    async def _answer(self, text: str) -> None:
        message_id = str(next(self._ids))
        event = MessageReceived(
            user=self._user,
            display_name=self._user.user_id,
            text=text,
            conversation_id=self._user.user_id,
            private=True,
            message=MessageRef(platform="console", channel_id=self._user.user_id, message_id=message_id),
            sent_at=datetime.now(UTC),
        )
        reply = await self._assistant.handle(event)
        self._write(f"rapport> {reply.text}")
        await self._assistant.delivered(
            reply,
            [MessageRef(platform="console", channel_id=self._user.user_id, message_id=f"r{message_id}")],
        )

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
            await self._assistant.forget(self._user.key)
            self._write("Done: I have forgotten everything about you.")
        else:
            self._write("Kept everything.")
