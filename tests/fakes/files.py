"""Files served on 127.0.0.1 the way the platforms serve them (Discord's CDN, Slack's files.slack.com): each
request and the bytes actually sent are recorded, so a test sees what was downloaded and how far."""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass, field
from struct import pack

from aiohttp import web

__all__ = ["FakeFiles", "Served", "tiny_pdf", "tiny_png"]

CHUNK = 64 * 1024


def tiny_png() -> bytes:
    """A valid 1×1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return pack(">I", len(data)) + kind + data + pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x80\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def tiny_pdf() -> bytes:
    return b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n%%EOF\n"


@dataclass
class Served:
    body: bytes
    content_type: str
    length: bool = True  # sends Content-Length (False: chunked, so the size is known only by reading)
    token: str | None = None  # the bearer token it wants; without it, a sign-in page (as Slack answers)
    redirect: str | None = None  # answered with a 302 to this address instead
    requests: int = 0
    sent: int = 0  # bytes written before the reader stopped (or all of them)
    tokens: list[str] = field(default_factory=list)  # the Authorization headers it was sent


class FakeFiles:
    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.requests: list[str] = []  # every path asked for, known or not
        self.origin = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.origin = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def add(self, path: str, body: bytes, content_type: str, **options: object) -> str:
        """Serve `body` at `path`; returns its URL."""
        self.files[path] = Served(body=body, content_type=content_type, **options)  # type: ignore[arg-type]
        return f"{self.origin}/{path}"

    def served(self, path: str) -> Served:
        return self.files[path]

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.requests.append(path)
        served = self.files.get(path)
        if served is None:
            return web.Response(status=404)
        served.requests += 1
        auth = request.headers.get("Authorization", "")
        served.tokens.append(auth)
        if served.redirect is not None:
            raise web.HTTPFound(served.redirect)
        if served.token is not None and auth != f"Bearer {served.token}":
            return web.Response(text="<html>Sign in to Slack</html>", content_type="text/html")
        response = web.StreamResponse(headers={"Content-Type": served.content_type})
        if served.length:
            response.content_length = len(served.body)
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for start in range(0, len(served.body), CHUNK):
                piece = served.body[start : start + CHUNK]
                await response.write(piece)
                served.sent += len(piece)
                await asyncio.sleep(0)
            await response.write_eof()
        except ConnectionError:
            pass  # the reader hung up: what it got is in `sent`
        return response
