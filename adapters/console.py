"""The console adapter: a conversation with Rapport in a terminal, as the private user `console:<name>`.

It goes the way every platform's messages go (inbox, the person's turn, a delivery port that prints), and waits
for each answer before it reads the next line.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from core.assistant import Assistant
from core.entries import Entry, Incoming
from core.events import Attachment, ForgetRequested, MessageReceived, MessageRef, UserRef
from core.files import NotFromPlatform
from core.memory_view import KIND_TITLES, MemoryView
from core.turns import Turns

__all__ = ["ConsoleAdapter"]

HELP = (
    "Type a message and press Enter. Commands: /memory (then /memory delete N, /memory next, /memory history), "
    "/insights, /forget, /learning pause, /learning resume, /help, /quit (or Ctrl-D)."
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

    async def fetch(self, attachment: Attachment, limit: int) -> bytes:
        raise NotFromPlatform("the console sends no files")


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
        self._shown = MemoryView(items=(), page=0, pages=1, total=0)  # the last /memory listing (its numbers)
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
            elif text == "/memory" or text.startswith("/memory "):
                await self._memory(text.removeprefix("/memory").strip())
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
            return
        lines = [f"Conversations: {insights.get('total_interactions', 0)}"]
        satisfaction = insights.get("average_satisfaction")
        lines.append(f"Satisfaction: {'no reactions yet' if satisfaction is None else f'{satisfaction:+.2f}'}")
        for title, key in (("Facts", "facts"), ("Preferences", "preferences")):
            lines += [f"{title}:"] + [f"  - {item['text']}" for item in insights.get(key) or []]
        if insights.get("interests"):
            lines.append("Interests: " + ", ".join(str(topic) for topic in insights["interests"]))
        style = insights.get("communication_style") or {}
        if style:
            lines.append("Style: " + ", ".join(f"{k}: {v}" for k, v in style.items()))
        usage = insights.get("usage")
        if isinstance(usage, dict) and usage.get("tokens"):
            lines.append(f"Usage in {usage['month']}: {usage['tokens']:,} tokens, about ${usage['cost_usd']:.2f}")
        if insights.get("learning_paused"):
            lines.append("Learning is paused (/learning resume starts it again).")
        self._write("\n".join(lines))

    async def _memory(self, rest: str) -> None:
        """/memory lists (numbered), /memory next|previous|history pages, /memory delete N deletes."""
        shown = self._shown
        words = rest.split()
        if words[:1] == ["delete"]:
            number = words[1] if len(words) == 2 else ""
            index = int(number) - shown.first if number.isascii() and number.isdigit() else -1
            if not 0 <= index < len(shown.items):
                self._write("Give the number of an item in the last /memory listing, e.g. /memory delete 2.")
                return
            item = shown.items[index]
            deleted = await self._assistant.forget_item(self._user.key, item.id)
            self._write(f"Deleted: {item.text}" if deleted else "That item was already gone.")
            rest = "page"
        history = rest == "history" or (shown.history and rest in ("next", "previous", "page"))
        page = shown.page + {"next": 1, "previous": -1, "page": 0}.get(rest, -shown.page)
        try:
            view = self._shown = await self._assistant.memory(self._user.key, page=page, history=history)
        except Exception:  # noqa: BLE001 - the conversation goes on
            self._write("Sorry, I couldn't read what I know about you just now.")
            return
        self._write(_memory_text(view))

    async def _forget(self) -> None:
        self._write("This deletes everything I know about you. Type 'yes' to confirm:")
        answer = await self._read()
        if answer is not None and answer.strip().lower() in ("y", "yes"):
            key = f"console:forget:{uuid.uuid4().hex}"
            await self._through_turn(key, Incoming(key=key, event=ForgetRequested(user=self._user)))
        else:
            self._write("Kept everything.")


def _memory_text(view: MemoryView) -> str:
    """The listing: numbered, grouped by kind, with how to go on."""
    title = "What stopped being true" if view.history else "What I know about you"
    if not view.items:
        return f"{title}: nothing yet." + (" (Learning is paused.)" if view.paused else "")
    lines = [f"{title} (page {view.page + 1} of {view.pages}):"]
    kind = ""
    for number, item in enumerate(view.items, view.first):
        if item.kind != kind:
            kind = item.kind
            lines.append(f"{KIND_TITLES.get(kind, kind)}:")
        lines.append(f"  {number}. {item.text}")
    hints = ["/memory next" if view.page + 1 < view.pages else "", "/memory previous" if view.page else ""]
    hints += ["/memory delete N", "" if view.history else "/memory history"]
    lines.append("  ".join(h for h in hints if h))
    if view.paused:
        lines.append("Learning is paused: /learning resume starts it again.")
    return "\n".join(lines)
