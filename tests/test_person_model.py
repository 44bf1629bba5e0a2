"""The person model: what the learning model extracts (scripted through the fake Anthropic API, garbage included),
how it is kept (superseded, merged, sourced), when learning runs, and what reaches the next prompt."""

from __future__ import annotations

import asyncio
import copy
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from adapters.console import ConsoleAdapter
from adapters.slack.translate import message_key
from bot.config import Settings
from bot.wiring import Services
from core.assistant import AssistantSettings
from core.entries import Incoming, interaction_id_for
from core.events import MessageChanged, MessageReceived, MessageRef, ReactionAdded, UserRef
from core.feedback import Reaction, preferences_from
from core.learner import LearningSettings, PersonLearner, day_of, due
from core.person import Exchange, Item, Plan, model_lines, parse_extraction, plan_changes
from core.ports import LearningState
from tests.conftest import REDIS_URL, eventually, fresh_postgres, make_settings, redis_namespace, running, settled
from tests.fakes.anthropic_api import Fail, FakeAnthropic, Say, Use
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.slack_api import FakeSlackAPI
from tests.test_privacy import _channel, _mention, _say, slack, two_servers  # noqa: F401 - fixtures
from tests.test_slack_http import payload, send_event

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _exchange(n: int, text: str, audience: str = "person", days: int = 0) -> Exchange:
    return Exchange(id=f"x{n}", user_key="t:ana", text=text, reply="", audience=audience, at=NOW + timedelta(days=days))


def _item(n: int, text: str, kind: str = "fact", audience: str = "person", sources: tuple[str, ...] = ("x0",)) -> Item:
    return Item(
        id=f"i{n}", user_key="t:ana", kind=kind, text=text, audience=audience, learned_at=NOW, sources=sources, seq=n
    )  # type: ignore[arg-type]


def _plan(changes: list[dict[str, Any]], items: list[Item], exchanges: list[Exchange]) -> Plan:
    return plan_changes(
        parse_extraction({"changes": changes}),
        user_key="t:ana",
        items=items,
        exchanges=exchanges,
        item_refs={f"M{i}": item.id for i, item in enumerate(items, 1)},
        exchange_refs={f"E{i}": ex.id for i, ex in enumerate(exchanges, 1)},
        now=NOW,
    )


# --- what an extraction does -------------------------------------------------------------------------------


def test_a_move_supersedes_the_old_place_from_the_day_it_was_said() -> None:
    paris = _item(1, "lives in Paris")
    plan = _plan(
        [{"action": "supersede", "items": ["M1"], "text": "lives in Berlin", "sources": ["E1"]}],
        [paris],
        [_exchange(1, "I moved from Paris to Berlin", days=3)],
    )
    [berlin] = plan.added
    assert berlin.text == "lives in Berlin" and berlin.sources == ("x1",)
    assert plan.ended == {"i1": ("superseded", berlin.id, NOW + timedelta(days=3))}


def test_a_fact_said_twice_is_one_fact_with_two_sources_and_the_narrower_audience() -> None:
    cat = _item(1, "Has a cat called Miso.", audience="public:slack:T1")
    plan = _plan(
        [{"action": "add", "kind": "fact", "text": "has a cat called miso", "sources": ["E1"]}],
        [cat],
        [_exchange(1, "my cat Miso is asleep", audience="place:slack:T1:G1")],
    )
    assert not plan.added, "said again: no second item"
    assert plan.sourced == {"i1": (("x0", "x1"), "place:slack:T1:G1")}


def test_duplicated_and_contradictory_extractions_leave_one_consistent_model() -> None:
    exchanges = [_exchange(1, "I love jazz piano"), _exchange(2, "I work at Acme")]
    plan = _plan(
        [
            {"action": "add", "kind": "interest", "text": "jazz piano", "sources": ["E1"]},
            {"action": "add", "kind": "interest", "text": "Jazz piano!", "sources": ["E1", "E2"]},  # duplicated
            {"action": "add", "kind": "fact", "text": "works at Acme", "sources": ["E2"]},
            {"action": "retire", "items": ["M9"], "sources": ["E2"]},  # an item it was never shown
            {"action": "add", "kind": "fact", "text": "is a pilot", "sources": ["E7"]},  # no such exchange
            {"action": "add", "kind": "fact", "text": "", "sources": ["E1"]},  # nothing said
            {"action": "merge", "items": ["M1"], "sources": ["E1"]},  # a merge of one
        ],
        [_item(1, "works at Initech")],
        exchanges,
    )
    assert [(i.kind, i.text, i.sources) for i in plan.added] == [
        ("interest", "jazz piano", ("x1", "x2")),
        ("fact", "works at Acme", ("x2",)),
    ]
    assert plan.dropped == 4 and not plan.ended


def test_a_merge_keeps_the_sources_of_both_and_the_audience_they_share() -> None:
    items = [_item(1, "has a dog", audience="public:slack:T1"), _item(2, "the dog is Rex", audience="person")]
    plan = _plan(
        [{"action": "merge", "items": ["M1", "M2"], "text": "has a dog called Rex", "sources": ["E1"]}],
        items,
        [_exchange(1, "Rex is my dog")],
    )
    [merged] = plan.added
    assert merged.sources == ("x0", "x1") and merged.audience == "person", "DM + public: the DM's audience"
    assert {k: v[0] for k, v in plan.ended.items()} == {"i1": "merged", "i2": "merged"}


@pytest.mark.parametrize(
    "garbage",
    [None, "nonsense", [], {"changes": "all of them"}, {"changes": [{"action": "explode"}]}, {"facts": ["x"]}],
)
def test_an_extraction_that_is_not_the_tools_shape_does_not_validate(garbage: Any) -> None:
    with pytest.raises(ValueError):
        parse_extraction(garbage)


def test_the_prompt_lines_carry_no_counts_nor_dates_and_keep_within_their_budget() -> None:
    items = [_item(i, f"fact number {'x' * 40} {i}") for i in range(1, 40)] + [
        _item(99, "prefers short answers", "preference")
    ]
    lines = model_lines(items, budget=120)
    text = "\n".join(lines)
    assert "prefers short answers" in text, "preferences go last when the budget is short"
    assert sum(len(line) for line in lines) // 4 <= 160
    assert "2026" not in text
    assert "fact number" in text and f"{'x' * 40} 1\n" not in text + "\n", "the oldest facts went first"


# --- when learning runs --------------------------------------------------------------------------------------


def _simulate(times: list[float], settings: LearningSettings, horizon: float) -> tuple[int, int]:
    """The scheduler over a timeline of one person's messages: (calls, messages learned)."""
    pending: list[float] = []
    calls = learned = 0
    last_quiet = last_seen = 0.0
    t, i = 0.0, 0
    while t <= horizon:
        while i < len(times) and times[i] <= t:
            pending.append(times[i])
            i += 1
        state = LearningState(
            user_key="p",
            pending=len(pending),
            newest=max(pending, default=0.0),
            oldest=min(pending, default=0.0),
            last_quiet_call=last_quiet,
            last_seen=last_seen,
        )
        why = due(state, t, settings)
        if why is not None:
            calls += 1
            learned += len(pending[: settings.max_exchanges])
            last_seen = max(pending[: settings.max_exchanges])
            pending = pending[settings.max_exchanges :]
            if why == "quiet":
                last_quiet = t
        t += 5.0  # the sweep's period
    return calls, learned


def test_eight_messages_in_a_row_then_a_quiet_minute_are_all_learned_in_two_calls_at_most() -> None:
    settings = LearningSettings()
    burst = [1_000.0 + 10 * n for n in range(8)]
    calls, learned = _simulate(burst, settings, horizon=1_000 + 70 + 65)
    assert learned == 8 and calls == 1, "the batch waits for the burst's pause, and takes all of it"


def test_one_message_every_few_minutes_does_not_cost_a_call_per_message() -> None:
    settings = LearningSettings()
    slow = [1_000.0 + 180 * n for n in range(40)]  # one every three minutes for two hours
    calls, learned = _simulate(slow, settings, horizon=1_000 + 180 * 40 + 2_000)
    assert learned == 40 and calls <= 8, calls


def test_nothing_is_due_while_paused_held_retrying_or_over_the_daily_cap() -> None:
    settings = LearningSettings(daily_tokens=1_000)
    ready = LearningState(user_key="p", pending=6, newest=0.0)
    now = 10_000.0
    assert due(ready, now, settings) == "batch"
    assert due(replace(ready, paused=True), now, settings) is None
    assert due(replace(ready, held_until=now + 1), now, settings) is None
    assert due(replace(ready, retry_at=now + 1), now, settings) is None
    today = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    assert due(replace(ready, day=today, tokens_today=1_000), now, settings) is None
    assert due(replace(ready, day="1970-01-01", tokens_today=1_000), now + 86_400, settings) == "batch", "a new day"


# --- what reactions show -----------------------------------------------------------------------------------


def test_disliked_long_answers_become_a_preference_for_short_ones_that_fades() -> None:
    long = "word " * 400
    reactions = [
        Reaction(interaction_id=f"r{n}", reply=long, score=-1.0, at=NOW - timedelta(days=1), audience="person")
        for n in range(2)
    ]
    [preference] = preferences_from("t:ana", reactions, now=NOW)
    assert preference.text == "prefers short, to-the-point answers" and preference.origin == "feedback"
    assert preference.sources == ("r0", "r1") and "2 reactions for" in preference.evidence
    assert preferences_from("t:ana", reactions, now=NOW + timedelta(days=60)) == [], "evidence fades"
    liked_lists = [
        Reaction(interaction_id="a", reply="Options:\n- one\n- two\n- three", score=1.0, at=NOW, audience="person"),
        Reaction(interaction_id="b", reply="Steps:\n1. this\n2. that", score=1.0, at=NOW, audience="person"),
    ]
    texts = {p.text for p in preferences_from("t:ana", liked_lists, now=NOW)}
    assert "likes answers laid out as bullet lists" in texts
    assert not any("emoji" in t or "code" in t for t in texts), "what the replies lacked says nothing"


# --- with the real stores and the fake Anthropic API ---------------------------------------------------------


@pytest_asyncio.fixture(params=["embedded", "served"])
async def settings(
    request: pytest.FixtureRequest, tmp_path: Path, fake_claude: FakeAnthropic
) -> AsyncIterator[Settings]:
    """Learning is started by each test (`learn`), so that no background sweep takes a scripted answer first; the
    line for someone new is on."""
    extra: dict[str, Any] = {"LEARNING": "false", "CONSENT_NOTE": AssistantSettings().consent_note}
    if request.param == "embedded":
        yield make_settings(tmp_path, fake_claude, **extra)
        return
    async with fresh_postgres() as pg, redis_namespace() as prefix:
        yield make_settings(tmp_path, fake_claude, DATABASE_URL=pg, REDIS_URL=REDIS_URL, REDIS_PREFIX=prefix, **extra)


class Person:
    """Someone talking to Rapport in the console (a DM), through the real turns, inbox and stores."""

    def __init__(self, services: Services, name: str = "ana") -> None:
        self.services = services
        self.out: list[str] = []
        self.console = ConsoleAdapter(
            services.assistant, services.turns, user=name, read_line=_none, write=self.out.append
        )
        self.user = UserRef(platform="console", user_id=name)
        self.key = self.user.key
        self.keys: list[str] = []

    async def say(self, text: str) -> str:
        """Says `text` as the console would (a DM), and returns the answer; `keys` keeps each message's key."""
        before = len(self.out)
        message_id = uuid.uuid4().hex
        event = MessageReceived(
            user=self.user,
            display_name=self.user.user_id,
            text=text,
            conversation_id=self.user.user_id,
            private=True,
            message=MessageRef(platform="console", channel_id=self.user.user_id, message_id=message_id),
        )
        key = f"console:message:{message_id}"
        self.keys.append(key)
        await self._through(Incoming(key=key, event=event))
        return self.out[before:][-1].removeprefix("rapport> ")

    async def change(self, said: int, text: str | None) -> None:
        """Edits (or, with None, deletes) their `said`-th message (from 0)."""
        key = self.keys[said]
        ref = MessageRef(platform="console", channel_id=self.user.user_id, message_id=key.rsplit(":", 1)[1])
        event = MessageChanged(user=self.user, message=ref, original=key, text=text)
        await self._through(Incoming(key=f"console:change:{uuid.uuid4().hex}", event=event))

    async def _through(self, incoming: Incoming) -> None:
        # One console delivery port per process: the one made last prints; this person's is made again to print
        # their answers here.
        self.console = ConsoleAdapter(
            self.services.assistant, self.services.turns, user=self.user.user_id, read_line=_none, write=self.out.append
        )
        done = self.services.assistant.outcomes.expect(incoming.key)
        await self.services.turns.accept(incoming)
        await asyncio.wait_for(done, 10)
        await settled(self.services)

    async def react(self, emoji: str, reply: int, actor: UserRef | None = None) -> None:
        """`actor` (the person by default) reacts on the `reply`-th answer's message (console ids: r<seq>)."""
        who = actor or self.user
        ref = MessageRef(platform="console", channel_id=self.user.user_id, message_id=f"r{reply}")
        key = f"console:reaction:{uuid.uuid4().hex}"
        done = self.services.assistant.outcomes.expect(key)
        await self.services.turns.accept(Incoming(key=key, event=ReactionAdded(actor=who, message=ref, emoji=emoji)))
        await asyncio.wait_for(done, 10)
        await settled(self.services)

    async def learn(self) -> bool:
        return await self.services.assistant.learner.learn(self.key)

    async def waiting(self) -> int:
        return len(await self.services.records.pending_exchanges(self.key, 100))


async def _none() -> str | None:
    return None


async def _until(condition: Callable[[], bool]) -> None:
    async def check() -> bool:
        return condition()

    await eventually(check)


def _ref(body: dict[str, Any], prefix: str, containing: str) -> str:
    """The ref (M… or E…) the learning request gave the line containing this text."""
    text = body["messages"][0]["content"]
    found = re.search(rf"^\s*({prefix}\d+) [^\n]*{re.escape(containing)}", text, re.MULTILINE)
    assert found, f"{containing!r} is not in the learning request"
    return found.group(1)


def _learned_from(fake: FakeAnthropic) -> str:
    return fake.tool_requests[-1]["messages"][0]["content"]


async def test_extraction_adds_supersedes_and_merges_and_prompts_carry_only_what_is_current(
    services: Services, fake_claude: FakeAnthropic
) -> None:
    ana = Person(services)
    first = await ana.say("My cat is called Miso and I love jazz piano")
    assert "`/forget`" in first and "remember" in first, "the first answer says once that Rapport remembers"
    assert "remember" not in await ana.say("I live in Paris, by the way"), "once"
    fake_claude.tool_default = lambda body: {
        "changes": [
            {"action": "add", "kind": "fact", "text": "has a cat called Miso", "sources": [_ref(body, "E", "Miso")]},
            {"action": "add", "kind": "interest", "text": "jazz piano", "sources": [_ref(body, "E", "Miso")]},
            {
                "action": "add",
                "kind": "fact",
                "text": "lives in Paris",
                "about": "home",
                "sources": [_ref(body, "E", "Paris")],
            },
        ]
    }
    assert await ana.learn()
    assert fake_claude.tool_requests[-1]["model"] == "claude-haiku-5-5"
    assert fake_claude.tool_requests[-1]["tool_choice"] == {"type": "tool", "name": "update_person_model"}
    await ana.say("what should I do this weekend?")
    system = fake_claude.system_text()
    assert "has a cat called Miso" in system and "Interests: jazz piano" in system and "lives in Paris" in system
    await ana.say("I moved from Paris to Berlin last week")
    await ana.say("Miso the cat is still my cat, yes")
    fake_claude.tool_default = lambda body: {
        "changes": [
            {
                "action": "supersede",
                "items": [_ref(body, "M", "lives in Paris")],
                "text": "lives in Berlin",
                "sources": [_ref(body, "E", "Berlin")],
            },
            {"action": "add", "kind": "fact", "text": "Has a cat called Miso.", "sources": [_ref(body, "E", "still")]},
        ]
    }
    assert await ana.learn()
    assert "lives in Paris" in _learned_from(fake_claude), "the learning call sees the current model"
    await ana.say("any tips for my neighbourhood?")
    system = fake_claude.system_text()
    assert "lives in Berlin" in system and "Paris" not in system, "only what is current reaches the prompt"
    insights = await services.assistant.insights(ana.key)
    assert insights is not None
    [cat] = [f for f in insights["facts"] if "Miso" in f["text"]]
    assert cat["sources"] == 2, "said twice: one fact, two sources"
    [past] = insights["history"]
    assert past["text"] == "lives in Paris" and past["ended"] == "superseded" and past["until"]
    assert insights["interests"][0] == "jazz piano"
    fake_claude.tool_default = lambda body: {
        "changes": [
            {
                "action": "merge",
                "items": [_ref(body, "M", "Miso"), _ref(body, "M", "jazz piano")],
                "kind": "fact",
                "text": "plays jazz piano to Miso the cat",
                "sources": [_ref(body, "E", "every evening")],
            }
        ]
    }
    await ana.say("I play jazz piano to Miso every evening")
    assert await ana.learn()
    await ana.say("hello")
    system = fake_claude.system_text()
    assert "plays jazz piano to Miso the cat" in system and "has a cat called Miso" not in system
    assert await ana.waiting() == 1, "only what was said since waits"


async def test_garbage_plain_text_errors_and_slowness_change_nothing_and_break_no_answer(
    services: Services, fake_claude: FakeAnthropic
) -> None:
    ana = Person(services)
    await ana.say("I work as a nurse in Leeds")
    services.assistant.learner.settings = replace(services.assistant.learner.settings, deadline=1.0, max_failures=10)
    fake_claude.tool_script.extend(
        [
            Say("Sure! She is a nurse."),  # plain text, no tool call
            Use("nonsense"),
            Use({"changes": [{"action": "explode", "text": "x"}]}),
            Fail(500),
            Fail(500),  # the SDK's retry
            Use({"changes": []}, delay=3.0),  # past the deadline
        ]
    )
    for _ in range(5):
        assert not await ana.learn()
    assert len(fake_claude.tool_requests) >= 5
    assert await services.records.person_items(ana.key, scopes=None, current=False) == []
    assert await ana.waiting() == 1, "nothing learned is lost: the exchange still waits"
    [state] = [s for s in await services.records.learning_due(10) if s.user_key == ana.key]
    assert state.failures == 5 and state.retry_at > datetime.now(UTC).timestamp(), "tried again later"
    assert "Noted" in await ana.say("how are you?"), "answers go on"
    fake_claude.tool_default = lambda body: {
        "changes": [{"action": "add", "kind": "fact", "text": "works as a nurse in Leeds", "sources": ["E1"]}]
    }
    assert await ana.learn()
    await ana.say("hi")
    assert "works as a nurse in Leeds" in fake_claude.system_text()


async def test_a_slow_learning_model_does_not_hold_up_answers(services: Services, fake_claude: FakeAnthropic) -> None:
    ana = Person(services)
    await ana.say("I collect vintage fountain pens")
    fake_claude.tool_script.append(
        Use({"changes": [{"action": "add", "text": "collects fountain pens", "sources": ["E1"]}]}, delay=4.0)
    )
    learning = asyncio.create_task(ana.learn())
    await _until(lambda: len(fake_claude.tool_requests) >= 1)
    reply = await ana.say("which ink should I try?")
    assert reply.startswith("Noted") and not learning.done(), "answered while the learning call was still out"
    assert await learning
    await ana.say("thanks")
    assert "collects fountain pens" in fake_claude.system_text()


async def test_a_restart_in_the_middle_of_a_learning_call_loses_nothing(
    services: Services, fake_claude: FakeAnthropic
) -> None:
    ana = Person(services)
    await ana.say("My daughter Lea starts school in September")
    fake_claude.tool_script.append(
        Use({"changes": [{"action": "add", "text": "should never land", "sources": ["E1"]}]}, delay=30)
    )
    # A process killed mid-call: its lease is not given up, and lapses.
    killed = PersonLearner(
        store=services.records, llm=services.assistant._llm, owner="killed", settings=LearningSettings(lease=1.0)
    )
    call = asyncio.create_task(killed.learn(ana.key))
    await _until(lambda: len(fake_claude.tool_requests) >= 1)
    call.cancel()
    fresh = PersonLearner(store=services.records, llm=services.assistant._llm, owner="next")
    assert not await fresh.learn(ana.key), "the lease still holds"
    await asyncio.sleep(1.1)
    fake_claude.tool_default = lambda body: {
        "changes": [
            {"action": "add", "text": "daughter Lea starts school in September", "sources": [_ref(body, "E", "Lea")]}
        ]
    }
    assert await fresh.learn(ana.key), "the lease lapsed: the next process learns it all"
    items = await services.records.person_items(ana.key, scopes=None)
    assert [i.text for i in items] == ["daughter Lea starts school in September"]
    # A process stopped cleanly (SIGTERM) gives its leases up at once.
    await ana.say("Lea loves dinosaurs")
    fake_claude.tool_script.append(Use({"changes": []}, delay=30))
    stopping = PersonLearner(store=services.records, llm=services.assistant._llm, owner="stopping")
    stopping._running[ana.key] = asyncio.create_task(stopping.learn(ana.key))
    await _until(lambda: len(fake_claude.tool_requests) >= 3)
    await stopping.close()
    fake_claude.tool_default = lambda body: {"changes": []}
    assert await fresh.learn(ana.key) and await ana.waiting() == 0


async def test_pause_stops_learning_and_resume_starts_it_again_from_new_messages(
    services: Services, fake_claude: FakeAnthropic
) -> None:
    ana = Person(services)
    await services.assistant.set_learning(ana.key, paused=True)
    await ana.say("my bank PIN hint is the year of my wedding")
    await ana.say("I am pausing this on purpose")
    assert "Noted" in await ana.say("still there?"), "pausing stops learning, not answers"
    assert await ana.waiting() == 0 and not await ana.learn()
    assert fake_claude.tool_requests == []
    insights = await services.assistant.insights(ana.key)
    assert insights is not None and insights["learning_paused"] is True
    await services.assistant.set_learning(ana.key, paused=False)
    await ana.say("I just adopted a parrot named Kiwi")
    assert await ana.learn()
    asked = _learned_from(fake_claude)
    assert "Kiwi" in asked and "wedding" not in asked and "pausing" not in asked


async def test_forget_leaves_nothing_of_the_model(services: Services, fake_claude: FakeAnthropic) -> None:
    ana = Person(services)
    await ana.say("I am allergic to peanuts")
    fake_claude.tool_default = lambda body: {
        "changes": [{"action": "add", "text": "allergic to peanuts", "sources": ["E1"]}]
    }
    assert await ana.learn()
    await services.assistant.forget(ana.key)
    assert await services.records.person_items(ana.key, scopes=None, current=False) == []
    assert not await services.records.is_paused(ana.key)
    assert await services.assistant.insights(ana.key) is None
    first = await ana.say("hello again")
    assert "remember" in first, "someone forgotten is met as someone new"
    assert "peanuts" not in fake_claude.system_text()


async def test_the_askers_reactions_change_the_next_prompt_and_a_strangers_do_not(
    services: Services, fake_claude: FakeAnthropic
) -> None:
    ana = Person(services)
    long = "Here is a thorough answer. " * 60
    for n in range(2):
        fake_claude.script.append(Say(long))
        await ana.say(f"tell me about topic {n}")
    stranger = UserRef(platform="console", user_id="bo")
    for seq in (1, 2):
        await ana.react("👎", seq, actor=stranger)
    await ana.say("and another?")
    assert "prefers short" not in fake_claude.system_text(), "a stranger's reactions say nothing about Ana"
    for seq in (1, 2):
        await ana.react("👎", seq)
    await ana.say("one more?")
    assert "prefers short, to-the-point answers" in fake_claude.system_text()
    insights = await services.assistant.insights(ana.key)
    assert insights is not None
    [preference] = insights["preferences"]
    assert preference["from"] == "feedback" and "evidence" in preference


# --- privacy by audience, with the real slack-bolt and discord.py ---------------------------------------------


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    """A learning model that keeps everything said as a fact."""
    text = body["messages"][0]["content"]
    said = re.findall(r"^(E\d+) \([^)]*\) they said: (.*)$", text, re.MULTILINE)
    return {
        "changes": [{"action": "add", "kind": "fact", "text": f"said {words}", "sources": [ref]} for ref, words in said]
    }


async def _learn_all(services: Services) -> None:
    """Learn until nothing waits."""
    while states := [s for s in await services.records.learning_due(50) if s.pending]:
        for state in states:
            assert await services.assistant.learner.learn(state.user_key)


async def test_slack_a_fact_from_a_dm_or_a_private_channel_never_reaches_a_wider_prompt(
    slack: tuple[Any, FakeSlackAPI],  # noqa: F811 - the fixture
    services: Services,
    fake_claude: FakeAnthropic,
) -> None:
    client, api = slack
    fake_claude.tool_default = _echo
    await _say(client, api, services, "D1", "my sister Ines is moving in with me")
    await _say(client, api, services, "G1", "our team codename is Bluebird")
    await _learn_all(services)
    first, second = (request["messages"][0]["content"] for request in fake_claude.tool_requests)
    assert "Ines" in first and "Bluebird" not in first, "one learning call per audience"
    assert "Bluebird" in second and "Ines" not in second, "a private channel's call never sees the DM's facts"
    await _say(client, api, services, "C1", "hello everyone")
    system = fake_claude.system_text()
    assert "Ines" not in system and "Bluebird" not in system, "DM and private channel -> public channel: never"
    await _say(client, api, services, "G1", "hi team")
    system = fake_claude.system_text()
    assert "said our team codename is Bluebird" in system and "Ines" not in system
    await _say(client, api, services, "D1", "hi me")
    system = fake_claude.system_text()
    assert "said my sister Ines" in system and "Bluebird" in system, "the person's DM: all of theirs"


async def test_discord_a_fact_from_another_server_never_reaches_this_ones_prompt(
    services: Services,
    two_servers: FakeDiscord,  # noqa: F811 - the fixture
    fake_claude: FakeAnthropic,
) -> None:
    fake = two_servers
    fake_claude.tool_default = _echo
    async with running(services, fake) as adapter:
        await fake.until(lambda: adapter.connected)
        alice = fake.user(fake.snowflake(), "Alice")
        general, lobby = _channel(fake, 0, 0), _channel(fake, 1, 0)
        await _mention(fake, services, alice, general, "I run the chess club on Thursdays")
        await _learn_all(services)
        await _mention(fake, services, alice, lobby, "hello there")
        assert "chess club" not in fake_claude.system_text(), "server A -> server B: never"
        await _mention(fake, services, alice, general, "hello again")
        assert "said I run the chess club on Thursdays" in fake_claude.system_text(), "the same server: yes"


# --- edits and deletions --------------------------------------------------------------------------------------


async def _items_with(services: Services, person: str, text: str) -> list[Item]:
    return [i for i in await services.records.person_items(person, scopes=None) if text in i.text]


async def test_discord_a_deleted_message_leaves_the_model_recall_and_the_conversation(
    services: Services,
    two_servers: FakeDiscord,  # noqa: F811 - the fixture
    fake_claude: FakeAnthropic,
) -> None:
    fake = two_servers
    fake_claude.tool_default = _echo
    async with running(services, fake) as adapter:
        await fake.until(lambda: adapter.connected)
        alice = fake.user(fake.snowflake(), "Alice")
        person, dm = f"discord:{alice['id']}", fake.dm_channel(alice)
        secret = await fake.say(alice, "my locker code is 4417", channel_id=dm)
        await fake.until(lambda: len(fake_claude.requests) == 1)
        await fake.say(alice, "and my gym is on Elm Street", channel_id=dm)
        await fake.until(lambda: len(fake_claude.requests) == 2)
        await settled(services)
        await _learn_all(services)
        await fake.say(alice, "what is my locker code?", channel_id=dm)
        await fake.until(lambda: len(fake_claude.requests) == 3)
        assert "said my locker code is 4417" in fake_claude.system_text()
        await settled(services)
        await fake.delete_message(secret)

        async def gone() -> bool:
            return not await _items_with(services, person, "4417")

        await eventually(gone)
        await settled(services)
        await fake.say(alice, "do you remember my locker code?", channel_id=dm)
        await fake.until(lambda: len(fake_claude.requests) == 4)
        prompt = fake_claude.prompt_text()
        assert "4417" not in prompt, "the model, recall and the conversation so far have all let it go"
        assert "said and my gym is on Elm Street" in prompt, "what was said in other messages stays"
        history = await services.inbox.history(f"discord::{dm}", 20)
        assert history and not any("4417" in turn.text for turn in history), "nor the inbox's copy of the talk"
        stranger = fake.user(fake.snowflake(), "Mallory")
        kept = await fake.say(alice, "my bike is a red Bianchi", channel_id=dm)
        await fake.until(lambda: len(fake_claude.requests) == 5)
        await settled(services)
        await fake.edit_message(dict(kept, author=stranger), "my bike is stolen")
        await settled(services)
        assert "Bianchi" in (await services.records.said(interaction_id_for(f"discord:message:{dm}:{kept['id']}")))[1]


async def test_slack_an_edited_message_is_learned_again_in_its_new_words(
    slack: tuple[Any, FakeSlackAPI],  # noqa: F811 - the fixture
    services: Services,
    fake_claude: FakeAnthropic,
) -> None:
    client, api = slack
    fake_claude.tool_default = _echo
    person, ts = "slack:T1:U123", "1712400555.000001"
    said = copy.deepcopy(payload("message_im"))
    said["event"] |= {"text": "I live in Rome", "ts": ts, "event_ts": ts}
    said["event_id"] = "EvROME"
    await send_event(client, said)
    await api.wait_for(lambda: any("Rome" in args.get("text", "") for args in api.posted()))
    await settled(services)
    await _learn_all(services)
    [rome] = await _items_with(services, person, "Rome")
    assert rome.sources == (interaction_id_for(message_key("T1", "D1", ts)),)
    edited = copy.deepcopy(payload("message_im"))
    edited["event"] = {
        "type": "message",
        "subtype": "message_changed",
        "channel": "D1",
        "channel_type": "im",
        "hidden": True,
        "ts": "1712409999.000001",
        "event_ts": "1712409999.000001",
        "message": {"type": "message", "user": "U123", "text": "I live in Milan", "ts": ts, "edited": {}},
        "previous_message": {"type": "message", "user": "U123", "text": "I live in Rome", "ts": ts},
    }
    edited["event_id"] = "EvEDIT1"
    await send_event(client, edited)
    await settled(services)

    async def relearnable() -> bool:
        return len(await services.records.pending_exchanges(person, 10)) == 1

    await eventually(relearnable)
    assert not await _items_with(services, person, "Rome"), "what was learned from the old words went"
    await _learn_all(services)
    await _say(client, api, services, "D1", "where do I live?")
    assert "said I live in Milan" in fake_claude.system_text() and "Rome" not in fake_claude.prompt_text()


async def test_slack_the_time_of_day_is_learned_in_the_persons_own_zone_and_never_claimed_without_one(
    slack: tuple[Any, FakeSlackAPI],  # noqa: F811 - the fixture
    services: Services,
    fake_claude: FakeAnthropic,
) -> None:
    client, api = slack
    await _say(client, api, services, "D1", "good evening")  # 10:40 UTC: 19:40 in Tokyo
    insights = await services.assistant.insights("slack:T1:U123")
    assert insights is not None
    assert not [p for p in insights["top_patterns"] if p["kind"] == "active"], "no zone known: no claim"
    api.zones["U456"] = "Asia/Tokyo"
    grace = copy.deepcopy(payload("message_im"))
    grace["event"] |= {"user": "U456", "channel": "D2", "text": "konbanwa", "ts": "1712400000.000900"}
    grace["event_id"] = "EvGRACE"
    await send_event(client, grace)
    await api.wait_for(lambda: any("konbanwa" in args.get("text", "") for args in api.posted()))
    await settled(services)
    insights = await services.assistant.insights("slack:T1:U456")
    assert insights is not None
    assert {"kind": "active", "value": "evening", "count": 1} in insights["top_patterns"]


# --- what the review of the first version found ------------------------------------------------------------


def test_a_merge_written_in_a_dm_call_stays_in_the_dm_even_when_it_merges_public_items() -> None:
    items = [
        _item(1, "works at Acme", audience="public:slack:T1"),
        _item(2, "is in the choir", audience="public:slack:T1"),
    ]
    plan = _plan(
        [{"action": "merge", "items": ["M1", "M2"], "text": "works at Acme, sings in its choir, and told me why"}],
        items,
        [_exchange(1, "the real reason I joined the choir is my therapist's advice")],  # a DM
    )
    [merged] = plan.added
    assert merged.audience == "person", "written while reading a DM: it is read in DMs only"


async def test_a_forget_during_a_learning_call_leaves_nothing_behind(
    services: Services, fake_claude: FakeAnthropic
) -> None:
    ana = Person(services)
    await ana.say("I am saving up for a sailing boat")
    fake_claude.tool_script.append(
        Use({"changes": [{"action": "add", "text": "saving up for a sailing boat", "sources": ["E1"]}]}, delay=1.5)
    )
    learning = asyncio.create_task(ana.learn())
    await _until(lambda: len(fake_claude.tool_requests) >= 1)
    await services.assistant.forget(ana.key)
    assert not await learning, "nothing of it kept"
    assert await services.records.person_items(ana.key, scopes=None, current=False) == []
    assert await services.records.learning_due(10) == []


async def test_a_message_deleted_during_its_learning_call_is_not_learned(
    services: Services, fake_claude: FakeAnthropic
) -> None:
    ana = Person(services)
    await ana.say("my passport number is X1234567")
    await ana.say("I like tea")
    fake_claude.tool_script.append(
        Use(
            {
                "changes": [
                    {"action": "add", "text": "passport number X1234567", "sources": ["E1"]},
                    {"action": "add", "text": "likes tea", "sources": ["E2"]},
                ]
            },
            delay=1.5,
        )
    )
    learning = asyncio.create_task(ana.learn())
    await _until(lambda: len(fake_claude.tool_requests) >= 1)
    await ana.change(0, None)
    assert not await learning, "an exchange changed during the call: nothing of the call is kept"
    assert await services.records.person_items(ana.key, scopes=None, current=False) == []
    fake_claude.tool_default = _echo
    assert await ana.learn(), "what is left is learned again"
    texts = [i.text for i in await services.records.person_items(ana.key, scopes=None)]
    assert texts == ["said I like tea"]


async def test_deleting_the_middle_of_a_chain_of_moves_leaves_one_current_place(
    services: Services, fake_claude: FakeAnthropic
) -> None:
    ana = Person(services)
    moves = ["I live in Paris", "I moved to Berlin", "I moved to Rome"]
    for n, words in enumerate(moves):
        await ana.say(words)
        city = words.rsplit(" ", 1)[1]

        def answer(body: dict[str, Any], city: str = city, first: bool = n == 0) -> dict[str, Any]:
            if first:
                return {"changes": [{"action": "add", "text": f"lives in {city}", "sources": ["E1"]}]}
            current = re.search(r"^(M\d+) \[fact\] lives in", body["messages"][0]["content"], re.MULTILINE)
            assert current is not None
            change = {"action": "supersede", "items": [current.group(1)], "text": f"lives in {city}", "sources": ["E1"]}
            return {"changes": [change]}

        fake_claude.tool_default = answer
        assert await ana.learn()
    await ana.change(1, None)  # "I moved to Berlin" is deleted
    items = await services.records.person_items(ana.key, scopes=None, current=False)
    assert [i.text for i in items if i.current] == ["lives in Rome"]
    [paris] = [i for i in items if "Paris" in i.text]
    rome = next(i for i in items if "Rome" in i.text)
    assert paris.ended == "superseded" and paris.replaced_by == rome.id
    await ana.say("where do I live?")
    assert "lives in Rome" in fake_claude.system_text() and "Paris" not in fake_claude.system_text()


async def test_an_outage_never_gives_up_on_exchanges_and_answers_that_never_hold_do(
    services: Services, fake_claude: FakeAnthropic
) -> None:
    ana = Person(services)
    await ana.say("I breed axolotls")
    services.assistant.learner.settings = replace(services.assistant.learner.settings, max_failures=2)
    for _ in range(3):
        fake_claude.tool_script.extend([Fail(529), Fail(529)])  # overloaded, and the SDK's retry
        assert not await ana.learn()
    assert await ana.waiting() == 1, "an outage is waited out"
    fake_claude.tool_script.extend([Use("nonsense"), Use({"changes": "x"})])
    assert not await ana.learn() and not await ana.learn()
    assert await ana.waiting() == 0, "answers that never hold: given up after max_failures of them"
    assert [s.failures for s in await services.records.learning_due(10)] == []
    await ana.say("and newts")
    [state] = await services.records.learning_due(10)
    assert state.failures == 0 and state.retry_at == 0, "the next exchanges start afresh"


def test_a_new_exclusive_fact_replaces_the_one_beside_which_it_was_added() -> None:
    plan = _plan(
        [
            {
                "action": "add",
                "kind": "fact",
                "text": "works at Initech",
                "about": "Employer",
                "exclusive": True,
                "sources": ["E1"],
            }
        ],
        [replace(_item(1, "works at Acme"), about="employer"), replace(_item(2, "has a dog"), about="pets")],
        [_exchange(1, "I started at Initech today")],
    )
    [initech] = plan.added
    assert plan.ended == {"i1": ("superseded", initech.id, NOW)}, "the employer changes; the dog stays"


def test_an_extraction_that_ends_a_fact_and_says_it_again_keeps_it_ended() -> None:
    plan = _plan(
        [
            {"action": "retire", "items": ["M1"], "sources": ["E1"]},
            {"action": "add", "kind": "fact", "text": "has a sore wrist", "sources": ["E1"]},
        ],
        [_item(1, "has a sore wrist")],
        [_exchange(1, "my wrist is fine again")],
    )
    assert not plan.added and plan.ended["i1"][0] == "retired" and plan.dropped == 1


def test_a_paraphrase_in_another_language_is_kept() -> None:
    plan = _plan(
        [{"action": "add", "kind": "preference", "text": "möchte geduzt werden", "sources": ["E1"]}],
        [],
        [_exchange(1, "Du kannst mich duzen, das ist mir lieber.")],
    )
    assert [i.text for i in plan.added] == ["möchte geduzt werden"]


async def test_the_sweep_finds_who_is_due_and_learns_in_the_background(
    services: Services, fake_claude: FakeAnthropic
) -> None:
    ana = Person(services)
    for n in range(7):
        await ana.say(f"fact number {n} about my garden")
    bo = Person(services, "bo")
    await bo.say("hello")
    await services.records.set_paused(bo.key, True)
    learner = services.assistant.learner
    now, cap = datetime.now(UTC).timestamp(), learner.settings.daily_tokens
    states = await services.records.learning_due(10, now=now, day=day_of(now), daily_tokens=cap)
    assert [s.user_key for s in states] == [ana.key], "bo is paused: nothing of his waits"
    await asyncio.sleep(0.3)  # twice her pace: her batch is due
    assert await learner.sweep() == 1
    await learner.settle()
    assert await ana.waiting() == 0 and len(fake_claude.tool_requests) == 1
    assert "learning" not in services.health.problems()
    await ana.say("and one more")
    now = datetime.now(UTC).timestamp()
    [state] = await services.records.learning_due(10, now=now, day=day_of(now), daily_tokens=cap)
    assert state.tokens_today > 0 and state.day == day_of(now), "the call's tokens count"
    capped = await services.records.learning_due(10, now=now, day=day_of(now), daily_tokens=state.tokens_today)
    assert capped == [], "past the day's cap: left for tomorrow"
    tomorrow = now + 86_400
    assert len(await services.records.learning_due(10, now=tomorrow, day=day_of(tomorrow), daily_tokens=1)) == 1
