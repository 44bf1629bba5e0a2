"""The worker's lifetime: HTTP up first, then storage and the model, then the adapters; the reverse on stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Sequence

from aiohttp import web

from adapters.base import Adapter
from bot.config import Settings
from bot.http import AppState, make_app
from bot.metrics import watch_loop
from bot.wiring import Services, build_services, describe_storage

__all__ = ["build_adapters", "run_worker"]

log = logging.getLogger(__name__)


def build_adapters(settings: Settings, services: Services, state: AppState) -> list[Adapter]:
    """Every adapter whose credentials are set; Slack in HTTP mode takes POST /slack/events on our server."""
    adapters: list[Adapter] = []
    if settings.discord_token:
        from adapters.discord import DiscordAdapter, DiscordConfig

        adapters.append(
            DiscordAdapter(
                services.assistant,
                services.turns,
                DiscordConfig(
                    token=settings.discord_token.get_secret_value(),
                    guild_id=settings.discord_guild_id,
                    allowed_channel_ids=settings.discord_allowed_channels,
                    shard_count=settings.discord_shard_count,
                    shard_ids=settings.discord_shards or None,
                ),
            )
        )
    if settings.slack_bot_token:
        from adapters.slack import SlackAdapter, SlackConfig

        slack = SlackAdapter(
            services.assistant,
            services.turns,
            SlackConfig(
                bot_token=settings.slack_bot_token.get_secret_value(),
                app_token=settings.slack_app_token.get_secret_value() if settings.slack_app_token else None,
                signing_secret=(
                    settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
                ),
                api_url=settings.slack_api_url,
            ),
        )
        if not slack.socket_mode:
            state.slack_events = slack.handle_http
        adapters.append(slack)
    return adapters


async def _shut_down(adapters: Sequence[Adapter], services: Services | None, timeout: float) -> None:
    """Stop taking events, let the turns under way deliver and their jobs finish, then close everything.

    One deadline covers it all, so a stuck answer cannot hold the process past `timeout`: what is not done by
    then stays in the inbox, where it got to, and its leases are handed back for the next process.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for adapter in adapters:
        await adapter.stop_taking()
    if services is not None:
        await services.turns.stop_taking()
        if not await services.turns.drain(max(deadline - loop.time(), 0.1)):
            log.warning("turns still under way after %.0fs: the next process resumes them", timeout)
    for adapter in adapters:
        await adapter.drain(max(deadline - loop.time(), 0.1))
    if services is not None and not await services.assistant.drain(max(deadline - loop.time(), 0.1)):
        log.warning("jobs still to do after %.0fs: they stay in the inbox for the next process", timeout)
    if services is not None:
        await services.close()
    for adapter in adapters:
        await adapter.stop()


def _enabled_platforms(settings: Settings) -> list[str]:
    platforms = []
    if settings.discord_token:
        platforms.append("discord")
    if settings.slack_bot_token:
        platforms.append("slack")
    return platforms


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or `stop`); returns the exit code."""
    settings.require_claude()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    platforms = _enabled_platforms(settings)
    log.info(
        "Rapport starting: adapters %s",
        ", ".join(platforms) if platforms else "none (set DISCORD_TOKEN or SLACK_BOT_TOKEN to connect a platform)",
    )
    log.info("storage: %s", describe_storage(settings))

    state = AppState(insights_token=settings.insights_token.get_secret_value() if settings.insights_token else None)
    runner = web.AppRunner(make_app(state), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host="0.0.0.0", port=settings.port).start()
    log.info("HTTP on port %d: /health /ready /metrics /api/v1/insights/{user_key}", settings.port)

    services: Services | None = None
    adapters: Sequence[Adapter] = ()
    try:
        services = await build_services(settings)
        adapters = build_adapters(settings, services, state)
        state.services, state.adapters = services, adapters
        for adapter in adapters:
            await adapter.start()
        services.start()
        lag = asyncio.create_task(watch_loop(services.metrics), name="loop-lag")
        # What start-up made (the model, the libraries, the clients) lives as long as the process: out of the
        # collector's sight, a full collection no longer walks it (one took 200-400 ms in the middle of reading
        # a person's 10,000 memories).
        gc.freeze()
        log.info("Rapport ready")
        await stop.wait()
        lag.cancel()
    finally:
        state.stopping = True
        log.info("shutting down: no new events, finishing answers in flight")
        await _shut_down(adapters, services, settings.shutdown_timeout)
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopped")
    return 0
