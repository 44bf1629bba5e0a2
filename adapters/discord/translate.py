"""Pure translation between discord.py's objects and Rapport's neutral events, and the decision to answer.

Nothing here does I/O: the client part (`adapter.py`) fetches what is needed and hands over plain values or
discord.py objects built from gateway payloads, so all of it is tested on recorded payloads.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import discord

from adapters.discord.split import split_message
from core.events import Attachment, ChainMessage, MessageReceived, MessageRef, ReactionAdded, ReactionRemoved, UserRef
from core.feedback import normalise_emoji
from core.privacy import PERSON, Audience

__all__ = [
    "PLATFORM",
    "TEXT_ONLY_NOTE",
    "audience_of",
    "attachment_of",
    "MessageFacts",
    "Verdict",
    "chain_message",
    "decide",
    "facts_of",
    "in_new_thread",
    "insights_embed",
    "message_ref",
    "opens_thread",
    "parents_of",
    "reaction_event",
    "render_text",
    "reply_chunks",
    "thread_name",
    "to_event",
    "user_ref",
]

PLATFORM = "discord"
TEXT_ONLY_NOTE = "I can't see stickers. Tell me in words what you'd like and I'll gladly answer."
_ANSWERED_TYPES = (discord.MessageType.default, discord.MessageType.reply)
_USER_MENTION = re.compile(r"<@!?([0-9]{15,20})>")
_ROLE_MENTION = re.compile(r"<@&([0-9]{15,20})>")
_CHANNEL_MENTION = re.compile(r"<#([0-9]{15,20})>")
_CUSTOM_EMOJI = re.compile(r"<a?:([A-Za-z0-9_~]{1,32}):[0-9]{15,20}>")
THREAD_NAME_LIMIT = 100  # Discord's longest thread name


class Verdict(enum.Enum):
    IGNORE = "ignore"
    ANSWER = "answer"
    TEXT_ONLY = "text_only"  # addressed to Rapport with only a sticker: answer with TEXT_ONLY_NOTE


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageFacts:
    """What the decision to answer looks at, as plain values."""

    author_id: int
    author_is_bot: bool
    ordinary: bool  # a person's message or reply, not a system notice (pin, join, thread created …)
    private: bool
    channel_id: int
    parent_channel_id: int | None
    mentions_bot: bool
    replies_to_bot: bool
    has_text: bool
    has_attachments: bool  # files (read by core.files)
    has_stickers: bool = False
    in_own_thread: bool = False  # a thread Rapport opened for a conversation (core.policy.Place.threads)
    threadable: bool = False  # a server's text channel, where a message can start a thread


def decide(facts: MessageFacts, *, bot_id: int, allowed_channel_ids: Collection[int] = frozenset()) -> Verdict:
    """Every DM; in servers a mention, a reply to Rapport, anything in an opened channel or in a thread Rapport
    opened; never a bot."""
    if facts.author_id == bot_id or facts.author_is_bot or not facts.ordinary:
        return Verdict.IGNORE
    opened = facts.channel_id in allowed_channel_ids or (
        facts.parent_channel_id is not None and facts.parent_channel_id in allowed_channel_ids
    )
    if not (facts.private or facts.mentions_bot or facts.replies_to_bot or opened or facts.in_own_thread):
        return Verdict.IGNORE
    if not facts.has_text and not facts.has_attachments and facts.has_stickers:
        return Verdict.TEXT_ONLY
    return Verdict.ANSWER


def opens_thread(facts: MessageFacts, verdict: Verdict, *, threads: bool) -> bool:
    """Whether the answer opens a thread (where the place's `threads` is on): for a conversation started by a
    mention in a text channel. A reply to Rapport goes on where it is said, and an opened channel's messages that
    do not mention it are talk Rapport takes part in, not a thread per message; a note for a file without words
    is no conversation."""
    return (
        threads and verdict is Verdict.ANSWER and facts.threadable and facts.mentions_bot and not facts.replies_to_bot
    )


def in_new_thread(event: MessageReceived) -> MessageReceived:
    """The event as the thread about to be opened from its message will hold it: a thread started from a message
    has that message's id, so the conversation (short-term memory) is the thread's from the first exchange, and
    the channel becomes a parent, as for any thread (the policy's channel lists match it). The audience stays the
    channel's, which a public thread shares."""
    assert event.message is not None, "a Discord message event carries its message"
    return replace(event, conversation_id=event.message.message_id, parents=(event.conversation_id, *event.parents))


def thread_name(text: str, author: str) -> str:
    """A thread's name: the message's first words within Discord's limit, else who the conversation is with."""
    words = " ".join(text.split())
    if not words:
        return f"Conversation with {author}"[:THREAD_NAME_LIMIT]
    if len(words) <= THREAD_NAME_LIMIT:
        return words
    cut = words[: THREAD_NAME_LIMIT - 1]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + "…"


def render_text(
    content: str,
    *,
    bot_id: int,
    bot_name: str,
    bot_role_ids: Collection[int] = (),
    users: Mapping[int, str] | None = None,
    roles: Mapping[int, str] | None = None,
    channels: Mapping[int, str] | None = None,
) -> str:
    """Content as a person reads it: Rapport's own mention dropped (or named mid-sentence), others by name."""
    users, roles, channels = users or {}, roles or {}, channels or {}
    own = rf"(?:<@!?{bot_id}>" + "".join(rf"|<@&{role}>" for role in bot_role_ids) + ")"
    text = re.sub(rf"^(?:\s*{own})+[\s,:;]*", "", content)
    text = re.sub(rf"[\s,]*(?:{own}\s*)+$", "", text)
    text = re.sub(own, bot_name, text)
    text = _USER_MENTION.sub(lambda m: f"@{users[int(m[1])]}" if int(m[1]) in users else m[0], text)
    text = _ROLE_MENTION.sub(lambda m: f"@{roles[int(m[1])]}" if int(m[1]) in roles else m[0], text)
    text = _CHANNEL_MENTION.sub(lambda m: f"#{channels[int(m[1])]}" if int(m[1]) in channels else m[0], text)
    return _CUSTOM_EMOJI.sub(r":\1:", text).strip()


def user_ref(user_id: int) -> UserRef:
    return UserRef(platform=PLATFORM, user_id=str(user_id))


def message_ref(channel_id: int, message_id: int) -> MessageRef:
    return MessageRef(platform=PLATFORM, channel_id=str(channel_id), message_id=str(message_id))


def _bot_role_ids(message: discord.Message, bot_id: int) -> frozenset[int]:
    """The role Discord gives the bot in a server: people often pick it when they type @Rapport."""
    guild = message.guild
    if guild is None:
        return frozenset()
    return frozenset(role.id for role in guild.roles if role.tags is not None and role.tags.bot_id == bot_id)


def _is_private(message: discord.Message) -> bool:
    return message.guild is None and getattr(message.channel, "guild_id", None) is None


def message_text(message: discord.Message, *, bot_id: int, bot_name: str) -> str:
    """The readable text of a discord.py message (mentions resolved from what the payload carried)."""
    return render_text(
        message.content,
        bot_id=bot_id,
        bot_name=bot_name,
        bot_role_ids=_bot_role_ids(message, bot_id),
        users={user.id: user.display_name for user in message.mentions},
        roles={role.id: role.name for role in message.role_mentions},
        channels={channel.id: channel.name for channel in message.channel_mentions},
    )


def facts_of(
    message: discord.Message, *, bot_id: int, bot_name: str, referenced: discord.Message | None = None
) -> MessageFacts:
    """The decision's inputs; `referenced` is the message it replies to, when known."""
    role_ids = _bot_role_ids(message, bot_id)
    return MessageFacts(
        author_id=message.author.id,
        author_is_bot=message.author.bot or message.webhook_id is not None,
        ordinary=message.type in _ANSWERED_TYPES,
        private=_is_private(message),
        channel_id=message.channel.id,
        parent_channel_id=getattr(message.channel, "parent_id", None),
        mentions_bot=bot_id in message.raw_mentions or any(r in role_ids for r in message.raw_role_mentions),
        replies_to_bot=referenced is not None and referenced.author.id == bot_id,
        has_text=bool(message_text(message, bot_id=bot_id, bot_name=bot_name)),
        has_attachments=bool(message.attachments),
        has_stickers=bool(message.stickers),
        in_own_thread=isinstance(message.channel, discord.Thread) and message.channel.owner_id == bot_id,
        threadable=isinstance(message.channel, discord.TextChannel),
    )


def chain_message(message: discord.Message, *, bot_id: int, bot_name: str) -> ChainMessage:
    return ChainMessage(
        author=bot_name if message.author.id == bot_id else message.author.display_name,
        text=message_text(message, bot_id=bot_id, bot_name=bot_name),
        from_assistant=message.author.id == bot_id,
        author_id=str(message.author.id),
    )


def audience_of(message: discord.Message) -> Audience:
    """Who can read the channel a message is in: a channel @everyone can view is the server's public places, any
    other (and a private thread) only its members; a thread has its channel's audience. Unknown: private to itself."""
    guild = message.guild
    channel: Any = message.channel
    if guild is None:
        return PERSON
    server = str(guild.id)
    if isinstance(channel, discord.Thread):
        if channel.is_private() or channel.parent is None:
            return Audience.private_place(PLATFORM, server, str(channel.id))
        channel = channel.parent
    try:
        everyone_sees = channel.permissions_for(guild.default_role).view_channel
    except (AttributeError, TypeError):  # a channel discord.py knows only by id
        return Audience.private_place(PLATFORM, server, str(channel.id))
    if everyone_sees:
        return Audience.public(PLATFORM, server, place=str(channel.id))
    return Audience.private_place(PLATFORM, server, str(channel.id))


def to_event(
    message: discord.Message, *, bot_id: int, bot_name: str, chain: Sequence[discord.Message] = ()
) -> MessageReceived:
    """The neutral event for a message Rapport answers; `chain` is the reply chain, oldest first (only messages of
    the same channel: a forwarded one from elsewhere may have had other readers)."""
    return MessageReceived(
        user=user_ref(message.author.id),
        display_name=message.author.display_name,
        text=message_text(message, bot_id=bot_id, bot_name=bot_name),
        conversation_id=str(message.channel.id),
        thread_id=None,  # a Discord thread is a channel of its own
        private=_is_private(message),
        audience=None if _is_private(message) else audience_of(message),
        message=message_ref(message.channel.id, message.id),
        sent_at=message.created_at,
        community=str(message.guild.id) if message.guild is not None else "",
        parents=parents_of(message.channel),
        roles=tuple(str(role.id) for role in getattr(message.author, "roles", ()) if not role.is_default()),
        reply_chain=tuple(
            chain_message(m, bot_id=bot_id, bot_name=bot_name)
            for m in chain
            if m.content and m.channel.id == message.channel.id
        ),
        attachments=tuple(attachment_of(a) for a in message.attachments),
    )


def attachment_of(attachment: discord.Attachment) -> Attachment:
    """A file as the gateway described it: its CDN address (signed by Discord; no token is needed for it)."""
    return Attachment(
        name=attachment.filename,
        url=attachment.url,
        size=attachment.size,
        media_type=attachment.content_type or "",
        file_id=str(attachment.id),
    )


def parents_of(channel: object) -> tuple[str, ...]:
    """A thread's channel and the category above, nearest first: the policy's channel lists match them too."""
    found: list[str] = []
    parent_id = getattr(channel, "parent_id", None) if isinstance(channel, discord.Thread) else None
    if parent_id is not None:
        found.append(str(parent_id))
        channel = getattr(channel, "parent", None)
    category_id = getattr(channel, "category_id", None)
    if category_id is not None:
        found.append(str(category_id))
    return tuple(found)


def reaction_event(raw: discord.RawReactionActionEvent, *, bot_id: int) -> ReactionAdded | ReactionRemoved | None:
    """A person's reaction as feedback material; None for Rapport's own, or one on someone else's message."""
    if raw.user_id == bot_id or not raw.emoji.name:
        return None
    if raw.message_author_id is not None and raw.message_author_id != bot_id:
        return None
    actor, ref, emoji = (
        user_ref(raw.user_id),
        message_ref(raw.channel_id, raw.message_id),
        normalise_emoji(raw.emoji.name),
    )
    if raw.event_type == "REACTION_ADD":
        return ReactionAdded(actor=actor, message=ref, emoji=emoji)
    return ReactionRemoved(actor=actor, message=ref, emoji=emoji)


def reply_chunks(text: str) -> list[str]:
    """The messages to post for a reply: split to Discord's limit, blank pieces left out."""
    return [chunk for chunk in split_message(text) if chunk.strip()] or ["…"]


def _field(value: str, limit: int = 1024) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def insights_embed(insights: Mapping[str, Any] | None) -> discord.Embed:
    """A person's own insights as an embed (field values kept within Discord's 1,024 characters)."""
    if insights is None:
        return discord.Embed(
            title="What I know about you",
            description="Nothing yet: we haven't talked. Say hello and I'll start getting to know you.",
        )
    embed = discord.Embed(title="What I know about you", colour=discord.Colour.blurple())
    embed.add_field(name="Conversations", value=str(insights.get("total_interactions", 0)))
    satisfaction = insights.get("average_satisfaction")
    embed.add_field(
        name="Satisfaction",
        value="no reactions yet" if satisfaction is None else f"{satisfaction:+.2f} (from -1 to +1)",
    )
    for name, key in (("Facts", "facts"), ("Preferences", "preferences")):
        if items := insights.get(key):
            embed.add_field(name=name, value=_field("\n".join(f"• {i['text']}" for i in items[:15])), inline=False)
    if interests := insights.get("interests"):
        embed.add_field(name="Interests", value=_field(", ".join(interests)), inline=False)
    if topics := insights.get("topic_distribution"):
        ranked = sorted(topics.items(), key=lambda item: (-item[1], item[0]))[:10]
        embed.add_field(name="Topics", value=_field(", ".join(f"{t} ({n})" for t, n in ranked)), inline=False)
    if style := insights.get("communication_style"):
        embed.add_field(name="Style", value=_field(", ".join(f"{k}: {v}" for k, v in style.items())), inline=False)
    if patterns := insights.get("top_patterns"):
        lines = [f"{p['kind']}: {p['value']} ({p['count']})" for p in patterns[:10]]
        embed.add_field(name="Patterns", value=_field("\n".join(lines)), inline=False)
    usage = insights.get("usage")
    if isinstance(usage, dict) and usage.get("tokens"):
        embed.add_field(
            name=f"Your usage in {usage.get('month', '')}",
            value=f"{int(usage['tokens']):,} tokens, about ${float(usage.get('cost_usd') or 0):.2f}",
            inline=False,
        )
    paused = " Learning is paused (/learning resume)." if insights.get("learning_paused") else ""
    embed.set_footer(text=f"Only you can see this. /forget deletes all of it.{paused}")
    return embed
