"""The inbox on both backends: one entry per event, arrival order, leases, steps, jobs, and the spool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from core.entries import Answer, Entry, Incoming, Step
from core.events import ForgetRequested, MessageReceived, MessageRef, ReactionAdded, UserRef
from core.health import Health
from core.turns import Turns
from storage.database import Database
from storage.inbox import RelationalInbox
from storage.records import RelationalRecords
from storage.spool import Spool
from tests.conftest import fresh_postgres

ADA = UserRef(platform="t", user_id="ada")
BEA = UserRef(platform="t", user_id="bea")


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        db = Database(f"sqlite://{tmp_path}/db/rapport.sqlite3")
        await db.open()
        yield db
        await db.close()
        return
    async with fresh_postgres() as url:
        db = Database(url)
        await db.open()
        yield db
        await db.close()


def inbox_on(database: Database, tmp_path: Path, owner: str = "a") -> RelationalInbox:
    return RelationalInbox(database, Spool(tmp_path / f"spool-{owner}"), health=Health(), owner=owner)


def message(user: UserRef, text: str, *, channel: str = "dm", thread: str | None = None, ts: str = "1") -> Incoming:
    event = MessageReceived(
        user=user,
        text=text,
        conversation_id=channel,
        thread_id=thread,
        private=channel == "dm",
        message=MessageRef(platform="t", channel_id=channel, message_id=ts),
        sent_at=datetime.now(UTC),
    )
    return Incoming(key=f"t:message:{channel}:{ts}", event=event, route={"channel": channel})


async def test_an_event_delivered_again_or_raced_is_one_entry(database: Database, tmp_path: Path) -> None:
    one, other = inbox_on(database, tmp_path, "a"), inbox_on(database, tmp_path, "b")
    hello = message(ADA, "hello", ts="1")
    accepted = await asyncio.gather(*(inbox.accept(hello) for inbox in [one, other] * 10))
    assert [a.fresh for a in accepted].count(True) == 1, "across replicas, and within one batch"
    assert not (await one.accept(hello)).fresh, "and again later"
    assert await one.take_turn(ADA.key, "a", 10)
    entry = await one.next_entry(ADA.key)
    assert entry is not None and entry.key == hello.key and entry.taken == 1
    assert isinstance(entry.event, MessageReceived) and entry.event.text == "hello"
    assert entry.route == {"channel": "dm"}


async def test_a_persons_entries_come_in_arrival_order_and_keep_their_steps(database: Database, tmp_path: Path) -> None:
    inbox, records = inbox_on(database, tmp_path), RelationalRecords(database)
    for i in range(5):
        await inbox.accept(message(ADA, f"m{i}", ts=str(i)))
    await inbox.accept(message(BEA, "other", ts="b"))
    assert await inbox.take_turn(ADA.key, "a", 10)
    first = await inbox.next_entry(ADA.key)
    assert first is not None and isinstance(first.event, MessageReceived) and first.event.text == "m0"
    placeholder = MessageRef(platform="t", channel_id="dm", message_id="p0")
    await inbox.answered(first, Answer(text="reply 0", ok=True, model="m"), [placeholder])
    again = await inbox.next_entry(ADA.key)  # a turn resumed after a stop: the same entry, taken once more
    assert again is not None and again.key == first.key and again.taken == 2
    assert again.step is Step.ANSWERED and again.answer == Answer(text="reply 0", ok=True, model="m")
    assert again.refs == (placeholder,)
    assert not await inbox.release(ADA.key, "a"), "entries wait: the turn goes on"
    await inbox.delivered(again, [placeholder], job_owner="a", job_ttl=60)
    link = await records.find_reply(placeholder)
    assert link is not None and link.interaction_id == first.interaction_id and link.user_key == ADA.key
    texts = []
    while (entry := await inbox.next_entry(ADA.key)) is not None:
        assert isinstance(entry.event, MessageReceived)
        texts.append(entry.event.text)
        await inbox.delivered(entry, [], job_owner="a", job_ttl=60)
    assert texts == ["m1", "m2", "m3", "m4"]
    assert await inbox.release(ADA.key, "a")
    assert [e.key for e in await inbox.claim_jobs("a", 60, 10)] == [], "their jobs are held by their turn's owner"


async def test_a_turn_is_one_owners_until_handed_back_or_lapsed(database: Database, tmp_path: Path) -> None:
    inbox = inbox_on(database, tmp_path)
    await inbox.accept(message(ADA, "hi"))
    assert await inbox.waiting(10) == [ADA.key], "nobody holds it yet"
    assert await inbox.take_turn(ADA.key, "a", 10)
    assert not await inbox.take_turn(ADA.key, "b", 10), "another replica waits"
    assert await inbox.take_turn(ADA.key, "a", 10), "its owner takes it again"
    assert await inbox.waiting(10) == []
    assert await inbox.renew([ADA.key, BEA.key], "a", 10) == {ADA.key}
    assert await inbox.renew([ADA.key], "b", 10) == set()
    assert await inbox.take_turn(BEA.key, "b", 0.05)
    await asyncio.sleep(0.1)
    assert await inbox.take_turn(BEA.key, "a", 10), "a lapsed lease is taken over"
    await inbox.release_all("a")
    assert await inbox.take_turn(ADA.key, "b", 10), "a lease handed back on shutdown is free at once"
    assert await inbox.waiting(10) == []


async def test_jobs_are_claimed_once_and_a_forgotten_persons_are_not_confirmed(
    database: Database, tmp_path: Path
) -> None:
    one, other = inbox_on(database, tmp_path, "a"), inbox_on(database, tmp_path, "b")
    for person, ts in ((ADA, "1"), (ADA, "2"), (BEA, "3")):
        await one.accept(message(person, "x", ts=ts))
        await one.take_turn(person.key, "a", 10)
        entry = await one.next_entry(person.key)
        assert entry is not None
        await one.delivered(entry, [], job_owner="a", job_ttl=0.05)  # its process stops: the job lapses
    await asyncio.sleep(0.1)
    claims = await asyncio.gather(one.claim_jobs("a", 60, 10), other.claim_jobs("b", 60, 10))
    assert sorted(len(c) for c in claims) == [0, 3], "one replica takes them"
    keys = [e.key for claim in claims for e in claim]
    owner = "a" if claims[0] else "b"
    await one.forget(ADA.key, keep="")
    assert await one.jobs_held(ADA.key) == 2, "a job already under way is waited for"
    assert await one.confirm_jobs(keys, owner, 60) == {"t:message:dm:3"}, "a forgotten person's jobs are not done"
    await one.finished(keys, owner)
    assert await one.jobs_held(ADA.key) == 0 and await one.jobs_held(BEA.key) == 0
    assert await one.claim_jobs("a", 60, 10) == []
    left = await one.history("t::dm", 10)
    assert [t.user_key for t in left] == [BEA.key], "what the forgotten person said is gone from the inbox"


async def test_a_reaction_that_comes_back_is_applied_again_and_a_message_is_not(
    database: Database, tmp_path: Path
) -> None:
    inbox = inbox_on(database, tmp_path)
    ref = MessageRef(platform="t", channel_id="dm", message_id="r1")
    reaction = Incoming(key="t:reaction:r1:ada:+1", event=ReactionAdded(actor=ADA, message=ref, emoji="👍"))
    assert (await inbox.accept(reaction)).fresh
    await inbox.take_turn(ADA.key, "a", 10)
    entry = await inbox.next_entry(ADA.key)
    assert entry is not None and entry.kind == "reaction"
    await inbox.delivered(entry, [], job_owner="a", job_ttl=60)
    assert not (await inbox.accept(reaction)).fresh, "its job is not done yet: nothing to apply again"
    await inbox.finished([entry.key], "a")
    assert (await inbox.accept(reaction)).fresh, "done: set again (idempotent)"
    forget = Incoming(key="t:forget:1", event=ForgetRequested(user=ADA))
    assert (await inbox.accept(forget)).fresh and not (await inbox.accept(forget)).fresh


async def test_threads_rapport_took_part_in_are_known(database: Database, tmp_path: Path) -> None:
    inbox = inbox_on(database, tmp_path)
    assert not await inbox.knows_thread("t", "C1", "100.1")
    await inbox.accept(message(ADA, "hi", channel="C1", thread="100.1", ts="100.1"))
    assert await inbox.knows_thread("t", "C1", "100.1")
    assert not await inbox.knows_thread("t", "C1", "100.2") and not await inbox.knows_thread("u", "C1", "100.1")


async def test_history_falls_back_to_what_the_inbox_holds(database: Database, tmp_path: Path) -> None:
    inbox = inbox_on(database, tmp_path)
    for i in range(3):
        await inbox.accept(message(ADA, f"question {i}", channel="C1", ts=str(i)))
    await inbox.take_turn(ADA.key, "a", 10)
    for i in range(3):
        entry = await inbox.next_entry(ADA.key)
        assert entry is not None
        await inbox.answered(entry, Answer(text=f"answer {i}", ok=i != 1), [])
        await inbox.delivered(entry, [], job_owner="a", job_ttl=60)
    conversation = message(ADA, "", channel="C1").event
    assert isinstance(conversation, MessageReceived)
    turns = await inbox.history(conversation.conversation_key, 4)
    assert [(t.role, t.text) for t in turns] == [
        ("assistant", "answer 0"),
        ("user", "question 1"),
        ("user", "question 2"),
        ("assistant", "answer 2"),
    ]
    assert {t.user_key for t in turns} == {ADA.key}
    assert [t.text for t in await inbox.history(conversation.conversation_key, 10)] == [
        "question 0",
        "answer 0",
        "question 1",
        "question 2",
        "answer 2",
    ], "a failed answer is not history"


def test_the_spool_survives_a_torn_last_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    asyncio.run(spool.append({"op": "new", "key": "a", "row": {}}))
    with spool.path.open("a") as file:
        file.write('{"op": "new", "key": "b", "ro')
    assert Spool(tmp_path).load() == [{"op": "new", "key": "a", "row": {}}]


async def test_done_entries_are_pruned_after_their_time_and_waiting_ones_never(
    database: Database, tmp_path: Path
) -> None:
    inbox = inbox_on(database, tmp_path)
    for ts in ("1", "2"):
        await inbox.accept(message(ADA, "x", ts=ts))
    await inbox.take_turn(ADA.key, "a", 10)
    done = await inbox.next_entry(ADA.key)
    assert done is not None
    await inbox.delivered(done, [], job_owner="a", job_ttl=60)
    await inbox.finished([done.key], "a")
    assert await inbox.prune(older_than=3600) == 0, "too recent"
    await asyncio.sleep(0.05)
    assert await inbox.prune(older_than=0.01) == 1, "done and old enough"
    waiting = await inbox.next_entry(ADA.key)
    assert waiting is not None and waiting.key == "t:message:dm:2", "a waiting entry stays, however old"
    assert (await inbox.accept(message(ADA, "x", ts="1"))).fresh, "a key pruned is new again"


async def test_a_renewal_that_comes_after_the_turn_was_handed_back_does_not_take_it_again(
    database: Database, tmp_path: Path
) -> None:
    """The renewer reads the turns it holds, then writes: a turn handed back in between (its last step) must stay
    free, or the person's next message waits for the renewed lease to lapse (found at 20 s between two workers)."""
    a, b = inbox_on(database, tmp_path, "a"), inbox_on(database, tmp_path, "b")
    await a.accept(message(ADA, "hi"))
    held, first = await a.open_turn(ADA.key, "a", 10)
    assert held and first is not None
    assert await a.delivered(first, [], job_owner="a", job_ttl=60, release=True), "its last step hands it back"
    assert await a.renew([ADA.key], "a", 10) == {ADA.key}, "handed back, not lost: nobody else took it"
    await b.accept(message(ADA, "again", ts="2"))
    held, entry = await b.open_turn(ADA.key, "b", 10)
    assert held and entry is not None and entry.key == "t:message:dm:2", "the next message is taken at once"
    assert await b.renew([ADA.key], "b", 10) == {ADA.key}, "a live turn is renewed"


class _RenewalHeldBack(RelationalInbox):
    """A renewal that reaches the database only when the test lets it (`go`), and whose answer reaches the
    renewer only when the test lets it (`answer`, open unless cleared): as on a busy replica, where a renewal
    read before a turn's last step is written, or answered, after it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.renewing = asyncio.Event()
        self.go = asyncio.Event()
        self.renewed = asyncio.Event()
        self.answer = asyncio.Event()
        self.answer.set()

    async def renew(self, persons: Sequence[str], owner: str, ttl: float) -> set[str]:
        if persons:
            self.renewing.set()
            await self.go.wait()
        kept = await super().renew(persons, owner, ttl)
        if persons:
            self.renewed.set()
            await self.answer.wait()
        return kept


@asynccontextmanager
async def _started(*replicas: Turns) -> AsyncIterator[None]:
    """The replicas' turns running, their first sweeps (which find nothing) over; stopped after."""
    for turns in replicas:
        turns.start()
    try:
        await asyncio.sleep(0.1)
        yield
    finally:
        for turns in replicas:
            await turns.stop_taking()
            await turns.close()


async def test_a_persons_next_message_at_another_replica_is_not_kept_waiting_by_a_late_renewal(
    database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a_inbox = _RenewalHeldBack(database, Spool(tmp_path / "spool-a"), health=Health(), owner="a")
    b_inbox = inbox_on(database, tmp_path, "b")
    handled_at_b: asyncio.Queue[str] = asyncio.Queue()

    async def a_handles(entry: Entry) -> bool:
        await asyncio.wait_for(a_inbox.renewing.wait(), 5)  # the renewer has read that "a" holds ada's turn
        released = await a_inbox.delivered(entry, [], job_owner="a", job_ttl=60, release=True)
        a_inbox.go.set()  # and writes only now, after the turn was handed back
        await asyncio.wait_for(a_inbox.renewed.wait(), 5)  # and is answered while this taking is still under way
        return released

    async def b_handles(entry: Entry) -> bool:
        await handled_at_b.put(entry.key)
        return await b_inbox.delivered(entry, [], job_owner="b", job_ttl=60, release=True)

    # Renewals every second; sweeps too rare to rescue anyone within the test.
    a = Turns(inbox=a_inbox, handle=a_handles, owner="a", lease=3, sweep_every=600)
    b = Turns(inbox=b_inbox, handle=b_handles, owner="b", lease=3, sweep_every=600)
    async with _started(a, b):  # no second look at ada's turn from a first sweep
        await a.accept(message(ADA, "first", ts="1"))
        await asyncio.wait_for(a_inbox.renewed.wait(), 5)  # the late renewal has landed
        await b.accept(message(ADA, "second", ts="2"))
        assert await asyncio.wait_for(handled_at_b.get(), 2) == "t:message:dm:2", (
            "taken at once, not once the renewed lease lapses"
        )
        assert not [r for r in caplog.records if "lapsed" in r.getMessage()], "a turn handed back was not lost"


async def test_a_renewal_about_an_earlier_taking_does_not_call_the_next_one_lost(
    database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ "a" renews ada's turn as it held it then; before that renewal is written "a" hands it back and "b" takes it
    (so the renewal finds it taken), and before it is answered "a" takes it again. That answer is about the
    earlier taking: the new one is not lost."""
    a_inbox = _RenewalHeldBack(database, Spool(tmp_path / "spool-a"), health=Health(), owner="a")
    b_inbox = inbox_on(database, tmp_path, "b")
    a_inbox.answer.clear()
    b_holds, b_go, a_again, a_go = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()
    done: asyncio.Queue[str] = asyncio.Queue()

    async def a_handles(entry: Entry) -> bool:
        if entry.key.endswith(":1"):
            await asyncio.wait_for(a_inbox.renewing.wait(), 5)  # the renewer has read that "a" holds the turn
        else:
            a_again.set()
            await asyncio.wait_for(a_go.wait(), 5)
        released = await a_inbox.delivered(entry, [], job_owner="a", job_ttl=60, release=True)
        await done.put(entry.key)
        return released

    async def b_handles(entry: Entry) -> bool:
        b_holds.set()
        await asyncio.wait_for(b_go.wait(), 5)
        released = await b_inbox.delivered(entry, [], job_owner="b", job_ttl=60, release=True)
        await done.put(entry.key)
        return released

    a = Turns(inbox=a_inbox, handle=a_handles, owner="a", lease=3, sweep_every=600)
    b = Turns(inbox=b_inbox, handle=b_handles, owner="b", lease=3, sweep_every=600)
    async with _started(a, b):
        await a.accept(message(ADA, "first", ts="1"))
        assert await asyncio.wait_for(done.get(), 5) == "t:message:dm:1"
        await b.accept(message(ADA, "second", ts="2"))
        await asyncio.wait_for(b_holds.wait(), 5)
        a_inbox.go.set()  # the renewal is written while "b" holds the turn: not "a"'s
        await asyncio.wait_for(a_inbox.renewed.wait(), 5)
        b_go.set()
        assert await asyncio.wait_for(done.get(), 5) == "t:message:dm:2"
        await a.accept(message(ADA, "third", ts="3"))
        await asyncio.wait_for(a_again.wait(), 5)  # "a" holds it again
        a_inbox.answer.set()  # and only now hears that the earlier taking was lost
        await asyncio.sleep(0.1)
        a_go.set()
        assert await asyncio.wait_for(done.get(), 5) == "t:message:dm:3"
        assert not [r for r in caplog.records if "lapsed" in r.getMessage()], "the new taking was not lost"


async def test_a_turn_opens_with_its_first_entry_and_closes_with_its_last_step(
    database: Database, tmp_path: Path
) -> None:
    inbox = inbox_on(database, tmp_path)
    assert await inbox.open_turn(ADA.key, "a", 10) == (True, None), "taken, with nothing waiting"
    assert await inbox.release(ADA.key, "a")
    for ts in ("1", "2"):
        await inbox.accept(message(ADA, f"m{ts}", ts=ts))
    assert await inbox.open_turn(ADA.key, "b", 10) != (False, None)  # b takes it first
    assert await inbox.open_turn(ADA.key, "a", 10) == (False, None), "b holds it"
    await inbox.release_all("b")
    held, first = await inbox.open_turn(ADA.key, "a", 10)
    assert held and first is not None and first.key == "t:message:dm:1" and first.taken == 2
    assert not await inbox.delivered(first, [], job_owner="a", job_ttl=60, release=True), "m2 still waits"
    second = await inbox.next_entry(ADA.key)
    assert second is not None and second.key == "t:message:dm:2"
    assert await inbox.delivered(second, [], job_owner="a", job_ttl=60, release=True), "the last: handed back"
    assert await inbox.take_turn(ADA.key, "b", 10), "free for anyone at once"


async def test_the_messages_a_stream_began_in_are_kept_for_a_resumed_turn(database: Database, tmp_path: Path) -> None:
    inbox = inbox_on(database, tmp_path)
    people = [ADA, BEA, UserRef(platform="t", user_id="cy")]
    for person in people:
        await inbox.accept(message(person, f"hi from {person.user_id}", ts=person.user_id))
        assert await inbox.take_turn(person.key, "a", 10)
    entries = [await inbox.next_entry(person.key) for person in people]
    assert all(entry is not None for entry in entries)
    refs = [MessageRef(platform="t", channel_id="dm", message_id=f"s{i}") for i in range(3)]
    # several streams begin at once
    await asyncio.gather(*(inbox.shown(entry, [ref]) for entry, ref in zip(entries, refs, strict=True) if entry))
    again = [await inbox.next_entry(person.key) for person in people]
    assert [e.refs if e else None for e in again] == [(ref,) for ref in refs]
    assert all(e is not None and e.taken == 2 and e.step is Step.RECEIVED for e in again)
    first = again[0]
    assert first is not None
    await inbox.answered(first, Answer(text="done", ok=True, model="m"), [refs[0]])
    await inbox.shown(first, [MessageRef(platform="t", channel_id="dm", message_id="late")])
    later = await inbox.next_entry(ADA.key)
    assert later is not None and later.refs == (refs[0],), "an answered entry's messages are not overwritten"


# The spool is written back under its lock; a step or an event that waited for that lock went to the spool after it
# was emptied, where nothing writes it until the next outage (the job found no delivered row and marked it done:
# the exchange was never stored; tests/test_faults.py's PostgreSQL outage lost one now and then). Under the lock, a
# database that is back now takes it (storage/inbox.py, _step and _accept_rows).
async def test_a_step_that_waited_for_the_spool_to_be_written_reaches_the_database(
    database: Database, tmp_path: Path
) -> None:
    """PostgreSQL came back while a turn went on from the spool: its next step waits for the spool to be written,
    and must then go to the database (the spool is not written again until the next outage)."""
    health = Health()
    inbox = RelationalInbox(database, Spool(tmp_path / "spool"), health=health, owner="a")
    health.down("database", "stopped")  # what the inbox saw; the database itself answers
    await inbox.accept(message(ADA, "hello"))
    entry = await inbox.next_entry(ADA.key)
    assert entry is not None and inbox.spooled == 1
    writing = asyncio.create_task(inbox.flush())  # the database is back: the spool is being written
    await asyncio.sleep(0)
    await inbox.delivered(entry, [], job_owner="a", job_ttl=60)  # the turn's last step, meanwhile
    await writing
    assert await inbox.confirm_jobs([entry.key], "a", 60) == {entry.key}, "its job is this process's to do"


async def test_an_event_that_waited_for_the_spool_to_be_written_reaches_the_database(
    database: Database, tmp_path: Path
) -> None:
    health = Health()
    inbox = RelationalInbox(database, Spool(tmp_path / "spool"), health=health, owner="a")
    health.down("database", "stopped")
    await inbox.accept(message(ADA, "hello", ts="1"))
    writing = asyncio.create_task(inbox.flush())
    await asyncio.sleep(0)
    late = message(BEA, "and me", ts="2")
    await inbox.accept(late)  # it arrives while the spool is being written
    await writing
    other = inbox_on(database, tmp_path, "b")  # another replica sees what the database holds
    assert not (await other.accept(late)).fresh, "the database has it"
