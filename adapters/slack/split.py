"""Long answers as several Slack messages, cut where a reader would pause, with code blocks kept whole per message."""

from __future__ import annotations

import re

__all__ = ["DEFAULT_LIMIT", "split_message"]

# Slack takes 40,000 characters in a message; a thread reads better in screens of a few thousand.
DEFAULT_LIMIT = 3000

FENCE = "```"
_OPEN = FENCE + "\n"
_CLOSE = "\n" + FENCE

# Best boundary first: a blank line, a line end, a sentence end, a space. Each keeps the next line's indentation.
_BOUNDARIES = (
    re.compile(r"\n(?:[ \t]*\n)+"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?:;])[ \t]+"),
    re.compile(r"[ \t]+"),
)


def split_message(text: str, limit: int = DEFAULT_LIMIT) -> list[str]:
    """Chunks of at most `limit` characters, in order, losing nothing but the whitespace where they were cut.

    A chunk that ends inside a code block closes it, and the next chunk reopens it, so every chunk renders.
    """
    if limit < 40:
        raise ValueError("a Slack message chunk must allow at least 40 characters")
    rest = text.strip("\n")
    chunks: list[str] = []
    in_code = False
    while rest:
        prefix = _OPEN if in_code else ""
        if len(prefix) + len(rest) <= limit:
            chunks.append(prefix + rest)
            break
        cut, skip = _cut_point(rest, limit - len(prefix) - len(_CLOSE))
        chunk = prefix + rest[:cut]
        rest = rest[cut + skip :]
        in_code = chunk.count(FENCE) % 2 == 1
        if in_code:
            chunk = chunk.rstrip("\n") + _CLOSE
        if chunk.replace(FENCE, "").strip():
            chunks.append(chunk)
    return chunks


def _cut_point(text: str, budget: int) -> tuple[int, int]:
    """Where to end this chunk (at most `budget` characters) and how much separator to drop after it."""
    shortest = budget // 3
    window = text[: budget + 1]
    for boundary in _BOUNDARIES:
        found = [m for m in boundary.finditer(window) if shortest <= m.start() <= budget]
        if found:
            best = found[-1]
            cut = _outside_link(text, best.start())
            if cut >= shortest:
                return cut, best.end() - best.start() if cut == best.start() else 0
    return _hard_cut(text, budget), 0


def _outside_link(text: str, cut: int) -> int:
    """Move a cut that falls inside a `<url|label>` link or mention back to before it."""
    opened, closed = text.rfind("<", 0, cut), text.rfind(">", 0, cut)
    if opened > closed and text.find(">", cut) != -1:
        return opened
    return cut


def _hard_cut(text: str, budget: int) -> int:
    """A cut in a run of text with no space at all: not inside an entity like `&amp;` nor a code fence."""
    cut = budget
    amp = text.rfind("&", max(cut - 8, 0), cut)
    if amp != -1 and ";" not in text[amp:cut]:
        cut = amp
    while cut > 1 and text[cut - 1] == "`":
        cut -= 1
    return cut if cut > 0 else budget
