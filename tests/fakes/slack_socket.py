"""A fake Slack Socket Mode server on 127.0.0.1: says hello, sends envelopes, records the acknowledgements."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiohttp import WSMsgType, web

__all__ = ["FakeSocketServer"]


class FakeSocketServer:
    """One websocket at /link at a time, as Slack gives each connection its own URL."""

    def __init__(self) -> None:
        self.url = ""
        self.acks: dict[str, dict[str, Any]] = {}
        self.connections = 0
        self._socket: web.WebSocketResponse | None = None
        self._connected = asyncio.Event()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/link", self._link)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/link"
        return self.url

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def send(self, envelope_type: str, payload: dict[str, Any], *, retry_attempt: int | None = None) -> str:
        """Send one envelope (`events_api`, `slash_commands`, `interactive`); returns its envelope_id."""
        assert self._socket is not None, "no client connected"
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": payload,
            "accepts_response_payload": envelope_type != "events_api",
        }
        if envelope_type == "events_api":
            envelope["retry_attempt"] = retry_attempt or 0
            envelope["retry_reason"] = "timeout" if retry_attempt else ""
        await self._socket.send_str(json.dumps(envelope))
        return envelope_id

    async def ack(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The client's acknowledgement of an envelope (with its response payload, if any)."""
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                if envelope_id in self.acks:
                    return self.acks[envelope_id]
                await self._changed.wait()

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._socket = socket
        self.connections += 1
        await socket.send_str(json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}}))
        self._connected.set()
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                data = json.loads(message.data)
                if "envelope_id" in data:
                    self.acks[data["envelope_id"]] = data
                    self._changed.set()
        self._connected.clear()
        return socket
