"""A fake Anthropic Messages API on 127.0.0.1, for the real SDK to talk to through its base URL."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["FakeAnthropic", "Fail", "Say"]


@dataclass
class Say:
    """Answer with this text, after `delay` seconds (streamed: `pause` seconds between pieces)."""

    text: str
    delay: float = 0.0
    pause: float = 0.0


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


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message["role"] == "user":
            content = message["content"]
            return content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)
    return ""


class FakeAnthropic:
    """Records every request; answers from `script` first, then with `default` (a function of the request)."""

    def __init__(self, *, default: Callable[[dict[str, Any]], str] | None = None, latency: float = 0.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.script: deque[Say | Fail] = deque()
        self.default = default or (lambda body: f"Noted: {_last_user_text(body)[:80]}")
        self.latency = latency
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    def reset(self) -> None:
        self.requests.clear()
        self.headers.clear()
        self.script.clear()
        self.latency = 0.0
        self.in_flight = self.max_in_flight = 0

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
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
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
        usage = {
            "input_tokens": sum(len(m["content"]) for m in body["messages"]) // 4 + 1,
            "output_tokens": 0,
        }
        usage["output_tokens"] = len(step.text) // 4 + 1
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
        return await self._stream(request, message, step.text, step.pause)

    async def _stream(
        self, request: web.Request, message: dict[str, Any], text: str, pause: float = 0.0
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
        for i in range(0, len(text), 16):
            if pause and i:
                await asyncio.sleep(pause)
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

    def prompt_text(self, index: int = -1) -> str:
        """Everything Claude was shown in one request: system and messages, as one string."""
        body = self.requests[index]
        parts = [body.get("system", "")] + [m["content"] for m in body["messages"]]
        return "\n".join(p if isinstance(p, str) else json.dumps(p) for p in parts)


async def _serve(latency: float) -> None:
    server = FakeAnthropic(latency=latency)
    await server.start()
    print(server.url, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":  # a separate process for benchmarks: `python -m tests.fakes.anthropic_api 1.0`
    import sys

    asyncio.run(_serve(float(sys.argv[1]) if len(sys.argv) > 1 else 0.0))
