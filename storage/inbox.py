"""The inbox (core.ports.Inbox) in the relational database, with a spool on local disk for when it is down.

Every write is one statement on the path it is on (accepting an event, taking a turn, keeping a step), bound the
same way for asyncpg and SQLite. When a statement fails and the database does not answer a ping either, the
inbox keeps going from its spool: events are accepted and answered by this process alone (no lease can be
taken), their steps are appended to the spool, and once the database answers again everything is written to
it in order and the spool is emptied. A statement that fails while the database answers is a real error and
is raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from core.background import stop_tasks
from core.batching import Batcher
from core.entries import (
    Answer,
    Entry,
    Incoming,
    Step,
    answer_from_json,
    answer_to_json,
    event_from_json,
    event_to_json,
    interaction_id_for,
    refs_from_json,
    refs_to_json,
)
from core.events import MessageReceived, MessageRef
from core.health import Health
from core.ports import Accepted, InboxFull, Turn
from storage.database import Database
from storage.spool import Spool

__all__ = ["RelationalInbox"]

log = logging.getLogger(__name__)
T = TypeVar("T")

PART = "database"
_COLUMNS = "seq, key, event, route, step, answer, refs, taken"
_FORGOTTEN = "{}"  # what a forgotten entry's event becomes: its key stays, for de-duplication
_STEP_COLUMNS = ("step", "answer", "refs", "event", "taken", "job_owner", "job_until")


def now_ms() -> int:
    return int(time.time() * 1000)


class DatabaseDown(Exception):
    """The statement failed and the database does not answer."""


def _where(incoming: Incoming) -> tuple[str, str, str | None, str]:
    """(platform, place, thread, conversation key) of an event, as the inbox indexes them."""
    event = incoming.event
    if isinstance(event, MessageReceived):
        return event.user.platform, event.conversation_id, event.thread_id, event.conversation_key
    platform = incoming.person.split(":", 1)[0]
    message = getattr(event, "message", None)
    return platform, message.channel_id if isinstance(message, MessageRef) else "", None, ""


def _entry(row: Mapping[str, Any]) -> Entry:
    answer = row.get("answer")
    return Entry(
        key=row["key"],
        seq=int(row["seq"]),
        event=event_from_json(json.loads(row["event"])),
        route=json.loads(row["route"]),
        step=Step(int(row["step"])),
        answer=answer_from_json(json.loads(answer)) if answer else None,
        refs=refs_from_json(json.loads(row["refs"]) if row.get("refs") else ()),
        taken=int(row["taken"]),
    )


# An entry's step as kept: the entry, the columns it changes, its reply links, and whose turn to hand back.
_StepWrite = tuple[Entry, dict[str, Any], tuple[MessageRef, ...], str | None]


@dataclass
class _Spooled:
    """An entry the spool holds (new while the database was down, or a step of an entry the database has)."""

    record: dict[str, Any]  # the columns, as they will be written
    new: bool
    links: list[MessageRef] = field(default_factory=list)


class RelationalInbox:
    """Implements core.ports.Inbox."""

    def __init__(
        self,
        database: Database,
        spool: Spool,
        *,
        health: Health,
        owner: str,
        job_ttl: float = 120.0,
        timeout: float = 5.0,
        max_spooled: int = 10_000,
    ) -> None:
        self._database = database
        self._spool = spool
        self._health = health
        self._owner = owner
        self._job_ttl = job_ttl
        self._timeout = timeout
        self._max_spooled = max_spooled
        self._spooled: dict[str, _Spooled] = {}
        self._order = 0
        self._lock = asyncio.Lock()
        self._probe: asyncio.Task[None] | None = None
        self._closed = False
        self._accepts: Batcher[dict[str, Any], Accepted | InboxFull] = Batcher(self._accept_rows)
        self._opens: Batcher[tuple[str, str, float], tuple[bool, Entry | None]] = Batcher(self._open_many)
        self._steps: Batcher[_StepWrite, bool] = Batcher(self._write_steps)
        self._load()

    # --- the database, or the spool --------------------------------------------------------------------

    @property
    def down(self) -> bool:
        return self._health.is_down(PART)

    @property
    def spooled(self) -> int:
        return sum(1 for s in self._spooled.values() if s.new)

    @property
    def full(self) -> bool:
        """The database is down and the spool can take no more events: Slack gets 503 until one is back."""
        return self.down and self.spooled >= self._max_spooled

    def _load(self) -> None:
        for record in self._spool.load():
            self._replay(record)
        if self._spooled:
            log.warning("the inbox spool holds %d events from before the restart: database first", len(self._spooled))
            self._health.down(PART, "events in the local spool are still to be written to the database")

    def _replay(self, record: Mapping[str, Any]) -> None:
        key = record["key"]
        known = self._spooled.get(key)
        if record["op"] == "new":
            self._order += 1
            self._spooled[key] = _Spooled(record=dict(record["row"], order=self._order), new=True)
        elif known is None:
            self._spooled[key] = _Spooled(record=dict(record["row"]), new=False)
        else:
            known.record.update(record["row"])
        if record.get("links"):
            self._spooled[key].links = list(refs_from_json(record["links"]))

    async def _db(self, work: Callable[[], Awaitable[T]], *, timeout: float | None = None) -> T:
        """One statement, within its deadline. A failure while the database does not answer a ping either marks
        it down (one log line, in Health) and raises DatabaseDown; the caller goes on with the spool."""
        if self.down:
            raise DatabaseDown("the database is down")
        try:
            async with asyncio.timeout(timeout or self._timeout):  # (not wait_for: no task of its own to wake)
                return await work()
        except Exception as exc:  # noqa: BLE001 - sorted below: an outage, or a real error
            if await self._answers():
                raise
            self._health.down(PART, f"{type(exc).__name__}: {exc}".strip())
            self._watch()
            raise DatabaseDown(str(exc)) from exc

    async def _answers(self) -> bool:
        try:
            await asyncio.wait_for(self._database.ping(), 1.0)
        except Exception:  # noqa: BLE001 - any failure means it does not answer
            return False
        return True

    def _watch(self) -> None:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._until_back(), name="inbox-database-probe")

    async def _until_back(self) -> None:
        delay = 0.5
        while not self._closed:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)
            if not await self._answers():
                continue
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - tried again on the next round
                log.warning("writing the inbox spool to the database failed (%s); trying again", exc)
                continue
            return

    async def _flush_if_back(self) -> None:
        try:
            if await self._answers():
                await asyncio.wait_for(self.flush(), 1.0)
        except Exception as exc:  # noqa: BLE001 - still down: the probe tries again
            log.debug("the spool could not be written yet: %s", exc)

    def start(self) -> None:
        """Write what an earlier process left in the spool as soon as the database answers."""
        if self._spooled:
            self._watch()

    async def close(self) -> None:
        self._closed = True
        if self._probe is not None:
            await stop_tasks([self._probe])

    async def _keep(self, key: str, row: Mapping[str, Any], *, new: bool, links: Sequence[MessageRef] = ()) -> None:
        """Append to the spool (durable), then to what this process knows of it."""
        record: dict[str, Any] = {"op": "new" if new else "step", "key": key, "row": dict(row)}
        if links:
            record["links"] = refs_to_json(list(links))
        await self._spool.append(record)
        self._replay(record)

    async def flush(self) -> None:
        """Everything the spool holds into the database, in order; then the spool is emptied."""
        async with self._lock:
            if not self._spooled:
                self._health.up(PART)
                return
            connection = self._database.connection()
            held = sorted(self._spooled.items(), key=lambda item: item[1].record.get("order", 0))
            for key, spooled in held:
                row = spooled.record
                if spooled.new:
                    await self._insert(connection, [row])
                await self._advance(connection, key, row)
                if spooled.links:
                    await self._link(connection, row["interaction_id"], row["person"], spooled.links)
            people = {s.record["person"] for s in self._spooled.values() if s.new and s.record["step"] < Step.DELIVERED}
            for person in people:  # the turns this process went on with alone
                await self._take(connection, person, self._owner, 30.0)
            await self._spool.replace([])
            log.info("wrote %d spooled inbox records to the database", len(held))
            self._spooled.clear()
            self._health.up(PART)

    # --- statements ------------------------------------------------------------------------------------

    async def _insert(self, connection: Any, rows: Sequence[Mapping[str, Any]]) -> set[str]:
        """Insert entries (one statement, in order: their seqs follow it); returns the keys that are new."""
        bind = self._database.params()
        values = ", ".join(
            "("
            + bind(
                row["key"],
                row["person"],
                row["kind"],
                row["platform"],
                row["place"],
                row["thread"],
                row["conversation"],
                row["event"],
                row["route"],
                row["step"],
                row.get("answer"),
                row.get("refs"),
                row.get("taken", 0),
                row.get("job_owner"),
                row.get("job_until", 0),
                row["received_at"],
            )
            + ")"
            for row in rows
        )
        # A reaction already applied is applied again when it comes back (set and clear are idempotent); a
        # message or command that comes back is a redelivery, and nothing changes.
        sql = (
            "INSERT INTO inbox (key, person, kind, platform, place, thread, conversation, event, route, step, "
            f"answer, refs, taken, job_owner, job_until, received_at) VALUES {values} "
            "ON CONFLICT (key) DO UPDATE SET step = 0, event = excluded.event, route = excluded.route, taken = 0, "
            "received_at = excluded.received_at WHERE inbox.kind = 'reaction' AND inbox.step = 3 RETURNING key"
        )
        inserted: list[dict[str, Any]] = await connection.execute_query_dict(sql, bind.values)
        return {row["key"] for row in inserted}

    async def _advance(self, connection: Any, key: str, row: Mapping[str, Any]) -> None:
        """A spooled step onto the database's row (only the columns it changed), unless that row got as far."""
        bind = self._database.params()
        await connection.execute_query(self._update(bind, key, row), bind.values)

    async def _link(self, connection: Any, interaction_id: str, person: str, refs: Sequence[MessageRef]) -> None:
        if refs:
            bind = self._database.params()
            await connection.execute_query(self._links(bind, interaction_id, person, refs), bind.values)

    async def _take(self, connection: Any, person: str, owner: str, ttl: float) -> bool:
        now = now_ms()
        bind = self._database.params()
        sql = (
            f"INSERT INTO person_turn (person, owner, until) VALUES ({bind(person, owner, now + int(ttl * 1000))}) "
            "ON CONFLICT (person) DO UPDATE SET owner = excluded.owner, until = excluded.until "
            f"WHERE person_turn.until < {bind(now)} OR person_turn.owner = excluded.owner RETURNING person"
        )
        return bool(await connection.execute_query_dict(sql, bind.values))

    # --- core.ports.Inbox --------------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._database.ping()

    async def accept(self, incoming: Incoming) -> Accepted:
        platform, place, thread, conversation = _where(incoming)
        row = {
            "key": incoming.key,
            "person": incoming.person,
            # A refusal's note is delivered like a reply, but it is no message of a conversation: threads it was in
            # are not Rapport's, and the history has nothing of it.
            "kind": "refusal" if "refused" in incoming.route else incoming.kind,
            "platform": platform,
            "place": place,
            "thread": thread,
            "conversation": conversation,
            "event": json.dumps(event_to_json(incoming.event), ensure_ascii=False),
            "route": json.dumps(dict(incoming.route), ensure_ascii=False),
            "step": int(Step.RECEIVED),
            "received_at": now_ms(),
            "interaction_id": "",
        }
        accepted = await self._accepts(row)
        if isinstance(accepted, InboxFull):
            raise accepted
        return accepted

    async def _accept_rows(self, rows: list[dict[str, Any]]) -> list[Accepted | InboxFull]:
        """The entries accepted together (core.batching: one insert at a time, in the order they came)."""
        first = {row["key"]: i for i, row in reversed(list(enumerate(rows)))}  # a key twice: the first one counts
        unique = [row for i, row in enumerate(rows) if first[row["key"]] == i]
        if self.down and self.spooled + len(unique) > self._max_spooled:
            await self._flush_if_back()  # rather than refuse: the spool may be ready to go to the database now
        try:
            inserted = await self._db(lambda: self._insert(self._database.connection(), unique), timeout=1.5)
            return [Accepted(fresh=row["key"] in inserted and first[row["key"]] == i) for i, row in enumerate(rows)]
        except DatabaseDown:
            pass
        results: list[Accepted | InboxFull] = []
        async with self._lock:
            if not self.down:  # the spool was written back while these waited for it: the database takes them
                back = True
            else:
                back = False
                for row in rows:
                    if row["key"] in self._spooled:
                        results.append(Accepted(fresh=False, spooled=True))
                    elif self.spooled >= self._max_spooled:
                        results.append(InboxFull(f"the database is down and the spool holds {self.spooled} events"))
                    else:
                        await self._keep(row["key"], row, new=True)
                        results.append(Accepted(fresh=True, spooled=True))
        if back:
            return await self._accept_rows(rows)
        return results

    async def take_turn(self, person: str, owner: str, ttl: float) -> bool:
        try:
            return await self._db(lambda: self._take(self._database.connection(), person, owner, ttl))
        except DatabaseDown:
            return True  # nobody can take a lease now: this process goes on alone with what it accepted

    async def renew(self, persons: Sequence[str], owner: str, ttl: float) -> set[str]:
        if not persons:
            return set()
        bind = self._database.params()
        # A turn handed back (until = 0) stays handed back: the renewer read the turns it holds before that last
        # step, and renewing it now would keep the person's next message waiting until the lease lapsed. It is
        # not lost either (no other owner took it), so it is returned. One that lapsed and nobody took is still
        # the owner's, and is renewed.
        until = bind(now_ms() + int(ttl * 1000))
        sql = (
            f"UPDATE person_turn SET until = CASE WHEN until > 0 THEN CAST({until} AS BIGINT) ELSE 0 END "
            f"WHERE owner = {bind(owner)} AND person IN ({bind(*persons)}) RETURNING person"
        )
        try:
            rows = await self._db(lambda: self._database.connection().execute_query_dict(sql, bind.values))
        except DatabaseDown:
            return set(persons)
        return {row["person"] for row in rows}

    def _next_sql(self, bind: Any, person: str, *, leased: bool = False) -> str:
        held = " AND EXISTS (SELECT 1 FROM lease)" if leased else ""
        return (
            f"UPDATE inbox SET taken = taken + 1 WHERE seq = (SELECT seq FROM inbox WHERE person = {bind(person)} "
            f"AND step < {int(Step.DELIVERED)} ORDER BY seq LIMIT 1){held} RETURNING {_COLUMNS}"
        )

    async def open_turn(self, person: str, owner: str, ttl: float) -> tuple[bool, Entry | None]:
        if self.down or self._database.dialect != "postgres":
            if not await self.take_turn(person, owner, ttl):
                return False, None
            return True, await self.next_entry(person)
        try:
            return await self._opens((person, owner, ttl))
        except DatabaseDown:
            return True, await self.next_entry(person)

    async def _open_many(self, wanted: list[tuple[str, str, float]]) -> list[tuple[bool, Entry | None]]:
        """PostgreSQL: the turns opened together (core.batching), as one statement: each lease, and the first
        entry waiting for each lease that was ours to take."""
        now = now_ms()
        bind = self._database.params()
        values = ", ".join(
            f"({bind(person)}::text, {bind(owner)}::text, {bind(now + int(ttl * 1000))}::bigint)"
            for person, owner, ttl in dict.fromkeys(wanted)
        )
        sql = (
            f"WITH want (person, owner, until) AS (VALUES {values}), "
            "lease AS (INSERT INTO person_turn (person, owner, until) SELECT person, owner, until FROM want "
            "ON CONFLICT (person) DO UPDATE SET owner = excluded.owner, until = excluded.until "
            f"WHERE person_turn.until < {bind(now)} OR person_turn.owner = excluded.owner RETURNING person), "
            "firsts AS (SELECT DISTINCT ON (person) seq FROM inbox WHERE person IN (SELECT person FROM lease) "
            f"AND step < {int(Step.DELIVERED)} ORDER BY person, seq), "
            f"first AS (UPDATE inbox SET taken = taken + 1 WHERE seq IN (SELECT seq FROM firsts) "
            f"RETURNING person, {_COLUMNS}) "
            f"SELECT 'entry' AS part, person, {_COLUMNS} FROM first UNION ALL "
            "SELECT 'lease', person, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM lease"
        )
        rows = await self._db(lambda: self._database.connection().execute_query_dict(sql, bind.values))
        held = {row["person"] for row in rows if row["part"] == "lease"}
        firsts = {row["person"]: _entry(row) for row in rows if row["part"] == "entry"}
        return [(person in held, firsts.get(person)) for person, _, _ in wanted]

    async def next_entry(self, person: str) -> Entry | None:
        bind = self._database.params()
        sql = self._next_sql(bind, person)
        try:
            rows = await self._db(lambda: self._database.connection().execute_query_dict(sql, bind.values))
            if rows or not self._spooled:
                return _entry(rows[0]) if rows else None
        except DatabaseDown:
            pass
        async with self._lock:
            waiting = [
                s.record
                for s in self._spooled.values()
                if s.new and s.record["person"] == person and s.record["step"] < Step.DELIVERED
            ]
            if not waiting:
                return None
            row = min(waiting, key=lambda r: r["order"])
            row["taken"] = row.get("taken", 0) + 1
            return _entry({**row, "seq": -row["order"]})

    async def shown(self, entry: Entry, refs: Sequence[MessageRef]) -> None:
        refs_json = json.dumps(refs_to_json(list(refs)))
        if entry.key not in self._spooled:
            try:
                # One row per statement, never batched: a batch of these and one of steps (core.batching) lock the
                # same rows in no set order, and deadlocked under load.
                await self._write_shown(entry.key, refs_json)
                return
            except DatabaseDown:
                pass
        async with self._lock:
            if entry.key in self._spooled:  # (a step of an entry the database has must wait: it would need a step)
                await self._keep(entry.key, {"refs": refs_json}, new=False)

    async def _write_shown(self, key: str, refs_json: str) -> None:
        """The messages a streamed reply began in, for an entry not yet answered."""
        bind = self._database.params()
        sql = f"UPDATE inbox SET refs = {bind(refs_json)} WHERE key = {bind(key)} AND step = {int(Step.RECEIVED)}"
        await self._db(lambda: self._database.connection().execute_query(sql, bind.values))

    async def answered(self, entry: Entry, answer: Answer, refs: Sequence[MessageRef]) -> None:
        changes = {
            "step": int(Step.ANSWERED),
            "answer": json.dumps(answer_to_json(answer), ensure_ascii=False),
            "refs": json.dumps(refs_to_json(list(refs))),
            "event": json.dumps(event_to_json(entry.event), ensure_ascii=False),
        }
        await self._step(entry, changes)

    async def delivered(
        self, entry: Entry, refs: Sequence[MessageRef], *, job_owner: str, job_ttl: float, release: bool = False
    ) -> bool:
        changes: dict[str, Any] = {
            "step": int(Step.DELIVERED),
            "refs": json.dumps(refs_to_json(list(refs))),
            "job_owner": job_owner,
            "job_until": now_ms() + int(job_ttl * 1000),
        }
        return await self._step(entry, changes, links=refs, release_for=job_owner if release else None)

    async def _step(
        self,
        entry: Entry,
        changes: dict[str, Any],
        *,
        links: Sequence[MessageRef] = (),
        release_for: str | None = None,
    ) -> bool:
        """Keep a step (in the database, else the spool); with `release_for`, hand that owner's turn of the
        person back unless other entries wait. True when it was handed back."""
        if entry.key not in self._spooled:
            try:
                if self._database.dialect == "postgres":
                    return await self._steps((entry, changes, tuple(links), release_for))
                return await self._db(lambda: self._write_step(entry, changes, links, release_for))
            except DatabaseDown:
                pass
        async with self._lock:
            known = self._spooled.get(entry.key)
            back = known is None and not self.down  # written back while this step waited: the database takes it
            if back:
                pass
            elif known is None:  # an entry the database has: its step waits in the spool
                row = {"person": entry.person, "interaction_id": entry.interaction_id, **changes}
                await self._keep(entry.key, row, new=False, links=links)
            else:  # a step of an entry the spool holds: it updates that entry
                row = {**changes, "taken": entry.taken, "interaction_id": entry.interaction_id}
                await self._keep(entry.key, row, new=False, links=links)
            if not back:
                return release_for is not None and not self._spool_waits(entry.person)
        return await self._step(entry, changes, links=links, release_for=release_for)

    def _spool_waits(self, person: str) -> bool:
        return any(
            s.new and s.record["person"] == person and s.record["step"] < Step.DELIVERED for s in self._spooled.values()
        )

    def _update(self, bind: Any, key: str, changes: Mapping[str, Any]) -> str:
        sets = ", ".join(f"{column} = {bind(value)}" for column, value in changes.items() if column in _STEP_COLUMNS)
        return f"UPDATE inbox SET {sets} WHERE key = {bind(key)} AND step < {bind(changes['step'])}"

    def _links(self, bind: Any, interaction_id: str, person: str, refs: Sequence[MessageRef]) -> str:
        rows = ", ".join(
            f"({bind(ref.platform, ref.channel_id, ref.message_id, interaction_id, person)})" for ref in refs
        )
        return (
            "INSERT INTO reply_message (platform, channel_id, message_id, interaction_id, user_key) "
            f"VALUES {rows} ON CONFLICT (platform, channel_id, message_id) DO NOTHING"
        )

    def _release_sql(self, bind: Any, person: str, owner: str, *, besides: str | None = None) -> str:
        """Hand `owner`'s turn of `person` back unless an entry waits for it (besides the one just delivered,
        which the statement's own snapshot still sees waiting)."""
        other = f" AND key <> {bind(besides)}" if besides is not None else ""
        return (
            f"UPDATE person_turn SET until = 0 WHERE person = {bind(person)} AND owner = {bind(owner)} "
            f"AND NOT EXISTS (SELECT 1 FROM inbox WHERE person = {bind(person)} AND step < {int(Step.DELIVERED)}"
            f"{other}) RETURNING person"
        )

    async def _write_steps(self, steps: list[_StepWrite]) -> list[bool]:
        """PostgreSQL: the steps kept together (core.batching), as one statement: the entries' columns, their
        reply links, and the turns handed back. Returns, per step, whether its turn was handed back."""
        bind = self._database.params()
        rows = ", ".join(
            f"({bind(entry.key)}::text, {bind(changes['step'])}::smallint, {bind(changes.get('answer'))}::text, "
            f"{bind(changes.get('refs'))}::text, {bind(changes.get('event'))}::text, "
            f"{bind(changes.get('job_owner'))}::text, {bind(changes.get('job_until'))}::bigint)"
            for entry, changes, _, _ in steps
        )
        parts = [
            "step AS (UPDATE inbox SET step = v.step, answer = COALESCE(v.answer, inbox.answer), "
            "refs = COALESCE(v.refs, inbox.refs), event = COALESCE(v.event, inbox.event), "
            "job_owner = COALESCE(v.job_owner, inbox.job_owner), job_until = COALESCE(v.job_until, inbox.job_until) "
            f"FROM (VALUES {rows}) AS v (key, step, answer, refs, event, job_owner, job_until) "
            "WHERE inbox.key = v.key AND inbox.step < v.step RETURNING inbox.seq)"
        ]
        links = [
            f"({bind(ref.platform, ref.channel_id, ref.message_id, entry.interaction_id, entry.person)})"
            for entry, _, refs, _ in steps
            for ref in refs
        ]
        if links:
            parts.append(
                "links AS (INSERT INTO reply_message (platform, channel_id, message_id, interaction_id, user_key) "
                f"VALUES {', '.join(links)} ON CONFLICT (platform, channel_id, message_id) DO NOTHING)"
            )
        owners: dict[str, list[str]] = {}
        for entry, _, _, owner in steps:
            if owner is not None:
                owners.setdefault(owner, []).append(entry.person)
        keys = bind(*[entry.key for entry, _, _, _ in steps]) if owners else ""
        for number, (owner, people) in enumerate(owners.items()):
            # Each person's turn goes back unless another entry of theirs waits (their entry in this statement
            # still looks waiting to its snapshot, so the batch's keys are left out).
            parts.append(
                f"released{number} AS (UPDATE person_turn SET until = 0 WHERE owner = {bind(owner)} "
                f"AND person IN ({bind(*people)}) AND NOT EXISTS (SELECT 1 FROM inbox i WHERE "
                f"i.person = person_turn.person AND i.step < {int(Step.DELIVERED)} AND i.key NOT IN ({keys})) "
                "RETURNING person)"
            )
        released = " UNION ALL ".join(f"SELECT person FROM released{n}" for n in range(len(owners)))
        sql = "WITH " + ", ".join(parts) + " " + (released or "SELECT NULL AS person WHERE FALSE")
        found = await self._db(lambda: self._database.connection().execute_query_dict(sql, bind.values))
        back = {row["person"] for row in found}
        return [owner is not None and entry.person in back for entry, _, _, owner in steps]

    async def _write_step(
        self, entry: Entry, changes: Mapping[str, Any], links: Sequence[MessageRef], release_for: str | None
    ) -> bool:
        """SQLite: the links first, so that an entry marked delivered always has them (a crash between the two
        leaves it undelivered, and its resumed turn links the same messages again, harmlessly)."""
        connection = self._database.connection()
        if links:
            await self._link(connection, entry.interaction_id, entry.person, links)
        bind = self._database.params()
        await connection.execute_query(self._update(bind, entry.key, changes), bind.values)
        if release_for is None:
            return False
        bind = self._database.params()
        sql = self._release_sql(bind, entry.person, release_for)
        return bool(await connection.execute_query_dict(sql, bind.values))

    async def release(self, person: str, owner: str) -> bool:
        bind = self._database.params()
        sql = self._release_sql(bind, person, owner)
        try:
            released = await self._db(lambda: self._database.connection().execute_query_dict(sql, bind.values))
        except DatabaseDown:
            released = [{"person": person}]
        return bool(released) and not self._spool_waits(person)

    async def release_all(self, owner: str) -> None:
        async def both() -> None:
            connection = self._database.connection()
            bind = self._database.params()
            await connection.execute_query(f"UPDATE person_turn SET until = 0 WHERE owner = {bind(owner)}", bind.values)
            bind = self._database.params()
            await connection.execute_query(
                f"UPDATE inbox SET job_owner = NULL, job_until = 0 WHERE job_owner = {bind(owner)} "
                f"AND step = {int(Step.DELIVERED)}",
                bind.values,
            )

        try:
            await self._db(both)
        except DatabaseDown:
            log.warning("could not hand back this process's turns: they lapse in their own time")

    async def waiting(self, limit: int) -> list[str]:
        bind = self._database.params()
        sql = (
            "SELECT DISTINCT i.person AS person FROM inbox i LEFT JOIN person_turn t ON t.person = i.person "
            f"WHERE i.step < {int(Step.DELIVERED)} AND (t.person IS NULL OR t.until < {bind(now_ms())}) "
            f"LIMIT {int(limit)}"
        )
        found: list[str] = []
        try:
            rows = await self._db(lambda: self._database.connection().execute_query_dict(sql, bind.values))
            found = [row["person"] for row in rows]
        except DatabaseDown:
            pass
        spooled = {s.record["person"] for s in self._spooled.values() if s.new and s.record["step"] < Step.DELIVERED}
        return found + sorted(spooled - set(found))

    async def claim_jobs(self, owner: str, ttl: float, limit: int) -> list[Entry]:
        if self.down:
            return []
        now = now_ms()
        bind = self._database.params()
        skip = " FOR UPDATE SKIP LOCKED" if self._database.dialect == "postgres" else ""
        sql = (
            f"UPDATE inbox SET job_owner = {bind(owner)}, job_until = {bind(now + int(ttl * 1000))} "
            f"WHERE seq IN (SELECT seq FROM inbox WHERE step = {int(Step.DELIVERED)} AND job_until < {bind(now)} "
            f"ORDER BY seq LIMIT {int(limit)}{skip}) RETURNING {_COLUMNS}"
        )
        try:
            rows = await self._db(lambda: self._database.connection().execute_query_dict(sql, bind.values))
        except DatabaseDown:
            return []
        return sorted((_entry(row) for row in rows), key=lambda e: e.seq)

    async def confirm_jobs(self, keys: Sequence[str], owner: str, ttl: float) -> set[str]:
        if not keys:
            return set()
        bind = self._database.params()
        sql = (
            f"UPDATE inbox SET job_until = {bind(now_ms() + int(ttl * 1000))} WHERE key IN ({bind(*keys)}) "
            f"AND step = {int(Step.DELIVERED)} AND job_owner = {bind(owner)} RETURNING key"
        )
        rows = await self._db(lambda: self._database.connection().execute_query_dict(sql, bind.values))
        return {row["key"] for row in rows}

    async def finished(self, keys: Sequence[str], owner: str) -> None:
        if not keys:
            return
        bind = self._database.params()
        sql = (
            f"UPDATE inbox SET step = {int(Step.DONE)}, job_owner = NULL, job_until = 0 "
            f"WHERE key IN ({bind(*keys)}) AND (job_owner = {bind(owner)} OR job_owner IS NULL)"
        )
        await self._db(lambda: self._database.connection().execute_query(sql, bind.values))

    async def jobs_held(self, person: str) -> int:
        bind = self._database.params()
        sql = (
            f"SELECT COUNT(*) AS n FROM inbox WHERE person = {bind(person)} AND job_owner IS NOT NULL "
            f"AND job_until > {bind(now_ms())}"
        )
        rows = await self._db(lambda: self._database.connection().execute_query_dict(sql, bind.values))
        return int(rows[0]["n"])

    async def knows_thread(self, platform: str, place: str, thread: str) -> bool:
        bind = self._database.params()
        sql = (
            f"SELECT 1 AS known FROM inbox WHERE platform = {bind(platform)} AND place = {bind(place)} "
            f"AND thread = {bind(thread)} AND kind = 'message' LIMIT 1"
        )
        try:
            if await self._db(lambda: self._database.connection().execute_query_dict(sql, bind.values), timeout=1.0):
                return True
        except DatabaseDown:
            pass
        return any(
            s.new and (s.record["platform"], s.record["place"], s.record["thread"]) == (platform, place, thread)
            for s in self._spooled.values()
        )

    async def history(self, conversation_key: str, limit: int) -> list[Turn]:
        bind = self._database.params()
        sql = (
            f"SELECT seq, key, event, answer, received_at FROM inbox WHERE conversation = {bind(conversation_key)} "
            f"AND kind = 'message' AND step >= {int(Step.ANSWERED)} AND event <> {bind(_FORGOTTEN)} "
            f"ORDER BY seq DESC LIMIT {max(int(limit), 0)}"
        )
        rows: list[dict[str, Any]] = []
        try:
            rows = await self._db(lambda: self._database.connection().execute_query_dict(sql, bind.values))
        except DatabaseDown:
            pass
        spooled = [
            {**s.record, "seq": 0}
            for s in self._spooled.values()
            if s.new and s.record["conversation"] == conversation_key and s.record.get("answer")
        ]
        turns: list[Turn] = []
        for row in sorted(rows, key=lambda r: int(r["seq"])) + spooled:
            event = event_from_json(json.loads(row["event"]))
            answer = answer_from_json(json.loads(row["answer"])) if row.get("answer") else None
            if not isinstance(event, MessageReceived):
                continue
            at = int(row["received_at"]) / 1000
            interaction = interaction_id_for(row["key"])
            turns.append(
                Turn(
                    role="user",
                    author=event.author_name,
                    text=event.text,
                    user_key=event.user.key,
                    interaction_id=interaction,
                    at=at,
                )
            )
            if answer is not None and answer.ok:
                turns.append(
                    Turn(
                        role="assistant",
                        author="Rapport",
                        text=answer.text,
                        user_key=event.user.key,
                        interaction_id=interaction,
                        at=at,
                    )
                )
        return turns[-limit:] if limit > 0 else []

    async def prune(self, older_than: float, limit: int = 5_000) -> int:
        """Delete done entries received more than `older_than` seconds ago (and turns long lapsed); how many."""
        cutoff = now_ms() - int(older_than * 1000)
        bind = self._database.params()
        entries = (
            f"DELETE FROM inbox WHERE seq IN (SELECT seq FROM inbox WHERE step = {int(Step.DONE)} "
            f"AND received_at < {bind(cutoff)} LIMIT {int(limit)})"
        )
        count, _ = await self._db(lambda: self._database.connection().execute_query(entries, bind.values))
        bind = self._database.params()
        turns = f"DELETE FROM person_turn WHERE until < {bind(cutoff)}"
        await self._db(lambda: self._database.connection().execute_query(turns, bind.values))
        return int(count)

    async def unsay(self, key: str) -> None:
        bind = self._database.params()
        sql = (
            f"UPDATE inbox SET event = {bind(_FORGOTTEN)}, answer = NULL WHERE key = {bind(key)} "
            f"AND step = {int(Step.DONE)}"
        )
        await self._db(lambda: self._database.connection().execute_query(sql, bind.values))

    async def forget(self, person: str, *, keep: str) -> None:
        bind = self._database.params()
        sql = (
            f"UPDATE inbox SET step = {int(Step.DONE)}, event = {bind(_FORGOTTEN)}, answer = NULL "
            f"WHERE person = {bind(person)} AND key <> {bind(keep)}"
        )
        await self._db(lambda: self._database.connection().execute_query(sql, bind.values))
        async with self._lock:
            for key in [k for k, s in self._spooled.items() if s.record.get("person") == person and k != keep]:
                del self._spooled[key]
