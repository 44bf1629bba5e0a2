"""Which emoji means what: reactions on Rapport's replies turned into a satisfaction score."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["DEFAULT_EMOJI_SCORES", "normalise_emoji", "polarity", "score_for"]

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
