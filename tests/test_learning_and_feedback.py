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
from core.privacy import PERSON, Audience, narrowest, readable_in

PUBLIC_T1 = Audience.public("slack", "T1", place="C1")
TEAM_ONLY = Audience.private_place("slack", "T1", "G7")


def test_topics_are_found_by_keyword() -> None:
    assert extract_topics("Can you help me debug this Python function?") == ["programming"]
    assert extract_topics("Playing guitar after my marathon") == ["music", "sports"]
    assert extract_topics("hello there") == []


def test_profile_counts_interests_per_scope_and_tracks_style() -> None:
    profile = Profile(user_key="x:1")
    update_profile(profile, text="lol python is cool 😄", topics=["programming"], scope="person", display_name="X")
    update_profile(
        profile,
        text="Could you please review my python code?",
        topics=["programming"],
        scope=PUBLIC_T1.code,
        display_name="X",
    )
    update_profile(profile, text="I love jazz", topics=["music"], scope=TEAM_ONLY.code, display_name="")
    assert profile.interests == {
        "programming": {"person": 1, "public:slack:T1": 1},
        "music": {"place:slack:T1:G7": 1},
    }
    assert profile.message_count == 3 and profile.display_name == "X"
    assert interests_for(profile, readable_in(PUBLIC_T1)) == ["programming"], "not what was said in G7"
    assert interests_for(profile, readable_in(TEAM_ONLY)) == ["music", "programming"]
    assert interests_for(profile, readable_in(PERSON)) == ["programming", "music"]
    assert topic_distribution(profile) == {"music": 1, "programming": 2}
    style = describe_style(profile.style)
    assert style["length"] == "brief" and style["emoji"] == "often"


def test_patterns_of_a_message_tell_the_time_of_day_only_in_the_persons_own_zone() -> None:
    text, when = "How do I fix this?\n```py\nx=1\n```", datetime(2026, 1, 1, 20, tzinfo=UTC)
    found = patterns_of(text=text, topics=["programming"], when=when, tz="Asia/Tokyo")
    assert found == [
        ("topic", "programming"),
        ("active", "morning"),  # 05:00 in Tokyo, 20:00 in UTC
        ("asks", "questions"),
        ("shares", "code"),
    ]
    assert ("active", "evening") in patterns_of(text=text, topics=[], when=when, tz="Europe/London")
    unknown = patterns_of(text=text, topics=[], when=when)
    assert not any(kind == "active" for kind, _ in unknown), "no zone given: no claim about the time of day"
    assert not any(kind == "active" for kind, _ in patterns_of(text=text, topics=[], when=when, tz="Mars/Base"))


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


def test_a_reply_uses_only_what_its_readers_could_already_read() -> None:
    other_team = Audience.public("slack", "T2", place="C9")
    server_a, server_b = Audience.public("discord", "111", place="5"), Audience.public("discord", "222", place="6")
    role_only = Audience.private_place("discord", "111", "7")
    assert readable_in(PERSON) is None, "a DM: everything of the person's"
    assert readable_in(PUBLIC_T1) == ("public:slack:T1",), "a public channel: its workspace's public places only"
    assert readable_in(TEAM_ONLY) == ("place:slack:T1:G7", "public:slack:T1"), "a private place: itself, and those"
    assert TEAM_ONLY.code not in (readable_in(PUBLIC_T1) or ()) and PERSON.code not in (readable_in(TEAM_ONLY) or ())
    assert readable_in(other_team) == ("public:slack:T2",), "never across workspaces"
    assert server_a.code not in (readable_in(server_b) or ()) and role_only.code not in (readable_in(server_a) or ())
    assert Audience.public("slack", "T1", place="C2").code == PUBLIC_T1.code, "one workspace's public places: one"


def test_what_is_learned_from_several_places_keeps_the_narrowest_audience_they_share() -> None:
    assert narrowest([PUBLIC_T1.code, PUBLIC_T1.code]) == PUBLIC_T1.code
    assert narrowest([PUBLIC_T1.code, TEAM_ONLY.code]) == TEAM_ONLY.code
    assert narrowest([TEAM_ONLY.code, Audience.private_place("slack", "T1", "G8").code]) == "person"
    assert narrowest([PUBLIC_T1.code, Audience.public("slack", "T2").code]) == "person"
    assert narrowest([Audience.private_place("slack", "T2", "G1").code, PUBLIC_T1.code]) == "person"
    assert narrowest(["person", PUBLIC_T1.code]) == "person"
