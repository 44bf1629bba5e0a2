"""Storage on real back ends: migrations, short-term memory, long-term memory, records, embeddings."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from tortoise.context import TortoiseContext
from tortoise.migrations.autodetector import MigrationAutodetector

from core.ports import InteractionRecord, Known, Learned, Memory, Profile, ShortTermMemory, Turn
from core.recall import document_of, terms_of, weight_of
from storage import memory_index
from storage.chroma_process import ChromaProcess
from storage.database import Database, tortoise_config
from storage.embeddings import BatchingEmbedder
from storage.long_term import ChromaVectors, open_chroma
from storage.memory_index import MemoryIndex
from storage.memory_store import MemoryRows, pack_terms, pack_vector
from storage.records import RelationalRecords
from storage.short_term import InProcessShortTerm, RedisShortTerm
from storage.vector_import import import_from, old_store, rows_without_vectors
from tests.conftest import REDIS_URL, database_at, fresh_postgres, ready, redis_namespace


async def test_committed_migrations_match_the_models(tmp_path: Path) -> None:
    config = tortoise_config(f"sqlite://{tmp_path}/check.sqlite3")
    async with TortoiseContext() as ctx:
        await ctx.init(config=config)
        assert ctx.apps is not None
        writers = await MigrationAutodetector(ctx.apps, config["apps"]).changes()
    assert writers == [], "storage/models.py changed without `tortoise makemigrations`"


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


async def test_migrations_are_idempotent_and_the_database_answers(database: Database) -> None:
    await database.migrate()
    await database.ping()


def _record(i: int, user_key: str = "t:1") -> InteractionRecord:
    return InteractionRecord(
        id=f"id{i}",
        user_key=user_key,
        platform="t",
        conversation_id="c",
        thread_id=None,
        private=True,
        user_text="hello " * 10_000,
        reply_text="hi",
        topics=("music",),
        ok=True,
        error=None,
        model="m",
        input_tokens=1,
        output_tokens=2,
        latency_ms=3,
        created_at=datetime.now(UTC),
    )


async def test_profile_and_top_patterns_are_known_in_one_read(database: Database) -> None:
    records = RelationalRecords(database)
    assert await records.known("t:new", scopes=("private", "shared"), patterns=5) == (None, [])
    await records.save_profiles(
        [Profile(user_key="t:k", display_name="Kim", interests={"jazz": {"shared": 2}}, style={"length": 0.5})]
    )
    rows = [("t:k", "private", "topic", "jazz")] * 3 + [("t:k", "shared", "topic", "jazz")] * 2
    rows += [("t:k", "shared", "topic", "piano")] * 4 + [("t:k", "private", "time_of_day", "evening")] * 4
    rows += [("t:k", "shared", "topic", "cycling"), ("t:other", "shared", "topic", "golf")]
    await records.store_exchanges([_record(1, "t:k")], lambda fresh, known: Learned(profiles=[], patterns=rows))
    profile, patterns = await records.known("t:k", scopes=("private", "shared"), patterns=3)
    assert profile == Profile(
        user_key="t:k", display_name="Kim", interests={"jazz": {"shared": 2}}, style={"length": 0.5}
    )
    # Counts summed over both scopes, most frequent first, ties by kind then value, cut at three.
    assert [(p.kind, p.value, p.count) for p in patterns] == [
        ("topic", "jazz", 5),
        ("time_of_day", "evening", 4),
        ("topic", "piano", 4),
    ]
    _, shared = await records.known("t:k", scopes=("shared",), patterns=5)
    assert [(p.value, p.count) for p in shared] == [("piano", 4), ("jazz", 2), ("cycling", 1)]
    assert (await records.known("t:k", scopes=(), patterns=5))[1] == []
    assert (await records.known("t:k", scopes=("shared",), patterns=0))[1] == []


async def test_what_is_known_for_a_prompt_is_one_read_of_profile_patterns_and_items(database: Database) -> None:
    """The profile, the patterns and the newest current items readable in the audiences, in one statement (its
    parts share columns of different types: PostgreSQL must type them), items in the order learned."""
    from storage.models import PersonItem

    records = RelationalRecords(database)
    assert await records.person_context("t:k", scopes=("private",), patterns=5, items=10) == Known(
        profile=None, patterns=[], items=[]
    )
    await records.save_profiles([Profile(user_key="t:k", display_name="Kim", message_count=7)])
    rows = [("t:k", "private", "topic", "jazz")] * 2 + [("t:k", "shared", "topic", "piano")]
    await records.store_exchanges([_record(1, "t:k")], lambda fresh, known: Learned(profiles=[], patterns=rows))
    learned = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    for n, (audience, ended) in enumerate([("private", ""), ("shared", ""), ("private", "retired"), ("private", "")]):
        await PersonItem.create(
            id=f"i{n}", user_key="t:k", kind="fact", about=f"about {n}", text=f"fact {n}", audience=audience,
            origin="said", learned_at=learned.replace(minute=n), ended=ended,
        )  # fmt: skip
    await PersonItem.create(id="o1", user_key="t:other", kind="fact", text="not theirs", audience="private",
                            learned_at=learned)  # fmt: skip
    known = await records.person_context("t:k", scopes=("private",), patterns=5, items=10)
    assert known.profile is not None and (known.profile.display_name, known.profile.message_count) == ("Kim", 7)
    assert [(p.value, p.count) for p in known.patterns] == [("jazz", 2)]
    assert [(i.id, i.text, i.about, i.audience, i.kind, i.origin, i.learned_at) for i in known.items] == [
        ("i0", "fact 0", "about 0", "private", "fact", "said", learned.replace(minute=0)),
        ("i3", "fact 3", "about 3", "private", "fact", "said", learned.replace(minute=3)),
    ]
    assert [i.seq for i in known.items] == sorted(i.seq for i in known.items)
    newest = await records.person_context("t:k", scopes=None, patterns=0, items=2)
    assert ([i.id for i in newest.items], newest.patterns) == (["i1", "i3"], [])
    nothing = await records.person_context("t:k", scopes=(), patterns=5, items=10)
    assert (nothing.patterns, nothing.items, nothing.profile) == ([], [], known.profile)


def _counting(fresh: Sequence[InteractionRecord], known: Mapping[str, Profile]) -> Learned:
    """A learner that counts one pattern per exchange and each exchange into its person's profile."""
    profiles = {key: Profile(user_key=key, message_count=p.message_count) for key, p in known.items()}
    for record in fresh:
        profile = profiles.setdefault(record.user_key, Profile(user_key=record.user_key))
        profile.message_count += 1
    return Learned(profiles=list(profiles.values()), patterns=[(r.user_key, "shared", "topic", "music") for r in fresh])


async def test_an_exchange_is_stored_and_learned_from_once_however_often_its_job_runs(database: Database) -> None:
    records = RelationalRecords(database)
    assert await records.store_exchanges([_record(1), _record(2)], _counting) == 2
    assert await records.store_exchanges([_record(1)], _counting) == 0, "a repeated job"
    # Two replicas doing overlapping jobs at once (a lapsed job lease): each exchange still counts once.
    stored = await asyncio.gather(
        *(records.store_exchanges([_record(i) for i in range(3, 8)], _counting) for _ in range(4))
    )
    assert sum(stored) == 5
    assert (await records.stats("t:1")).total_interactions == 7
    profile, [pattern] = await records.known("t:1", scopes=("shared",), patterns=5)
    assert pattern.count == 7 and profile is not None and profile.message_count == 7
    assert await records.known("t:1", scopes=("private",), patterns=5) == (profile, [])
    assert (await records.stats("t:1")).average_satisfaction is None
    await records.set_feedback("id1", "t:1", "👍", 1.0)
    await records.set_feedback("id1", "t:1", "😕", -0.5)
    assert (await records.stats("t:1")).average_satisfaction == pytest.approx(0.25)
    assert await records.clear_feedback("id1", "😕") and not await records.clear_feedback("id1", "😕")


@pytest_asyncio.fixture(params=["in-process", "redis"])
async def short_term(request: pytest.FixtureRequest) -> AsyncIterator[ShortTermMemory]:
    if request.param == "in-process":
        yield InProcessShortTerm(max_turns=4, ttl_seconds=3600)
        return
    async with redis_namespace() as prefix:
        redis = Redis.from_url(REDIS_URL)
        yield RedisShortTerm(redis, prefix=prefix, max_turns=4, ttl_seconds=3600)
        await redis.aclose()


def _turn(i: int, user_key: str = "t:1") -> Turn:
    return Turn(role="user", author="A", text=f"turn {i} ünïcode", user_key=user_key, interaction_id=str(i), at=i)


async def test_short_term_memory_is_bounded_per_conversation(short_term: ShortTermMemory) -> None:
    await short_term.ping()
    for i in range(6):
        await short_term.append("conv", [_turn(i)])
    recent = await short_term.recent("conv", 10)
    assert [t.text for t in recent] == [f"turn {i} ünïcode" for i in (2, 3, 4, 5)]
    assert [t.interaction_id for t in await short_term.recent("conv", 2)] == ["4", "5"]
    assert await short_term.recent("other", 10) == []


async def test_short_term_forget_removes_only_that_persons_turns(short_term: ShortTermMemory) -> None:
    await short_term.append("shared", [_turn(1, "t:1"), _turn(2, "t:2"), _turn(3, "t:1")])
    await short_term.append("dm", [_turn(4, "t:1")])
    await short_term.forget_user("t:1")
    assert [t.user_key for t in await short_term.recent("shared", 10)] == ["t:2"]
    assert await short_term.recent("dm", 10) == []


async def test_in_process_short_term_expires() -> None:
    memory = InProcessShortTerm(ttl_seconds=0.05)
    await memory.append("c", [_turn(1)])
    await asyncio.sleep(0.1)
    assert await memory.recent("c", 10) == []


async def test_redis_short_term_sets_an_expiry() -> None:
    async with redis_namespace() as prefix:
        redis = Redis.from_url(REDIS_URL)
        memory = RedisShortTerm(redis, prefix=prefix, ttl_seconds=100)
        await memory.append("c", [_turn(1)])
        assert 0 < await redis.ttl(f"{prefix}:st:conv:c") <= 100
        await redis.aclose()


@pytest.fixture
def chroma(tmp_path: Path) -> Iterator[ChromaVectors]:
    """An embedded store, in the process of its own that the worker gives it."""
    vectors = ChromaVectors(open_chroma(path=str(tmp_path / "chroma"), url=None))
    yield vectors
    vectors.close()


async def test_chroma_reads_one_persons_vectors_and_leaves_audiences_to_the_database(
    chroma: ChromaVectors,
) -> None:
    """Chroma's metadata is not where audiences are decided (a migration places rows in the database only): its
    reads are by person, and the index filters by the rows' audiences."""
    vectors = chroma
    now = datetime.now(UTC)
    items = [
        Memory(id="a1", user_key="t:a", text="a private", scope="person", conversation_id="c", created_at=now),
        Memory(id="a2", user_key="t:a", text="a public", scope="public:t:x", conversation_id="c", created_at=now),
        Memory(id="b1", user_key="t:b", text="b private", scope="person", conversation_id="c", created_at=now),
    ]
    await vectors.add(items, [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [1.0, 0.0, 0.0]])
    ids, _, matrix = await vectors.vectors("t:a", ["a1", "a2", "b1"])
    assert sorted(ids) == ["a1", "a2"] and matrix.shape == (2, 3), "never b's, even asked for by id"
    assert (await vectors.vectors("t:nobody", None))[0] == []
    await vectors.forget_user("t:a")
    assert await vectors.count("t:a") == 0 and await vectors.count("t:b") == 1


def _memory(i: int, text: str, *, user_key: str = "t:a", scope: str = "private", conversation: str = "c") -> Memory:
    return Memory(
        id=f"{user_key}-{i}",
        user_key=user_key,
        text=text,
        scope=scope,  # type: ignore[arg-type]
        conversation_id=conversation,
        created_at=datetime(2026, 1, 1 + i % 28, tzinfo=UTC),
        speaker="Ana",
    )


async def test_memory_rows_store_each_memory_once_in_order_and_read_back_as_given(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One statement an add (a larger one: a transaction over several); a memory already stored, or twice in one
    add, is stored once and not reported as new; the rows keep the order given (neighbours are found by it)."""
    from storage import memory_store

    rows = MemoryRows(database)
    first = [_memory(i, f"the {i}th thing Ana said") for i in range(3)]
    vectors = [[float(i == j) for j in range(8)] for i in range(6)]
    assert await rows.add(first, [Counter(terms_of(m.text)) for m in first], vectors[:3]) == [0, 1, 2]
    again = [first[1], _memory(3, "a new one"), _memory(3, "a new one")]
    assert await rows.add(again, [Counter(terms_of(m.text)) for m in again], vectors[1:4]) == [1]
    monkeypatch.setattr(memory_store, "_ROWS_PER_INSERT", 2)
    larger = [_memory(i, f"later {i}") for i in range(4, 9)]
    assert await rows.add(larger, [Counter(terms_of(m.text)) for m in larger], [vectors[5]] * 5) == [0, 1, 2, 3, 4]
    heads = await rows.heads("t:a", -1, 100)
    assert [h["id"] for h in heads] == [f"t:a-{i}" for i in range(9)], "stored once each, in the order given"
    read, _ = await rows.read("t:a", ["t:a-1", "t:a-3"], around=[], scopes=None)
    assert {m.id: (m.text, m.speaker, m.created_at) for m in read} == {
        "t:a-1": ("the 1th thing Ana said", "Ana", first[1].created_at),
        "t:a-3": ("a new one", "Ana", again[1].created_at),
    }


async def _none() -> None:
    return None


def _bm25(question: str, memories: Sequence[Memory]) -> dict[str, float]:
    """Textbook BM25 (k1 1.2, b 0.75) over these memories, computed here by hand, times each memory's weight (its
    content terms n as n / (n + 1), counted here too): memory id -> score."""
    counted = {m.id: Counter(terms_of(document_of(m))) for m in memories}
    average = sum(sum(c.values()) for c in counted.values()) / len(counted)
    query = set(terms_of(question))
    scores: dict[str, float] = {}
    for memory_id, counts in counted.items():
        total = 0.0
        for term in query & counts.keys():
            df = sum(term in c for c in counted.values())
            idf = math.log(1 + (len(counted) - df + 0.5) / (df + 0.5))
            tf = counts[term]
            total += idf * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * sum(counts.values()) / average))
        if total:
            n = len(terms_of(next(m.text for m in memories if m.id == memory_id)))
            scores[memory_id] = total * n / (n + 1)
    return scores


async def _add(index: MemoryIndex, memories: Sequence[Memory], vectors: Sequence[Sequence[float]]) -> None:
    await index.add(memories, [Counter(terms_of(document_of(m))) for m in memories], vectors)


async def test_bm25_ranks_rare_words_first_within_a_person_and_scope(database: Database) -> None:
    index = MemoryIndex(MemoryRows(database))
    texts = [
        "I adopted a greyhound called Pixel last spring",
        "the weather is nice and the weather is warm",
        "my greyhound loves the beach",
        "the weather again, always the weather",
        "I'm learning the cello",
    ]
    memories = [_memory(i, text) for i, text in enumerate(texts)]
    memories.append(_memory(9, "greyhound greyhound greyhound", user_key="t:b"))
    memories.append(_memory(10, "Pixel the greyhound in a shared channel", scope="shared", conversation="ch"))
    vectors = np.eye(len(memories), 8).tolist()
    await _add(index, memories, vectors)
    await _add(index, memories[:1], vectors[:1])  # a retry indexes nothing twice

    question = "What is my greyhound's name, Pixel?"
    found = await index.candidates("t:a", terms_of(question), _none(), scopes=("private",), limit=10)
    ranked = found.lexical
    assert [i for i, _ in ranked] == ["t:a-0", "t:a-2"] and found.vector == [] and found.unsearched is None
    assert ranked[0][1] > ranked[1][1] > 0
    expected = _bm25(question, memories[:5])  # t:a's private memories only: their statistics too
    assert [score for _, score in ranked] == pytest.approx([expected[i] for i, _ in ranked], rel=1e-9)
    shared = await index.candidates("t:a", terms_of("greyhound"), ready(vectors[6]), scopes=("shared",), limit=10)
    assert [i for i, _ in shared.lexical] == ["t:a-10"]
    assert [i for i, _ in shared.vector] == ["t:a-10"], "another audience's vector is never a candidate"
    nothing = await index.candidates("t:a", terms_of("the a of"), _none(), scopes=("private",), limit=10)
    assert nothing.lexical == []
    assert await index.count("t:a") == 6

    fetched, around = await index.read(
        "t:a", ["t:a-0", "t:b-9", "t:a-10"], around=["t:a-2", "t:a-0"], scopes=("private",)
    )
    assert [m.id for m in fetched] == ["t:a-0"], "another person's or another scope's memory is never fetched"
    assert fetched[0].text == texts[0] and fetched[0].created_at == memories[0].created_at
    assert {k: [m.id for m in v] for k, v in around.items()} == {"t:a-2": ["t:a-1", "t:a-3"], "t:a-0": ["t:a-1"]}
    assert around["t:a-2"][1].text == texts[3] and around["t:a-2"][1].created_at == memories[3].created_at
    # The last turn of a conversation has only the one before it (the shared memory lives in another one).
    assert [m.id for m in (await index.read("t:a", [], around=["t:a-4"], scopes=("private",)))[1]["t:a-4"]] == ["t:a-3"]
    only, none_around = await index.read("t:a", ["t:a-1"], around=[], scopes=("private",))
    assert [m.id for m in only] == ["t:a-1"] and none_around == {}
    await index.forget_user("t:a")
    assert await index.count("t:a") == 0 and await index.count("t:b") == 1
    gone = await index.candidates("t:a", terms_of("greyhound"), ready(vectors[0]), scopes=None, limit=10)
    assert gone.lexical == [] and gone.vector == []


async def test_a_turn_without_content_does_not_outrank_one_with_it_in_either_half(database: Database) -> None:
    """ "Later!" said by the person a question names matches it on the name alone; weighed by its content terms
    (core.recall.weight_of) it falls below the turn that holds the fact, in the vector half and in BM25."""
    index = MemoryIndex(MemoryRows(database))
    filler, fact = _memory(0, "Later!"), _memory(1, "Ana's new job: nurse at Orchard Health")
    query = np.array([1.0, 0.0, 0.0], np.float32)
    vectors = [[0.9, 0.43589, 0.0], [0.8, 0.0, 0.6]]  # the filler is the nearer of the two by cosine
    await _add(index, [filler, fact], vectors)
    found = await index.candidates("t:a", terms_of("Where does Ana work now?"), ready(query), scopes=None, limit=5)
    assert [i for i, _ in found.vector] == ["t:a-1", "t:a-0"]
    assert found.vector[0][1] == pytest.approx(0.8 * weight_of(fact.text), abs=1e-3)
    assert found.vector[1][1] == pytest.approx(0.9 * 1 / 2, abs=1e-3), "one content term: half its cosine"
    assert [i for i, _ in found.lexical][0] == "t:a-1"
    nothing = _memory(2, "ok")  # a stopword only: no weight at all
    await _add(index, [nothing], [[1.0, 0.0, 0.0]])
    again = await index.candidates("t:a", [], ready(query), scopes=None, limit=5)
    assert again.vector[-1] == ("t:a-2", 0.0)


async def test_the_index_follows_other_replicas_and_never_crosses_people_or_audiences(database: Database) -> None:
    here, there = MemoryIndex(MemoryRows(database)), MemoryIndex(MemoryRows(database))  # two replicas
    words = "garden sourdough lisbon marathon piano cello report landlord kitchen jazz".split()
    rng = np.random.default_rng(7)

    def memory(i: int, user_key: str = "t:a") -> Memory:
        picked = rng.choice(words, size=int(rng.integers(1, 6)))
        scope = "shared" if i % 3 == 0 else "private"
        return _memory(i, " ".join(picked), user_key=user_key, scope=scope, conversation=f"c{i % 4}")

    vectors = np.eye(120, 128, dtype=np.float32)
    first = [memory(i) for i in range(60)] + [memory(i, "t:b") for i in range(20)]
    await _add(here, first, vectors[: len(first)])
    questions = ["sourdough in Lisbon", "piano piano cello", "jazz report", "kitchen", "nothing matches here"]

    async def agree(memories: list[Memory]) -> None:
        for question, scopes in [(q, s) for q in questions for s in (("private", "shared"), ("shared",))]:
            seen = [m for m in memories if m.user_key == "t:a" and m.scope in scopes]
            expected = _bm25(question, seen)
            for index in (here, there):
                got = (await index.candidates("t:a", terms_of(question), _none(), scopes=scopes, limit=50)).lexical
                assert {i for i, _ in got} == set(expected), (question, scopes)
                assert [s for _, s in got] == pytest.approx([expected[i] for i, _ in got], rel=1e-9)
                assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)

    await agree(first)
    nearest = await there.candidates("t:a", [], ready(vectors[4]), scopes=("private", "shared"), limit=1)
    assert nearest.vector == [("t:a-4", pytest.approx(weight_of(first[4].text), abs=1e-3))], (
        "the other replica read the rows"
    )
    later = [memory(i) for i in range(60, 90)]
    await _add(there, later, vectors[80:110])  # the other replica writes; `here` holds t:a already
    await agree(first + later)
    found = await here.candidates("t:a", [], ready(vectors[100]), scopes=("private", "shared"), limit=1)
    assert [i for i, _ in found.vector] == ["t:a-80"], "caught up by the freshness read"
    shared = await here.candidates("t:a", [], ready(vectors[84]), scopes=("shared",), limit=5)
    assert all(int(i.rsplit("-", 1)[1]) % 3 == 0 for i, _ in shared.vector), "only shared memories in a shared search"
    stranger = await here.candidates("t:nobody", terms_of("piano"), ready(vectors[4]), scopes=None, limit=5)
    assert stranger.vector == [] and stranger.lexical == []

    # A row numbered before the newest one held, committed after it was read (two replicas' transactions).
    late = _memory(200, "zeppelin", scope="private")
    [gap] = await database.connection().execute_query_dict("SELECT seq FROM memory WHERE id = 't:b-5'")
    await MemoryRows(database).remove("t:b", ["t:b-5"])  # its seq, well below the newest, is free
    await MemoryRows(database).add([late], [Counter(terms_of(document_of(late)))], [vectors[119]])
    bind = database.params()
    await database.connection().execute_query(
        f"UPDATE memory SET seq = {bind(int(gap['seq']))} WHERE id = {bind(late.id)}", bind.values
    )
    assert (await here.candidates("t:a", terms_of("zeppelin"), _none(), scopes=None, limit=5)).lexical
    small = MemoryIndex(MemoryRows(database), max_bytes=1)  # room for one person at a time, whatever their size
    for user_key in ("t:a", "t:b"):
        got = await small.candidates(user_key, terms_of("jazz piano"), _none(), scopes=("private",), limit=5)
        assert (
            got.lexical
            == (await here.candidates(user_key, terms_of("jazz piano"), _none(), scopes=("private",), limit=5)).lexical
        )
    assert list(small._people) == ["t:b"], "the least recently searched person was let go"
    await here.forget_user("t:a")
    assert (await there.candidates("t:a", terms_of("piano"), _none(), scopes=None, limit=10)).lexical != [], (
        "another replica's entry still names them"
    )
    assert (await there.read("t:a", ["t:a-1"], around=[], scopes=None))[0] == [], "but their rows are gone"
    assert (await here.candidates("t:a", terms_of("piano"), _none(), scopes=None, limit=10)).lexical == []


async def test_a_long_history_loads_behind_and_the_first_search_covers_the_newest(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first search of a long history reads the newest rows and answers; the rest load behind, a page at a
    time; a short one is read whole at once. Postings in sorted segments and appended one by one score alike."""
    monkeypatch.setattr(memory_index, "_FIRST", 400)  # a person with more is a long history
    monkeypatch.setattr(memory_index, "_FIRST_OF_MANY", 200)  # of which the newest 200 are read at once
    monkeypatch.setattr(memory_index, "_PAGE", 300)
    monkeypatch.setattr(memory_index, "_TAIL", 50)  # the postings are sorted several times over
    words = "garden sourdough lisbon marathon piano cello report landlord kitchen jazz".split()
    rng = np.random.default_rng(11)
    count = 1_500
    memories = [
        _memory(i, " ".join(rng.choice(words, size=int(rng.integers(1, 6)))), scope="private" if i % 4 else "shared")
        for i in range(count)
    ]
    vectors = rng.standard_normal((count, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = MemoryRows(database)
    for start in range(0, count, 500):
        await rows.add(
            memories[start : start + 500],
            [Counter(terms_of(document_of(m))) for m in memories[start : start + 500]],
            vectors[start : start + 500],
        )
    index = MemoryIndex(rows)
    first = await index.candidates("t:a", [], ready(vectors[7]), scopes=("private",), limit=3)
    assert index.loading("t:a"), "the older rows load behind"
    newest = {m.id for m in memories[-200:]}
    assert {i for i, _ in first.vector} <= newest, "meanwhile the newest are searched"
    index._people.drop("t:a")  # let go mid-load (another person's search needed the room)
    assert not index.loading("t:a"), "its load stops with it"
    again = await index.candidates("t:a", [], ready(vectors[7]), scopes=("private",), limit=3)
    assert index.loading("t:a") and {i for i, _ in again.vector} <= newest, "read anew, and loading again"
    await asyncio.gather(*index._people.loading.values())
    assert not index.loading("t:a")
    short = [_memory(i, "piano", user_key="t:b") for i in range(300)]
    await rows.add(short, [Counter(terms_of(document_of(m))) for m in short], vectors[:300])
    whole = await index.candidates("t:b", [], ready(vectors[299]), scopes=None, limit=1)
    assert not index.loading("t:b") and whole.vector[0][0] == "t:b-299"
    later = [_memory(i, "piano jazz cello", scope="private") for i in range(count, count + 40)]
    for memory, vector in zip(later, -vectors[:40], strict=True):  # one by one: the tail of unsorted postings
        await _add(index, [memory], [vector])
    memories += later
    found = await index.candidates("t:a", terms_of("piano jazz"), ready(vectors[7]), scopes=("private",), limit=3)
    assert found.vector[0] == ("t:a-7", pytest.approx(weight_of(memories[7].text), abs=2e-3)), (
        "float16 in the rows, the same neighbour"
    )
    expected = _bm25("piano jazz", [m for m in memories if m.scope == "private"])
    assert len(found.lexical) == 3
    assert [s for _, s in found.lexical] == pytest.approx(sorted(expected.values(), reverse=True)[:3], rel=1e-9)


async def test_embedder_batches_concurrent_requests_off_the_event_loop(embedding_model: Any) -> None:
    embedder = BatchingEmbedder(embedding_model)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    ticking = asyncio.create_task(ticker())
    texts = [f"sentence number {i} about the weather" for i in range(64)]
    started = time.perf_counter()
    vectors = await asyncio.gather(*(embedder.embed([t]) for t in texts))
    elapsed = time.perf_counter() - started
    stop.set()
    await ticking
    assert len(vectors) == 64 and all(len(v[0]) == 384 for v in vectors)
    assert embedder.batches <= 3, "64 concurrent requests share a few model calls"
    # The loop kept running while the model worked: the ticker ran through the encoding.
    assert ticks >= 3 or elapsed < 0.01
    same = await embedder.embed([texts[5]])
    # The same text alone and in a batch: the int8 graph quantises each batch's activations with one scale, so the
    # two are near (the float graph: equal), and a batch never mixes up whose vector is whose.
    assert float(np.dot(same[0], vectors[5][0])) > 0.98
    assert float(np.dot(same[0], vectors[6][0])) < float(np.dot(same[0], vectors[5][0]))
    assert await embedder.embed([]) == []
    await embedder.close()


async def test_embedder_reports_a_model_failure_to_every_waiter() -> None:
    class Broken:
        def encode(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("model exploded")

    embedder = BatchingEmbedder(Broken())
    results = await asyncio.gather(embedder.embed(["a"]), embedder.embed(["b"]), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    await embedder.close()


async def test_replicas_starting_together_do_not_race_on_migrations() -> None:
    async with fresh_postgres() as url:
        await asyncio.gather(*(Database(url).migrate() for _ in range(3)))
        db = Database(url)
        await db.open(migrate=False)
        records = RelationalRecords(db)
        await records.store_exchanges([_record(9)], _counting)
        assert (await records.stats("t:1")).total_interactions == 1
        await db.close()


async def test_with_a_chroma_store_the_vectors_come_from_it_few_at_once_many_behind(
    database: Database, chroma: ChromaVectors, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows hold no vectors when a Chroma store keeps them: another replica's index reads them from it, a few
    while the search waits, a long history's behind it (words alone meanwhile, and it says so)."""
    monkeypatch.setattr(memory_index, "_SOURCE_INLINE", 5)
    writer = MemoryIndex(MemoryRows(database, with_vectors=False), source=chroma)
    vectors = np.eye(30, 64, dtype=np.float32)
    await _add(writer, [_memory(i, f"note {i}") for i in range(3)], vectors[:3])
    [row] = await database.connection().execute_query_dict("SELECT COUNT(*) AS n FROM memory WHERE vector IS NULL")
    assert row["n"] == 3, "the rows hold none"
    reader = MemoryIndex(MemoryRows(database, with_vectors=False), source=chroma)  # another replica
    few = await reader.candidates("t:a", [], ready(vectors[2]), scopes=None, limit=1)
    assert few.vector == [("t:a-2", pytest.approx(weight_of("note 2"), abs=1e-3))] and few.unsearched is None
    await _add(writer, [_memory(i, f"note {i}") for i in range(3, 30)], vectors[3:])
    many = await reader.candidates("t:a", terms_of("note"), ready(vectors[20]), scopes=None, limit=1)
    assert many.unsearched and many.lexical, "27 new ones: fetched behind, found by their words meanwhile"
    await asyncio.gather(*reader._fetching.values())
    found = await reader.candidates("t:a", [], ready(vectors[20]), scopes=None, limit=1)
    assert found.vector == [("t:a-20", pytest.approx(weight_of("note 20"), abs=1e-3))] and found.unsearched is None
    await reader.close()


async def test_a_person_with_more_memories_than_one_chroma_read_loads_in_pages(chroma: ChromaVectors) -> None:
    count = 4_500  # more than two pages
    memories = [_memory(i, "x") for i in range(count)]
    vectors = np.random.default_rng(1).standard_normal((count, 384)).astype(np.float32)
    for start in range(0, count, 1_500):
        await chroma.add(memories[start : start + 1_500], vectors[start : start + 1_500])
    ids, scopes, matrix = await chroma.vectors("t:a", None)
    assert len(set(ids)) == count and matrix.shape == (count, 384) and len(scopes) == count
    some = [m.id for m in memories[::3]]
    ids, _, matrix = await chroma.vectors("t:a", some)
    assert sorted(ids) == sorted(some) and matrix.shape == (len(some), 384)


async def test_the_embedded_store_writes_without_holding_the_event_loop(chroma: ChromaVectors) -> None:
    """Chroma's local core holds the GIL while it writes; in its own process it cannot stall the loop."""
    await chroma.ping()  # the child is up before anything is timed
    rng = np.random.default_rng(3)
    lags: list[float] = []
    done = asyncio.Event()

    async def watch() -> None:
        loop = asyncio.get_running_loop()
        while not done.is_set():
            asked = loop.time()
            await asyncio.sleep(0.002)
            lags.append(loop.time() - asked - 0.002)

    watcher = asyncio.create_task(watch())
    for batch in range(4):
        memories = [_memory(batch * 300 + i, "x") for i in range(300)]
        await chroma.add(memories, rng.standard_normal((300, 384)).astype(np.float32))
    done.set()
    await watcher
    assert await chroma.count("t:a") == 1_200
    # 300 vectors hold the GIL for over 150 ms in Chroma's core (measured in a thread); the loop must not notice.
    assert max(lags) < 0.08, f"the loop stalled for {max(lags) * 1000:.0f} ms"


async def test_a_chroma_process_that_dies_is_replaced(tmp_path: Path) -> None:
    import os
    import signal

    store = ChromaProcess(str(tmp_path / "chroma"), "rapport_memories", {"hnsw": {"space": "cosine"}})
    try:
        vectors = ChromaVectors(store)
        await vectors.add([_memory(1, "kept")], [[1.0] + [0.0] * 383])
        [child] = store._pool._processes.values()  # the one worker that owns the store
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        # The next call starts a new owner, which opens the same files: nothing written is lost.
        assert await vectors.count("t:a") == 1
    finally:
        store.close()


def test_onnx_graph_is_exported_once_and_embeds_like_sentence_transformers(tmp_path: Path) -> None:
    """The exported graph gives sentence-transformers' own vectors, for short, long, empty and non-Latin text."""
    from sentence_transformers import SentenceTransformer

    from storage.embeddings import default_model_path, load_model

    encoder = load_model(default_model_path(), cache_dir=tmp_path, int8=False)
    [graph] = list(tmp_path.glob("*.onnx"))
    exported = graph.stat().st_mtime_ns
    texts = ["hello there", "My sister booked a trip to Lisbon.", "word " * 1_000, "", "Ünïcödé 日本語 🙂"]
    ours = encoder.encode(texts)
    reference = SentenceTransformer(default_model_path(), device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.shape == (5, 384)
    assert (ours * reference).sum(axis=1) == pytest.approx([1.0] * 5, abs=1e-5)
    again = load_model(default_model_path(), cache_dir=tmp_path, int8=False)
    assert graph.stat().st_mtime_ns == exported, "a second process reuses the cached graph"
    assert np.allclose(again.encode(texts[:2]), ours[:2], atol=1e-6)
    # The session for a quiet process (every core) computes the same vectors as the one-thread session.
    assert np.allclose(encoder.encode(texts, quiet=True), ours, atol=1e-5)


def test_the_int8_graph_is_made_once_and_embeds_close_to_the_float_one(tmp_path: Path) -> None:
    """The worker's default graph: quantised from the exported one once, and close enough to it that vectors kept
    by either rank the same memories first (they mix in one search: nothing is embedded again on a switch)."""
    from storage.embeddings import default_model_path, load_model

    exact = load_model(default_model_path(), cache_dir=tmp_path, int8=False)
    int8 = load_model(default_model_path(), cache_dir=tmp_path)
    graphs = sorted(p.name for p in tmp_path.glob("*.onnx"))
    [quantised_graph] = [tmp_path / name for name in graphs if name.endswith("-int8.onnx")]
    assert len(graphs) == 2, graphs
    assert not list(tmp_path.glob("*.part")), "nothing half-written is left beside the graphs"
    made = quantised_graph.stat().st_mtime_ns
    assert load_model(default_model_path(), cache_dir=tmp_path).dimension == 384
    assert quantised_graph.stat().st_mtime_ns == made, "a second process reuses the quantised graph"
    texts = [
        "Ana: my greyhound Pixel loves the beach",
        "Ben: I start the new job at the harbour on Monday",
        "Ana: the cello lesson moved to Thursdays",
        "Ben: ok",
        "Ünïcödé 日本語 🙂",
        "",
    ]
    floats, quantised = exact.encode(texts), int8.encode(texts)
    assert quantised.shape == floats.shape and np.allclose(np.linalg.norm(quantised, axis=1), 1.0, atol=1e-5)
    assert (floats * quantised).sum(axis=1).min() > 0.97
    assert not np.allclose(floats, quantised, atol=1e-3), "the int8 graph is not the float graph under another name"
    # A question embedded by one graph finds the memory the other embedded, first.
    question = "Ana: what is my dog called?"
    for memories, query in ((floats, int8.encode([question])[0]), (quantised, exact.encode([question])[0])):
        assert int(np.argmax(memories[:4] @ query)) == 0


class _CountingEmbedder:
    def __init__(self) -> None:
        self.texts: list[str] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.texts += texts
        return [[0.0, 0.0, 1.0] + [0.0] * 381 for _ in texts]


async def test_rows_without_vectors_and_no_old_store_are_embedded(database: Database, tmp_path: Path) -> None:
    """A deployment that kept its vectors in a Chroma server and no longer does: the rows get new embeddings."""
    served = MemoryRows(database, with_vectors=False)
    memories = [_memory(i, f"kept elsewhere {i}") for i in range(3)]
    await served.add(memories, [Counter(terms_of(document_of(m))) for m in memories], [[1.0, 0.0]] * 3)
    assert await rows_without_vectors(database) and old_store(str(tmp_path / "none")) is None
    embedder = _CountingEmbedder()
    await import_from(database, None, embedder, lambda user_key, vectors: None)
    expected = sorted(f"Ana: {m.text}" for m in memories)  # as core.recall.embedded_text has it
    assert sorted(embedder.texts) == expected and not await rows_without_vectors(database)
    found = await MemoryIndex(MemoryRows(database)).candidates(
        "t:a", [], ready([0.0, 0.0, 1.0] + [0.0] * 381), scopes=None, limit=5
    )
    assert len(found.vector) == 3 and found.unsearched is None


async def test_memories_of_the_old_shape_move_into_the_rows_without_being_embedded_again(tmp_path: Path) -> None:
    """Postings from memory_term into the rows (migration 0009), and vectors from the embedded Chroma store (the
    worker's first start): Chroma's vector is taken for a memory without a speaker (it embeds the same either way),
    and a memory that Chroma lacks, or that names its speaker (now embedded as "Speaker: text"), is embedded."""
    for n, sqlite in enumerate((tmp_path / "old8.sqlite3", None)):
        async with contextlib.AsyncExitStack() as stack:
            url = await stack.enter_async_context(database_at("0008_usage", sqlite))
            db = Database(url)
            await db.open(migrate=False)
            conn = db.connection()
            texts = ["my greyhound Pixel loves the beach", "the cello lesson is on Friday", "Pixel chewed the cello"]
            memories = [_memory(i, text, scope="person") for i, text in enumerate(texts)]
            memories[0] = replace(memories[0], speaker="")  # e.g. a message whose author had no name
            for memory in memories:  # as the old store wrote them: a row and its postings
                counts = Counter(terms_of(document_of(memory)))
                row = (memory.id, memory.user_key, memory.scope, "c", memory.speaker, memory.text)
                values = (*row, "", memory.created_at, sum(counts.values()))
                bind = db.params()
                await conn.execute_query(
                    "INSERT INTO memory (id, user_key, scope, conversation_id, speaker, text, reply, created_at, "
                    f"length) VALUES ({bind(*values)})",
                    bind.values,
                )
                bind = db.params()
                postings = ", ".join(
                    f"({bind(memory.user_key, memory.scope, term, memory.id, tf, sum(counts.values()))})"
                    for term, tf in counts.items()
                )
                await conn.execute_query(
                    f"INSERT INTO memory_term (user_key, scope, term, memory_id, tf, length) VALUES {postings}",
                    bind.values,
                )
            chroma_path = str(tmp_path / f"chroma{n}")
            legacy = ChromaVectors(open_chroma(path=chroma_path, url=None))
            vectors = np.eye(2, 384, dtype=np.float32)
            await legacy.add(memories[:2], vectors)  # the third's vector never reached Chroma
            legacy.close()
            await db.close()

            db = Database(url)
            await db.open()  # migrates to the latest
            tables = await db.connection().execute_query_dict(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                if url.startswith("sqlite")
                else "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'"
            )
            assert {"memory_term", "memory_stats"}.isdisjoint(r["name"] for r in tables)
            index = MemoryIndex(MemoryRows(db))
            question = "Pixel and the cello"
            before = await index.candidates("t:a", terms_of(question), ready(vectors[0]), scopes=None, limit=5)
            assert before.vector == [] and before.unsearched, "until the vectors move in: words only, and it says so"
            expected = _bm25(question, memories)
            assert dict(before.lexical) == pytest.approx(expected, rel=1e-9), "the postings came over as counted"

            assert await rows_without_vectors(db) and old_store(chroma_path) == chroma_path
            embedder, moved = _CountingEmbedder(), []

            def hand_over(
                user_key: str, vectors: Mapping[str, Sequence[float]], moved: list[str] = moved, index: Any = index
            ) -> None:
                moved.append(user_key)
                index.vectors_moved(user_key, vectors)  # the held entry takes them: no reading the person again

            await import_from(db, chroma_path, embedder, hand_over)
            assert embedder.texts == [f"Ana: {texts[1]}", f"Ana: {texts[2]}"], "the speakerless one is Chroma's"
            assert moved == ["t:a"] and not await rows_without_vectors(db)
            after = await index.candidates("t:a", terms_of(question), ready(vectors[0]), scopes=None, limit=5)
            assert (
                after.vector[0] == ("t:a-0", pytest.approx(weight_of(texts[0]), abs=1e-3)) and after.unsearched is None
            )
            assert sorted(i for i, _ in after.vector) == ["t:a-0", "t:a-1", "t:a-2"], "every memory has a vector"
            assert after.lexical == before.lexical
            await index.close()
            await db.close()


async def test_vectors_of_bare_words_are_embedded_again_with_their_speaker(tmp_path: Path) -> None:
    """Migration 0010: a row that names its speaker loses its vector of the bare words and the worker embeds it
    again as "Speaker: text"; a row without a speaker keeps its vector (it embeds the same either way)."""
    for sqlite in (tmp_path / "old9.sqlite3", None):
        async with contextlib.AsyncExitStack() as stack:
            url = await stack.enter_async_context(database_at("0009_memory_rows_hold_the_index", sqlite))
            db = Database(url)
            await db.open(migrate=False)
            memories = [_memory(0, "my greyhound Pixel"), replace(_memory(1, "the cello lesson"), speaker="")]
            for memory, vector in zip(memories, np.eye(2, 384), strict=True):  # as 0009's rows were written
                counts = Counter(terms_of(document_of(memory)))
                bind = db.params()
                values = (memory.id, memory.user_key, memory.scope, "c", memory.speaker, memory.text, "")
                values += (memory.created_at, sum(counts.values()), pack_terms(counts), pack_vector(vector))
                await db.connection().execute_query(
                    "INSERT INTO memory (id, user_key, scope, conversation_id, speaker, text, reply, created_at, "
                    f"length, terms, vector) VALUES ({bind(*values)})",
                    bind.values,
                )
            await db.close()

            db = Database(url)
            await db.open()  # migrates to the latest
            rows = await db.connection().execute_query_dict("SELECT id, vector, weight FROM memory ORDER BY id")
            assert [(r["id"], r["vector"] is None) for r in rows] == [("t:a-0", True), ("t:a-1", False)]
            assert [r["weight"] for r in rows] == pytest.approx([2 / 3, 2 / 3]), "0011 weighed the rows: 2 terms each"
            embedder = _CountingEmbedder()
            await import_from(db, None, embedder, lambda user_key, vectors: None)
            assert embedder.texts == ["Ana: my greyhound Pixel"] and not await rows_without_vectors(db)
            index = MemoryIndex(MemoryRows(db))
            found = await index.candidates("t:a", ["cello"], ready(np.eye(2, 384)[1]), scopes=None, limit=5)
            assert found.vector[0] == ("t:a-1", pytest.approx(weight_of("the cello lesson"), abs=1e-3)), (
                "the speakerless vector was kept"
            )
            await index.close()
            await db.close()


async def test_the_audience_migration_places_the_rows_of_two_scopes(tmp_path: Path) -> None:
    """Rows kept as "private" become the person's alone; "shared" ones, private to their own conversation; counts
    without a conversation (interests, patterns) the person's alone."""
    for sqlite in (tmp_path / "old.sqlite3", None):
        async with contextlib.AsyncExitStack() as stack:
            url = await stack.enter_async_context(database_at("0005_inbox", sqlite))
            db = Database(url)
            await db.open(migrate=False)
            conn = db.connection()
            bind = db.params()
            now = datetime.now(UTC)
            rows = [
                ("m1", "person:a", "private", "slack:T1:D1"),
                ("m2", "person:a", "shared", "slack:T1:C5:1712.0001"),
                ("m3", "person:a", "shared", "discord::999"),
            ]
            values = ", ".join(
                f"({bind(i, user, scope, conversation, '', 'x', '', now, 2)})" for i, user, scope, conversation in rows
            )
            await conn.execute_query(
                "INSERT INTO memory (id, user_key, scope, conversation_id, speaker, text, reply, created_at, length) "
                f"VALUES {values}",
                bind.values,
            )
            bind = db.params()
            terms = ", ".join(f"({bind('person:a', scope, 'x', i, 1, 2)})" for i, _, scope, _ in rows)
            await conn.execute_query(
                f"INSERT INTO memory_term (user_key, scope, term, memory_id, tf, length) VALUES {terms}", bind.values
            )
            bind = db.params()
            patterns = f"({bind('person:a', 'topic', 'jazz', 'private', 2, now)}), "
            patterns += f"({bind('person:a', 'topic', 'jazz', 'shared', 3, now)})"
            await conn.execute_query(
                f"INSERT INTO learned_pattern (user_key, kind, value, scope, count, updated_at) VALUES {patterns}",
                bind.values,
            )
            await RelationalRecords(db).save_profiles(
                [Profile(user_key="person:a", interests={"jazz": {"private": 2, "shared": 1}})]
            )
            await db.close()
            db = Database(url)
            await db.open()  # migrates to the latest
            conn = db.connection()
            placed = await conn.execute_query_dict("SELECT id, scope FROM memory ORDER BY id")
            assert [(r["id"], r["scope"]) for r in placed] == [
                ("m1", "person"),
                ("m2", "place:slack:T1:C5"),
                ("m3", "place:discord::999"),
            ]
            index = MemoryIndex(MemoryRows(db))
            for scopes, ids in ((("person",), ["m1"]), (("place:slack:T1:C5", "place:discord::999"), ["m2", "m3"])):
                found = await index.candidates("person:a", ["x"], _none(), scopes=scopes, limit=5)
                assert sorted(i for i, _ in found.lexical) == ids, "each posting kept its memory's new audience"
            records = RelationalRecords(db)
            profile, [pattern] = await records.known("person:a", scopes=None, patterns=5)
            assert (pattern.value, pattern.count) == ("jazz", 5)
            assert profile is not None and profile.interests == {"jazz": {"person": 3}}
            assert await records.known("person:a", scopes=("public:slack:T1",), patterns=5) == (profile, [])
            await db.close()


async def test_the_person_model_migration_places_past_interactions_and_queues_them_for_learning(
    tmp_path: Path,
) -> None:
    """Past exchanges take their memory's audience (or, without one, a DM's or their channel's), wait to be learned
    from once (the failed ones never), and people already known are not told again that Rapport remembers."""
    for sqlite in (tmp_path / "old7.sqlite3", None):
        async with contextlib.AsyncExitStack() as stack:
            url = await stack.enter_async_context(database_at("0006_audiences", sqlite))
            db = Database(url)
            await db.open(migrate=False)
            conn = db.connection()
            now = datetime.now(UTC)
            rows = [  # id, private, ok, conversation
                ("i1", False, True, "C5"),
                ("i2", True, True, "D1"),
                ("i3", False, True, "C9"),
                ("i4", True, False, "D1"),
            ]
            for interaction, private, ok, conversation in rows:
                bind = db.params()
                await conn.execute_query(
                    "INSERT INTO interaction (id, user_key, platform, conversation_id, private, user_text, reply_text, "
                    "topics, ok, model, input_tokens, output_tokens, latency_ms, created_at) VALUES "
                    f"({bind(interaction, 'slack:T1:U1', 'slack', conversation, private, 'hi', 'hello', '[]', ok)}, "
                    f"'m', 0, 0, 0, {bind(now)})",
                    bind.values,
                )
            bind = db.params()
            await conn.execute_query(
                "INSERT INTO memory (id, user_key, scope, conversation_id, speaker, text, reply, created_at, length) "
                f"VALUES ({bind('i1', 'slack:T1:U1', 'public:slack:T1', 'slack:T1:C5', '', 'hi', '', now, 1)})",
                bind.values,
            )
            await RelationalRecords(db).save_profiles([Profile(user_key="slack:T1:U1")])
            await db.close()
            db = Database(url)
            await db.open()
            placed = await db.connection().execute_query_dict("SELECT id, audience, learn FROM interaction ORDER BY id")
            assert [(r["id"], r["audience"], r["learn"]) for r in placed] == [
                ("i1", "public:slack:T1", 0),
                ("i2", "person", 0),
                ("i3", "place:slack::C9", 0),
                ("i4", "person", 2),
            ]
            records = RelationalRecords(db)
            assert [s.pending for s in await records.learning_due(10)] == [3]
            assert not await records.greet_once("slack:T1:U1"), "known before: not told again"
            assert await records.greet_once("slack:T1:U2") and not await records.greet_once("slack:T1:U2")
            await db.close()
