"""The person models (core.person) and their learning state, on the relational store (core.ports.PersonModels).

Raw statements where one round trip does what tortoise would do in several (the lease, the learning transaction);
tortoise's queryset elsewhere.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from core.feedback import Reaction
from core.person import Exchange, Item, Plan, buried, buried_mark
from core.ports import LearningState, Scopes
from storage.database import Database, as_datetime
from storage.models import Feedback, Interaction, PersonItem, PersonLearning, UserProfile

__all__ = ["PersonModelStore"]

WAITING, LEARNED, SKIPPED = 0, 1, 2


def now_ms() -> int:
    return int(time.time() * 1000)


def item_of(row: PersonItem) -> Item:
    return Item(
        id=row.id,
        user_key=row.user_key,
        kind=row.kind,  # type: ignore[arg-type]
        text=row.text,
        about=row.about,
        audience=row.audience,
        origin=row.origin,  # type: ignore[arg-type]
        evidence=row.evidence,
        sources=tuple(json.loads(row.sources or "[]")),
        learned_at=as_datetime(row.learned_at),
        valid_until=None if row.valid_until is None else as_datetime(row.valid_until),
        ended=row.ended,
        replaced_by=row.replaced_by,
        seq=row.seq,
    )


def _row(item: Item) -> PersonItem:
    return PersonItem(
        id=item.id,
        user_key=item.user_key,
        kind=item.kind,
        about=item.about[:64],
        text=item.text,
        audience=item.audience[:191],
        origin=item.origin,
        sources=json.dumps(list(item.sources)),
        evidence=item.evidence[:191],
        learned_at=item.learned_at,
        valid_until=item.valid_until,
        ended=item.ended,
        replaced_by=item.replaced_by,
    )


class PersonModelStore:
    """Implements core.ports.PersonModels; RelationalRecords is one."""

    _database: Database

    async def _ensure_state(self, user_key: str, connection: BaseDBAsyncClient | None = None) -> None:
        await PersonLearning.get_or_create(user_key=user_key, using_db=connection)

    async def _locked_state(self, user_key: str, connection: BaseDBAsyncClient) -> PersonLearning:
        """The person's learning row, created if need be and locked for the transaction (on PostgreSQL): learning
        applied, an edit or a deletion, and feedback derived again take turns on it."""
        await self._ensure_state(user_key, connection)
        row = await PersonLearning.filter(user_key=user_key).using_db(connection).select_for_update().first()
        assert row is not None
        return row

    async def learning_due(
        self, limit: int, *, now: float = 0.0, day: str = "", daily_tokens: int = 0
    ) -> list[LearningState]:
        bind = self._database.params()
        ready = ""
        if now:  # those who could not be learned about now (paused, held, waiting to retry, capped) left out in SQL
            at = int(now * 1000)
            ready = (  # each value bound where it is used: SQLite's `?` are positional
                f"WHERE COALESCE(s.paused, FALSE) = FALSE AND COALESCE(s.held_until, 0) < {bind(at)} "
                f"AND COALESCE(s.retry_at, 0) < {bind(at)} AND NOT (COALESCE(s.day, '') = {bind(day)} "
                f"AND COALESCE(s.tokens_today, 0) >= {bind(int(daily_tokens))}) "
            )
        sql = (
            "SELECT w.user_key, w.pending, w.newest, w.oldest, COALESCE(s.paused, FALSE) AS paused, "
            "COALESCE(s.held_until, 0) AS held_until, COALESCE(s.retry_at, 0) AS retry_at, "
            "COALESCE(s.last_quiet_call, 0) AS last_quiet_call, COALESCE(s.last_seen, 0) AS last_seen, "
            "COALESCE(s.day, '') AS day, "
            "COALESCE(s.tokens_today, 0) AS tokens_today, COALESCE(s.failures, 0) AS failures "
            "FROM (SELECT user_key, COUNT(*) AS pending, MAX(created_at) AS newest, MIN(created_at) AS oldest "
            f"FROM interaction "
            f"WHERE learn = {WAITING} GROUP BY user_key) w LEFT JOIN person_learning s ON s.user_key = w.user_key "
            f"{ready}ORDER BY w.newest LIMIT {bind(int(limit))}"
        )
        rows = await self._database.connection().execute_query_dict(sql, bind.values)
        return [
            LearningState(
                user_key=row["user_key"],
                pending=int(row["pending"]),
                newest=as_datetime(row["newest"]).timestamp(),
                oldest=as_datetime(row["oldest"]).timestamp(),
                paused=bool(row["paused"]),
                held_until=int(row["held_until"]) / 1000,
                retry_at=int(row["retry_at"]) / 1000,
                last_quiet_call=int(row["last_quiet_call"]) / 1000,
                last_seen=int(row["last_seen"]) / 1000,
                day=row["day"],
                tokens_today=int(row["tokens_today"]),
                failures=int(row["failures"]),
            )
            for row in rows
        ]

    async def take_learning(self, user_key: str, owner: str, ttl: float) -> bool:
        now = now_ms()
        bind = self._database.params()
        sql = (
            "INSERT INTO person_learning (user_key, paused, greeted, owner, held_until, retry_at, last_quiet_call, "
            f"last_seen, day, tokens_today, failures) VALUES ({bind(user_key)}, FALSE, FALSE, {bind(owner)}, "
            f"{bind(now + int(ttl * 1000))}, 0, 0, 0, '', 0, 0) ON CONFLICT (user_key) DO UPDATE SET "
            "owner = excluded.owner, held_until = excluded.held_until "
            f"WHERE person_learning.held_until < {bind(now)} OR person_learning.owner = excluded.owner "
            "RETURNING user_key"
        )
        rows = await self._database.connection().execute_query_dict(sql, bind.values)
        return bool(rows)

    async def pending_exchanges(self, user_key: str, limit: int) -> list[Exchange]:
        rows = (
            await Interaction.filter(user_key=user_key, learn=WAITING)
            .order_by("created_at", "id")
            .limit(limit)
            .values("id", "user_text", "reply_text", "audience", "created_at")
        )
        return [
            Exchange(
                id=row["id"],
                user_key=user_key,
                text=row["user_text"],
                reply=row["reply_text"],
                audience=row["audience"],
                at=as_datetime(row["created_at"]),
            )
            for row in rows
        ]

    async def person_items(self, user_key: str, *, scopes: Scopes, current: bool = True) -> list[Item]:
        query = PersonItem.filter(user_key=user_key)
        if current:
            query = query.filter(ended="")
        if scopes is not None:
            query = query.filter(audience__in=list(scopes))
        return [item_of(row) for row in await query.order_by("seq")]

    async def apply_learning(
        self,
        user_key: str,
        owner: str,
        plan: Plan,
        learned: Mapping[str, str],
        *,
        tokens: int,
        day: str,
        quiet: bool,
    ) -> bool:
        async with in_transaction(self._database.connection().connection_name) as connection:
            state = await PersonLearning.filter(user_key=user_key).using_db(connection).select_for_update().first()
            if state is None or state.owner != owner or state.held_until < now_ms():
                return False  # forgotten meanwhile, or another process holds it now
            now_read = {
                row["id"]: row
                for row in await Interaction.filter(user_key=user_key, id__in=list(learned))
                .using_db(connection)
                .values("id", "learn", "user_text", "created_at")
            }
            unchanged = all(
                (row := now_read.get(i)) is not None and row["learn"] == WAITING and row["user_text"] == text
                for i, text in learned.items()
            )
            if unchanged and now_read:
                newest = max(as_datetime(row["created_at"]) for row in now_read.values())
                state.last_seen = max(state.last_seen, int(newest.timestamp() * 1000))
            if unchanged:
                plan = await self._not_deleted(user_key, plan, connection)
                await self._apply_plan(user_key, await self._still_there(user_key, plan, connection), connection)
                if learned:
                    await (
                        Interaction.filter(user_key=user_key, id__in=list(learned), learn=WAITING)
                        .using_db(connection)
                        .update(learn=LEARNED)
                    )
            # else an exchange was edited or deleted during the call: nothing of it is kept, and it is learned
            # from again in its new words (the tokens still count)
            state.tokens_today = (state.tokens_today if state.day == day else 0) + tokens
            state.day = day
            state.failures = 0
            state.retry_at = 0
            state.owner = None
            state.held_until = 0
            if quiet:
                state.last_quiet_call = now_ms()
            await state.save(using_db=connection)
        return unchanged

    @staticmethod
    async def _not_deleted(user_key: str, plan: Plan, connection: BaseDBAsyncClient) -> Plan:
        """The plan without what says again an item deleted while it was made (the call read the tombstones
        before; a deletion since is seen here, under the same lock), nor what replaces one."""
        rows = await PersonItem.filter(user_key=user_key, ended="deleted").using_db(connection)
        if not rows or not plan.added:
            return plan
        tombstones = [item_of(row) for row in rows]
        gone = {item.id for item in tombstones}
        replacing = {by for target, (_, by, _) in plan.ended.items() if target in gone and by}
        added = [i for i in plan.added if i.id not in replacing and not buried(i.text, i.sources, tombstones)]
        if len(added) == len(plan.added):
            return plan
        return replace(plan, added=added, dropped=plan.dropped + len(plan.added) - len(added))

    @staticmethod
    async def _still_there(user_key: str, plan: Plan, connection: BaseDBAsyncClient) -> Plan:
        """The plan without the sources deleted while it was made (an older message of theirs, say): an item left
        with none is not added."""
        cited = {s for item in plan.added for s in item.sources} | {s for ss, _ in plan.sourced.values() for s in ss}
        if not cited:
            return plan
        alive = {
            str(i)
            for i in await Interaction.filter(user_key=user_key, id__in=sorted(cited))
            .exclude(user_text="")
            .using_db(connection)
            .values_list("id", flat=True)
        }
        if cited <= alive:
            return plan
        added = [replace(i, sources=kept) for i in plan.added if (kept := tuple(s for s in i.sources if s in alive))]
        sourced = {k: (kept, a) for k, (ss, a) in plan.sourced.items() if (kept := tuple(s for s in ss if s in alive))}
        return Plan(added=added, ended=plan.ended, sourced=sourced, dropped=plan.dropped)

    @staticmethod
    async def _apply_plan(user_key: str, plan: Plan, connection: BaseDBAsyncClient) -> None:
        for item_id, (why, by, when) in plan.ended.items():
            await (
                PersonItem.filter(user_key=user_key, id=item_id, ended="")
                .using_db(connection)
                .update(ended=why, replaced_by=by, valid_until=when)
            )
        for item_id, (sources, audience) in plan.sourced.items():
            await (
                PersonItem.filter(user_key=user_key, id=item_id)
                .using_db(connection)
                .update(sources=json.dumps(list(sources)), audience=audience)
            )
        if plan.added:
            await PersonItem.bulk_create([_row(item) for item in plan.added], using_db=connection)

    async def learning_failed(
        self, user_key: str, owner: str, *, pause_of: Callable[[int], float], tokens: int, day: str, count: bool = True
    ) -> int:
        async with in_transaction(self._database.connection().connection_name) as connection:
            state = await PersonLearning.filter(user_key=user_key).using_db(connection).select_for_update().first()
            if state is None:
                return 0
            state.tokens_today = (state.tokens_today if state.day == day else 0) + tokens
            state.day = day
            if state.owner not in (owner, None) and state.held_until >= now_ms():
                await state.save(using_db=connection)
                return 0  # another process holds it now: its tries count, not this one's
            state.failures += 1 if count else 0
            state.retry_at = now_ms() + int(pause_of(state.failures) * 1000)
            state.owner, state.held_until = None, 0
            await state.save(using_db=connection)
            return state.failures

    async def skip_exchanges(self, user_key: str, ids: Sequence[str]) -> None:
        async with in_transaction(self._database.connection().connection_name) as connection:
            if ids:
                await (
                    Interaction.filter(user_key=user_key, id__in=list(ids), learn=WAITING)
                    .using_db(connection)
                    .update(learn=SKIPPED)
                )
            await PersonLearning.filter(user_key=user_key).using_db(connection).update(failures=0, retry_at=0)

    async def release_learning(self, owner: str) -> None:
        await PersonLearning.filter(owner=owner).update(owner=None, held_until=0)

    async def set_paused(self, user_key: str, paused: bool) -> None:
        async with in_transaction(self._database.connection().connection_name) as connection:
            await self._ensure_state(user_key, connection)
            await PersonLearning.filter(user_key=user_key).using_db(connection).update(paused=paused)
            if paused:  # what they say while paused is never learned from, not even after they resume
                await Interaction.filter(user_key=user_key, learn=WAITING).using_db(connection).update(learn=SKIPPED)

    async def is_paused(self, user_key: str) -> bool:
        return await PersonLearning.exists(user_key=user_key, paused=True)

    async def greet_once(self, user_key: str) -> bool:
        bind = self._database.params()
        sql = (
            "INSERT INTO person_learning (user_key, paused, greeted, held_until, retry_at, last_quiet_call, last_seen, "
            f"day, tokens_today, failures) VALUES ({bind(user_key)}, FALSE, TRUE, 0, 0, 0, 0, '', 0, 0) "
            "ON CONFLICT (user_key) DO UPDATE SET greeted = TRUE WHERE NOT person_learning.greeted RETURNING user_key"
        )
        return bool(await self._database.connection().execute_query_dict(sql, bind.values))

    async def _reactions(self, user_key: str, limit: int, connection: BaseDBAsyncClient) -> list[Reaction]:
        bind = self._database.params()
        sql = (
            "SELECT f.interaction_id, SUM(f.score) AS score, MAX(f.created_at) AS at, i.reply_text, i.audience "
            f"FROM feedback f JOIN interaction i ON i.id = f.interaction_id WHERE f.user_key = {bind(user_key)} "
            "GROUP BY f.interaction_id, i.reply_text, i.audience ORDER BY MAX(f.created_at) DESC "
            f"LIMIT {bind(int(limit))}"
        )
        rows = await connection.execute_query_dict(sql, bind.values)
        return [
            Reaction(
                interaction_id=row["interaction_id"],
                reply=row["reply_text"],
                score=max(-1.0, min(1.0, float(row["score"]))),
                at=as_datetime(row["at"]),
                audience=row["audience"],
            )
            for row in rows
        ]

    async def refresh_feedback_items(self, user_key: str, derive: Callable[[list[Reaction]], list[Item]]) -> None:
        """The preferences reactions show, derived whole each time from the reactions as they are now (read under
        the person's lock: a forget or a deletion is either all before or all after)."""
        async with in_transaction(self._database.connection().connection_name) as connection:
            known = await PersonLearning.filter(user_key=user_key).using_db(connection).exists()
            if not known and not await Feedback.filter(user_key=user_key).using_db(connection).exists():
                return  # nobody to derive for (forgotten, or never reacted)
            await self._locked_state(user_key, connection)
            items = derive(await self._reactions(user_key, 200, connection))
            buried = {
                str(mark)
                for mark in await PersonItem.filter(user_key=user_key, ended="deleted")
                .using_db(connection)
                .values_list("evidence", flat=True)
            }
            items = [item for item in items if buried_mark(item.text) not in buried]  # deleted: not derived again
            await (
                PersonItem.filter(user_key=user_key, origin="feedback")
                .exclude(ended="deleted")
                .using_db(connection)
                .delete()
            )
            if items:
                await PersonItem.bulk_create([_row(item) for item in items], using_db=connection)

    async def delete_item(self, user_key: str, item_id: str) -> Item | None:
        """The person deleted one item of their model: it becomes a tombstone (no words, no topic: a digest of them,
        and its sources), under their lock so that a learning call made meanwhile keeps nothing that says it again.
        None when they have no such current item."""
        async with in_transaction(self._database.connection().connection_name) as connection:
            await self._locked_state(user_key, connection)
            row = (
                await PersonItem.filter(user_key=user_key, id=item_id)
                .exclude(ended="deleted")
                .using_db(connection)
                .first()
            )
            if row is None:
                return None
            gone = item_of(row)
            if gone.kind == "interest":
                await self._drop_topic(user_key, gone.text, connection)
            row.evidence, row.text, row.about = buried_mark(row.text), "", ""
            row.ended, row.valid_until = "deleted", datetime.now(UTC)
            await row.save(using_db=connection, update_fields=["evidence", "text", "about", "ended", "valid_until"])
            return gone

    @staticmethod
    async def _drop_topic(user_key: str, text: str, connection: BaseDBAsyncClient) -> None:
        """A deleted interest also leaves the keyword topics (shown while the model has no interests of theirs)."""
        profile = await UserProfile.filter(user_key=user_key).using_db(connection).first()
        if profile is None:
            return
        topic = text.casefold().strip()
        interests = {
            scope: {t: n for t, n in counts.items() if t.casefold() != topic}
            for scope, counts in dict(profile.interests).items()
        }
        if interests != profile.interests:
            profile.interests = interests
            await profile.save(using_db=connection, update_fields=["interests"])

    async def said(self, interaction_id: str) -> tuple[str, str] | None:
        row = await Interaction.filter(id=interaction_id).values("user_key", "user_text")
        return (str(row[0]["user_key"]), str(row[0]["user_text"])) if row else None

    async def change_exchange(self, interaction_id: str, user_key: str, text: str | None) -> None:
        """An edit (`text`) or a deletion (None), under the person's lock so that a learning call made meanwhile
        sees it (and keeps nothing of the old words): the exchange's words change, it waits to be learned from
        again (unless it was never to be: said while paused), and what was learned from it goes."""
        async with in_transaction(self._database.connection().connection_name) as connection:
            await self._locked_state(user_key, connection)
            row = await Interaction.filter(id=interaction_id, user_key=user_key).using_db(connection).first()
            if row is None:
                return
            if text is None:
                row.user_text, row.reply_text, row.topics, row.learn = "", "", [], SKIPPED
            else:
                row.user_text, row.learn = text, SKIPPED if row.learn == SKIPPED else WAITING
            await row.save(using_db=connection, update_fields=["user_text", "reply_text", "topics", "learn"])
            await self._unlearn(user_key, {interaction_id}, connection)
            await Feedback.filter(user_key=user_key, interaction_id=interaction_id).using_db(connection).delete()

    @staticmethod
    async def _unlearn(user_key: str, gone: set[str], connection: BaseDBAsyncClient) -> None:
        """Items that lose a source: kept with the rest when they are the same fact said elsewhere; gone when it
        was their only source, or when they are a merge (whose words may hold the lost message's). What a gone
        item had superseded or merged becomes current again if that item was current; if it had itself been
        replaced since, it points to what replaced it (A -> B -> C with B gone: A stays past, replaced by C)."""
        # A tombstone keeps its sources whatever happens to them: an edited message is learned from again, and
        # what the person deleted from it must stay out.
        rows = await PersonItem.filter(user_key=user_key).exclude(ended="deleted").using_db(connection).order_by("seq")
        by_id = {row.id: row for row in rows}
        merged_into = {row.replaced_by for row in rows if row.ended == "merged" and row.replaced_by}
        doomed: set[str] = set()
        for row in rows:
            sources = json.loads(row.sources or "[]")
            if not gone.intersection(sources):
                continue
            kept = [s for s in sources if s not in gone]
            if kept and row.id not in merged_into:
                row.sources = json.dumps(kept)
                await row.save(using_db=connection, update_fields=["sources"])
            else:
                doomed.add(row.id)
        for row in rows:
            if row.id in doomed or row.replaced_by not in doomed:
                continue
            target: str | None = row.replaced_by
            restore = False
            while target in doomed:
                replacing = by_id[target]
                if not replacing.ended:  # what replaced it was current: it is again
                    restore, target = True, None
                    break
                target = replacing.replaced_by  # what replaced that, in turn (None: it was retired)
            if restore:
                row.ended, row.replaced_by, row.valid_until = "", None, None
            else:
                row.replaced_by = target
            await row.save(using_db=connection, update_fields=["ended", "replaced_by", "valid_until"])
        if doomed:
            await PersonItem.filter(user_key=user_key, id__in=sorted(doomed)).using_db(connection).delete()
