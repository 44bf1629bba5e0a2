"""`python -m bot` runs the worker; `chat` talks in the terminal; `migrate` applies database migrations."""

from __future__ import annotations

import argparse
import logging
import sys

from bot.config import ConfigError, Settings, load_settings
from bot.logs import configure_logging
from bot.loop import run

log = logging.getLogger("bot")


def _secrets(settings: Settings) -> list[str]:
    values = [
        settings.anthropic_api_key,
        settings.discord_token,
        settings.slack_bot_token,
        settings.slack_app_token,
        settings.slack_signing_secret,
        settings.insights_token,
    ]
    return [v.get_secret_value() for v in values if v is not None]


async def _chat(settings: Settings, user: str) -> int:
    from adapters.console import ConsoleAdapter
    from bot.wiring import build_services

    settings.require_claude()
    services = await build_services(settings)
    try:
        console = ConsoleAdapter(services.assistant, services.turns, user=user)
        services.start()
        await console.run()
    finally:
        await services.turns.stop_taking()
        await services.assistant.drain(settings.shutdown_timeout)
        await services.close()
    return 0


async def _migrate(settings: Settings) -> int:
    from storage.database import Database

    await Database(settings.database_url).migrate()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Rapport, the assistant that knows you.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the worker (the default)")
    chat = commands.add_parser("chat", help="talk to Rapport in this terminal")
    chat.add_argument("--user", default="you", help="who you are (the user key becomes console:NAME)")
    commands.add_parser("migrate", help="apply database migrations and exit")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
        if settings.rapport_config and args.command != "migrate":
            from pathlib import Path

            from bot.policy_file import PolicyError, load_policy

            try:
                load_policy(Path(settings.rapport_config))  # checked before anything starts
            except PolicyError as exc:
                for line in exc.lines:
                    print(f"rapport: {line}", file=sys.stderr)
                return 2
        quiet = args.command == "chat" and settings.log_level == "INFO"
        configure_logging("WARNING" if quiet else settings.log_level, settings.log_format, _secrets(settings))
        if args.command == "chat":
            if not args.user.strip() or ":" in args.user:
                raise ConfigError("--user must be a non-empty name without ':'")
            return run(_chat(settings, args.user.strip()))
        if args.command == "migrate":
            return run(_migrate(settings))
        from bot.worker import run_worker

        return run(run_worker(settings))
    except ConfigError as exc:
        print(f"rapport: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
