"""A fake Anthropic Messages API on 127.0.0.1, for the real SDK to talk to through its base URL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["FakeAnthropic", "Fail", "Say", "Use"]


@dataclass
class Say:
    """Answer with this text, after `delay` seconds (streamed: `pause` seconds between pieces)."""

    text: str
    delay: float = 0.0
    pause: float = 0.0
    break_after: int | None = None  # streamed: an overloaded error after this many pieces (mid-answer)


@dataclass
class Use:
    """Answer a tool call with this input (anything: garbage included), after `delay` seconds."""

    input: Any
    delay: float = 0.0


@dataclass
class Fail:
    """Answer with an error status (429, 500, 529 …), after `delay` seconds."""

    status: int
    delay: float = 0.0


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _text(content: Any) -> str:
    return content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)


def _last_user_text(body: dict[str, Any]) -> str:
    """What the person wrote last: the last paragraph of the last user message (the memories recalled for the
    turn, and the messages it answers, come before it)."""
    for message in reversed(body.get("messages", [])):
        if message["role"] == "user":
            return _text(message["content"]).rsplit("\n\n", 1)[-1]
    return ""


def _tokens(part: Any) -> int:
    return len(json.dumps(part, ensure_ascii=False)) // 4 + 1


LOOKBACK = 20  # blocks before a breakpoint that Claude checks for an earlier cached prefix


class PromptCache:
    """Claude's prompt cache as documented: a prefix up to a breakpoint (`cache_control`) is written when at least
    `minimum` tokens long and read by a later request that starts with exactly it, within `ttl` seconds of its
    last use; a breakpoint also finds a prefix cached up to one of the 20 blocks before it. Usage is reported the
    way the Messages API does."""

    def __init__(self, *, minimum: int = 1024, ttl: float = 300.0) -> None:
        self.minimum = minimum
        self.ttl = ttl
        self._kept: dict[str, tuple[int, float]] = {}
        self.now = time.monotonic

    def usage(self, body: dict[str, Any]) -> dict[str, int]:
        system = body.get("system") or []
        system = [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
        parts: list[Any] = [*system, *body.get("messages", [])]
        plain = [_without_breakpoints(part) for part in parts]
        total = sum(_tokens(part) for part in plain)
        ends = [i + 1 for i, part in enumerate(parts) if _has_breakpoint(part)]
        read = 0
        written = 0
        now = self.now()
        for end in ends:
            for start in range(end, max(end - LOOKBACK, 0), -1):  # the longest prefix kept, looking back
                kept = self._kept.get(_key(plain[:start]))
                if kept is not None and kept[1] > now:
                    read = max(read, kept[0])
                    self._kept[_key(plain[:start])] = (kept[0], now + self.ttl)
                    break
            size = sum(_tokens(part) for part in plain[:end])
            if size >= self.minimum:
                written = max(written, size - read)
                self._kept[_key(plain[:end])] = (size, now + self.ttl)
        return {
            "input_tokens": max(total - read - written, 0),
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
        }


def _key(parts: list[Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _has_breakpoint(part: Any) -> bool:
    if isinstance(part, dict) and "cache_control" in part:
        return True
    content = part.get("content") if isinstance(part, dict) else None
    return isinstance(content, list) and any(isinstance(b, dict) and "cache_control" in b for b in content)


def _without_breakpoints(part: Any) -> Any:
    if not isinstance(part, dict):
        return part
    clean = {k: v for k, v in part.items() if k != "cache_control"}
    content = clean.get("content")
    if isinstance(content, list):
        clean["content"] = _text(content)  # a message of one text block is that text, with or without a breakpoint
    return clean


class FakeAnthropic:
    """Records every request; answers from `script` first, then with `default` (a function of the request)."""

    def __init__(self, *, default: Callable[[dict[str, Any]], str] | None = None, latency: float = 0.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.cache = PromptCache()
        self.first_pieces: list[float] = []  # when each streamed answer's first text went out (time.monotonic)
        self.usages: list[dict[str, int]] = []  # the usage each answer reported (the prompt cache's figures)
        self.script: deque[Say | Fail] = deque()
        # Requests that offer tools (the learning calls) are kept apart and answered from their own script, then by
        # `tool_default` (a function of the request: by default, no changes).
        self.tool_requests: list[dict[str, Any]] = []
        self.tool_script: deque[Use | Say | Fail] = deque()
        self.tool_default: Callable[[dict[str, Any]], Any] = lambda body: {"changes": []}
        self.tool_latency = 0.0
        self.default = default or (lambda body: f"Noted: {_last_user_text(body)[:80]}")
        self.latency = latency
        self.in_flight = 0
        self.max_in_flight = 0
        self._generation = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    def reset(self) -> None:
        self.requests.clear()
        self.headers.clear()
        self.cache = PromptCache()
        self.first_pieces: list[float] = []  # when each streamed answer's first text went out (time.monotonic)
        self.usages: list[dict[str, int]] = []  # the usage each answer reported (the prompt cache's figures)
        self.script.clear()
        self.latency = 0.0
        self.tool_requests.clear()
        self.tool_script.clear()
        self.tool_default = lambda body: {"changes": []}
        self.tool_latency = 0.0
        self.in_flight = self.max_in_flight = 0
        self._generation += 1

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)  # a hung answer must not hold teardown
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        # A request still waiting from an earlier test (its process was killed mid-answer) ends after `reset`:
        # it must not take one off this test's count.
        generation = self._generation
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, generation)
        finally:
            if generation == self._generation:
                self.in_flight -= 1

    async def _answer(self, request: web.Request, generation: int) -> web.StreamResponse:
        body = await request.json()
        if body.get("tools"):
            return await self._tool_answer(body)
        self.requests.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        step = self.script.popleft() if self.script else Say(self.default(body), delay=self.latency)
        if step.delay:
            await asyncio.sleep(step.delay)
        if isinstance(step, Fail):
            error = {
                "type": "error",
                "error": {"type": _ERROR_TYPES.get(step.status, "api_error"), "message": "fake"},
            }
            return web.json_response(error, status=step.status, headers={"retry-after-ms": "5"})
        # A request of an earlier test that ends now (its client gone: test_llm's hung attempts end 30 s later, in
        # whichever test runs then) touches neither this test's cache nor its usage.
        current = generation == self._generation
        cache = self.cache if current else PromptCache()
        usage = cache.usage(body) | {"output_tokens": len(step.text) // 4 + 1}
        if current:
            self.usages.append(usage)
        message = {
            "id": f"msg_{len(self.requests)}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": step.text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            return web.json_response(message)
        return await self._stream(request, message, step.text, step.pause, step.break_after)

    async def _tool_answer(self, body: dict[str, Any]) -> web.StreamResponse:
        self.tool_requests.append(body)
        step = self.tool_script.popleft() if self.tool_script else Use(self.tool_default(body), self.tool_latency)
        if step.delay:
            await asyncio.sleep(step.delay)
        if isinstance(step, Fail):
            error = {"type": "error", "error": {"type": _ERROR_TYPES.get(step.status, "api_error"), "message": "fake"}}
            return web.json_response(error, status=step.status, headers={"retry-after-ms": "5"})
        if isinstance(step, Say):
            content: list[dict[str, Any]] = [{"type": "text", "text": step.text}]
            out = len(step.text) // 4 + 1
        else:
            name = body["tools"][0]["name"]
            content = [
                {"type": "tool_use", "id": f"toolu_{len(self.tool_requests)}", "name": name, "input": step.input}
            ]
            out = len(json.dumps(step.input)) // 4 + 1
        message = {
            "id": f"msg_tool_{len(self.tool_requests)}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": "tool_use" if isinstance(step, Use) else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": _tokens(body), "output_tokens": out},
        }
        return web.json_response(message)

    async def _stream(
        self,
        request: web.Request,
        message: dict[str, Any],
        text: str,
        pause: float = 0.0,
        break_after: int | None = None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(event: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        start = dict(message, content=[], stop_reason=None, usage=dict(message["usage"], output_tokens=1))
        await send("message_start", {"type": "message_start", "message": start})
        await send(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        for number, i in enumerate(range(0, len(text), 16)):
            if break_after is not None and number >= break_after:
                error = {"type": "overloaded_error", "message": "Overloaded (fake, mid-stream)"}
                await send("error", {"type": "error", "error": error})
                await response.write_eof()
                return response
            if pause and i:
                await asyncio.sleep(pause)
            if number == 0:
                self.first_pieces.append(time.monotonic())
            await send(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text[i : i + 16]},
                },
            )
        await send("content_block_stop", {"type": "content_block_stop", "index": 0})
        await send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            },
        )
        await send("message_stop", {"type": "message_stop"})
        await response.write_eof()
        return response

    def system_text(self, index: int = -1) -> str:
        system = self.requests[index].get("system") or ""
        return system if isinstance(system, str) else "\n\n".join(b.get("text", "") for b in system)

    def prompt_text(self, index: int = -1) -> str:
        """Everything Claude was shown in one request: system and messages, as one string."""
        body = self.requests[index]
        return "\n".join([self.system_text(index)] + [_text(m["content"]) for m in body["messages"]])


async def _serve(latency: float, chars: int = 0) -> None:
    """`chars` > 0: every answer is the usual one, lengthened to about that many characters (streamed in pieces)."""
    filler = " And a few more words, so that the answer is as long as a real one tends to be."

    def answer(body: dict[str, Any]) -> str:
        text = f"Noted: {_last_user_text(body)[:80]}."
        return text + (filler * (max(chars - len(text), 0) // len(filler) + 1))[: max(chars - len(text), 0)]

    server = FakeAnthropic(latency=latency, default=answer if chars else None)
    await server.start()
    print(server.url, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":  # a separate process for benchmarks: `python -m tests.fakes.anthropic_api 1.0 [chars]`
    import sys

    asyncio.run(_serve(float(sys.argv[1]) if len(sys.argv) > 1 else 0.0, int(sys.argv[2]) if len(sys.argv) > 2 else 0))
