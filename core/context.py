"""Context assembly: the persona, what is known of the person, the conversation so far, the memories recalled and
the new message, fitted into one Prompt and ordered for Claude's prompt cache.

What changes rarely comes first and what changes every turn last: the persona and the person's profile (the
system blocks), then the conversation so far, then one user message with the memories recalled for this turn, the
messages it replies to and its text. A cache breakpoint goes after the system blocks and after the conversation so
far, and everything before the second one is exactly the start of the next turn's request in the same
conversation: the history window drops old turns half a window at a time (not one a turn), and nothing before a
breakpoint counts or dates anything that moves from turn to turn.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from core.events import ChainMessage, MessageReceived
from core.person import Item, model_lines
from core.ports import MemoryHit, Pattern, Prompt, Turn

__all__ = [
    "ContextLimits",
    "build_prompt",
    "clean_text",
    "estimate_tokens",
    "history_window",
    "message_text",
    "truncate",
]

TRUNCATION_MARK = "\n[… message truncated]"


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextLimits:
    max_input_chars: int = 8_000
    history_turns: int = 20
    memory_results: int = 5
    token_budget: int = 6_000
    memory_share: float = 0.3
    model_share: float = 0.15  # of the budget, for what is known of the person (their model)
    reply_in_memory_chars: int = 300


def estimate_tokens(text: str) -> int:
    """A conservative token estimate (about four characters a token for English) with no tokenizer."""
    return len(text) // 4 + 1


def clean_text(text: str) -> str:
    """Drop NULs and other control characters (binary junk) but keep newlines and tabs."""
    return "".join(
        ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs", "Co", "Cn")
    ).strip()


def message_text(text: str, limits: ContextLimits) -> str:
    """What Rapport reads of a message: control characters dropped, cut to `limits.max_input_chars` (cut before
    cleaning too, so a megabyte of input never costs the event loop a character-by-character pass)."""
    return truncate(clean_text(text[: limits.max_input_chars * 2]), limits.max_input_chars)


def truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[: max_chars - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def _persona(event: MessageReceived) -> str:
    if event.private:
        where = "a private conversation"
    elif event.where.kind == "place":
        where = "a private channel that only its members can read"
    else:
        where = "a shared channel that other people can read"
    lines = [
        "You are Rapport, a warm, concise personal assistant who gets to know each person over time.",
        f"You are talking with {event.author_name} on {event.user.platform}, in {where}.",
    ]
    if not event.private:
        lines.append("Several people may speak here; their messages are prefixed with their names.")
    return "\n".join(lines)


def _profile_lines(
    interests: Sequence[str], style: dict[str, str], patterns: Sequence[Pattern], known: Sequence[Item], budget: int
) -> list[str]:
    """What is known of the person, without counts (they move every turn and would spoil the cache): their model
    first; the keyword topics only while the model has no interests of theirs."""
    lines = model_lines(known, budget)
    if interests and not any(item.kind == "interest" for item in known):
        # in a fixed order: their ranking shifts as counts grow, and the cache wants the same text
        lines.append("Interests: " + ", ".join(sorted(interests)))
    if style:
        lines.append("Communication style: " + ", ".join(f"{k} {v}" for k, v in style.items()))
    if patterns:
        lines.append("Recurring patterns: " + "; ".join(sorted(f"{p.kind} {p.value}" for p in patterns)))
    return lines


def _memory_lines(hits: Sequence[MemoryHit], budget: int, reply_chars: int) -> list[str]:
    lines: list[str] = []
    used = 0
    for hit in hits:
        memory = hit.memory
        line = f"- [{memory.created_at:%Y-%m-%d}] they said: {memory.text}"
        if memory.reply:
            line += f" / you replied: {truncate(memory.reply, reply_chars)}"
        cost = estimate_tokens(line)
        if used + cost > budget:
            break
        lines.append(line)
        used += cost
    return lines


def _as_message(role: str, author: str, text: str, shared: bool) -> dict[str, str]:
    return {"role": role, "content": f"[{author}] {text}" if shared and role == "user" else text}


def history_window(history: Sequence[Turn], limits: ContextLimits, budget: int) -> list[Turn]:
    """The turns of the conversation so far that the prompt shows: the last `history_turns` at most, starting at
    a multiple of half that window, so that the start moves half a window at a time and the turns shown are the
    same from one request to the next until it does; over the token budget, whole halves go."""
    if not history:
        return []
    whole = max(limits.history_turns, 1)
    step = max(whole // 2, 1)
    numbered = all(turn.number >= 0 for turn in history)
    if not numbered:  # turns from a store that does not number them (the database's copy): the newest that fit
        kept = list(history[-whole:])
        while kept and sum(estimate_tokens(t.text) for t in kept) > budget:
            kept.pop(0)
        return kept
    total = history[-1].number + 1
    start = 0 if total <= whole else ((total - whole) // step + 1) * step
    kept = [turn for turn in history if turn.number >= start]
    while kept and sum(estimate_tokens(t.text) + 4 for t in kept) > budget:
        start += step
        kept = [turn for turn in kept if turn.number >= start]
    return kept


def _alternate(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Claude wants user first and roles alternating: merge neighbours of one role, and fold a leading reply
    (someone answering Rapport's own message, say) into the first user message rather than lose it."""
    merged: list[dict[str, str]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = {"role": message["role"], "content": merged[-1]["content"] + "\n\n" + message["content"]}
        else:
            merged.append(dict(message))
    if merged and merged[0]["role"] == "assistant":
        note = f"[Earlier, you said: {merged.pop(0)['content']}]"
        rest = merged[0]["content"] if merged else ""
        merged[:1] = [{"role": "user", "content": f"{note}\n\n{rest}".rstrip()}]
    return merged


def _chain_lines(chain: Sequence[ChainMessage], history: Sequence[Turn]) -> list[str]:
    """The messages this one replies to (or the thread it was called into) that the conversation so far lacks."""
    seen = {turn.text for turn in history}
    return [f"[{'you' if m.from_assistant else m.author}] {m.text}" for m in chain if m.text and m.text not in seen]


def build_prompt(
    event: MessageReceived,
    text: str,
    *,
    history: Sequence[Turn],
    memories: Sequence[MemoryHit],
    interests: Sequence[str],
    style: dict[str, str],
    patterns: Sequence[Pattern],
    limits: ContextLimits,
    known: Sequence[Item] = (),
) -> Prompt:
    """Everything Claude sees for this reply, within `limits.token_budget` (the message itself aside). `known` are
    the current items of the person's model that may be read here (core.person)."""
    shared = not event.private
    system = [_persona(event)]
    profile = _profile_lines(interests, style, patterns, known, int(limits.token_budget * limits.model_share))
    if profile:
        system.append(
            f"What you know about {event.author_name} (use it where it helps; follow their preferences):\n"
            + "\n".join(profile)
        )
    memory_budget = int(limits.token_budget * limits.memory_share)
    recalled = _memory_lines(memories, memory_budget, limits.reply_in_memory_chars)
    fixed = sum(estimate_tokens(block) for block in system) + sum(estimate_tokens(line) for line in recalled)
    shown = history_window(history, limits, max(limits.token_budget - fixed, 0))
    conversation = _alternate([_as_message(t.role, t.author, t.text, shared) for t in shown])
    if conversation and conversation[-1]["role"] == "user":
        # The last turn shown is the person's (its answer failed): it joins the new message rather than sit
        # before the breakpoint, where the next request would not repeat it the same way.
        last = conversation.pop()
    else:
        last = None
    now: list[str] = []
    if recalled:
        now.append(
            f"[Things {event.author_name} said in earlier conversations, most relevant first (use them when they "
            "help, never quote them to others):\n" + "\n".join(recalled) + "]"
        )
    chain = _chain_lines(event.reply_chain, shown)
    if chain:
        now.append("[The messages this one answers:\n" + "\n".join(chain) + "]")
    if last is not None:
        now.append(last["content"])
    now.append(_as_message("user", event.author_name, text, shared)["content"])
    messages = [*conversation, {"role": "user", "content": "\n\n".join(now)}]
    return Prompt(system=tuple(system), messages=tuple(messages), stable_messages=len(conversation))
