"""Slack payloads to neutral events and the when-to-answer rules, on recorded payloads, with no network."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.slack.translate import (
    MalformedPayload,
    Route,
    action_key,
    action_user,
    chain_from_replies,
    command_user,
    decide_message,
    envelope_of,
    event_key,
    message_key,
    plain_text,
    reaction_of,
    retry_attempt,
)
from core.events import MessageRef, ReactionAdded, ReactionRemoved, UserRef
from core.feedback import normalise_emoji

FIXTURES = Path(__file__).parent / "fixtures" / "slack"
BOT = "UBOT"


def payload(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"payload_{name}.json").read_text())
    return data


def decide(name: str, **changes: Any) -> Any:
    body = payload(name)
    body["event"].update(changes)
    return decide_message(envelope_of(body), bot_user_id=BOT)


def test_a_channel_mention_is_answered_in_a_thread_under_it() -> None:
    decision = decide("app_mention")
    assert decision.route is Route.ANSWER
    event = decision.message
    assert event.user == UserRef(platform="slack", scope="T1", user_id="U123")
    assert event.user.key == "slack:T1:U123"
    assert event.text == "what's a good book about jazz & improvisation?"
    assert event.conversation_id == "C1" and not event.private
    assert event.thread_id == "1712345678.000100"
    assert event.message == MessageRef(platform="slack", channel_id="C1", message_id="1712345678.000100")
    assert event.sent_at == datetime.fromtimestamp(1712345678.0001, UTC)
    assert decision.reply_thread_ts == "1712345678.000100"


def test_a_mention_inside_a_thread_is_answered_in_that_thread() -> None:
    decision = decide("app_mention_in_thread")
    assert decision.route is Route.ANSWER
    assert decision.reply_thread_ts == "1712345600.000200"
    assert decision.message.thread_id == "1712345600.000200"
    assert decision.message.text == "what do you think, ?"
    assert decision.message.user.key == "slack:T1:U456"


def test_a_dm_is_private_and_answered_at_the_top_level() -> None:
    decision = decide("message_im")
    assert decision.route is Route.ANSWER
    event = decision.message
    assert event.private and event.conversation_id == "D1" and event.thread_id is None
    assert decision.reply_thread_ts is None
    assert event.text == (
        "Can you remind me what a *modal* scale is? See this (https://en.wikipedia.org/wiki/Mode_(music))"
    )


def test_a_threaded_dm_is_answered_in_its_thread() -> None:
    decision = decide("message_im", thread_ts="1712345000.000001")
    assert decision.route is Route.ANSWER
    assert decision.reply_thread_ts == "1712345000.000001" and decision.message.thread_id == "1712345000.000001"


def test_a_follow_up_in_a_channel_thread_depends_on_the_thread() -> None:
    decision = decide("message_thread_reply")
    assert decision.route is Route.IF_THREAD_KNOWN
    assert decision.reply_thread_ts == "1712345678.000100"
    # the same conversation (short-term memory) as the mention that opened the thread
    assert decision.message.conversation_key == decide("app_mention").message.conversation_key


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("message_channel", "does not mention"),
        ("message_mention", "app_mention"),
        ("message_changed", "subtype message_changed"),
        ("message_deleted", "subtype message_deleted"),
        ("message_bot", "subtype bot_message"),
        ("message_own", "bot"),
    ],
)
def test_what_is_not_answered(name: str, reason: str) -> None:
    decision = decide(name)
    assert decision.route is Route.IGNORE and decision.message is None
    assert reason in decision.reason


def test_its_own_message_without_bot_fields_is_ignored_too() -> None:
    body = payload("message_own")
    del body["event"]["bot_id"], body["event"]["bot_profile"]
    assert decide_message(envelope_of(body), bot_user_id=BOT).route is Route.IGNORE


def test_a_mention_in_a_dm_is_left_to_the_message_event() -> None:
    assert decide("app_mention", channel="D1").route is Route.IGNORE


def test_a_thread_broadcast_is_still_a_person_writing() -> None:
    assert decide("message_thread_reply", subtype="thread_broadcast").route is Route.IF_THREAD_KNOWN


def test_a_mention_and_its_message_event_share_one_message_key() -> None:
    mention = decide("app_mention").message.message
    as_message = payload("message_mention")["event"]
    assert message_key("T1", mention.channel_id, mention.message_id) == message_key(
        "T1", as_message["channel"], as_message["ts"]
    )
    assert message_key("T1", "C1", "1.0") != message_key("T2", "C1", "1.0")
    assert event_key("Ev1") == "slack:event:Ev1"


@pytest.mark.parametrize(
    ("field", "value"),
    [("user", "U1\x00"), ("channel", "C1\nC2"), ("ts", "1.0\u202e"), ("user", "x" * 100), ("thread_ts", "1\x1b")],
)
def test_ids_with_control_characters_or_oddities_are_malformed(field: str, value: str) -> None:
    with pytest.raises(MalformedPayload, match="not a Slack id"):
        decide("message_thread_reply", **{field: value})


def test_a_click_is_named_by_who_clicked_and_when() -> None:
    click = payload("block_actions_forget")
    key = action_key(click)
    assert key.startswith("slack:action:T1:U123:") and key == action_key(copy.deepcopy(click))
    del click["actions"][0]["action_ts"]
    click.pop("trigger_id", None)
    with pytest.raises(MalformedPayload):
        action_key(click)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda body: body.pop("event"),
        lambda body: body.__setitem__("event", "not an object"),
        lambda body: body["event"].pop("type"),
        lambda body: body.pop("event_id"),
        lambda body: (body.pop("team_id"), body.pop("authorizations")),
    ],
)
def test_envelopes_without_their_identity_are_malformed(breakage: Any) -> None:
    body = payload("app_mention")
    breakage(body)
    with pytest.raises(MalformedPayload):
        envelope_of(body)


@pytest.mark.parametrize("field", ["user", "channel", "ts"])
def test_messages_without_user_channel_or_ts_are_malformed(field: str) -> None:
    body = payload("message_im")
    del body["event"][field]
    with pytest.raises(MalformedPayload):
        decide_message(envelope_of(body), bot_user_id=BOT)


def test_team_falls_back_to_the_authorization() -> None:
    body = payload("message_im")
    del body["team_id"]
    assert envelope_of(body).team_id == "T1"


def test_retries_are_recognised_in_both_modes() -> None:
    assert retry_attempt({}) == 0
    assert retry_attempt({"x-slack-retry-num": ["2"]}) == 2  # HTTP header; Socket Mode's retry_attempt, via bolt
    assert retry_attempt({"x-slack-retry-num": ["junk"]}) == 0


def test_reactions_become_feedback_events() -> None:
    added = reaction_of(envelope_of(payload("reaction_added")), bot_user_id=BOT)
    assert isinstance(added, ReactionAdded)
    assert added.actor.key == "slack:T1:U123"
    assert added.message == MessageRef(platform="slack", channel_id="C1", message_id="1800000000.000001")
    assert normalise_emoji(added.emoji) == "👍"
    removed = reaction_of(envelope_of(payload("reaction_removed")), bot_user_id=BOT)
    assert isinstance(removed, ReactionRemoved) and removed.message == added.message


def test_reactions_that_cannot_be_on_rapports_reply_are_dropped() -> None:
    body = payload("reaction_added")
    body["event"]["item_user"] = "U456"
    assert reaction_of(envelope_of(body), bot_user_id=BOT) is None
    body = payload("reaction_added")
    body["event"]["item"] = {"type": "file", "file": "F1"}
    assert reaction_of(envelope_of(body), bot_user_id=BOT) is None
    body = payload("reaction_added")
    body["event"]["user"] = BOT
    assert reaction_of(envelope_of(body), bot_user_id=BOT) is None
    body = payload("reaction_added")
    del body["event"]["reaction"]
    with pytest.raises(MalformedPayload):
        reaction_of(envelope_of(body), bot_user_id=BOT)


def test_commands_and_buttons_name_who_used_them() -> None:
    assert command_user(payload("command_insights")).key == "slack:T1:U123"
    forged = copy.deepcopy(payload("block_actions_forget"))
    forged["actions"][0]["value"] = "slack:T1:U456"  # the clicker counts, never what the button carries
    assert action_user(forged).key == "slack:T1:U123"
    with pytest.raises(MalformedPayload):
        command_user({"command": "/insights"})
    with pytest.raises(MalformedPayload):
        action_user({"type": "block_actions"})


def test_plain_text_for_claude() -> None:
    assert plain_text("<@UBOT>  hi <@U9> in <#C9|general> &lt;3 &amp; more", BOT) == "hi <@U9> in #general <3 & more"
    assert plain_text("see <https://a.example/x>", BOT) == "see https://a.example/x"
    assert plain_text("<@UBOT|rapport>", BOT) == ""


def test_the_thread_so_far_leaves_out_the_message_being_answered() -> None:
    replies = [
        {"type": "message", "user": "U123", "text": "anyone know a jazz book?", "ts": "1.0"},
        {"type": "message", "user": "U456", "text": "try <https://b.example|this one>", "ts": "2.0"},
        {"type": "message", "subtype": "channel_join", "user": "U789", "text": "joined", "ts": "2.5"},
        {"type": "message", "bot_id": "BOTHER", "text": "beep", "ts": "2.7"},
        {"type": "message", "user": "UBOT", "bot_id": "BBOT", "text": "an earlier answer", "ts": "2.8"},
        {"type": "message", "user": "U456", "text": "<@UBOT> what do you think?", "ts": "3.0"},
    ]
    chain = chain_from_replies(replies, current_ts="3.0", bot_user_id=BOT, names={"U123": "Ada", "U456": "Grace"})
    assert [(m.author, m.text, m.from_assistant) for m in chain] == [
        ("Ada", "anyone know a jazz book?", False),
        ("Grace", "try this one (https://b.example)", False),
        ("Rapport", "an earlier answer", True),
    ]


def test_the_manifest_asks_for_what_the_adapter_handles() -> None:
    yaml = pytest.importorskip("yaml")
    manifest = yaml.safe_load((Path(__file__).parent.parent / "slack-manifest.yml").read_text())
    commands = {c["command"] for c in manifest["features"]["slash_commands"]}
    assert commands == {"/insights", "/forget", "/learning", "/memory", "/rapport"}
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_mention", "message.channels", "message.im", "reaction_added", "reaction_removed"} <= events
    assert "app_home_opened" in events and manifest["features"]["app_home"]["home_tab_enabled"] is True
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "channels:history", "im:history", "chat:write", "commands", "reactions:read"} <= scopes
    assert {"users:read"} <= scopes  # users.info for display names
    assert manifest["settings"]["socket_mode_enabled"] is True and manifest["settings"]["interactivity"]["is_enabled"]
