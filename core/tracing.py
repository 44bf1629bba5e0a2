"""Who and which message a log line is about: a context that every task spawned inside it inherits."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["current", "new_correlation_id", "traced"]

_CURRENT: ContextVar[tuple[str, str] | None] = ContextVar("rapport_trace", default=None)


def new_correlation_id() -> str:
    return uuid.uuid4().hex[:12]


@contextmanager
def traced(user_key: str, correlation_id: str | None = None) -> Iterator[str]:
    """Log lines written inside (and by tasks started inside) carry this user key and correlation id."""
    correlation_id = correlation_id or new_correlation_id()
    token = _CURRENT.set((user_key, correlation_id))
    try:
        yield correlation_id
    finally:
        _CURRENT.reset(token)


def current() -> tuple[str, str] | None:
    """(user key, correlation id) of the message being handled, if any."""
    return _CURRENT.get()
