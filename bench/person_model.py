"""The person model, measured on a held-out dialogue set (bench/data/person_dialogues.json, issue 14).

The dialogues are replayed through the real stack (inbox, turns, stores, the real SDK against a fake Anthropic
API in this process). The learning model's answers are scripted from the dataset's annotations: the script reads
the learning request's lines (`M1 [fact] lives in Paris`, `E1 (…) they said: …`), maps each exchange back to the
message it came from by its words and answers with the annotated changes, citing the right refs; a seeded share
of the calls gets an error injected (wrong, contradictory, duplicated or malformed extractions), so that what is
measured is what the code does with imperfect extraction.

Learning is driven in simulated time: the dataset's timestamps are the clock of the pure scheduler
(core.learner.due, with each person's waiting count and failures read from the store), and a learning call is made
through the real PersonLearner.learn whenever the scheduler says one is due (a failed call is retried at the next
due point, after core.learner.retry_pause). At each checkpoint the person sends a probe and the prompt Claude got
is read: which current facts are in it, and whether anything superseded is.

Also: the scheduler alone over the dataset's timeline (calls per 100 messages, how long a message waits to be
learned from), and answer latency with learning on (a learning model 10x slower than the answer model, in a
process of its own) against off, in alternating rounds.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.platform import PLATFORM, BenchDelivery, ask
from bench.stack import stack_on
from bench.stats import percentile, summary_ms
from bench.workload import message_for
from bot.wiring import Services
from core.entries import Entry, Incoming, interaction_id_for
from core.events import MessageReceived, MessageRef, ReactionAdded, UserRef
from core.learner import LearningSettings, day_of, due, retry_pause
from core.ports import LearningState
from tests.fakes.anthropic_api import Fail, FakeAnthropic, Say
from tests.fakes.anthropic_api import _tokens as request_tokens

__all__ = ["load_dialogues", "measure_person_model", "model_items", "simulate_schedule"]

ROOT = Path(__file__).resolve().parent.parent
HERE = "pm"  # the replay's platform (its own delivery port, which keeps each reply's message id for reactions)


def norm(text: str) -> str:
    """Case and punctuation aside (how a fact is found in a prompt)."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


# --- the dataset ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    person: str
    id: str
    session: int
    at: float
    text: str
    annotations: tuple[dict[str, str], ...] = ()
    reply: str | None = None
    reaction: str | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    person: str
    at: float
    current: tuple[str, ...]
    shown: tuple[str, ...]
    gone: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    name: str
    language: str
    pacing: str
    probe: str
    messages: tuple[Message, ...]
    checkpoints: tuple[Checkpoint, ...]
    sessions: int


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def load_dialogues(path: Path, *, people: Sequence[str] | None = None, sessions: int | None = None) -> list[Person]:
    """The dataset (optionally some people, their first `sessions` sessions and the checkpoints before the next),
    checked against itself: each checkpoint's current facts are exactly what its annotations make true by then."""
    raw = json.loads(path.read_text())
    found: list[Person] = []
    for p in raw["people"]:
        if people is not None and p["id"] not in people:
            continue
        kept = p["sessions"][:sessions] if sessions else p["sessions"]
        dropped = p["sessions"][len(kept) :]
        until = _epoch(dropped[0]["messages"][0]["at"]) if dropped else math.inf
        messages = tuple(
            Message(
                person=p["id"],
                id=m["id"],
                session=s["session"],
                at=_epoch(m["at"]),
                text=m["text"],
                annotations=tuple(m.get("annotations", ())),
                reply=m.get("reply"),
                reaction=m.get("reaction"),
            )
            for s in kept
            for m in s["messages"]
        )
        checkpoints = tuple(
            Checkpoint(
                person=p["id"],
                at=_epoch(c["at"]),
                current=tuple(c["current"]),
                shown=tuple(c.get("shown", ())),
                gone=tuple(c.get("gone", ())),
            )
            for c in p["checkpoints"]
            if _epoch(c["at"]) < until
        )
        found.append(
            Person(
                id=p["id"],
                name=p["name"],
                language=p["language"],
                pacing=p["pacing"],
                probe=p["probe"],
                messages=messages,
                checkpoints=checkpoints,
                sessions=len(kept),
            )
        )
    texts = Counter(m.text for person in found for m in person.messages)
    if twice := [t for t, n in texts.items() if n > 1]:
        raise ValueError(f"messages must be unique (they are found again by their words): {twice[:3]}")
    for person in found:
        _check(person)
    return found


def _check(person: Person) -> None:
    """The checkpoints agree with the annotations (a typo in either would measure the dataset, not the code)."""
    current: dict[str, str] = {}
    ended: set[str] = set()
    events = sorted([(m.at, 0, m) for m in person.messages] + [(c.at, 1, c) for c in person.checkpoints])
    for _, _, event in events:
        if isinstance(event, Message):
            for note in event.annotations:
                if "add" in note:
                    current[norm(note["add"])] = note["add"]
                    continue
                old = note.get("supersede") or note.get("retire") or ""
                if norm(old) not in current:
                    raise ValueError(f"{event.id}: {old!r} is not current, so it cannot end")
                del current[norm(old)]
                ended.add(norm(old))
                if "by" in note:
                    current[norm(note["by"])] = note["by"]
            continue
        assert isinstance(event, Checkpoint)
        said = {norm(t) for t in event.current}
        if said != set(current):
            raise ValueError(
                f"{person.id} checkpoint {event.at}: missing {sorted(set(current) - said)}, "
                f"extra {sorted(said - set(current))}"
            )
        if wrong := [t for t in event.gone if norm(t) not in ended or norm(t) in current]:
            raise ValueError(f"{person.id} checkpoint {event.at}: not gone: {wrong}")


# --- what the prompt shows -------------------------------------------------------------------------------------


def model_items(system: str) -> list[str]:
    """The items of the person's model in a system prompt (core.context's block: "- text" lines under Facts and
    Preferences, and "Interests: a; b")."""
    block = next((b for b in system.split("\n\n") if b.startswith("What you know about ")), "")
    items: list[str] = []
    for line in block.splitlines()[1:]:
        if line.startswith("- "):
            items.append(line[2:])
        elif line.startswith("Interests: "):
            items += line.removeprefix("Interests: ").split("; ")
    return items


_FILLER = (
    "The short version is that it depends on a few things you already know better than I do, so I will walk through "
    "them in order and say why each one matters before suggesting what to try first. "
)


def reply_text(shape: str, about: str) -> str:
    """An answer of the shape a reaction is about (core.feedback: short < 500 characters, long > 1,200)."""
    if shape == "short":
        return f"In short: start simple with {about[:60]!r}, then adjust."
    if shape == "list":
        steps = [
            "Start with the smallest change that could work and see what it does",
            "Write down what you tried, so that the next step builds on it",
            "Check the one thing most likely to be wrong before anything else",
            "Ask someone who has done it before, it saves a lot of time",
            "Leave a margin of time for the part you have not done yet",
            "Keep the old way around until the new one has proved itself",
        ]
        return "Here is how I would go about it:\n" + "\n".join(f"- {s}." for s in steps) + "\nGood luck with it!"
    return (_FILLER * 9).strip()


# --- the learning model, scripted -------------------------------------------------------------------------------

_M_LINE = re.compile(r"^(M\d+) \[(fact|preference|interest)\] (.*)$", re.MULTILINE)
_E_LINE = re.compile(r"^(E\d+) \(\d{4}-\d{2}-\d{2}\) they said: (.*)$", re.MULTILINE)

WRONG = ("never_said", "unknown_exchange", "unknown_item", "miscited")
CONTRADICTORY = ("add_beside_old", "add_beside_old_unmarked", "end_then_add_again")
DUPLICATED = ("same_add_twice", "known_again_recased")
MALFORMED = ("not_the_tool_shape", "one_invalid_change", "plain_text", "server_error")
CATEGORIES = {"wrong": WRONG, "contradictory": CONTRADICTORY, "duplicated": DUPLICATED, "malformed": MALFORMED}
NEVER_SAID = (
    "owns a sailing boat",
    "is afraid of flying",
    "has three brothers",
    "plays the bagpipes",
    "lives on a houseboat",
    "collects vintage radios",
    "is allergic to cats",
    "speaks fluent Icelandic",
)


def _recased(text: str, n: int) -> str:
    """The same item in other casing and punctuation (same_text says it is the same)."""
    return text.upper() + "!" if n % 2 else text[:1].swapcase() + text[1:] + "."


class ScriptedLearningModel:
    """`tool_default` for the fake API: the annotated changes of the exchanges in the request, with the error
    `plan` chose for this call (if any)."""

    def __init__(self, people: Sequence[Person], *, rate: float, seed: int) -> None:
        self.by_text = {m.text: m for p in people for m in p.messages}
        self.rate = rate
        self.rng = random.Random(seed)
        self.pending: str | None = None
        self.last_batch: list[Message] = []
        self.injected: Counter[str] = Counter()
        self.never_said: set[str] = set()  # accepted by design: nothing in the request contradicts them
        self.must_drop: set[str] = set()  # name what the request does not have: must never be kept
        self.lost: set[str] = set()  # true changes cited wrongly (dropped, so not learned)
        self.spoiled: dict[str, str] = {}  # item text -> the error that kept its ending from being applied
        self.calls = 0

    # what the annotations say, as changes to the model shown ------------------------------------------------

    def clean(
        self, items: Sequence[tuple[str, str, str]], exchanges: Sequence[tuple[str, str]]
    ) -> list[dict[str, Any]]:
        known = {norm(text): (ref, kind, text) for ref, kind, text in items}
        changes: list[dict[str, Any] | None] = []
        new: dict[str, int] = {}  # normalised text -> the change that makes it current
        for ref, said in exchanges:
            message = self.by_text.get(said.strip())
            for note in message.annotations if message else ():
                if "add" in note:
                    text, n = note["add"], norm(note["add"])
                    if n in new:
                        changes[new[n]]["sources"].append(ref)  # type: ignore[index]
                    elif n not in known:  # a fact already known is not added again
                        changes.append(
                            {"action": "add", "kind": note.get("kind", "fact"), "text": text, "sources": [ref]}
                            | _marks(note)
                        )
                        new[n] = len(changes) - 1
                    continue
                old = norm(note.get("supersede") or note.get("retire") or "")
                by = note.get("by")
                if old in new:  # said and changed within this batch: only the outcome is kept
                    i = new.pop(old)
                    change = changes[i]
                    assert change is not None
                    if by is not None:
                        change["text"] = by
                        change["sources"].append(ref)
                        new[norm(by)] = i
                    elif change["action"] == "add":
                        changes[i] = None
                    else:
                        changes[i] = {
                            "action": "retire",
                            "items": change["items"],
                            "sources": [*change["sources"], ref],
                        }
                elif old in known:
                    item_ref = known.pop(old)[0]
                    if by is None or norm(by) in known or norm(by) in new:
                        changes.append({"action": "retire", "items": [item_ref], "sources": [ref]})
                    else:
                        kind = note.get("kind", "fact")
                        changes.append(
                            {"action": "supersede", "items": [item_ref], "kind": kind, "text": by, "sources": [ref]}
                            | _marks(note)
                        )
                        new[norm(by)] = len(changes) - 1
                elif by is not None and norm(by) not in known and norm(by) not in new:  # the old one was never kept
                    kind = note.get("kind", "fact")
                    changes.append({"action": "add", "kind": kind, "text": by, "sources": [ref]} | _marks(note))
                    new[norm(by)] = len(changes) - 1
        return [c for c in changes if c is not None]

    # the error for the next call --------------------------------------------------------------------------

    def plan(self, exchange_texts: Sequence[str], item_texts: Sequence[tuple[str, str]]) -> Say | Fail | None:
        """Before a call: whether it gets an error (and which, among those that apply to what it will see); a
        step for the fake's script when the error is not an answer through the tool."""
        self.pending = None
        if self.rng.random() >= self.rate:
            return None
        items = [(f"M{i}", kind, text) for i, (kind, text) in enumerate(item_texts, 1)]
        exchanges = [(f"E{i}", text) for i, text in enumerate(exchange_texts, 1)]
        applies = self._applicable(self.clean(items, exchanges), items)
        category = self.rng.choice([c for c in CATEGORIES if any(v in applies for v in CATEGORIES[c])])
        variant = self.rng.choice([v for v in CATEGORIES[category] if v in applies])
        self.injected[variant] += 1
        if variant == "plain_text":
            return Say("Sure! From what they said, I would note that they like their answers friendly.")
        if variant == "server_error":
            return Fail(500)
        self.pending = variant
        return None

    @staticmethod
    def _applicable(changes: Sequence[dict[str, Any]], items: Sequence[tuple[str, str, str]]) -> set[str]:
        applies = {"never_said", "unknown_exchange", "unknown_item", *MALFORMED}
        if changes:
            applies.add("miscited")
        if any(c["action"] == "supersede" for c in changes):
            applies |= {"add_beside_old", "add_beside_old_unmarked"}
        if any(c["action"] in ("supersede", "retire") for c in changes):
            applies.add("end_then_add_again")
        if any(c["action"] == "add" for c in changes):
            applies.add("same_add_twice")
        if _untouched(changes, items):
            applies.add("known_again_recased")
        return applies

    # the answer --------------------------------------------------------------------------------------------

    def __call__(self, body: dict[str, Any]) -> Any:
        self.calls += 1
        content = body["messages"][0]["content"]
        text = content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)
        items = _M_LINE.findall(text)
        exchanges = _E_LINE.findall(text)
        self.last_batch = [m for _, said in exchanges if (m := self.by_text.get(said.strip())) is not None]
        changes = self.clean(items, exchanges)
        variant, self.pending = self.pending, None
        if variant is None:
            return {"changes": changes}
        return self._inject(variant, changes, items, exchanges)

    def _inject(
        self,
        variant: str,
        changes: list[dict[str, Any]],
        items: Sequence[tuple[str, str, str]],
        exchanges: Sequence[tuple[str, str]],
    ) -> Any:
        rng = self.rng
        item_text = {ref: text for ref, _, text in items}
        some_exchange = rng.choice(exchanges)[0] if exchanges else "E1"
        invented = f"{NEVER_SAID[self.calls % len(NEVER_SAID)]} ({self.calls})"
        if variant == "never_said":
            self.never_said.add(norm(invented))
            changes.append({"action": "add", "kind": "fact", "text": invented, "sources": [some_exchange]})
        elif variant == "unknown_exchange":
            self.must_drop.add(norm(invented))
            changes.append({"action": "add", "kind": "fact", "text": invented, "sources": [f"E{len(exchanges) + 3}"]})
        elif variant == "unknown_item":
            self.must_drop.add(norm(invented))
            changes.append(
                {"action": "supersede", "items": [f"M{len(items) + 5}"], "text": invented, "sources": [some_exchange]}
            )
        elif variant == "miscited":
            change = rng.choice(changes)
            if change.get("text"):
                self.lost.add(norm(change["text"]))
            for ref in change.get("items", ()):
                self.spoiled[norm(item_text[ref])] = variant
            change["sources"] = [f"E{len(exchanges) + 2}"]
        elif variant in ("add_beside_old", "add_beside_old_unmarked"):
            # The new fact added, the old one not named; marked exclusive (with what it is about) as the tool asks,
            # or not even that.
            i = rng.choice([i for i, c in enumerate(changes) if c["action"] == "supersede"])
            old = changes[i]
            self.spoiled[norm(item_text[old["items"][0]])] = variant
            marks = {k: old[k] for k in ("about", "exclusive") if k in old and variant == "add_beside_old"}
            changes[i] = {"action": "add", "kind": old["kind"], "text": old["text"], "sources": old["sources"]} | marks
        elif variant == "end_then_add_again":
            ending = rng.choice([c for c in changes if c["action"] in ("supersede", "retire")])
            kinds = {ref: kind for ref, kind, _ in items}
            for ref in ending["items"]:
                self.spoiled[norm(item_text[ref])] = variant
                changes.append(
                    {"action": "add", "kind": kinds[ref], "text": item_text[ref], "sources": list(ending["sources"])}
                )
        elif variant == "same_add_twice":
            twin = dict(rng.choice([c for c in changes if c["action"] == "add"]))
            twin["text"] = _recased(twin["text"], self.calls)
            changes.append(twin)
        elif variant == "known_again_recased":  # an item this extraction leaves current (else: end then add again)
            ref, kind, text = rng.choice(_untouched(changes, items))
            changes.append(
                {"action": "add", "kind": kind, "text": _recased(text, self.calls), "sources": [some_exchange]}
            )
        elif variant == "not_the_tool_shape":
            return rng.choice(["nonsense", {"changes": "all of them"}, {"facts": [c.get("text") for c in changes]}])
        elif variant == "one_invalid_change":
            changes.append({"action": "explode", "text": "everything"})
        return {"changes": changes}


def _marks(note: dict[str, Any]) -> dict[str, Any]:
    """What the annotation says the fact is about, and whether only one such is true at a time."""
    return {k: note[k] for k in ("about", "exclusive") if k in note}


def _untouched(changes: Sequence[dict[str, Any]], items: Sequence[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    ended = {ref for c in changes for ref in c.get("items", ())}
    return [item for item in items if item[0] not in ended]


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    """The latency run's learning model: every exchange kept as a fact."""
    content = body["messages"][0]["content"]
    said = _E_LINE.findall(content if isinstance(content, str) else "")
    return {"changes": [{"action": "add", "kind": "fact", "text": f"said {t[:80]}", "sources": [r]} for r, t in said]}


# --- the scheduler in simulated time ---------------------------------------------------------------------------


_STATE_FIELDS = {f.name for f in fields(LearningState)}


@dataclass(slots=True)
class Clock:
    """One person's learning as the scheduler sees it, on the dataset's clock."""

    key: str
    waiting: list[float] = field(default_factory=list)  # when each waiting exchange was said, oldest first
    last_quiet: float = 0.0
    last_seen: float = 0.0  # when the newest exchange learned from was said
    retry_at: float = 0.0
    failures: int = 0
    day: str = ""
    tokens_today: int = 0

    def state(self) -> LearningState:
        known = {
            "user_key": self.key,
            "pending": len(self.waiting),
            "newest": max(self.waiting, default=0.0),
            "oldest": min(self.waiting, default=0.0),
            "retry_at": self.retry_at,
            "last_quiet_call": self.last_quiet,
            "last_seen": self.last_seen,
            "day": self.day,
            "tokens_today": self.tokens_today,
            "failures": self.failures,
        }
        # Only what this revision's scheduler reads (the state grows as the scheduler learns more about pacing).
        return LearningState(**{k: v for k, v in known.items() if k in _STATE_FIELDS})


def next_due(clock: Clock, now: float, settings: LearningSettings) -> float:
    """The first sweep (every `poll` seconds) at or after `now` at which core.learner.due says a call is due."""
    if not clock.waiting:
        return math.inf
    poll = settings.poll

    def tick(t: float) -> float:
        return math.ceil(t / poll - 1e-9) * poll

    state = clock.state()
    if state.pending >= settings.batch:
        base = state.retry_at
    else:
        base = max(state.retry_at, state.newest + settings.quiet, state.last_quiet_call + settings.cooldown)
    t = max(tick(now), tick(base))
    for _ in range(10_000):
        if due(state, t, settings) is not None:
            return t
        if state.day == day_of(t) and state.tokens_today >= settings.daily_tokens:
            t = tick((t // 86_400 + 1) * 86_400)  # the day's cap: the next sweep after midnight (UTC)
        else:
            t += poll
    return math.inf


def simulate_schedule(people: Sequence[Person], settings: LearningSettings) -> dict[str, Any]:
    """The scheduler alone over the dataset's timestamps, every call learning what waits (no failures): calls per
    100 messages, and how long a message waits before a call reads it."""
    calls = quiet_calls = 0
    waits: list[float] = []
    messages = 0
    for person in people:
        clock = Clock(key=person.id)
        times = sorted(m.at for m in person.messages)
        messages += len(times)
        i, now = 0, times[0] if times else 0.0
        while i < len(times) or clock.waiting:
            arrival = times[i] if i < len(times) else math.inf
            at = next_due(clock, now, settings)
            if arrival <= at:
                now = arrival
                clock.waiting.append(arrival)
                i += 1
                continue
            now = at
            why = due(clock.state(), now, settings)
            taken, clock.waiting = clock.waiting[: settings.max_exchanges], clock.waiting[settings.max_exchanges :]
            clock.last_seen = max(taken)
            waits += [now - t for t in taken]
            calls += 1
            if why == "quiet":
                quiet_calls += 1
                clock.last_quiet = now
    return {
        "messages": messages,
        "calls": calls,
        "quiet_calls": quiet_calls,
        "calls_per_100_messages": round(100 * calls / messages, 1) if messages else None,
        "messages_per_call": round(messages / calls, 2) if calls else None,
        "wait_s": {
            "p50": round(percentile(waits, 50), 1),
            "p95": round(percentile(waits, 95), 1),
            "max": round(max(waits, default=0.0), 1),
        },
    }


# --- the stack ----------------------------------------------------------------------------------------------


def _stack(claude_url: str, *, model: object, postgres: bool) -> AbstractAsyncContextManager[Services]:
    """bench.stack's services with a Claude of our choosing, learning not started (this module drives it)."""
    return stack_on(claude_url, model=model, postgres=postgres, LEARNING=False)


class _Kept(BenchDelivery):
    """BenchDelivery that keeps the message id of each reply, so that the person can react on it."""

    def __init__(self, entry: Entry, refs: dict[str, MessageRef]) -> None:
        super().__init__(entry)
        self._refs = refs

    def _ref(self) -> MessageRef:
        return MessageRef(platform=HERE, channel_id=f"dm-{self._entry.person}", message_id=f"r{self._entry.seq}")

    async def deliver(self, text: str, *, placeholder: Sequence[MessageRef]) -> list[MessageRef]:
        self._refs[self._entry.key] = ref = self._ref()
        return [ref]


async def _settled(services: Services, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while services.turns.serving or services.assistant.pending:
        if time.monotonic() > deadline:
            raise TimeoutError("the stack did not settle")
        await asyncio.sleep(0.005)


# --- the replay ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Truth:
    """What the annotations make true for one person, as the replay goes."""

    current: dict[str, str] = field(default_factory=dict)
    ended_by: dict[str, str] = field(default_factory=dict)  # normalised text -> the message that ended it
    said_by: dict[str, str] = field(default_factory=dict)  # normalised text -> the message that last said it

    def hear(self, message: Message) -> None:
        for note in message.annotations:
            if "add" in note:
                self.current[norm(note["add"])] = note["add"]
                self.said_by[norm(note["add"])] = message.id
                continue
            old = norm(note.get("supersede") or note.get("retire") or "")
            self.current.pop(old, None)
            self.ended_by[old] = message.id
            if "by" in note:
                self.current[norm(note["by"])] = note["by"]
                self.said_by[norm(note["by"])] = message.id


class Replay:
    def __init__(
        self,
        services: Services,
        fake: FakeAnthropic,
        people: Sequence[Person],
        model: ScriptedLearningModel,
        settings: LearningSettings,
    ) -> None:
        self.services = services
        self.fake = fake
        self.people = {p.id: p for p in people}
        self.model = model
        self.settings = settings
        self.refs: dict[str, MessageRef] = {}
        services.assistant.deliver_with(HERE, lambda entry: _Kept(entry, self.refs))
        self.clocks = {p.id: Clock(key=UserRef(platform=HERE, user_id=p.id).key) for p in people}
        self.truth = {p.id: Truth() for p in people}
        self.texts_of = {
            p.id: {
                norm(n[k])
                for m in p.messages
                for n in m.annotations
                for k in ("add", "supersede", "by", "retire")
                if k in n
            }
            for p in people
        }
        self.learned: set[str] = set()
        self.now = 0.0
        self.calls: list[dict[str, Any]] = []
        self.prompts = 0
        self.superseded: list[dict[str, Any]] = []  # prompts with an item whose ending was learned from
        self.stale = 0  # prompts with an item ended in words, not yet learned from
        self.duplicates = 0
        self.never_said_prompts = 0
        self.must_drop_seen = 0
        self.foreign = 0
        self.checkpoints: list[dict[str, Any]] = []
        self.malformed_changed: list[dict[str, Any]] = []
        self.given_up = 0
        self.reactions = 0
        self.anomalies: list[str] = []

    async def run(self) -> None:
        events: list[tuple[float, int, Message | Checkpoint]] = []
        for person in self.people.values():
            events += [(m.at, 0, m) for m in person.messages] + [(c.at, 1, c) for c in person.checkpoints]
        events.sort(key=lambda e: (e[0], e[1]))
        self.now = events[0][0]
        for at, _, event in events:
            await self._learn_until(at)
            self.now = at
            if isinstance(event, Message):
                await self._say(event)
            else:
                await self._checkpoint(event)
        await self._learn_until(math.inf)  # what still waits after the last message is learned from too

    # learning ------------------------------------------------------------------------------------------------

    async def _learn_until(self, limit: float) -> None:
        while True:
            at, person = min(
                ((next_due(c, self.now, self.settings), p) for p, c in self.clocks.items()), default=(math.inf, "")
            )
            if at > limit or math.isinf(at):
                return
            self.now = at
            await self._learn(person)

    async def _snapshot(self, key: str) -> list[tuple[str, str, str]]:
        items = await self.services.records.person_items(key, scopes=None, current=False)
        return sorted((i.id, i.text, i.ended) for i in items)

    async def _learn(self, person: str) -> None:
        records, learner, fake = self.services.records, self.services.assistant.learner, self.fake
        clock = self.clocks[person]
        quiet = len(clock.waiting) < self.settings.batch
        waiting = await records.pending_exchanges(clock.key, self.settings.max_exchanges)
        shown = [(i.kind, i.text) for i in await records.person_items(clock.key, scopes=None) if i.origin == "said"]
        step = self.model.plan([x.text for x in waiting], shown)
        variant = self.model.pending or (
            "plain_text" if isinstance(step, Say) else "server_error" if isinstance(step, Fail) else None
        )
        if step is not None:
            fake.tool_script.append(step)
        before = await self._snapshot(clock.key)
        requests, tokens = len(fake.tool_requests), learner.tokens
        self.model.last_batch = []
        ok = await learner.learn(clock.key, quiet=quiet)
        made = len(fake.tool_requests) - requests
        if fake.tool_script:
            fake.tool_script.clear()
            self.anomalies.append(f"{person}: a scripted step was not taken")
        spent = learner.tokens - tokens
        day = day_of(self.now)
        clock.tokens_today = (clock.tokens_today if clock.day == day else 0) + spent
        clock.day = day
        state = next((s for s in await records.learning_due(1_000) if s.user_key == clock.key), None)
        left = state.pending if state else 0
        if ok:
            self.learned.update(m.id for m in self.model.last_batch)
            clock.last_seen = max([clock.last_seen, *(m.at for m in self.model.last_batch)])
            clock.failures, clock.retry_at = 0, 0.0
            if quiet:
                clock.last_quiet = self.now
        else:
            clock.failures = state.failures if state else clock.failures + 1
            clock.retry_at = self.now + retry_pause(max(clock.failures, 1))
            if state is None or left < len(clock.waiting):
                self.given_up += len(clock.waiting) - left
        if made == 0:
            self.anomalies.append(f"{person}: learn() made no request")
            clock.retry_at = self.now + self.settings.poll
        clock.waiting = clock.waiting[len(clock.waiting) - left :] if left else []
        if variant in MALFORMED:
            after = await self._snapshot(clock.key)
            if ok or after != before:
                self.malformed_changed.append({"person": person, "variant": variant, "ok": ok})
        self.calls.append(
            {
                "at": self.now,
                "person": person,
                "quiet": quiet,
                "ok": ok,
                "variant": variant,
                "requests": made,
                "tokens": spent,
                "exchanges": len(waiting),
            }
        )

    # talking -------------------------------------------------------------------------------------------------

    async def _send(self, person: Person, text: str, reply: str | None = None) -> tuple[str, str]:
        """One message through the inbox and the person's turn; (its key, the system prompt Claude got)."""
        services = self.services
        if reply:
            self.fake.script.append(Say(reply_text(reply, text)))
        key = f"{HERE}:message:{uuid.uuid4().hex}"
        user = UserRef(platform=HERE, user_id=person.id)
        event = MessageReceived(
            user=user,
            display_name=person.name,
            text=text,
            conversation_id=f"dm-{person.id}",
            private=True,
            message=MessageRef(platform=HERE, channel_id=f"dm-{person.id}", message_id=key),
            sent_at=datetime.now(UTC),
        )
        asked = len(self.fake.requests)
        done = services.assistant.outcomes.expect(key)
        await services.turns.accept(Incoming(key=key, event=event))
        await asyncio.wait_for(done, 60)
        await _settled(services)
        if len(self.fake.requests) != asked + 1:
            raise RuntimeError(f"expected one answer request for {text!r}")
        system = self.fake.system_text()
        self._check_prompt(person.id, model_items(system))
        return key, system

    def _check_prompt(self, person: str, items: Sequence[str]) -> None:
        self.prompts += 1
        truth = self.truth[person]
        shown = [norm(i) for i in items]
        self.duplicates += sum(n - 1 for n in Counter(shown).values() if n > 1)
        ended = [n for n in set(shown) if n in truth.ended_by and n not in truth.current]
        learned = sorted(n for n in ended if truth.ended_by[n] in self.learned)
        if learned:
            self.superseded.append(
                {"person": person, "items": learned, "why": [self.model.spoiled.get(n) for n in learned]}
            )
        if len(ended) > len(learned):
            self.stale += 1
        self.never_said_prompts += any(n in self.model.never_said for n in shown)
        self.must_drop_seen += sum(n in self.model.must_drop for n in shown)
        others = set().union(*(t for p, t in self.texts_of.items() if p != person))
        self.foreign += sum(n in others and n not in self.texts_of[person] for n in shown)

    async def _say(self, message: Message) -> None:
        person = self.people[message.person]
        key, _ = await self._send(person, message.text, message.reply)
        self.truth[person.id].hear(message)
        self.clocks[person.id].waiting.append(message.at)
        if message.reaction:
            await self._react(person, key, message.reaction)

    async def _react(self, person: Person, key: str, emoji: str) -> None:
        services = self.services
        reaction = f"{HERE}:reaction:{uuid.uuid4().hex}"
        done = services.assistant.outcomes.expect(reaction)
        user = UserRef(platform=HERE, user_id=person.id)
        await services.turns.accept(
            Incoming(key=reaction, event=ReactionAdded(actor=user, message=self.refs[key], emoji=emoji))
        )
        self.reactions += bool(await asyncio.wait_for(done, 60))
        await _settled(services)

    async def _checkpoint(self, checkpoint: Checkpoint) -> None:
        person = self.people[checkpoint.person]
        key, system = await self._send(person, person.probe)
        # The probe is not part of the dialogue: what it says is never learned from.
        await self.services.records.skip_exchanges(self.clocks[person.id].key, [interaction_id_for(key)])
        shown = {norm(i) for i in model_items(system)}
        truth = self.truth[person.id]
        missing = []
        for text in checkpoint.current:
            if norm(text) in shown:
                continue
            said_by = truth.said_by.get(norm(text), "")
            why = (
                "waiting"
                if said_by not in self.learned
                else "lost to a miscited change"
                if norm(text) in self.model.lost
                else "unexplained"
            )
            missing.append({"text": text, "why": why})
        missing += [{"text": t, "why": "reactions"} for t in checkpoint.shown if norm(t) not in shown]
        self.checkpoints.append(
            {
                "person": person.id,
                "at": datetime.fromtimestamp(checkpoint.at, UTC).strftime("%Y-%m-%d %H:%M"),
                "said": len(checkpoint.current),
                "said_present": sum(norm(t) in shown for t in checkpoint.current),
                "shown": len(checkpoint.shown),
                "shown_present": sum(norm(t) in shown for t in checkpoint.shown),
                "gone_present": [t for t in checkpoint.gone if norm(t) in shown],
                "missing": missing,
            }
        )

    # figures -------------------------------------------------------------------------------------------------

    def figures(self, slow: set[str]) -> dict[str, Any]:
        messages = sum(len(p.messages) for p in self.people.values())
        said = sum(c["said"] for c in self.checkpoints)
        said_present = sum(c["said_present"] for c in self.checkpoints)
        shown = sum(c["shown"] for c in self.checkpoints)
        shown_present = sum(c["shown_present"] for c in self.checkpoints)

        def per_100(calls: list[dict[str, Any]], count: int) -> dict[str, Any]:
            requests = sum(c["requests"] for c in calls)
            tokens = sum(c["tokens"] for c in calls)
            return {
                "messages": count,
                "learn_calls": len(calls),
                "requests": requests,
                "requests_per_100_messages": round(100 * requests / count, 1) if count else None,
                "tokens_per_100_messages": round(100 * tokens / count) if count else None,
            }

        slow_messages = sum(len(self.people[p].messages) for p in slow)
        bodies = self.fake.tool_requests
        variants = Counter(c["variant"] for c in self.calls if c["variant"])
        missing = [m | {"person": c["person"], "at": c["at"]} for c in self.checkpoints for m in c["missing"]]
        seen: Counter[tuple[str, str, str]] = Counter(
            (s["person"], item, why or "unexplained")
            for s in self.superseded
            for item, why in zip(s["items"], s["why"], strict=True)
        )
        return {
            "messages": messages,
            "reactions_counted": self.reactions,
            "checkpoints": len(self.checkpoints),
            "said": said,
            "said_present": said_present,
            "shown": shown,
            "shown_present": shown_present,
            "current_share": round((said_present + shown_present) / (said + shown), 3) if said + shown else None,
            "said_share": round(said_present / said, 3) if said else None,
            "shown_share": round(shown_present / shown, 3) if shown else None,
            "missing": missing[:40],
            "superseded_at_checkpoints": sum(len(c["gone_present"]) for c in self.checkpoints),
            "prompts_checked": self.prompts,
            "prompts_with_superseded": len(self.superseded),
            "superseded_seen": [
                {"person": person, "item": item, "why": why, "prompts": n} for (person, item, why), n in seen.items()
            ],
            "superseded_by_cause": dict(Counter(why for (_, _, why), n in seen.items() for _ in range(n))),
            "prompts_with_superseded_not_yet_learned": self.stale,
            "duplicate_items_in_prompts": self.duplicates,
            "prompts_with_never_said_items": self.never_said_prompts,
            "dropped_changes_seen_in_prompts": self.must_drop_seen,
            "other_peoples_items_in_prompts": self.foreign,
            "malformed_calls_that_changed_the_model": len(self.malformed_changed),
            "exchanges_given_up": self.given_up,
            "learning": per_100(self.calls, messages)
            | {
                "failed_calls": sum(not c["ok"] for c in self.calls),
                "request_input_tokens": sum(request_tokens(b) for b in bodies),
            },
            "learning_slow_writer": per_100([c for c in self.calls if c["person"] in slow], slow_messages),
            "errors_injected": dict(sorted(variants.items())),
            "calls_with_errors": sum(variants.values()),
            "anomalies": self.anomalies[:20],
        }


async def _replay(people: Sequence[Person], *, model: object, rate: float, seed: int, postgres: bool) -> dict[str, Any]:
    fake = FakeAnthropic()
    await fake.start()
    scripted = ScriptedLearningModel(people, rate=rate, seed=seed)
    fake.tool_default = scripted
    try:
        async with _stack(fake.url, model=model, postgres=postgres) as services:
            settings = services.assistant.learner.settings
            replay = Replay(services, fake, people, scripted, settings)
            started = time.perf_counter()
            await replay.run()
            seconds = time.perf_counter() - started
            slow = {p.id for p in people if p.pacing == "slow"}
            return {"error_rate": rate, "seed": seed, "seconds": round(seconds, 1)} | replay.figures(slow)
    finally:
        await fake.stop()


# --- answer latency, learning on and off --------------------------------------------------------------------


@asynccontextmanager
async def _claude_process(latency: float, learning_latency: float) -> AsyncIterator[str]:
    """The fake API in a process of its own (its CPU is not ours): answers in `latency`, learning calls in
    `learning_latency`, every exchange kept as a fact."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.person_model",
        "serve",
        str(latency),
        str(learning_latency),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        yield (await asyncio.wait_for(process.stdout.readline(), 60)).decode().strip()
    finally:
        process.terminate()
        await process.wait()


async def _people_talking(
    services: Services, *, tag: str, people: int, messages: int, latency: float, seed: int
) -> list[float]:
    """Each person sends `messages` messages, each when the last is answered and a pause of 0.5-3 answer
    latencies has passed; seconds from accept to delivered."""
    rng = random.Random(seed)
    pauses = [[rng.uniform(0.5, 3.0) * latency for _ in range(messages + 1)] for _ in range(people)]
    seconds: list[float] = []

    async def person(i: int) -> None:
        user = UserRef(platform=PLATFORM, user_id=f"{tag}-p{i}")
        await asyncio.sleep(pauses[i][-1])
        for n in range(messages):
            started = time.perf_counter()
            answer = await ask(services, message_for(user, n))
            if answer.ok:
                seconds.append(time.perf_counter() - started)
            await asyncio.sleep(pauses[i][n])

    await asyncio.gather(*(person(i) for i in range(people)))
    return seconds


async def _latency(
    *, model: object, people: int, messages: int, rounds: int, answer_latency: float, postgres: bool, seed: int
) -> dict[str, Any]:
    learning_latency = 10 * answer_latency
    runs: list[dict[str, Any]] = []
    async with (
        _claude_process(answer_latency, learning_latency) as url,
        _stack(url, model=model, postgres=postgres) as services,
    ):
        learner = services.assistant.learner
        off = learner.settings
        on = replace(off, enabled=True, poll=0.5, batch=3, max_exchanges=3, quiet=1.0, cooldown=0.0)
        # Warm: the model, the stores' caches and connections (every run's people are new, so first messages
        # stay cold in every run alike).
        await _people_talking(services, tag="warm", people=people, messages=3, latency=answer_latency, seed=seed)
        await services.assistant.drain(60)
        for i in range(people):
            await services.assistant.set_learning(UserRef(platform=PLATFORM, user_id=f"warm-p{i}").key, paused=True)
        for number in range(rounds):
            for learning in (False, True) if number % 2 == 0 else (True, False):
                tag = f"r{number}{'on' if learning else 'off'}"
                calls = learner.calls
                if learning:
                    learner.settings = on
                    learner.start()
                started = time.perf_counter()
                try:
                    seconds = await _people_talking(
                        services, tag=tag, people=people, messages=messages, latency=answer_latency, seed=seed + number
                    )
                finally:
                    if learning:
                        await learner.close()
                        learner.settings = off
                elapsed = time.perf_counter() - started
                await services.assistant.drain(60)
                for i in range(people):  # nothing of this run waits to be learned in the next one
                    await services.assistant.set_learning(
                        UserRef(platform=PLATFORM, user_id=f"{tag}-p{i}").key, paused=True
                    )
                runs.append(
                    {
                        "round": number,
                        "learning": learning,
                        "seconds": round(elapsed, 1),
                        "answer_ms": summary_ms(seconds),
                        "learning_calls": learner.calls - calls,
                    }
                )

    def mode(learning: bool) -> dict[str, Any]:
        chosen = [r for r in runs if r["learning"] == learning]
        p50 = [r["answer_ms"]["p50"] for r in chosen]
        p95 = [r["answer_ms"]["p95"] for r in chosen]
        return {
            "p50_ms": round(percentile(p50, 50), 2),
            "p95_ms": round(percentile(p95, 50), 2),
            "p50_spread_ms": round(max(p50) - min(p50), 2),
            "p95_spread_ms": round(max(p95) - min(p95), 2),
        }

    summary_off, summary_on = mode(False), mode(True)
    noise = {k: max(summary_off[k], summary_on[k]) for k in ("p50_spread_ms", "p95_spread_ms")}
    difference = {
        "p50_ms": round(summary_on["p50_ms"] - summary_off["p50_ms"], 2),
        "p95_ms": round(summary_on["p95_ms"] - summary_off["p95_ms"], 2),
    }
    return {
        "answer_latency_s": answer_latency,
        "learning_latency_s": learning_latency,
        "people": people,
        "messages_each": messages,
        "rounds": rounds,
        "learning_settings": {
            "poll": on.poll,
            "batch": on.batch,
            "quiet": on.quiet,
            "cooldown": on.cooldown,
            "concurrency": on.concurrency,
        },
        "runs": runs,
        "off": summary_off,
        "on": summary_on,
        "on_minus_off": difference,
        "noise": noise,
        # Learning on is no slower than off beyond what rounds of one mode differ by.
        "within_noise": (
            None
            if rounds < 2
            else difference["p50_ms"] <= noise["p50_spread_ms"] and difference["p95_ms"] <= noise["p95_spread_ms"]
        ),
    }


# --- all of it ----------------------------------------------------------------------------------------------


PACING_ALTERNATIVES: tuple[dict[str, float], ...] = ({}, {"batch": 8}, {"quiet": 600.0}, {"batch": 8, "quiet": 600.0})


def _pooled(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The error runs (one per seed) as one: shares over all their checkpoints, counts summed."""

    def total(key: str) -> int:
        return sum(int(r[key]) for r in runs)

    def share(present: str, expected: str) -> float | None:
        return round(total(present) / total(expected), 3) if total(expected) else None

    def per_100(part: str) -> dict[str, Any]:
        messages = sum(r[part]["messages"] for r in runs)
        requests = sum(r[part]["requests"] for r in runs)
        tokens = sum(r[part]["tokens_per_100_messages"] * r[part]["messages"] / 100 for r in runs)
        return {
            "messages": messages,
            "requests_per_100_messages": round(100 * requests / messages, 1) if messages else None,
            "tokens_per_100_messages": round(100 * tokens / messages) if messages else None,
        }

    causes: Counter[str] = Counter()
    injected: Counter[str] = Counter()
    for r in runs:
        causes.update(r["superseded_by_cause"])
        injected.update(r["errors_injected"])
    return {
        "runs": len(runs),
        "seeds": [r["seed"] for r in runs],
        "current_share": round((total("said_present") + total("shown_present")) / (total("said") + total("shown")), 3),
        "said_share": share("said_present", "said"),
        "shown_share": share("shown_present", "shown"),
        "checkpoint_facts": total("said") + total("shown"),
        "superseded_at_checkpoints": total("superseded_at_checkpoints"),
        "prompts_checked": total("prompts_checked"),
        "prompts_with_superseded": total("prompts_with_superseded"),
        "superseded_by_cause": dict(causes),
        "prompts_with_superseded_not_yet_learned": total("prompts_with_superseded_not_yet_learned"),
        "duplicate_items_in_prompts": total("duplicate_items_in_prompts"),
        "prompts_with_never_said_items": total("prompts_with_never_said_items"),
        "dropped_changes_seen_in_prompts": total("dropped_changes_seen_in_prompts"),
        "other_peoples_items_in_prompts": total("other_peoples_items_in_prompts"),
        "malformed_calls_that_changed_the_model": total("malformed_calls_that_changed_the_model"),
        "exchanges_given_up": total("exchanges_given_up"),
        "learning": per_100("learning"),
        "learning_slow_writer": per_100("learning_slow_writer"),
        "calls": sum(r["learning"]["learn_calls"] for r in runs),
        "calls_with_errors": total("calls_with_errors"),
        "errors_injected": dict(sorted(injected.items())),
    }


async def measure_person_model(config: dict[str, Any]) -> dict[str, Any]:
    from storage.embeddings import default_model_path, load_model

    people = load_dialogues(ROOT / config["dataset"], people=config.get("people"), sessions=config.get("sessions"))
    model = await asyncio.to_thread(load_model, default_model_path())
    postgres = config.get("postgres", True)
    settings = LearningSettings()
    slow = [p for p in people if p.pacing == "slow"]
    pacing = []
    for change in PACING_ALTERNATIVES:
        chosen = replace(settings, **change)  # type: ignore[arg-type]
        pacing.append(
            {
                "settings": change,
                "all": simulate_schedule(people, chosen),
                "slow_writer": simulate_schedule(slow, chosen),
                "bursts": simulate_schedule([p for p in people if p.pacing != "slow"], chosen),
            }
        )
    result: dict[str, Any] = {
        "dataset": {
            "path": config["dataset"],
            "people": len(people),
            "languages": sorted({p.language for p in people}),
            "sessions": sum(p.sessions for p in people),
            "messages": sum(len(p.messages) for p in people),
            "annotations": sum(len(m.annotations) for p in people for m in p.messages),
            "reactions": sum(m.reaction is not None for p in people for m in p.messages),
            "checkpoints": sum(len(p.checkpoints) for p in people),
        },
        "settings": {
            "batch": settings.batch,
            "quiet_s": settings.quiet,
            "cooldown_s": settings.cooldown,
            "poll_s": settings.poll,
            "max_exchanges": settings.max_exchanges,
        }
        | {k: getattr(settings, k) for k in ("quiet_gaps", "max_quiet") if hasattr(settings, k)},  # if paced
        "pacing": pacing,
    }
    rate = config["error_rate"]
    runs = [await _replay(people, model=model, rate=rate, seed=seed, postgres=postgres) for seed in config["seeds"]]
    result["replay"] = {"error_rate": rate, "errors": _pooled(runs), "error_runs": runs}
    if config.get("control"):
        result["replay"]["clean"] = await _replay(people, model=model, rate=0.0, seed=0, postgres=postgres)
    result["latency"] = await _latency(model=model, postgres=postgres, seed=config["seeds"][0], **config["latency"])
    return result


async def _serve(latency: float, learning_latency: float) -> None:
    server = FakeAnthropic(latency=latency)
    server.tool_latency = learning_latency
    server.tool_default = _echo
    await server.start()
    print(server.url, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":  # the latency run's fake API: python -m bench.person_model serve 0.1 1.0
    if sys.argv[1:2] == ["serve"]:
        asyncio.run(_serve(float(sys.argv[2]), float(sys.argv[3])))
