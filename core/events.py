"""Neutral events: what adapters hand the core, with no platform object and no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.privacy import PERSON, Audience

__all__ = [
    "Attachment",
    "ChainMessage",
    "ForgetRequested",
    "MessageChanged",
    "MessageReceived",
    "MessageRef",
    "ReactionAdded",
    "ReactionRemoved",
    "Reply",
    "UserRef",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRef:
    """A person on one platform; `scope` is the Slack team (empty elsewhere)."""

    platform: str
    user_id: str
    scope: str = ""

    @property
    def key(self) -> str:
        """The stable identity used by every store: `discord:<id>`, `slack:<team>:<id>`, `console:<name>`."""
        if self.scope:
            return f"{self.platform}:{self.scope}:{self.user_id}"
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageRef:
    """A message on a platform: a Discord snowflake or a Slack `ts` within its channel."""

    platform: str
    channel_id: str
    message_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainMessage:
    """A message of the reply chain the adapter can already see."""

    author: str
    text: str
    from_assistant: bool = False
    author_id: str = ""  # the platform's id of its author (the operators' block lists apply to quoted words too)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """A file sent with a message, as the platform described it: its own URL for the bytes (authenticated where the
    platform wants that; the adapter fetches only from the platform's own addresses), and the size and type it
    declared (checked again against what arrives)."""

    name: str
    url: str
    size: int | None = None  # bytes, as declared; None when the platform did not say
    media_type: str = ""  # the declared content type ("" when not said)
    file_id: str = ""
    external: bool = False  # a link to a file kept elsewhere (Slack's Google Drive files): never fetched


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived:
    """A person wrote to Rapport.

    `private` is true for a DM (or the console). `audience` is who can read the place otherwise (a private place,
    or a community's public places: core.privacy); None while the adapter has not looked it up.
    """

    user: UserRef
    text: str
    conversation_id: str
    private: bool
    audience: Audience | None = None
    display_name: str = ""
    tz: str = ""  # the person's IANA time zone, where the platform says (Slack's users.info)
    community: str = ""  # the Discord server or Slack workspace id ("" for a Discord DM)
    parents: tuple[str, ...] = ()  # the channel's parents (a thread's channel, a category): for the policy
    roles: tuple[str, ...] = ()  # the author's Discord role ids, as the policy's access lists name them
    thread_id: str | None = None
    message: MessageRef | None = None
    sent_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    reply_chain: tuple[ChainMessage, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    raw: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def conversation_key(self) -> str:
        """Where the short-term memory of this exchange lives: platform, channel and thread."""
        base = f"{self.user.platform}:{self.user.scope}:{self.conversation_id}"
        return f"{base}:{self.thread_id}" if self.thread_id else base

    @property
    def where(self) -> Audience:
        """Who can read where this was said: the person alone in a DM; a place whose audience is not known is
        private to itself."""
        if self.private:
            return PERSON
        if self.audience is not None:
            return self.audience
        return Audience.private_place(self.user.platform, self.user.scope, self.conversation_id)

    @property
    def author_name(self) -> str:
        """The name shown to Claude for this person."""
        return self.display_name or self.user.user_id


@dataclass(frozen=True, slots=True, kw_only=True)
class ReactionAdded:
    """`actor` put `emoji` (normalised by the adapter, e.g. "👍") on `message`."""

    actor: UserRef
    message: MessageRef
    emoji: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReactionRemoved:
    """`actor` took `emoji` off `message`."""

    actor: UserRef
    message: MessageRef
    emoji: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageChanged:
    """`user` edited their message `message` to `text`, or deleted it (`text` None). `original` is the key it was
    accepted under (its interaction and memory are found through it)."""

    user: UserRef
    message: MessageRef
    original: str
    text: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ForgetRequested:
    """The person confirmed that everything Rapport knows about them is to be deleted."""

    user: UserRef


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """What the core answered to one message (the text the person was sent)."""

    text: str
    interaction_id: str
    user_key: str
    ok: bool = True
