"""What the inbox holds: each accepted event, where its turn has got to, and the reply it produced.

An adapter hands the core an `Incoming` (the neutral event, a key that names it on its platform, and the
adapter's own routing data); the inbox keeps it as an `Entry` until its turn and its job are done. Entries are
stored as JSON, so the codec for events lives here too: pure functions, no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import IntEnum
from typing import Any, Literal

from core.events import (
    Attachment,
    ChainMessage,
    ForgetRequested,
    MessageChanged,
    MessageReceived,
    MessageRef,
    ReactionAdded,
    ReactionRemoved,
    UserRef,
)
from core.privacy import Audience

__all__ = [
    "Answer",
    "Entry",
    "Event",
    "Incoming",
    "Kind",
    "Step",
    "answer_from_json",
    "answer_to_json",
    "event_from_json",
    "event_to_json",
    "interaction_id_for",
    "kind_of",
    "person_of",
    "refs_from_json",
    "refs_to_json",
]

Event = MessageReceived | ReactionAdded | ReactionRemoved | ForgetRequested | MessageChanged
Kind = Literal["message", "reaction", "forget", "change"]
_INTERACTIONS = uuid.UUID("5d0c5e0e-7a6b-4e55-9a37-52415050f4e7")


class Step(IntEnum):
    """How far an entry has got. Its turn ends at DELIVERED; its job (storing, feedback) ends at DONE."""

    RECEIVED = 0
    ANSWERED = 1  # the reply text is kept: a resumed turn delivers it without asking Claude again
    DELIVERED = 2  # the platform has it (ids kept, so reactions find it); the job is still to do
    DONE = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """The reply a turn produced, as kept in the inbox (and stored as the interaction later)."""

    text: str
    ok: bool
    error: str | None = None
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    latency_ms: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Incoming:
    """An event an adapter accepts: `key` names it on its platform (a redelivery has the same key), `route` is
    what that adapter needs to deliver the reply after any restart, on any replica (opaque to the core)."""

    key: str
    event: Event
    route: Mapping[str, Any] = field(default_factory=dict)

    @property
    def person(self) -> str:
        return person_of(self.event)

    @property
    def kind(self) -> Kind:
        return kind_of(self.event)


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """An accepted event in the inbox. `taken` counts the turns that took it: above 1 it was started before
    (by a process that stopped, or another replica), so its delivery looks for what was already posted."""

    key: str
    seq: int
    event: Event
    route: Mapping[str, Any]
    step: Step = Step.RECEIVED
    answer: Answer | None = None
    refs: tuple[MessageRef, ...] = ()
    taken: int = 1

    @property
    def person(self) -> str:
        return person_of(self.event)

    @property
    def kind(self) -> Kind:
        return kind_of(self.event)

    @property
    def interaction_id(self) -> str:
        return interaction_id_for(self.key)

    def advanced(self, step: Step, **changes: Any) -> Entry:
        return replace(self, step=step, **changes)


def interaction_id_for(key: str) -> str:
    """The interaction (and memory) id of an entry: derived from its key, so a resumed or repeated job stores
    the same exchange under the same id, once."""
    return uuid.uuid5(_INTERACTIONS, key).hex


def person_of(event: Event) -> str:
    if isinstance(event, MessageReceived | ForgetRequested | MessageChanged):
        return event.user.key
    return event.actor.key


def kind_of(event: Event) -> Kind:
    if isinstance(event, MessageReceived):
        return "message"
    if isinstance(event, ForgetRequested):
        return "forget"
    if isinstance(event, MessageChanged):
        return "change"
    return "reaction"


# --- JSON codec -----------------------------------------------------------------------------------


def _user(user: UserRef) -> dict[str, str]:
    return {"platform": user.platform, "user_id": user.user_id, "scope": user.scope}


def _user_from(data: Mapping[str, Any]) -> UserRef:
    return UserRef(platform=str(data["platform"]), user_id=str(data["user_id"]), scope=str(data.get("scope", "")))


def _ref(ref: MessageRef) -> dict[str, str]:
    return {"platform": ref.platform, "channel_id": ref.channel_id, "message_id": ref.message_id}


def _ref_from(data: Mapping[str, Any]) -> MessageRef:
    return MessageRef(
        platform=str(data["platform"]), channel_id=str(data["channel_id"]), message_id=str(data["message_id"])
    )


def _audience(audience: Audience | None) -> dict[str, str] | None:
    if audience is None:
        return None
    return {"kind": audience.kind, "platform": audience.platform, "community": audience.community,
            "place": audience.place}  # fmt: skip


def _audience_from(data: Any) -> Audience | None:
    if not isinstance(data, Mapping) or data.get("kind") not in ("person", "place", "public"):
        return None
    return Audience(
        kind=data["kind"],
        platform=str(data.get("platform", "")),
        community=str(data.get("community", "")),
        place=str(data.get("place", "")),
    )


def _attachment_from(data: Mapping[str, Any]) -> Attachment:
    size = data.get("size")
    return Attachment(
        name=str(data.get("name") or ""),
        url=str(data.get("url") or ""),
        size=size if isinstance(size, int) else None,
        media_type=str(data.get("media_type") or ""),
        file_id=str(data.get("file_id") or ""),
        external=bool(data.get("external")),
    )


def event_to_json(event: Event) -> dict[str, Any]:
    """The event as plain JSON values (the raw payload is not kept: the core never reads it)."""
    if isinstance(event, MessageReceived):
        return {
            "type": "message",
            "user": _user(event.user),
            "text": event.text,
            "conversation_id": event.conversation_id,
            "private": event.private,
            "audience": _audience(event.audience),
            "display_name": event.display_name,
            "tz": event.tz,
            "community": event.community,
            "parents": list(event.parents),
            "roles": list(event.roles),
            "thread_id": event.thread_id,
            "message": _ref(event.message) if event.message else None,
            "sent_at": event.sent_at.isoformat(),
            "reply_chain": [
                {"author": m.author, "text": m.text, "from_assistant": m.from_assistant, "author_id": m.author_id}
                for m in event.reply_chain
            ],
            "attachments": [
                {
                    "name": a.name,
                    "url": a.url,
                    "size": a.size,
                    "media_type": a.media_type,
                    "file_id": a.file_id,
                    "external": a.external,
                }  # fmt: skip
                for a in event.attachments
            ],
        }
    if isinstance(event, ForgetRequested):
        return {"type": "forget", "user": _user(event.user)}
    if isinstance(event, MessageChanged):
        return {
            "type": "change",
            "user": _user(event.user),
            "message": _ref(event.message),
            "original": event.original,
            "text": event.text,
        }
    return {
        "type": "reaction_added" if isinstance(event, ReactionAdded) else "reaction_removed",
        "actor": _user(event.actor),
        "message": _ref(event.message),
        "emoji": event.emoji,
    }


def event_from_json(data: Mapping[str, Any]) -> Event:
    kind = data["type"]
    if kind == "message":
        message = data.get("message")
        return MessageReceived(
            user=_user_from(data["user"]),
            text=str(data["text"]),
            conversation_id=str(data["conversation_id"]),
            private=bool(data["private"]),
            audience=_audience_from(data.get("audience")),
            display_name=str(data.get("display_name", "")),
            tz=str(data.get("tz") or ""),
            community=str(data.get("community") or ""),
            parents=tuple(str(p) for p in data.get("parents") or ()),
            roles=tuple(str(r) for r in data.get("roles") or ()),
            thread_id=data.get("thread_id"),
            message=_ref_from(message) if message else None,
            sent_at=datetime.fromisoformat(data["sent_at"]),
            reply_chain=tuple(
                ChainMessage(
                    author=str(m["author"]),
                    text=str(m["text"]),
                    from_assistant=bool(m["from_assistant"]),
                    author_id=str(m.get("author_id") or ""),
                )
                for m in data.get("reply_chain", ())
            ),
            attachments=tuple(_attachment_from(a) for a in data.get("attachments") or () if isinstance(a, Mapping)),
        )
    if kind == "forget":
        return ForgetRequested(user=_user_from(data["user"]))
    if kind == "change":
        text = data.get("text")
        return MessageChanged(
            user=_user_from(data["user"]),
            message=_ref_from(data["message"]),
            original=str(data["original"]),
            text=None if text is None else str(text),
        )
    reaction = ReactionAdded if kind == "reaction_added" else ReactionRemoved
    return reaction(actor=_user_from(data["actor"]), message=_ref_from(data["message"]), emoji=str(data["emoji"]))


def answer_to_json(answer: Answer) -> dict[str, Any]:
    return {
        "text": answer.text,
        "ok": answer.ok,
        "error": answer.error,
        "model": answer.model,
        "input_tokens": answer.input_tokens,
        "output_tokens": answer.output_tokens,
        "cache_write_tokens": answer.cache_write_tokens,
        "cache_read_tokens": answer.cache_read_tokens,
        "latency_ms": answer.latency_ms,
    }


def answer_from_json(data: Mapping[str, Any]) -> Answer:
    return Answer(
        text=str(data["text"]),
        ok=bool(data["ok"]),
        error=data.get("error"),
        model=str(data.get("model", "")),
        input_tokens=int(data.get("input_tokens", 0)),
        output_tokens=int(data.get("output_tokens", 0)),
        cache_write_tokens=int(data.get("cache_write_tokens", 0)),
        cache_read_tokens=int(data.get("cache_read_tokens", 0)),
        latency_ms=int(data.get("latency_ms", 0)),
    )


def refs_to_json(refs: tuple[MessageRef, ...] | list[MessageRef]) -> list[dict[str, str]]:
    return [_ref(ref) for ref in refs]


def refs_from_json(data: Any) -> tuple[MessageRef, ...]:
    return tuple(_ref_from(item) for item in data or ())
