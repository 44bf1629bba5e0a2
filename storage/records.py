"""The core's relational ports (profiles, interactions, patterns, feedback) on tortoise models."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from statistics import fmean

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F

from core.events import MessageRef
from core.ports import InteractionRecord, InteractionStats, Pattern, Profile, ReplyLink, Scope
from storage.database import Database
from storage.models import Feedback, Interaction, LearnedPattern, ReplyMessage, UserProfile

__all__ = ["RelationalRecords"]


def _platform_of(user_key: str) -> str:
    return user_key.split(":", 1)[0]


class RelationalRecords:
    """Implements core.ports.Records on PostgreSQL or SQLite."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def ping(self) -> None:
        await self._database.ping()

    async def get_profile(self, user_key: str) -> Profile | None:
        row = await UserProfile.get_or_none(user_key=user_key)
        if row is None:
            return None
        return Profile(
            user_key=row.user_key,
            display_name=row.display_name,
            interests=dict(row.interests),
            style=dict(row.style),
            message_count=row.message_count,
        )

    async def save_profile(self, profile: Profile) -> None:
        await UserProfile.update_or_create(
            user_key=profile.user_key,
            defaults={
                "platform": _platform_of(profile.user_key),
                "display_name": profile.display_name[:191],
                "interests": profile.interests,
                "style": profile.style,
                "message_count": profile.message_count,
            },
        )

    async def save_interaction(self, record: InteractionRecord) -> None:
        values = {
            "user_key": record.user_key,
            "platform": record.platform,
            "conversation_id": record.conversation_id[:191],
            "thread_id": record.thread_id[:191] if record.thread_id else None,
            "private": record.private,
            "user_text": record.user_text,
            "reply_text": record.reply_text,
            "topics": list(record.topics),
            "ok": record.ok,
            "error": record.error[:64] if record.error else None,
            "model": record.model[:64],
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "latency_ms": record.latency_ms,
            "created_at": record.created_at,
        }
        # update_or_create: a retried save after a lost acknowledgement must not fail on the primary key.
        await Interaction.update_or_create(id=record.id, defaults=values)

    async def link_reply(self, interaction_id: str, user_key: str, refs: Sequence[MessageRef]) -> None:
        await ReplyMessage.bulk_create(
            [
                ReplyMessage(
                    platform=ref.platform,
                    channel_id=ref.channel_id,
                    message_id=ref.message_id,
                    interaction_id=interaction_id,
                    user_key=user_key,
                )
                for ref in refs
            ],
            ignore_conflicts=True,
        )

    async def find_reply(self, ref: MessageRef) -> ReplyLink | None:
        row = await ReplyMessage.get_or_none(
            platform=ref.platform, channel_id=ref.channel_id, message_id=ref.message_id
        )
        return None if row is None else ReplyLink(interaction_id=row.interaction_id, user_key=row.user_key)

    async def stats(self, user_key: str) -> InteractionStats:
        total = await Interaction.filter(user_key=user_key).count()
        scores: defaultdict[str, list[float]] = defaultdict(list)
        for interaction_id, score in await Feedback.filter(user_key=user_key).values_list("interaction_id", "score"):
            scores[interaction_id].append(score)
        per_interaction = [fmean(values) for values in scores.values()]
        return InteractionStats(
            total_interactions=total,
            average_satisfaction=fmean(per_interaction) if per_interaction else None,
        )

    async def bump_patterns(self, user_key: str, scope: Scope, patterns: Sequence[tuple[str, str]]) -> None:
        for kind, value in dict.fromkeys(patterns):
            match = LearnedPattern.filter(user_key=user_key, kind=kind, value=value[:128], scope=scope)
            if await match.update(count=F("count") + 1):
                continue
            try:
                await LearnedPattern.create(user_key=user_key, kind=kind, value=value[:128], scope=scope, count=1)
            except IntegrityError:  # another writer created it first
                await match.update(count=F("count") + 1)

    async def top_patterns(self, user_key: str, *, scopes: Sequence[Scope], limit: int) -> list[Pattern]:
        totals: defaultdict[tuple[str, str], int] = defaultdict(int)
        rows = await LearnedPattern.filter(user_key=user_key, scope__in=list(scopes)).values_list(
            "kind", "value", "count"
        )
        for kind, value, count in rows:
            totals[(kind, value)] += count
        ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        return [Pattern(kind=kind, value=value, count=count) for (kind, value), count in ranked[:limit]]

    async def set_feedback(self, interaction_id: str, user_key: str, emoji: str, score: float) -> None:
        await Feedback.update_or_create(
            interaction_id=interaction_id, emoji=emoji, defaults={"user_key": user_key, "score": score}
        )

    async def clear_feedback(self, interaction_id: str, emoji: str) -> bool:
        return bool(await Feedback.filter(interaction_id=interaction_id, emoji=emoji).delete())

    async def has_user(self, user_key: str) -> bool:
        return await Interaction.filter(user_key=user_key).exists() or await UserProfile.exists(user_key=user_key)

    async def forget_user(self, user_key: str) -> None:
        for model in (Feedback, ReplyMessage, LearnedPattern, Interaction, UserProfile):
            await model.filter(user_key=user_key).delete()
