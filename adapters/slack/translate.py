"""Slack payloads as neutral events, and when Rapport answers: pure functions of the payload dicts."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from core.events import (
    Attachment,
    ChainMessage,
    MessageChanged,
    MessageReceived,
    MessageRef,
    ReactionAdded,
    ReactionRemoved,
    UserRef,
)
from core.privacy import PERSON, Audience

__all__ = [
    "change_of",
    "PLATFORM",
    "Decision",
    "Envelope",
    "MalformedPayload",
    "Route",
    "action_key",
    "action_user",
    "audience_from_info",
    "audience_of",
    "chain_from_replies",
    "command_user",
    "decide_message",
    "envelope_of",
    "event_key",
    "attachment_of_file",
    "files_of",
    "needs_lookup",
    "message_key",
    "plain_text",
    "reaction_of",
    "retry_attempt",
    "sent_at",
    "shape_problem",
]

PLATFORM = "slack"

# Subtypes that are still a person writing; every other one (edits, deletions, joins, bots) is not.
_PERSON_SUBTYPES = frozenset({"thread_broadcast", "file_share"})
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # team, user, channel ids and ts: anything else is not from Slack
_CHANNEL_LINK = re.compile(r"<#[A-Z0-9]+\|([^>]*)>")
_URL_LINK = re.compile(r"<((?:https?|mailto):[^>|]+)(?:\|([^>]*))?>")


class MalformedPayload(ValueError):
    """A payload without the fields every event of its kind has."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """An Events API callback: which event, from which workspace (and whether its channel is shared with another
    organisation: Slack Connect)."""

    event_id: str
    team_id: str
    event: Mapping[str, Any]
    shared_with_others: bool = False

    @property
    def type(self) -> str:
        return str(self.event.get("type", ""))


class Route(StrEnum):
    ANSWER = "answer"
    IF_THREAD_KNOWN = "if_thread_known"  # a follow-up: answered when Rapport takes part in the thread
    IGNORE = "ignore"


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What to do with a message event, and where an answer goes."""

    route: Route
    reason: str
    message: MessageReceived | None = None
    reply_thread_ts: str | None = None  # None: top level of a DM


def event_key(event_id: str) -> str:
    return f"slack:event:{event_id}"


def message_key(team: str, channel: str, ts: str) -> str:
    """One message can arrive as two events (`app_mention` and `message`): one inbox entry under this key."""
    return f"slack:message:{team}:{channel}:{ts}"


def action_key(body: Mapping[str, Any]) -> str:
    """One click on a button: Slack's retry of the same click has the same action_ts."""
    actions = body.get("actions")
    first = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], Mapping) else {}
    stamp = first.get("action_ts") or body.get("trigger_id")
    if not isinstance(stamp, str) or not stamp or len(stamp) > 100 or not stamp.isprintable():
        raise MalformedPayload("block action without action_ts or trigger_id")
    team = action_user(body)
    return f"slack:action:{team.scope}:{team.user_id}:{stamp}"


def _checked(value: Any, what: str) -> str:
    """A Slack id or ts, or MalformedPayload: control characters and oddities never reach a key or a column."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise MalformedPayload(f"{what} is not a Slack id")
    return value


def envelope_of(body: Mapping[str, Any]) -> Envelope:
    """The event callback in `body`; MalformedPayload when its identifying fields are missing."""
    event = body.get("event")
    if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
        raise MalformedPayload("event_callback without an event object and its type")
    event_id = body.get("event_id")
    team_id = body.get("team_id") or _authorized_team(body)
    if not isinstance(event_id, str) or not event_id or not isinstance(team_id, str) or not team_id:
        raise MalformedPayload(f"{event['type']} event without event_id or team_id")
    return Envelope(
        event_id=_checked(event_id, "event_id"),
        team_id=_checked(team_id, "team_id"),
        event=event,
        shared_with_others=body.get("is_ext_shared_channel") is True,
    )


def _authorized_team(body: Mapping[str, Any]) -> str | None:
    authorizations = body.get("authorizations")
    if isinstance(authorizations, list) and authorizations and isinstance(authorizations[0], Mapping):
        team = authorizations[0].get("team_id")
        return team if isinstance(team, str) else None
    return None


def shape_problem(body: Any) -> str | None:
    """Why bolt could not even route this body (it reads these fields before any listener runs), or None."""
    if not isinstance(body, Mapping):
        return "the body is not an object"
    for key in ("event", "view"):
        if key in body and not isinstance(body[key], Mapping):
            return f"{key} is not an object"
    event = body.get("event")
    if isinstance(event, Mapping) and not isinstance(event.get("type"), str):
        return "event without a type"
    for key in ("team", "user", "channel", "enterprise"):
        if body.get(key) is not None and not isinstance(body[key], (str, Mapping)):
            return f"{key} is neither an id nor an object"
    authorizations = body.get("authorizations")
    if authorizations is not None and not (
        isinstance(authorizations, list) and all(isinstance(a, Mapping) for a in authorizations)
    ):
        return "authorizations is not a list of objects"
    return None


def retry_attempt(headers: Mapping[str, Sequence[str]]) -> int:
    """Which delivery this is: 0 first, n for Slack's n-th retry (HTTP header, or Socket Mode's retry_attempt)."""
    values = headers.get("x-slack-retry-num") or ()
    value = values[0] if values else "0"
    return int(value) if str(value).isdigit() else 0


def sent_at(ts: str) -> datetime:
    """A Slack `ts` ("1712345678.000200") as an aware datetime."""
    try:
        return datetime.fromtimestamp(float(ts), UTC)
    except (TypeError, ValueError, OverflowError):
        return datetime.now(UTC)


def plain_text(text: str, bot_user_id: str | None) -> str:
    """What a person wrote, for Claude: Rapport's own mention gone, links and channels readable, entities decoded."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    text = _CHANNEL_LINK.sub(r"#\1", text)
    text = _URL_LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})" if m.group(2) else m.group(1), text)
    text = html.unescape(text) if "&" in text else text
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _mentions(text: str, user_id: str | None) -> bool:
    return bool(user_id) and re.search(rf"<@{re.escape(user_id or '')}(?:\|[^>]*)?>", text) is not None


def decide_message(envelope: Envelope, *, bot_user_id: str | None) -> Decision:
    """Whether a `message` or `app_mention` event is for Rapport, as the event it becomes and where to answer.

    - `app_mention` in a channel: answered in a thread under the message (or in the thread it is in).
    - `message` in a DM (`im`): answered, at the top level or in its thread.
    - `message` in a channel thread: answered if Rapport takes part in that thread (the caller checks).
    - Rapport's own and other bots' messages, edits, deletions and other subtypes: ignored.
    """
    event = envelope.event
    kind = envelope.type
    if kind not in ("message", "app_mention"):
        return Decision(route=Route.IGNORE, reason=f"not a message: {kind}")
    subtype = event.get("subtype")
    if subtype is not None and subtype not in _PERSON_SUBTYPES:
        return Decision(route=Route.IGNORE, reason=f"subtype {subtype}")
    user = event.get("user")
    if event.get("bot_id") or event.get("bot_profile"):
        return Decision(route=Route.IGNORE, reason="a bot's message")
    if bot_user_id and user == bot_user_id:
        return Decision(route=Route.IGNORE, reason="Rapport's own message")
    channel, ts, text = event.get("channel"), event.get("ts"), event.get("text", "")
    if not isinstance(user, str) or not isinstance(channel, str) or not isinstance(ts, str):
        raise MalformedPayload(f"{kind} event without user, channel or ts")
    user, channel, ts = _checked(user, "user"), _checked(channel, "channel"), _checked(ts, "ts")
    if not isinstance(text, str):
        raise MalformedPayload(f"{kind} event whose text is not a string")
    thread_ts = _checked(event["thread_ts"], "thread_ts") if isinstance(event.get("thread_ts"), str) else None
    is_dm = event.get("channel_type") == "im" or (kind == "app_mention" and channel.startswith("D"))

    if kind == "app_mention":
        if is_dm:
            return Decision(route=Route.IGNORE, reason="a mention in a DM arrives as a message too")
        root = thread_ts or ts
        return Decision(
            route=Route.ANSWER,
            reason="mentioned in a channel",
            message=_message(envelope, user, channel, ts, root, text, bot_user_id, private=False),
            reply_thread_ts=root,
        )
    if is_dm:
        return Decision(
            route=Route.ANSWER,
            reason="a DM",
            message=_message(envelope, user, channel, ts, thread_ts, text, bot_user_id, private=True),
            reply_thread_ts=thread_ts,
        )
    if _mentions(text, bot_user_id):
        return Decision(route=Route.IGNORE, reason="a mention: answered through its app_mention event")
    if thread_ts is None or thread_ts == ts:
        return Decision(route=Route.IGNORE, reason="a channel message that does not mention Rapport")
    return Decision(
        route=Route.IF_THREAD_KNOWN,
        reason="a follow-up in a channel thread",
        message=_message(envelope, user, channel, ts, thread_ts, text, bot_user_id, private=False),
        reply_thread_ts=thread_ts,
    )


def audience_of(team: str, channel: str, *, channel_type: Any, shared_with_others: bool = False) -> Audience | None:
    """Who can read a channel, from the event's `channel_type` (absent on `app_mention`: None, looked up later).
    A channel shared with another organisation is read by people outside the workspace: private to itself."""
    if channel_type == "channel" and not shared_with_others:
        return Audience.public(PLATFORM, team, place=channel)
    if channel_type in ("channel", "group", "mpim"):
        return Audience.private_place(PLATFORM, team, channel)
    return None


def audience_from_info(team: str, channel: str, info: Mapping[str, Any]) -> Audience:
    """Who can read a channel, from `conversations.info`: only a workspace's own public channels are public."""
    if info.get("is_im"):
        return PERSON
    if info.get("is_private") or info.get("is_mpim") or info.get("is_ext_shared") or info.get("is_shared"):
        return Audience.private_place(PLATFORM, team, channel)
    if info.get("is_channel") or info.get("is_general"):
        return Audience.public(PLATFORM, team, place=channel)
    return Audience.private_place(PLATFORM, team, channel)  # not known: private to itself


def _message(
    envelope: Envelope,
    user: str,
    channel: str,
    ts: str,
    thread_ts: str | None,
    text: str,
    bot_user_id: str | None,
    *,
    private: bool,
) -> MessageReceived:
    kind = envelope.event.get("channel_type")
    return MessageReceived(
        attachments=files_of(envelope.event),
        user=UserRef(platform=PLATFORM, scope=envelope.team_id, user_id=user),
        text=plain_text(text, bot_user_id),
        conversation_id=channel,
        thread_id=thread_ts,
        private=private,
        audience=None
        if private
        else audience_of(envelope.team_id, channel, channel_type=kind, shared_with_others=envelope.shared_with_others),
        message=MessageRef(platform=PLATFORM, channel_id=channel, message_id=ts),
        sent_at=sent_at(ts),
        community=envelope.team_id,
        raw=envelope.event,
    )


MAX_FILES = 20  # of one message's `files`: more are not looked at (Slack itself allows ten)


def files_of(event: Mapping[str, Any]) -> tuple[Attachment, ...]:
    """The files shared with a message (`files`). A file Slack only links to (an external one, from Google Drive
    say) is marked so, never fetched; one Slack holds back (past the workspace's plan limit) has no address, so the
    reply names it; one shared from another organisation (Slack Connect) is looked up with files.info in the turn
    (`needs_lookup`); a deleted one is left out."""
    files = event.get("files")
    if not isinstance(files, list):
        return ()
    found = (attachment_of_file(item) for item in files[:MAX_FILES] if isinstance(item, Mapping))
    return tuple(attachment for attachment in found if attachment is not None)


def needs_lookup(attachment: Attachment) -> bool:
    """A Slack Connect file: the event names only its id (`file_access: check_file_info`)."""
    return not attachment.url and not attachment.external and bool(attachment.file_id) and attachment.name == ""


def attachment_of_file(item: Mapping[str, Any]) -> Attachment | None:
    """One file object (of an event, or of files.info), with the address Slack serves it from to the bot token
    (`url_private_download`, else `url_private`)."""
    file_id = item.get("id")
    file_id = file_id if isinstance(file_id, str) and _ID.fullmatch(file_id) else ""
    if item.get("mode") == "tombstone":
        return None
    if item.get("file_access") == "check_file_info":
        return Attachment(name="", url="", file_id=file_id) if file_id else None
    name = item.get("name") or item.get("title") or "a file"
    url = item.get("url_private_download") or item.get("url_private")
    size, mimetype = item.get("size"), item.get("mimetype")
    return Attachment(
        name=name[:200] if isinstance(name, str) else "a file",
        url=url if isinstance(url, str) and item.get("mode") != "hidden_by_limit" else "",
        size=size if isinstance(size, int) and size >= 0 else None,
        media_type=mimetype if isinstance(mimetype, str) else "",
        file_id=file_id,
        external=bool(item.get("is_external")) or item.get("mode") == "external",
    )


def reaction_of(envelope: Envelope, *, bot_user_id: str | None) -> ReactionAdded | ReactionRemoved | None:
    """A reaction on a message as feedback material; None when it cannot be on Rapport's reply."""
    event = envelope.event
    if envelope.type not in ("reaction_added", "reaction_removed"):
        return None
    item = event.get("item")
    user, emoji = event.get("user"), event.get("reaction")
    if not isinstance(item, Mapping) or not isinstance(user, str) or not isinstance(emoji, str):
        raise MalformedPayload(f"{envelope.type} event without item, user or reaction")
    if item.get("type") != "message" or (bot_user_id and user == bot_user_id):
        return None
    item_user = event.get("item_user")
    if bot_user_id and isinstance(item_user, str) and item_user != bot_user_id:
        return None  # on someone else's message: cannot be feedback on Rapport
    channel, ts = item.get("channel"), item.get("ts")
    if not isinstance(channel, str) or not isinstance(ts, str):
        raise MalformedPayload(f"{envelope.type} event whose item has no channel or ts")
    channel, ts, user = _checked(channel, "channel"), _checked(ts, "ts"), _checked(user, "user")
    actor = UserRef(platform=PLATFORM, scope=envelope.team_id, user_id=user)
    ref = MessageRef(platform=PLATFORM, channel_id=channel, message_id=ts)
    if envelope.type == "reaction_added":
        return ReactionAdded(actor=actor, message=ref, emoji=emoji)
    return ReactionRemoved(actor=actor, message=ref, emoji=emoji)


CHANGES = ("message_changed", "message_deleted")


def change_of(envelope: Envelope, *, bot_user_id: str | None) -> MessageChanged | None:
    """A person's edit (`message_changed`) or deletion (`message_deleted`) of a message; None for a bot's, or for
    what is not a change."""
    event = envelope.event
    subtype = event.get("subtype")
    if envelope.type != "message" or subtype not in CHANGES:
        return None
    channel = event.get("channel")
    shown = event.get("message") if subtype == "message_changed" else event.get("previous_message")
    if not isinstance(channel, str) or not isinstance(shown, Mapping):
        raise MalformedPayload(f"{subtype} event without channel or message")
    user, ts = shown.get("user"), shown.get("ts") if subtype == "message_changed" else event.get("deleted_ts")
    if not isinstance(ts, str):
        ts = shown.get("ts")
    if not isinstance(user, str) or not isinstance(ts, str) or shown.get("bot_id") or user == bot_user_id:
        return None
    channel, ts, user = _checked(channel, "channel"), _checked(ts, "ts"), _checked(user, "user")
    text = shown.get("text") if subtype == "message_changed" else None
    if subtype == "message_changed" and not isinstance(text, str):
        return None
    before = event.get("previous_message")
    if subtype == "message_changed" and isinstance(before, Mapping) and before.get("text") == text:
        return None  # the words are the same: a link unfurled, a file was shared, a thread got a reply
    return MessageChanged(
        user=UserRef(platform=PLATFORM, scope=envelope.team_id, user_id=user),
        message=MessageRef(platform=PLATFORM, channel_id=channel, message_id=ts),
        original=message_key(envelope.team_id, channel, ts),
        text=plain_text(text, bot_user_id) if isinstance(text, str) else None,
    )


def command_user(body: Mapping[str, Any]) -> UserRef:
    """Who ran a slash command."""
    team, user = body.get("team_id"), body.get("user_id")
    if not isinstance(team, str) or not team or not isinstance(user, str) or not user:
        raise MalformedPayload("slash command without team_id or user_id")
    return UserRef(platform=PLATFORM, scope=_checked(team, "team_id"), user_id=_checked(user, "user_id"))


def action_user(body: Mapping[str, Any]) -> UserRef:
    """Who clicked a button: always the clicker, whatever the button says, so nobody acts for someone else."""
    team, user = body.get("team"), body.get("user")
    team_id = team.get("id") if isinstance(team, Mapping) else None
    user_id = user.get("id") if isinstance(user, Mapping) else None
    if not isinstance(team_id, str) or not team_id or not isinstance(user_id, str) or not user_id:
        raise MalformedPayload("block action without team or user")
    return UserRef(platform=PLATFORM, scope=_checked(team_id, "team"), user_id=_checked(user_id, "user"))


def chain_from_replies(
    messages: Sequence[Mapping[str, Any]],
    *,
    current_ts: str,
    bot_user_id: str | None,
    names: Mapping[str, str],
    limit: int = 20,
) -> tuple[ChainMessage, ...]:
    """The thread so far (from `conversations.replies`), oldest first, without the message being answered."""
    chain: list[ChainMessage] = []
    for message in messages:
        ts, text = message.get("ts"), message.get("text")
        if ts == current_ts or not isinstance(text, str) or message.get("subtype") not in (None, *_PERSON_SUBTYPES):
            continue
        user = message.get("user")
        mine = bool(bot_user_id) and user == bot_user_id
        if message.get("bot_id") and not mine:
            continue
        cleaned = plain_text(text, bot_user_id)
        if cleaned:
            author = "Rapport" if mine else names.get(str(user), str(user))
            chain.append(ChainMessage(author=author, text=cleaned, from_assistant=mine, author_id=str(user or "")))
    return tuple(chain[-limit:])
