"""Splitting a reply into Discord messages: at most 2,000 characters each, nothing lost or reordered.

A cut prefers a paragraph break, then a line break, then a sentence end, then a space, and only then falls
back to a hard cut. A cut inside a code block closes the fence at the end of the chunk and reopens it, with
the same language tag, at the start of the next one, so every chunk renders as code where the reply did.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DISCORD_LIMIT", "Piece", "split_message", "split_pieces", "utf16_len"]

DISCORD_LIMIT = 2000
FENCE = "```"
_CLOSE_RESERVE = len("\n" + FENCE)
_MIN_FILL = 0.5  # a preferred boundary only counts when it keeps at least this share of a chunk
_LANG = re.compile(r"[A-Za-z0-9_+#.\-]+(?=\n)")
_BOUNDARIES = (
    re.compile(r"\n[ \t]*\n(?:[ \t]*\n)*"),  # paragraph (blank lines; the next line keeps its indent)
    re.compile(r"\n"),  # line
    re.compile(r"[.!?…。！？][\"'”’)\]]*[ \t]+"),  # sentence
    re.compile(r"[ \t]+"),  # word
)
_AT_FENCE = re.compile(r"\s*```")
_GLUE = {"\u200d", "\ufe0e", "\ufe0f"} | {chr(c) for c in range(0x1F3FB, 0x1F400)}  # ZWJ, variation, skin tone


@dataclass(frozen=True, slots=True)
class Piece:
    """One message: a slice of the original text, with the fences added around it (if any)."""

    body: str
    reopen: str = ""
    close: str = ""

    @property
    def text(self) -> str:
        return self.reopen + self.body + self.close


@dataclass(frozen=True, slots=True)
class _Fence:
    start: int
    opening: bool
    lang: str
    line_end: int  # where the code starts after an opening fence (its language tag and newline skipped)


def utf16_len(text: str) -> int:
    """Length as Discord's limit counts it at its strictest (UTF-16 code units: an emoji may count twice)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """The messages to send for `text`, in order."""
    return [piece.text for piece in split_pieces(text, limit)]


def split_pieces(text: str, limit: int = DISCORD_LIMIT) -> list[Piece]:
    """Like `split_message`, keeping apart what was added, so that joining the bodies gives `text` back."""
    if limit < 40:
        raise ValueError("limit too small to hold a code fence and some text")
    fences = _fences(text)
    pieces: list[Piece] = []
    start, reopen = 0, ""
    while start < len(text):
        room = limit - len(reopen)
        if utf16_len(text[start:]) <= room:
            pieces.append(Piece(text[start:], reopen))
            break
        end = _cut(text, start, room - _CLOSE_RESERVE, fences)
        block = _open_block(fences, end)
        if block is None:
            pieces.append(Piece(text[start:end], reopen))
            reopen = ""
        else:
            close = FENCE if text[end - 1] == "\n" else "\n" + FENCE
            pieces.append(Piece(text[start:end], reopen, close))
            lang = block.lang if len(block.lang) <= limit // 8 else ""
            reopen = f"{FENCE}{lang}\n"
        start = end
    return pieces


def _fences(text: str) -> list[_Fence]:
    """Every ``` in order; they open and close blocks alternately, as Discord reads them."""
    fences: list[_Fence] = []
    for index, match in enumerate(re.finditer(FENCE, text)):
        opening = index % 2 == 0
        lang_match = _LANG.match(text, match.end()) if opening else None
        lang = lang_match.group() if lang_match else ""
        line_end = match.end() + len(lang)
        if line_end < len(text) and text[line_end] == "\n" and opening:
            line_end += 1
        fences.append(_Fence(match.start(), opening, lang, line_end))
    return fences


def _open_block(fences: Sequence[_Fence], position: int) -> _Fence | None:
    """The opening fence of the code block that `position` falls in, or None outside code."""
    last: _Fence | None = None
    for fence in fences:
        if fence.start + len(FENCE) > position:
            break
        last = fence
    return last if last is not None and last.opening else None


def _valid(text: str, position: int, fences: Sequence[_Fence]) -> bool:
    """A cut never splits a fence, leaves an empty code block behind, or starts the next chunk on a closing fence."""
    if any(f.start < position < f.start + len(FENCE) for f in fences):
        return False
    block = _open_block(fences, position)
    if block is None:
        return True
    return position > block.line_end and not _AT_FENCE.match(text, position)


def _fit(text: str, start: int, room: int) -> int:
    """The furthest end such that text[start:end] fits in `room` UTF-16 units."""
    end = min(len(text), start + room)
    while (excess := utf16_len(text[start:end]) - room) > 0:
        end -= max(1, excess // 2)
    return end


def _cut(text: str, start: int, room: int, fences: Sequence[_Fence]) -> int:
    """Where the chunk starting at `start` ends: the best boundary that fits."""
    end = _fit(text, start, room)
    window = text[start:end]
    floor = int(len(window) * _MIN_FILL)
    for boundary in _BOUNDARIES:
        cuts = [start + m.end() for m in boundary.finditer(window) if m.end() >= floor]
        for position in reversed(cuts):
            if _valid(text, position, fences):
                return position
    for position in range(end, start, -1):  # hard cut: not inside a fence nor between joined characters
        if _valid(text, position, fences) and not _joined(text, position):
            return position
    return end


def _joined(text: str, position: int) -> bool:
    """True between two characters that display as one (an accent, an emoji sequence)."""
    if position <= 0 or position >= len(text):
        return False
    after, before = text[position], text[position - 1]
    return after in _GLUE or before == "\u200d" or unicodedata.combining(after) != 0
