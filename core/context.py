"""Context assembly: the profile, recent turns, memories and patterns, fitted into one Prompt."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from core.events import ChainMessage, MessageReceived
from core.ports import MemoryHit, Pattern, Prompt, Turn

__all__ = ["ContextLimits", "build_prompt", "clean_text", "estimate_tokens", "message_text", "truncate"]

TRUNCATION_MARK = "\n[… message truncated]"


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextLimits:
    max_input_chars: int = 8_000
    history_turns: int = 20
    memory_results: int = 5
    token_budget: int = 6_000
    memory_share: float = 0.3
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
    where = "a private conversation" if event.private else "a shared channel that other people can read"
    lines = [
        "You are Rapport, a warm, concise personal assistant who gets to know each person over time.",
        f"You are talking with {event.author_name} on {event.user.platform}, in {where}.",
    ]
    if not event.private:
        lines.append("Several people may speak here; their messages are prefixed with their names.")
    return "\n".join(lines)


def _profile_lines(interests: Sequence[str], style: dict[str, str], patterns: Sequence[Pattern]) -> list[str]:
    lines: list[str] = []
    if interests:
        lines.append("Interests: " + ", ".join(interests))
    if style:
        lines.append("Communication style: " + ", ".join(f"{k} {v}" for k, v in style.items()))
    if patterns:
        lines.append("Recurring patterns: " + "; ".join(f"{p.kind} {p.value} ({p.count}×)" for p in patterns))
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


def _history_messages(
    history: Sequence[Turn], chain: Sequence[ChainMessage], shared: bool, budget: int
) -> list[dict[str, str]]:
    """Newest turns first until the budget is spent; reply-chain messages not in history go before them."""
    seen = {turn.text for turn in history}
    older = [
        _as_message("assistant" if m.from_assistant else "user", m.author, m.text, shared)
        for m in chain
        if m.text and m.text not in seen
    ]
    candidates = older + [_as_message(t.role, t.author, t.text, shared) for t in history]
    kept: list[dict[str, str]] = []
    used = 0
    for message in reversed(candidates):
        cost = estimate_tokens(message["content"])
        if used + cost > budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    return kept


def _alternate(messages: Sequence[dict[str, str]]) -> tuple[dict[str, str], ...]:
    """Claude wants user first and roles alternating: merge neighbours of one role, and fold a leading reply
    (someone answering Rapport's own message, say) into the first user message rather than lose it."""
    merged: list[dict[str, str]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = {
                "role": message["role"],
                "content": merged[-1]["content"] + "\n\n" + message["content"],
            }
        else:
            merged.append(dict(message))
    if merged and merged[0]["role"] == "assistant":
        note = f"[Earlier, you said: {merged.pop(0)['content']}]"
        rest = merged[0]["content"] if merged else ""
        merged[:1] = [{"role": "user", "content": f"{note}\n\n{rest}".rstrip()}]
    return tuple(merged)


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
) -> Prompt:
    """Everything Claude sees for this reply, within `limits.token_budget` (the message itself aside)."""
    shared = not event.private
    system = [_persona(event)]
    profile = _profile_lines(interests, style, patterns)
    if profile:
        system.append(f"What you know about {event.author_name}:\n" + "\n".join(profile))
    memory_budget = int(limits.token_budget * limits.memory_share)
    recalled = _memory_lines(memories, memory_budget, limits.reply_in_memory_chars)
    if recalled:
        system.append(
            f"Things {event.author_name} said in earlier conversations, most relevant first "
            "(use them when they help, never quote them to others):\n" + "\n".join(recalled)
        )
    system_text = "\n\n".join(system)
    history_budget = max(limits.token_budget - estimate_tokens(system_text), 0)
    messages = _history_messages(history, event.reply_chain, shared, history_budget)
    messages.append(_as_message("user", event.author_name, text, shared))
    return Prompt(system=system_text, messages=_alternate(messages))
