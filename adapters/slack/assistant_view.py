"""Slack's assistant pane (the app's `assistant_view`): what Rapport says when someone opens a thread there, the
prompts it suggests, and the thread's title. Pure functions of plain values; bolt's `AsyncAssistant` calls them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from adapters.slack.translate import PLATFORM, MalformedPayload
from core.events import UserRef

__all__ = [
    "GREETING",
    "LOADING",
    "PROMPTS_TITLE",
    "STARTERS",
    "STATUS",
    "suggested_prompts",
    "thread_starter",
    "thread_title",
]

GREETING = (
    "Hi! I'm Rapport. Ask me anything: I remember what you tell me, so that I can help you better "
    "(`/memory` shows what I know about you, only to you)."
)
PROMPTS_TITLE = "Try one of these:"
# Prompts for someone Rapport knows nothing about yet; each is a `{title, message}` as setSuggestedPrompts takes it.
STARTERS: tuple[dict[str, str], ...] = (
    {"title": "Plan my day", "message": "Help me plan my day: ask me what I have on."},
    {"title": "Explain something", "message": "Explain a topic I'm curious about, simply, with an example."},
    {"title": "Draft a message", "message": "Help me draft a short, friendly message to a colleague."},
    {"title": "Get to know me", "message": "Ask me a few questions so that you can help me better."},
)
STATUS = "is thinking…"
LOADING = ["Thinking…", "Remembering what you told me…", "Writing…"]  # shown in turn while the status is up
TITLE_LIMIT = 60  # characters: the pane's thread list shows about this much
TOPIC_LIMIT = 40  # characters of an interest in a prompt (an item without `about` is a sentence)


def suggested_prompts(interests: Sequence[str], *, limit: int = 4) -> list[dict[str, str]]:
    """Up to `limit` prompts: one for each of the person's interests first (theirs alone: the pane is their DM),
    then the general starters."""
    shaped = [
        {"title": f"What's new in {short}?", "message": f"What's new in {short}? Tell me what I might have missed."}
        for short in (_cut(topic, TOPIC_LIMIT) for topic in interests)
    ]
    return [*shaped, *STARTERS][:limit]


def thread_starter(body: Mapping[str, Any]) -> UserRef:
    """Who opened the thread of an `assistant_thread_started` event (the pane is theirs alone)."""
    event = body.get("event")
    thread = event.get("assistant_thread") if isinstance(event, Mapping) else None
    user = thread.get("user_id") if isinstance(thread, Mapping) else None
    team = body.get("team_id")
    if not isinstance(user, str) or not user.isalnum() or not isinstance(team, str) or not team.isalnum():
        raise MalformedPayload("assistant_thread_started without team_id or assistant_thread.user_id")
    return UserRef(platform=PLATFORM, scope=team, user_id=user)


def thread_title(text: str) -> str:
    """The first line of what the person asked first, cut at a word near the pane's width."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return _cut(line, TITLE_LIMIT) or "A conversation with Rapport"


def _cut(text: str, limit: int) -> str:
    """`text` whole, or cut at a word near `limit` characters, with an ellipsis."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit].rstrip(" ,.;:") + "…"
