"""Block Kit for the slash commands: a person's insights, and the confirmation before forgetting them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.slack.mrkdwn import escape
from core.assistant import AssistantSettings
from core.memory_view import KIND_TITLES, MemoryView

__all__ = [
    "FORGET_CANCEL",
    "FORGET_CONFIRM",
    "FORGOTTEN",
    "KEPT",
    "MEMORY_DELETE",
    "MEMORY_LEARN",
    "MEMORY_PAGE",
    "forget_confirm_blocks",
    "insights_blocks",
    "insights_text",
    "memory_blocks",
    "memory_home",
]

FORGET_CONFIRM = "rapport_forget_confirm"
FORGET_CANCEL = "rapport_forget_cancel"
FORGOTTEN = AssistantSettings().forgotten  # what the turn says once it is done
KEPT = "Kept everything. Nothing was deleted."
FORGET_QUESTION = (
    "This deletes everything I know about you: your profile, our past conversations, my memories of them "
    "and your feedback. It cannot be undone. (How much you used me today stays counted for the operators' "
    "limits: usage isn't a memory.)"
)

Block = dict[str, Any]


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def insights_text(insights: Mapping[str, Any] | None) -> str:
    """The notification text that goes with the blocks (and what clients without blocks show)."""
    if insights is None:
        return "I don't know anything about you yet."
    return f"What I know about you, from {insights.get('total_interactions', 0)} conversations."


def insights_blocks(insights: Mapping[str, Any] | None) -> list[Block]:
    """A person's own insights, for their eyes only (sent ephemerally)."""
    header: Block = {"type": "header", "text": {"type": "plain_text", "text": "What Rapport knows about you"}}
    footer = _context("Only you can see this. `/forget` deletes all of it.")
    if insights is None:
        return [header, _section("I don't know anything about you yet. Talk to me and I'll start learning."), footer]
    satisfaction = insights.get("average_satisfaction")
    mood = "no reactions yet" if satisfaction is None else f"{satisfaction:+.2f} (from -1 to +1, from your reactions)"
    interests = (", ".join(escape(str(topic)) for topic in insights.get("interests") or []) or "none yet")[:1_900]
    style = insights.get("communication_style") or {}
    style_text = ", ".join(f"{escape(str(k))}: {escape(str(v))}" for k, v in style.items()) or "not enough to tell"
    fields = [
        {"type": "mrkdwn", "text": f"*Conversations*\n{int(insights.get('total_interactions') or 0)}"},
        {"type": "mrkdwn", "text": f"*Satisfaction*\n{mood}"},
        {"type": "mrkdwn", "text": f"*Interests*\n{interests}"},
        {"type": "mrkdwn", "text": f"*Style*\n{style_text}"},
    ]
    blocks: list[Block] = [header, {"type": "section", "fields": fields}]
    for name, key in (("Facts", "facts"), ("Preferences", "preferences")):
        items = [i for i in insights.get(key) or [] if isinstance(i, Mapping)]
        if items:
            shown = "\n".join(f"• {escape(str(i.get('text', '')))}" for i in items[:15])
            blocks.append(_section(f"*{name}*\n{shown}"[:2_900]))
    if insights.get("learning_paused"):
        blocks.append(_context("Learning is paused: `/learning resume` starts it again."))
    usage = insights.get("usage")
    if isinstance(usage, Mapping) and usage.get("tokens"):
        spent = f"{int(usage['tokens']):,} tokens, about ${float(usage.get('cost_usd') or 0):.2f}"
        blocks.append(_context(f"Your usage in {usage.get('month', '')}: {spent}"))
    patterns = insights.get("top_patterns") or []
    if patterns:
        lines = [
            f"• {escape(str(p.get('kind', '')))}: {escape(str(p.get('value', '')))} ({int(p.get('count', 0))}×)"
            for p in patterns[:10]
            if isinstance(p, Mapping)
        ]
        blocks.append(_section("*Patterns*\n" + "\n".join(lines)))
    blocks.append(footer)
    return blocks


def forget_confirm_blocks() -> list[Block]:
    """The question `/forget` asks first, with the two answers as buttons."""
    return [
        _section(f":warning: {FORGET_QUESTION}"),
        {
            "type": "actions",
            "block_id": "rapport_forget",
            "elements": [
                {
                    "type": "button",
                    "action_id": FORGET_CONFIRM,
                    "style": "danger",
                    "text": {"type": "plain_text", "text": "Forget everything"},
                    "value": "forget",
                },
                {
                    "type": "button",
                    "action_id": FORGET_CANCEL,
                    "text": {"type": "plain_text", "text": "Keep it"},
                    "value": "keep",
                },
            ],
        },
    ]


MEMORY_DELETE = "rapport_memory_delete"
MEMORY_PAGE = "rapport_memory_page"  # _previous, _next, _history; value "<page>:<0|1 history>"
MEMORY_LEARN = "rapport_memory_learn"  # value "<pause|resume>:<page>:<0|1>"


def _button(action_id: str, text: str, value: str, **extra: Any) -> Block:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text},
        "value": value,
    } | extra


def memory_blocks(view: MemoryView, *, note: str = "") -> list[Block]:
    """/memory and the Home tab: this page of the person's model, grouped, each item with a Delete button; paging,
    history and pause below. Every button says what it acts on; the clicker is whose model it acts on."""
    title = "What stopped being true" if view.history else "What Rapport knows about you"
    blocks: list[Block] = [{"type": "header", "text": {"type": "plain_text", "text": title}}]
    if note:
        blocks.append(_context(escape(note)))
    kind = ""
    for number, item in enumerate(view.items, view.first):
        if item.kind != kind:
            kind = item.kind
            blocks.append(_section(f"*{KIND_TITLES.get(kind, kind)}*"))
        section = _section(f"{number}. {escape(item.text)}"[:2_900])
        section["accessory"] = _button(
            MEMORY_DELETE, "Delete", f"{item.id}:{view.page}:{int(view.history)}", style="danger"
        )
        blocks.append(section)
    if not view.items:
        blocks.append(_section("Nothing yet. Talk to me and I'll start learning."))
    paused = " Learning is paused." if view.paused else ""
    blocks.append(_context(f"Page {view.page + 1} of {view.pages}. Only you can see this.{paused}"))
    history = int(view.history)
    elements = []
    if view.page > 0:
        elements.append(_button(f"{MEMORY_PAGE}_previous", "Previous", f"{view.page - 1}:{history}"))
    if view.page + 1 < view.pages:
        elements.append(_button(f"{MEMORY_PAGE}_next", "Next", f"{view.page + 1}:{history}"))
    elements.append(
        _button(f"{MEMORY_PAGE}_history", "Current" if view.history else "Show history", f"0:{1 - history}")
    )
    learn = "resume" if view.paused else "pause"
    elements.append(_button(MEMORY_LEARN, f"{learn.title()} learning", f"{learn}:{view.page}:{history}"))
    blocks.append({"type": "actions", "block_id": "rapport_memory", "elements": elements})
    return blocks[:50]


def memory_home(view: MemoryView, *, note: str = "") -> dict[str, Any]:
    return {"type": "home", "blocks": memory_blocks(view, note=note)}
