"""Pure decisions: topics, style, patterns, emoji meanings, privacy scopes."""

from __future__ import annotations

from datetime import UTC, datetime

from core.feedback import normalise_emoji, polarity, score_for
from core.learning import (
    describe_style,
    extract_topics,
    interests_for,
    patterns_of,
    topic_distribution,
    update_profile,
)
from core.ports import Profile
from core.privacy import recallable_scopes, scope_of


def test_topics_are_found_by_keyword() -> None:
    assert extract_topics("Can you help me debug this Python function?") == ["programming"]
    assert extract_topics("Playing guitar after my marathon") == ["music", "sports"]
    assert extract_topics("hello there") == []


def test_profile_counts_interests_per_scope_and_tracks_style() -> None:
    profile = Profile(user_key="x:1")
    update_profile(profile, text="lol python is cool 😄", topics=["programming"], scope="private", display_name="X")
    update_profile(
        profile,
        text="Could you please review my python code?",
        topics=["programming"],
        scope="shared",
        display_name="X",
    )
    update_profile(profile, text="I love jazz", topics=["music"], scope="private", display_name="")
    assert profile.interests == {"programming": {"private": 1, "shared": 1}, "music": {"private": 1}}
    assert profile.message_count == 3 and profile.display_name == "X"
    assert interests_for(profile, ("shared",)) == ["programming"]
    assert interests_for(profile, ("private", "shared")) == ["programming", "music"]
    assert topic_distribution(profile) == {"music": 1, "programming": 2}
    style = describe_style(profile.style)
    assert style["length"] == "brief" and style["emoji"] == "often"


def test_patterns_of_a_message() -> None:
    found = patterns_of(
        text="How do I fix this?\n```py\nx=1\n```",
        topics=["programming"],
        when=datetime(2026, 1, 1, 20, tzinfo=UTC),
    )
    assert found == [
        ("topic", "programming"),
        ("active", "evening"),
        ("asks", "questions"),
        ("shares", "code"),
    ]


def test_emoji_are_normalised_across_platforms() -> None:
    assert normalise_emoji(":+1:") == "👍"
    assert normalise_emoji("+1::skin-tone-3") == "👍"
    assert normalise_emoji("👍🏽") == "👍"
    assert normalise_emoji("❤️") == "❤"
    assert score_for("thumbsup") == 1.0
    assert score_for("-1") == -1.0
    assert score_for("confused") == -0.5
    assert score_for("🦄") is None
    assert score_for("🦄", {"🦄": 0.5}) == 0.5
    assert polarity(1.0) == "positive" and polarity(-0.5) == "negative" and polarity(0.0) == "neutral"


def test_private_memories_only_come_back_in_private() -> None:
    assert scope_of(True) == "private" and scope_of(False) == "shared"
    assert recallable_scopes(private=False) == ("shared",)
    assert set(recallable_scopes(private=True)) == {"private", "shared"}
