"""Which emoji means what: reactions on Rapport's replies turned into a satisfaction score."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from core.person import Item
from core.ports import Scope
from core.privacy import narrowest

__all__ = [
    "DEFAULT_EMOJI_SCORES",
    "Reaction",
    "normalise_emoji",
    "polarity",
    "preferences_from",
    "reply_traits",
    "score_for",
]

# 1.0 is delighted, -1.0 is unhappy. Names cover Slack's and Discord's spellings of the same emoji.
DEFAULT_EMOJI_SCORES: Mapping[str, float] = {
    "👍": 1.0,
    "❤": 1.0,
    "🎉": 1.0,
    "🙏": 0.8,
    "🔥": 1.0,
    "💯": 1.0,
    "✅": 0.8,
    "😄": 0.8,
    "😀": 0.8,
    "🙂": 0.5,
    "👀": 0.0,
    "🤔": -0.3,
    "😕": -0.5,
    "👎": -1.0,
    "😞": -0.8,
    "😡": -1.0,
    "❌": -0.8,
}

_ALIASES: Mapping[str, str] = {
    "+1": "👍",
    "thumbsup": "👍",
    "-1": "👎",
    "thumbsdown": "👎",
    "heart": "❤",
    "tada": "🎉",
    "pray": "🙏",
    "fire": "🔥",
    "100": "💯",
    "white_check_mark": "✅",
    "smile": "😄",
    "grinning": "😀",
    "slightly_smiling_face": "🙂",
    "eyes": "👀",
    "thinking_face": "🤔",
    "confused": "😕",
    "disappointed": "😞",
    "rage": "😡",
    "x": "❌",
}

_VARIATION_AND_SKIN = {
    "\ufe0f",
    "\ufe0e",
    "\U0001f3fb",
    "\U0001f3fc",
    "\U0001f3fd",
    "\U0001f3fe",
    "\U0001f3ff",
}


def normalise_emoji(emoji: str) -> str:
    """One spelling per emoji: Slack short names and `:name:` to the character; variation and skin tone off."""
    name = emoji.strip().strip(":")
    name = name.split("::", 1)[0]  # Slack's "+1::skin-tone-3"
    if name in _ALIASES:
        return _ALIASES[name]
    return "".join(ch for ch in name if ch not in _VARIATION_AND_SKIN)


def score_for(emoji: str, table: Mapping[str, float] = DEFAULT_EMOJI_SCORES) -> float | None:
    """The satisfaction an emoji expresses, or None when it says nothing about the reply."""
    normalised = normalise_emoji(emoji)
    for key, score in table.items():
        if normalise_emoji(key) == normalised:
            return score
    return None


def polarity(score: float) -> str:
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


# --- what reactions say about how a person likes answers ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Reaction:
    """The asker's reaction on one of Rapport's replies (its net score, when several emoji are on it)."""

    interaction_id: str
    reply: str
    score: float
    at: datetime
    audience: Scope


_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+\S", re.MULTILINE)
_EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")
SHORT, LONG = 500, 1_200

# trait -> (what liking replies with it means, what disliking them means)
_STATEMENTS: Mapping[str, tuple[str, str]] = {
    "short": ("prefers short, to-the-point answers", "prefers detailed, thorough answers"),
    "list": ("likes answers laid out as bullet lists", "prefers flowing prose to bullet lists"),
    "code": ("likes code examples in answers", "prefers answers without code unless asked"),
    "emoji": ("likes a playful tone with emoji", "prefers answers without emoji"),
}


def reply_traits(text: str) -> dict[str, float]:
    """What a reply had: +1 for a trait it had, -1 for the opposite where a trait has one (a long reply is the
    opposite of a short one); a trait it lacks is absent, since liking a reply without lists says nothing about
    lists."""
    traits: dict[str, float] = {}
    if len(text) < SHORT:
        traits["short"] = 1.0
    elif len(text) > LONG:
        traits["short"] = -1.0
    if len(_LIST_LINE.findall(text)) >= 2:
        traits["list"] = 1.0
    if "```" in text:
        traits["code"] = 1.0
    if _EMOJI.search(text):
        traits["emoji"] = 1.0
    return traits


def preferences_from(
    user_key: str,
    reactions: Sequence[Reaction],
    *,
    now: datetime,
    half_life_days: float = 30.0,
    threshold: float = 1.0,
    minimum: int = 2,
) -> list[Item]:
    """Preferences that the person's reactions show: for each trait, the reactions' scores signed by whether the
    reply had it, each weighed down by its age (evidence fades with a half-life). A trait with enough weight one
    way becomes a preference, with its evidence and sources; one with little says nothing."""
    found: list[Item] = []
    for trait, (liked, disliked) in _STATEMENTS.items():
        net = 0.0
        pro: list[Reaction] = []
        con: list[Reaction] = []
        for reaction in reactions:
            sign = reply_traits(reaction.reply).get(trait)
            if sign is None or reaction.score == 0:
                continue
            age = max((now - reaction.at).total_seconds() / 86_400, 0.0)
            net += sign * reaction.score * 0.5 ** (age / half_life_days)
            (pro if sign * reaction.score > 0 else con).append(reaction)
        if abs(net) < threshold or len(pro) + len(con) < minimum:
            continue
        backing = pro if net > 0 else con
        if not backing:
            continue
        text = liked if net > 0 else disliked
        found.append(
            Item(
                id=uuid.uuid5(uuid.NAMESPACE_URL, f"rapport:feedback:{user_key}:{trait}:{net > 0}").hex,
                user_key=user_key,
                kind="preference",
                text=text,
                about=f"answers: {trait}",
                origin="feedback",
                evidence=f"{len(pro)} reactions for, {len(con)} against, weight {net:+.2f}",
                audience=narrowest(r.audience for r in backing),
                learned_at=max(r.at for r in backing),
                sources=tuple(dict.fromkeys(r.interaction_id for r in backing)),
            )
        )
    return found
