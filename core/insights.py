"""What Rapport knows about a person, in the shape of the original design's insights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.learning import describe_style, interests_for, topic_distribution
from core.ports import InteractionStats, Pattern, Profile

__all__ = ["build_insights"]


def build_insights(profile: Profile, patterns: Sequence[Pattern], stats: InteractionStats) -> dict[str, Any]:
    """The person's own view of themselves: every scope counts, since only they (or an operator) see it."""
    return {
        "user_key": profile.user_key,
        "display_name": profile.display_name,
        "top_patterns": [{"kind": p.kind, "value": p.value, "count": p.count} for p in patterns],
        "total_interactions": stats.total_interactions,
        "average_satisfaction": (None if stats.average_satisfaction is None else round(stats.average_satisfaction, 3)),
        "topic_distribution": topic_distribution(profile),
        "interests": interests_for(profile, None),
        "communication_style": describe_style(profile.style),
    }
