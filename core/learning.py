"""Learning from each exchange: topics, interests, communication style and recurring patterns.

Pure functions over plain values; the assistant does the I/O around them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.ports import Profile, Scope, Scopes

__all__ = [
    "TOPIC_KEYWORDS",
    "describe_style",
    "extract_topics",
    "interests_for",
    "patterns_of",
    "topic_distribution",
    "update_profile",
]

TOPIC_KEYWORDS: Mapping[str, frozenset[str]] = {
    "programming": frozenset(
        "python javascript typescript rust golang java code coding bug debug compile function api "
        "programming developer git github refactor database sql kotlin swift".split()
    ),
    "ai": frozenset("ai llm gpt claude model neural embedding embeddings machine-learning ml".split()),
    "music": frozenset("music song songs album band guitar piano concert playlist jazz rock sing".split()),
    "sports": frozenset("football soccer basketball tennis running marathon gym workout cycling climbing".split()),
    "food": frozenset("food recipe cook cooking bake baking dinner lunch breakfast restaurant coffee tea".split()),
    "travel": frozenset("travel trip flight hotel vacation holiday visit tokyo paris japan italy".split()),
    "gaming": frozenset("game games gaming minecraft zelda steam playstation xbox nintendo".split()),
    "books": frozenset("book books novel reading author read library poetry".split()),
    "work": frozenset("meeting deadline project manager boss colleague job career interview".split()),
    "health": frozenset("sleep health doctor diet tired sick exercise stress meditation".split()),
    "science": frozenset("physics chemistry biology math mathematics space astronomy research".split()),
    "movies": frozenset("movie movies film films series netflix show actor cinema".split()),
    "pets": frozenset("dog dogs cat cats puppy kitten pet pets".split()),
    "finance": frozenset("money budget invest investing stock stocks savings crypto bank tax".split()),
}

_WORD = re.compile(r"[a-z][a-z0-9+#-]*")
_EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")
_FORMAL = frozenset("please kindly regards thank thanks could would appreciate".split())
_CASUAL = frozenset("lol haha hey yo gonna wanna cool yeah yep nope btw omg".split())


def extract_topics(text: str) -> list[str]:
    """The topics a message touches, in the order of TOPIC_KEYWORDS."""
    words = set(_WORD.findall(text.lower()))
    return [topic for topic, keywords in TOPIC_KEYWORDS.items() if words & keywords]


def _style_signals(text: str) -> dict[str, float]:
    words = _WORD.findall(text.lower())
    return {
        "avg_length": float(len(text)),
        "question_ratio": 1.0 if "?" in text else 0.0,
        "emoji_ratio": 1.0 if _EMOJI.search(text) else 0.0,
        "formality": (sum(w in _FORMAL for w in words) - sum(w in _CASUAL for w in words)) / max(len(words), 1),
    }


def update_profile(profile: Profile, *, text: str, topics: Iterable[str], scope: Scope, display_name: str) -> None:
    """Fold one message into the profile: running averages of style, topic counts per scope."""
    n = profile.message_count
    for name, value in _style_signals(text).items():
        old = profile.style.get(name, value)
        profile.style[name] = old + (value - old) / (n + 1) if n < 50 else old + (value - old) / 50
    for topic in topics:
        counts = profile.interests.setdefault(topic, {})
        counts[scope] = counts.get(scope, 0) + 1
    profile.message_count = n + 1
    if display_name:
        profile.display_name = display_name


def interests_for(profile: Profile, scopes: Scopes, *, limit: int = 8) -> list[str]:
    """Topics the person showed where these audiences read (None: anywhere), most frequent first."""
    counted = [
        (sum(n for s, n in c.items() if scopes is None or s in scopes), topic) for topic, c in profile.interests.items()
    ]
    ranked = sorted(((count, topic) for count, topic in counted if count > 0), key=lambda ct: (-ct[0], ct[1]))
    return [topic for _, topic in ranked[:limit]]


def topic_distribution(profile: Profile) -> dict[str, int]:
    return {topic: sum(c.values()) for topic, c in sorted(profile.interests.items())}


def describe_style(style: Mapping[str, float]) -> dict[str, str]:
    """Labels for the running style averages, as shown in insights and the system prompt."""
    if not style:
        return {}
    length = style.get("avg_length", 0.0)
    formality = style.get("formality", 0.0)
    return {
        "length": "brief" if length < 60 else "detailed" if length > 300 else "moderate",
        "tone": "formal" if formality > 0.02 else "casual" if formality < -0.02 else "neutral",
        "emoji": "often" if style.get("emoji_ratio", 0.0) >= 0.3 else "rarely",
        "questions": "mostly questions" if style.get("question_ratio", 0.0) >= 0.5 else "mostly statements",
    }


def _local(when: datetime, tz: str) -> datetime | None:
    if not tz:
        return None
    try:
        return when.astimezone(ZoneInfo(tz))
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _time_of_day(when: datetime) -> str:
    hour = when.hour
    return "morning" if 5 <= hour < 12 else "afternoon" if hour < 17 else "evening" if hour < 22 else "night"


def patterns_of(*, text: str, topics: Iterable[str], when: datetime, tz: str = "") -> list[tuple[str, str]]:
    """The (kind, value) patterns one message shows; counted over time they become learned patterns. The time of
    day only in the person's own time zone, where the platform gives it: in UTC it would claim a morning person
    of someone who writes in their evening."""
    found = [("topic", topic) for topic in topics]
    local = _local(when, tz)
    if local is not None:
        found.append(("active", _time_of_day(local)))
    if "?" in text:
        found.append(("asks", "questions"))
    if "```" in text:
        found.append(("shares", "code"))
    return found
