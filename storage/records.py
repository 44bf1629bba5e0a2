"""The core's relational ports (profiles, interactions, patterns, feedback) on tortoise models."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from statistics import fmean
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from core.events import MessageRef
from core.person import Item
from core.ports import (
    InteractionRecord,
    InteractionStats,
    Known,
    Learner,
    Pattern,
    Profile,
    ReplyLink,
    Scopes,
)
from storage.database import Database, among, as_datetime
from storage.models import (
    Feedback,
    Interaction,
    LearnedPattern,
    PersonItem,
    PersonLearning,
    ReplyMessage,
    UserProfile,
)
from storage.person_store import SKIPPED, PersonModelStore

__all__ = ["RelationalRecords"]


def _json(value: Any) -> Any:
    """A JSON column read by raw SQL: text on both drivers, already decoded if a driver ever does it."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _platform_of(user_key: str) -> str:
    return user_key.split(":", 1)[0]


# The columns of the statement that reads what is known of a person (RelationalRecords.person_context): each of its
# parts (the profile, the patterns, the items) fills those it needs.
_KNOWN_COLUMNS = ("name", "interests", "style", "number", "kind", "value", "total", "origin", "learned_at")


def _known_part(part: str, values: tuple[str, ...], source: str) -> str:
    """One part: `values` are its expressions for _KNOWN_COLUMNS."""
    columns = ", ".join(f"{value} AS {name}" for value, name in zip(values, _KNOWN_COLUMNS, strict=True))
    return f"SELECT '{part}' AS part, {columns} FROM {source}"


class RelationalRecords(PersonModelStore):
    """Implements core.ports.Records on PostgreSQL or SQLite."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def ping(self) -> None:
        await self._database.ping()

    @staticmethod
    def _profile(row: UserProfile) -> Profile:
        return Profile(
            user_key=row.user_key,
            display_name=row.display_name,
            interests=dict(row.interests),
            style=dict(row.style),
            message_count=row.message_count,
        )

    async def known(self, user_key: str, *, scopes: Scopes, patterns: int) -> tuple[Profile | None, list[Pattern]]:
        """The profile and the most frequent patterns (counts summed over `scopes`), in one statement."""
        known = await self.person_context(user_key, scopes=scopes, patterns=patterns, items=0)
        return known.profile, known.patterns

    async def person_context(self, user_key: str, *, scopes: Scopes, patterns: int, items: int) -> Known:
        """The profile, the most frequent patterns (counts summed over `scopes`) and the newest `items` current
        items readable in `scopes`, in one statement: it is on the path of every answer, where each round trip
        costs the event loop a socket write and a wake-up (and PostgreSQL a statement)."""
        bind = self._database.params()
        ctes, parts = [], []
        if (scopes is None or scopes) and patterns > 0:
            ctes.append(
                "top AS (SELECT kind, value, SUM(count) AS total FROM learned_pattern "
                f"WHERE user_key = {bind(user_key)}{among(bind, 'scope', scopes)} "
                f"GROUP BY kind, value ORDER BY total DESC, kind, value LIMIT {int(patterns)})"
            )
            pattern = ("NULL", "NULL", "NULL", "NULL", "kind", "value", "total", "NULL", "NULL")
            parts.append(_known_part("pattern", pattern, "top"))
        if items > 0:
            ctes.append(
                "newest AS (SELECT seq, id, kind, text, about, audience, origin, learned_at FROM person_item "
                f"WHERE user_key = {bind(user_key)} AND ended = ''{among(bind, 'audience', scopes)} "
                f"ORDER BY seq DESC LIMIT {bind(int(items))})"
            )
            # First: PostgreSQL types a UNION's columns two parts at a time, and a column NULL in both of the first
            # two parts would be text, which this part's timestamp does not match.
            item = ("id", "text", "about", "seq", "kind", "audience", "NULL", "origin", "learned_at")
            parts.insert(0, _known_part("item", item, "newest"))
        # The JSON columns as text, so that every part has one type per column (text, whatever the driver).
        profile = ("display_name", "CAST(interests AS TEXT)", "CAST(style AS TEXT)", "message_count", *("NULL",) * 5)
        parts.append(_known_part("profile", profile, f"user_profile WHERE user_key = {bind(user_key)}"))
        sql = (f"WITH {', '.join(ctes)} " if ctes else "") + " UNION ALL ".join(parts)
        rows = await self._database.connection().execute_query_dict(sql, bind.values)
        found_profile: Profile | None = None
        found: list[Pattern] = []
        current: list[Item] = []
        for row in rows:
            if row["part"] == "profile":
                found_profile = Profile(
                    user_key=user_key,
                    display_name=row["name"],
                    interests=dict(_json(row["interests"])),
                    style=dict(_json(row["style"])),
                    message_count=row["number"],
                )
            elif row["part"] == "pattern":
                found.append(Pattern(kind=row["kind"], value=row["value"], count=int(row["total"])))
            else:
                current.append(
                    Item(
                        id=row["name"],
                        user_key=user_key,
                        kind=row["kind"],
                        text=row["interests"],
                        about=row["style"],
                        audience=row["value"],
                        origin=row["origin"],
                        learned_at=as_datetime(row["learned_at"]),
                        seq=int(row["number"]),
                    )
                )
        # A UNION ALL promises no order of its rows: the patterns as their CTE chose them, the items as learned.
        found.sort(key=lambda p: (-p.count, p.kind, p.value))
        current.sort(key=lambda item: item.seq)
        return Known(profile=found_profile, patterns=found, items=current)

    async def get_profiles(self, user_keys: Sequence[str]) -> dict[str, Profile]:
        rows = await UserProfile.filter(user_key__in=list(user_keys))
        return {row.user_key: self._profile(row) for row in rows}

    async def save_profiles(self, profiles: Sequence[Profile]) -> None:
        await self._save_profiles(profiles, self._database.connection())

    @staticmethod
    async def _save_profiles(profiles: Sequence[Profile], connection: BaseDBAsyncClient) -> None:
        await UserProfile.bulk_create(
            [
                UserProfile(
                    user_key=p.user_key,
                    platform=_platform_of(p.user_key),
                    display_name=p.display_name[:191],
                    interests=p.interests,
                    style=p.style,
                    message_count=p.message_count,
                )
                for p in profiles
            ],
            on_conflict=["user_key"],
            update_fields=["display_name", "interests", "style", "message_count", "updated_at"],
            using_db=connection,
        )

    async def store_exchanges(self, records: Sequence[InteractionRecord], learn: Learner) -> int:
        """One transaction: the interactions not yet stored go in, and only those are learned from, so a job
        done twice (resumed after a crash, or by two replicas) counts each exchange once."""
        if not records:
            return 0
        async with in_transaction(self._database.connection().connection_name) as connection:
            paused = {  # learning is paused for them: kept, never learned from
                str(row["user_key"])
                for row in await PersonLearning.filter(user_key__in=sorted({r.user_key for r in records}), paused=True)
                .using_db(connection)
                .values("user_key")
            }
            fresh_ids = await self._insert_new(records, paused, connection)
            fresh = [r for r in records if r.id in fresh_ids and r.user_key not in paused]
            if not fresh:
                return len(fresh_ids)
            people = sorted({r.user_key for r in fresh})
            query = UserProfile.filter(user_key__in=people).using_db(connection)
            if self._database.dialect == "postgres":
                query = query.select_for_update()  # replicas learning about one person take turns
            learned = learn(fresh, {row.user_key: self._profile(row) for row in await query})
            await self._save_profiles(learned.profiles, connection)
            await self._bump_patterns(learned.patterns, connection)
        return len(fresh_ids)

    async def _insert_new(
        self, records: Sequence[InteractionRecord], paused: set[str], connection: BaseDBAsyncClient
    ) -> set[str]:
        bind = self._database.params()
        rows = [
            "("
            + bind(
                r.id,
                r.user_key,
                r.platform,
                r.conversation_id[:191],
                r.thread_id[:191] if r.thread_id else None,
                r.private,
                r.user_text,
                r.reply_text,
                json.dumps(list(r.topics)),
                r.ok,
                r.error[:64] if r.error else None,
                r.model[:64],
                r.input_tokens,
                r.output_tokens,
                r.latency_ms,
                r.created_at,
                r.audience[:191],
                0 if r.ok and r.user_text and r.user_key not in paused else SKIPPED,
            )
            + ")"
            for r in records
        ]
        inserted = await connection.execute_query_dict(
            "INSERT INTO interaction (id, user_key, platform, conversation_id, thread_id, private, user_text, "
            "reply_text, topics, ok, error, model, input_tokens, output_tokens, latency_ms, created_at, audience, "
            "learn) VALUES " + ", ".join(rows) + " ON CONFLICT (id) DO NOTHING RETURNING id",
            bind.values,
        )
        return {str(row["id"]) for row in inserted}

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

    async def _bump_patterns(self, rows: Sequence[tuple[str, str, str, str]], connection: BaseDBAsyncClient) -> None:
        """One statement for the whole batch: insert new patterns, add to the count of known ones."""
        counts = Counter((user_key, scope, kind, value[:128]) for user_key, scope, kind, value in rows)
        if not counts:
            return
        now = datetime.now(UTC)
        bind = self._database.params()
        # Sorted: replicas' transactions take the rows' locks in one order, so never deadlock.
        tuples = [
            f"({bind(user_key, kind, value, scope, count, now)})"
            for (user_key, scope, kind, value), count in sorted(counts.items())
        ]
        await connection.execute_query(
            "INSERT INTO learned_pattern (user_key, kind, value, scope, count, updated_at) VALUES "
            + ", ".join(tuples)
            + " ON CONFLICT (user_key, kind, value, scope) DO UPDATE SET "
            "count = learned_pattern.count + excluded.count, updated_at = excluded.updated_at",
            bind.values,
        )

    async def set_feedback(self, interaction_id: str, user_key: str, emoji: str, score: float) -> None:
        await Feedback.update_or_create(
            interaction_id=interaction_id, emoji=emoji, defaults={"user_key": user_key, "score": score}
        )

    async def clear_feedback(self, interaction_id: str, emoji: str) -> bool:
        return bool(await Feedback.filter(interaction_id=interaction_id, emoji=emoji).delete())

    async def has_user(self, user_key: str) -> bool:
        return await Interaction.filter(user_key=user_key).exists() or await UserProfile.exists(user_key=user_key)

    async def forget_user(self, user_key: str) -> None:
        # One transaction, the learning state first: a learning call that finishes now either wrote before it (its
        # lock on that row is waited for, and what it wrote goes too) or finds no lease to keep anything under; and
        # a sweep sees the exchanges waiting either all there or all gone.
        async with in_transaction(self._database.connection().connection_name) as connection:
            for model in (PersonLearning, PersonItem, Feedback, ReplyMessage, LearnedPattern, Interaction, UserProfile):
                await model.filter(user_key=user_key).using_db(connection).delete()
