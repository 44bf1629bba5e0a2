"""The small HTTP surface: health, readiness, metrics and per-person insights."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from adapters.base import Adapter
from bot.metrics import CONTENT_TYPE_LATEST
from bot.wiring import Services

__all__ = ["AppState", "make_app"]

log = logging.getLogger(__name__)


@dataclass
class AppState:
    """What the handlers read; `services` is None until storage and the model are up."""

    services: Services | None = None
    adapters: Sequence[Adapter] = field(default_factory=tuple)
    insights_token: str | None = None
    stopping: bool = False
    # Set by the Slack adapter in HTTP mode: it receives POST /slack/events.
    slack_events: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None


STATE: web.AppKey[AppState] = web.AppKey("state", AppState)


def _plausible_key(user_key: str) -> bool:
    """Short, printable and platform-prefixed: anything else (a NUL from `%00`, say) is the caller's mistake, not
    something to hand to the database."""
    return (
        0 < len(user_key) <= 191 and ":" in user_key and all(ch.isprintable() and not ch.isspace() for ch in user_key)
    )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """200 while events are taken and answered, with `degraded` naming what it goes on without (Redis, Chroma,
    the database while events spool to disk); 503 with the reasons when events cannot be taken."""
    state = request.app[STATE]
    problems: list[str] = []
    degraded: list[str] = []
    if state.stopping:
        problems.append("shutting down")
    if state.services is None:
        problems.append("starting: storage and model are loading")
    else:
        problems, degraded = await state.services.storage_problems()
    for adapter in state.adapters:
        if not adapter.connected:
            problems.append(f"{adapter.name}: {adapter.problem or 'not connected'}")
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems + degraded}, status=503)
    body: dict[str, Any] = {"status": "degraded" if degraded else "ready", "adapters": [a.name for a in state.adapters]}
    if degraded:
        body["degraded"] = degraded
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.services is None:
        return _error(503, "starting")
    services = state.services
    services.metrics.pending_work.set(services.assistant.pending)
    services.metrics.spooled.set(services.inbox.spooled)
    services.metrics.turns.set(services.turns.serving)
    for part in ("database", "short-term memory", "vector index", "storing"):
        services.metrics.down.labels(part=part).set(1 if services.health.is_down(part) else 0)
    response = web.Response(body=services.metrics.render())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


async def insights(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not state.insights_token:
        return _error(404, "the insights API is disabled (set INSIGHTS_TOKEN to enable it)")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), state.insights_token.encode()):
        return web.json_response(
            {"error": "missing or wrong bearer token"}, status=401, headers={"WWW-Authenticate": "Bearer"}
        )
    if state.services is None:
        return _error(503, "starting")
    user_key = request.match_info["user_key"]
    if not _plausible_key(user_key):
        return _error(400, "a user key looks like discord:<id>, slack:<team>:<id> or console:<name>")
    found: dict[str, Any] | None = await state.services.assistant.insights(user_key)
    if found is None:
        return _error(404, f"no user {user_key!r}")
    return web.json_response(found)


async def slack_events(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if state.slack_events is None:
        return _error(404, "Slack HTTP mode is not enabled here")
    if state.stopping:
        return _error(503, "shutting down")
    return await state.slack_events(request)


def make_app(state: AppState) -> web.Application:
    app = web.Application(client_max_size=1024**2)
    app[STATE] = state
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/insights/{user_key}", insights)
    app.router.add_post("/slack/events", slack_events)
    return app
