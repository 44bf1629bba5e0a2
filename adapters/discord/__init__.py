"""Rapport on Discord: a thin discord.py client (`adapter.py`) around pure translation (`translate.py`)."""

from __future__ import annotations

from adapters.discord.adapter import DiscordAdapter, DiscordConfig

__all__ = ["DiscordAdapter", "DiscordConfig"]
