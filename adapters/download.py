"""Downloading the files people send, from the platform's own addresses only.

One aiohttp session per adapter (opened on first use, closed with the adapter). An address is fetched only when
its origin (scheme, host and port) is one of the platform's: the URL came from the platform's payload, never from
a message's words, and a token (Slack's) is never sent anywhere else. Redirects are followed by hand, to those
origins only. The size cap holds while reading: a declared length over it is refused before the body, and the
connection is dropped as soon as more bytes arrive than the cap (a body that lies about its length costs at
most the cap). The caller (core.files) sets the deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping

import aiohttp
import yarl

from core.events import Attachment
from core.files import FileTooBig, NotFromPlatform

__all__ = ["Downloader", "origin_of"]

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_REDIRECTS = 3


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of an address (the port only when it is not the scheme's default)."""
    try:
        parsed = yarl.URL(url)
    except (TypeError, ValueError):
        return ""
    if not parsed.is_absolute() or parsed.scheme not in ("http", "https") or not parsed.host:
        return ""
    origin = f"{parsed.scheme}://{parsed.host.lower()}"
    return origin if parsed.is_default_port() else f"{origin}:{parsed.port}"


class Downloader:
    """Fetches files from `origins` (e.g. "https://files.slack.com"), with `headers` (the bot token, for Slack)."""

    def __init__(self, origins: Collection[str], *, headers: Mapping[str, str] | None = None) -> None:
        self._origins = frozenset(origin.rstrip("/").lower() for origin in origins)
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None
        self._opening = asyncio.Lock()
        self._warned: set[str] = set()

    def allows(self, url: str) -> bool:
        return origin_of(url) in self._origins

    async def _opened(self) -> aiohttp.ClientSession:
        async with self._opening:
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=15),
                    connector=aiohttp.TCPConnector(limit=16),
                )
            return self._session

    async def fetch(self, attachment: Attachment, limit: int) -> bytes:
        """At most `limit` bytes of the file. Slack answers a request it will not serve (a missing `files:read`
        scope, say) with its sign-in page, or a redirect to it: a web page where the file is not one (or not the
        size declared) is refused, and so is a redirect off the platform after the first hop."""
        session = await self._opened()
        url = attachment.url
        html = attachment.media_type.startswith("text/html") or attachment.name.lower().endswith((".html", ".htm"))
        for hop in range(MAX_REDIRECTS + 1):
            if not self.allows(url):
                if hop == 0:
                    raise NotFromPlatform(origin_of(url) or "not an http(s) address")
                self._warn(f"a file download was redirected away from the platform, to {origin_of(url) or url!r}")
                raise OSError("redirected away from the platform")
            async with session.get(url, headers=self._headers, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                    url = str(response.url.join(yarl.URL(response.headers["Location"])))
                    continue
                if response.status != 200:
                    raise OSError(f"HTTP {response.status}")
                declared = response.content_length
                if declared is not None and declared > limit:
                    response.close()
                    raise FileTooBig(declared)
                body = bytearray()
                async for chunk in response.content.iter_chunked(CHUNK):
                    body += chunk
                    if len(body) > limit:
                        response.close()  # the connection is dropped: nothing more is read
                        raise FileTooBig(declared)
                page = response.content_type == "text/html"
            if page and (not html or (attachment.size is not None and len(body) != attachment.size)):
                self._warn("the platform sent a web page instead of a file (does the app have files:read?)")
                raise OSError("the platform sent a web page instead of the file")
            return bytes(body)
        raise OSError("too many redirects")

    def _warn(self, problem: str) -> None:
        """Once per kind of problem: it points at the app's permissions, which an operator fixes once."""
        if problem not in self._warned:
            self._warned.add(problem)
            log.warning("%s", problem)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
