"""The person model: what Rapport knows about someone (facts, preferences, interests), each item with its sources,
its audience and its time, kept current by Claude's extractions (core.learner) and by the person's reactions.

Pure functions over plain values. An extraction is never trusted as given: it is validated as a whole (a reply
that is not the tool's shape changes nothing), and each change is checked against what it names (an unknown
item, an exchange not in the batch): a change that does not hold is dropped and the rest applied. A fact said
again is one item with one more source; a fact that is no longer true is ended, with the time it stopped being
true, and stays for the person's view.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.ports import Scope
from core.privacy import narrowest

__all__ = [
    "EXTRACTION_TOOL",
    "Change",
    "Exchange",
    "Extraction",
    "Item",
    "Plan",
    "buried",
    "buried_mark",
    "learning_request",
    "model_lines",
    "parse_extraction",
    "plan_changes",
    "same_text",
]

Kind = Literal["fact", "preference", "interest"]
KINDS: tuple[Kind, ...] = ("fact", "preference", "interest")
MAX_TEXT = 240
MAX_ABOUT = 60


@dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    """One thing known about a person. `sources` are the interactions it was learned from; `audience` the
    narrowest audience those share (core.privacy); `ended` says why it is no longer current ("superseded",
    "retired", "merged", "deleted"), at `valid_until`."""

    id: str
    user_key: str
    kind: Kind
    text: str
    audience: Scope
    learned_at: datetime
    sources: tuple[str, ...] = ()
    about: str = ""
    origin: Literal["said", "feedback"] = "said"
    evidence: str = ""
    valid_until: datetime | None = None
    ended: str = ""
    replaced_by: str | None = None
    seq: int = 0  # the store's order of learning (a stable order for the prompt)

    @property
    def current(self) -> bool:
        return not self.ended


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """One stored interaction waiting to be learned from."""

    id: str
    user_key: str
    text: str
    reply: str
    audience: Scope
    at: datetime


# --- the tool --------------------------------------------------------------------------------------------------


class Change(BaseModel):
    """One change to the person model, as the learning model proposes it."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    action: Literal["add", "supersede", "retire", "merge"]
    kind: Kind | None = None
    text: str = Field(default="", max_length=2_000)
    about: str = Field(default="", max_length=500)
    items: list[str] = Field(default_factory=list, max_length=20)
    sources: list[str] = Field(default_factory=list, max_length=50)
    exclusive: bool = False


class Extraction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    changes: list[Change] = Field(max_length=60)


EXTRACTION_TOOL: Mapping[str, object] = {
    "name": "update_person_model",
    "description": "Record what the new exchanges teach about the person: changes to their model.",
    "input_schema": {
        "type": "object",
        "properties": {
            "changes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "action": {
                            "type": "string",
                            "enum": ["add", "supersede", "retire", "merge"],
                            "description": "add: new item; supersede: items replaced by `text` (no longer true); "
                            "retire: items no longer true, nothing replaces them; merge: items that say one thing, "
                            "as one item `text`.",
                        },
                        "kind": {"type": "string", "enum": list(KINDS)},
                        "text": {"type": "string", "description": "Short, in the third person, in their words."},
                        "about": {"type": "string", "description": "What it is about, in two or three words."},
                        "exclusive": {
                            "type": "boolean",
                            "description": "Only one such fact is true at a time (where they live, their employer, "
                            "their partner): a new one replaces the current one with the same `about`.",
                        },
                        "items": {"type": "array", "items": {"type": "string"}, "description": "Item ids (M…)."},
                        "sources": {"type": "array", "items": {"type": "string"}, "description": "Exchange ids (E…)."},
                    },
                    "required": ["action"],
                },
            }
        },
        "required": ["changes"],
    },
}

_INSTRUCTIONS = (
    "You keep a model of one person for their personal assistant: facts (who they are, people and pets in their "
    "life, work, places, projects, plans), preferences (how they like answers: length, format, tone, language, "
    "things to avoid) and interests (any topic, in their own words and language). Read the new exchanges and call "
    "update_person_model with the changes they justify, citing the exchanges (E…) each change comes from. Only what "
    "the person said about themselves counts; never what the assistant said, never guesses. A fact that is no "
    "longer true is superseded (by the new one) or retired, never added beside it; a fact already known is not "
    "added again; mark `exclusive` a fact only one of which is true at a time. Write each item from its sources "
    "alone, in words close to theirs. If nothing is worth keeping, send no changes."
)


def _clean(text: str, limit: int) -> str:
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch == " ")
    return " ".join(text.split())[:limit]


def same_text(a: str, b: str) -> bool:
    """Whether two items say the same thing, case, spacing and punctuation aside."""
    return _normal(a) == _normal(b)


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def buried_mark(text: str) -> str:
    """What a deleted item keeps of its words (its tombstone's `evidence`): a digest that recognises them said
    again. (Unsalted: someone who can read the database could confirm a guess of short words; it is no copy.)"""
    return "deleted:" + hashlib.sha256(_normal(text).encode()).hexdigest()[:32]


def buried(text: str, sources: Sequence[str], tombstones: Sequence[Item]) -> bool:
    """Whether the person deleted this: the same words, or words drawn only from exchanges a deleted item was
    learned from (the learner does not extract again what they took away)."""
    mark = buried_mark(text)
    return any(t.evidence == mark or (sources and set(sources) <= set(t.sources)) for t in tombstones)


def learning_request(
    items: Sequence[Item], exchanges: Sequence[Exchange], *, text_chars: int = 1_500, reply_chars: int = 300
) -> tuple[str, str, dict[str, str], dict[str, str]]:
    """The learning call: (system, user text, item refs, exchange refs). Refs are short (M1, E1) so that the
    model copies them right and they cost few tokens; the maps turn them back into ids."""
    item_refs = {f"M{i}": item.id for i, item in enumerate(items, 1)}
    exchange_refs = {f"E{i}": ex.id for i, ex in enumerate(exchanges, 1)}
    known = [f"{ref} [{item.kind}] {item.text}" for ref, item in zip(item_refs, items, strict=True)]
    said = []
    for ref, ex in zip(exchange_refs, exchanges, strict=True):
        line = f"{ref} ({ex.at:%Y-%m-%d}) they said: {ex.text[:text_chars]}"
        if ex.reply:
            line += f"\n   assistant replied: {ex.reply[:reply_chars]}"
        said.append(line)
    user = (
        "Current model:\n"
        + ("\n".join(known) if known else "(empty)")
        + "\n\nNew exchanges, oldest first:\n"
        + "\n".join(said)
    )
    return _INSTRUCTIONS, user, item_refs, exchange_refs


def parse_extraction(payload: object) -> Extraction:
    """The tool's input, validated as a whole; raises ValueError when it is not the tool's shape."""
    try:
        return Extraction.model_validate(payload)
    except ValidationError as exc:
        raise ValueError(f"extraction does not validate: {exc.error_count()} errors") from None


# --- applying it -----------------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Plan:
    """What one extraction does to the stored model: new items, items ended (id -> (why, replaced by, when)), and
    more sources for items said again."""

    added: list[Item] = field(default_factory=list)
    ended: dict[str, tuple[str, str | None, datetime]] = field(default_factory=dict)
    sourced: dict[str, tuple[tuple[str, ...], Scope]] = field(default_factory=dict)
    dropped: int = 0  # changes that did not hold

    @property
    def empty(self) -> bool:
        return not (self.added or self.ended or self.sourced)


def plan_changes(
    extraction: Extraction,
    *,
    user_key: str,
    items: Sequence[Item],
    exchanges: Sequence[Exchange],
    item_refs: Mapping[str, str],
    exchange_refs: Mapping[str, str],
    now: datetime,
    tombstones: Sequence[Item] = (),
) -> Plan:
    """Turn validated changes into a plan, dropping each change that names what is not there, or says again what
    the person deleted (`tombstones`)."""
    by_id = {item.id: item for item in items if item.current}
    by_exchange = {ex.id: ex for ex in exchanges}
    # Whatever the call writes, it wrote reading these exchanges: a merge or a restatement is never read more
    # widely than they were said, whichever items it names.
    read_by = narrowest(ex.audience for ex in exchanges)
    plan = Plan()
    live: dict[str, Item] = dict(by_id)  # current items as the plan goes, new ones included
    sources_of: dict[str, tuple[str, ...]] = {i.id: i.sources for i in by_id.values()}
    ended_texts: list[str] = []  # what this extraction ended (superseded, retired), in its words
    audience_of: dict[str, Scope] = {i.id: i.audience for i in by_id.values()}

    def new_id() -> str:
        return uuid.uuid4().hex

    for change in extraction.changes:
        refs = [item_refs.get(ref.strip()) for ref in change.items]
        targets = [live[ref] for ref in refs if ref is not None and ref in live]
        sources = tuple(dict.fromkeys(x for s in change.sources if (x := exchange_refs.get(s.strip())) in by_exchange))
        text = _clean(change.text, MAX_TEXT)
        about = _clean(change.about, MAX_ABOUT)
        if len(targets) != len(change.items) or len({t.id for t in targets}) != len(targets):
            plan.dropped += 1  # names an item it was not shown, or one ended earlier in this extraction
            continue
        needs = {"add": (0, True), "supersede": (1, True), "retire": (1, False), "merge": (2, False)}[change.action]
        if len(targets) < needs[0] or (change.action == "add" and targets) or (needs[1] and not text):
            plan.dropped += 1
            continue
        if change.action in ("add", "supersede", "retire") and not sources:
            plan.dropped += 1  # no evidence in this batch
            continue
        if change.action in ("add", "supersede") and any(same_text(text, t) for t in ended_texts):
            plan.dropped += 1  # says again what this extraction ended: a contradiction in itself
            continue
        if change.action in ("add", "supersede", "merge") and buried(text, sources, tombstones):
            plan.dropped += 1  # the person deleted it: not learned again
            continue
        when = max((by_exchange[s].at for s in sources), default=now)
        source_audiences = [by_exchange[s].audience for s in sources]
        if change.action == "add":
            kind = change.kind or "fact"
            twin = next((i for i in live.values() if i.kind == kind and same_text(i.text, text)), None)
            if twin is not None:  # said again: one item, one more source
                _add_sources(plan, twin, sources, source_audiences, sources_of, audience_of)
                continue
            item = Item(
                id=new_id(),
                user_key=user_key,
                kind=kind,
                text=text,
                about=about,
                audience=narrowest([*source_audiences, read_by]),
                learned_at=when,
                sources=sources,
            )
            if change.exclusive and about:  # added beside the one it replaces: it supersedes it all the same
                for old in [i for i in live.values() if i.kind == kind and _normal(i.about) == _normal(about)]:
                    _end(plan, live, ended_texts, old, "superseded", item.id, when)
        elif change.action == "supersede":
            old = targets[0]
            if len(targets) == 1 and same_text(old.text, text):
                _add_sources(plan, old, sources, source_audiences, sources_of, audience_of)
                continue
            item = Item(
                id=new_id(),
                user_key=user_key,
                kind=change.kind or old.kind,
                text=text,
                about=about or old.about,
                audience=narrowest([*source_audiences, read_by]),
                learned_at=when,
                sources=sources,
            )
            for target in targets:
                _end(plan, live, ended_texts, target, "superseded", item.id, when)
        elif change.action == "retire":
            for target in targets:
                _end(plan, live, ended_texts, target, "retired", None, when)
            continue
        else:  # merge
            merged_sources = tuple(dict.fromkeys([s for t in targets for s in sources_of[t.id]] + list(sources)))
            audiences = [audience_of[t.id] for t in targets] + source_audiences + [read_by]
            item = Item(
                id=new_id(),
                user_key=user_key,
                kind=change.kind or targets[0].kind,
                text=text or targets[0].text,
                about=about or targets[0].about,
                audience=narrowest(audiences),
                learned_at=min(t.learned_at for t in targets),
                sources=merged_sources,
            )
            for target in targets:
                _end(plan, live, ended_texts, target, "merged", item.id, when)
        plan.added.append(item)
        live[item.id] = item
        sources_of[item.id] = item.sources
        audience_of[item.id] = item.audience
    return plan


def _add_sources(
    plan: Plan,
    item: Item,
    sources: Sequence[str],
    audiences: Sequence[Scope],
    sources_of: dict[str, tuple[str, ...]],
    audience_of: dict[str, Scope],
) -> None:
    merged = tuple(dict.fromkeys([*sources_of[item.id], *sources]))
    audience = narrowest([audience_of[item.id], *audiences])
    sources_of[item.id], audience_of[item.id] = merged, audience
    new = next((i for i in plan.added if i.id == item.id), None)
    if new is not None:
        plan.added[plan.added.index(new)] = replace(new, sources=merged, audience=audience)
    else:
        plan.sourced[item.id] = (merged, audience)


def _end(
    plan: Plan, live: dict[str, Item], ended: list[str], item: Item, why: str, by: str | None, when: datetime
) -> None:
    live.pop(item.id, None)
    if why in ("superseded", "retired"):
        ended.append(item.text)
    new = next((i for i in plan.added if i.id == item.id), None)
    if new is not None:  # added and ended in one extraction (a contradiction in itself): it never was current
        plan.added.remove(new)
    else:
        plan.ended[item.id] = (why, by, when)
        plan.sourced.pop(item.id, None)


# --- reading it ------------------------------------------------------------------------------------------------


_HEADINGS = {"fact": "Facts", "preference": "Preferences", "interest": "Interests"}


def model_lines(items: Sequence[Item], budget: int) -> list[str]:
    """The prompt's lines for these (current, allowed) items, within about `budget` tokens: no counts nor dates,
    so that the block is the same text from turn to turn until the model changes. Over budget, the oldest facts
    and interests go first; preferences go last."""

    def cost(item: Item) -> int:
        return len(item.text) // 4 + 2

    total = sum(cost(i) for i in items)
    dropped: set[str] = set()
    for item in sorted(items, key=lambda i: ("interest", "fact", "preference").index(i.kind)):  # stable: oldest first
        if total <= budget:
            break
        dropped.add(item.id)
        total -= cost(item)
    chosen = [i for i in items if i.id not in dropped]
    lines: list[str] = []
    for kind in KINDS:
        texts = [i.text for i in chosen if i.kind == kind]
        if not texts:
            continue
        if kind == "interest":
            lines.append("Interests: " + "; ".join(texts))
        else:
            lines.append(f"{_HEADINGS[kind]}:\n" + "\n".join(f"- {t}" for t in texts))
    return lines
