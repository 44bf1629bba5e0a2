"""Logging set-up: plain lines for a terminal, JSON lines for a log collector, secrets masked in both."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

from aiohttp.http_exceptions import HttpProcessingError

from core.tracing import current

__all__ = ["BadRequestLine", "SecretMask", "configure_logging"]

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class SecretMask(logging.Filter):
    """Replaces every known secret value in a record's final text with `***`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        masked = self._mask(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        if masked != message:
            record.msg, record.args = masked, None
        return True

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class TraceFields(logging.Filter):
    """Adds `user_key` and `correlation_id` to every record written while a message is being handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace = current()
        if trace is not None and not hasattr(record, "correlation_id"):
            record.user_key, record.correlation_id = trace
        return True


class BadRequestLine(logging.Filter):
    """aiohttp logs a request it cannot parse (an oversized header or URL, bytes that are not HTTP) as an ERROR
    with a traceback, once per request: anyone can send those, so they become one WARNING line each."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            # The reason without what follows its colon: that part quotes the request's own bytes.
            reason = str(exc.message or type(exc).__name__).splitlines()[0].split(":", 1)[0][:200]
            record.msg, record.args = "refused a malformed HTTP request from %s: %s %s", (remote, exc.code, reason)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        correlation_id = getattr(record, "correlation_id", None)
        if correlation_id is not None:
            head, _, rest = line.partition(": ")
            line = f"{head} [{getattr(record, 'user_key', '?')} {correlation_id}]: {rest}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info or record.exc_text:
            payload["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(payload, default=str, ensure_ascii=False)


def configure_logging(level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(PlainFormatter())
    handler.addFilter(TraceFields())
    handler.addFilter(SecretMask(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in (
        "httpx",
        "httpx2",
        "httpcore",
        "chromadb",
        "sentence_transformers",
        "tortoise",
        "aiosqlite",
    ):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))
    # While PostgreSQL is down, asyncpg's pool logs a traceback every few seconds as it tries to reconnect; the
    # outage itself is one line when it starts and one when it ends (core.health).
    logging.getLogger("asyncpg.pool").setLevel(max(logging.getLevelName(level), logging.ERROR))
    logging.getLogger("aiohttp.server").addFilter(BadRequestLine())
