"""What Rapport knows about a person, in the shape of the original design's insights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.learning import describe_style, interests_for, topic_distribution
from core.person import Item
from core.ports import InteractionStats, Pattern, Profile

__all__ = ["build_insights"]


def _item(item: Item) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": item.id,
        "text": item.text,
        "about": item.about,
        "learned_at": item.learned_at.isoformat(),
        "from": item.origin,
        "sources": len(item.sources),
    }
    if item.evidence:
        shown["evidence"] = item.evidence
    if not item.current:
        shown["ended"] = item.ended
        shown["until"] = item.valid_until.isoformat() if item.valid_until else None
    return shown


def build_insights(
    profile: Profile,
    patterns: Sequence[Pattern],
    stats: InteractionStats,
    items: Sequence[Item] = (),
    *,
    learning_paused: bool = False,
) -> dict[str, Any]:
    """The person's own view of themselves: every scope counts, since only they (or an operator) see it. Their
    model's current items by kind (newest first), and what stopped being true under `history`."""
    current = sorted((i for i in items if i.current), key=lambda i: (i.learned_at, i.seq), reverse=True)
    past = [i for i in items if i.ended in ("superseded", "retired")]
    model_interests = [i.text for i in current if i.kind == "interest"]
    keyword = [t for t in interests_for(profile, None) if t not in model_interests]
    return {
        "facts": [_item(i) for i in current if i.kind == "fact"],
        "preferences": [_item(i) for i in current if i.kind == "preference"],
        "history": [_item(i) for i in sorted(past, key=lambda i: i.valid_until or i.learned_at, reverse=True)],
        "learning_paused": learning_paused,
        "user_key": profile.user_key,
        "display_name": profile.display_name,
        "top_patterns": [{"kind": p.kind, "value": p.value, "count": p.count} for p in patterns],
        "total_interactions": stats.total_interactions,
        "average_satisfaction": (None if stats.average_satisfaction is None else round(stats.average_satisfaction, 3)),
        "topic_distribution": topic_distribution(profile),
        "interests": model_interests + keyword,
        "communication_style": describe_style(profile.style),
    }
