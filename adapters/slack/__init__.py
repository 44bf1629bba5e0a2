"""Slack: a slack-bolt app over Socket Mode or HTTP (`adapter`), and pure payload translation (`translate`)."""

from __future__ import annotations

from adapters.slack.adapter import SlackAdapter, SlackConfig

__all__ = ["SlackAdapter", "SlackConfig"]
