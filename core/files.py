"""The files people send with a message: which are read, how they reach Claude, and what is said of the rest.

Images (PNG, JPEG, GIF, WebP) become image blocks, PDFs document blocks, text and code files text blocks. What the
platform declared (type, size) decides what is downloaded at all; what arrived decides what is sent: a "PNG" that
is not one, or a text file with NULs in it, is not. The adapter downloads (the delivery port's `fetch`) from the
platform's own addresses only, with the size cap enforced while it reads. Nothing of a file is kept: the message's
memory is its text and `attachment_note`, a line naming what was attached.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
import unicodedata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from core.context import ContextLimits, clean_text, message_text
from core.events import Attachment, MessageReceived
from core.policy import FileLimits

__all__ = [
    "NO_FILES",
    "FileTooBig",
    "Files",
    "NotFromPlatform",
    "Skipped",
    "attachment_note",
    "kind_of",
    "read_files",
    "remembered_text",
]

log = logging.getLogger(__name__)

Kind = Literal["image", "pdf", "text"]
Fetch = Callable[[Attachment, int], Awaitable[bytes]]

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_TEXT_TYPES = frozenset(
    {"application/json", "application/xml", "application/javascript", "application/x-javascript",
     "application/x-sh", "application/x-python", "application/sql", "application/toml", "application/yaml",
     "application/x-yaml", "application/ld+json", "application/x-ndjson", "image/svg+xml"}
)  # fmt: skip
_TEXT_EXTENSIONS = frozenset(
    (
        "txt md markdown rst csv tsv log json jsonl ndjson yaml yml toml ini cfg conf env xml html htm css scss svg "
        "py pyi ipynb js mjs cjs ts tsx jsx java kt kts scala go rs c h cc cpp hpp cs rb php pl pm swift m mm r jl lua "
        "sh bash zsh fish ps1 bat sql graphql proto tf hcl dockerfile makefile gradle vue svelte dart ex exs erl hs ml "
        "clj lisp el vim diff patch tex bib srt vtt"
    ).split()
)
_IMAGE_EXTENSIONS = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
                     "webp": "image/webp"}  # fmt: skip
_WORDS = {"image": "an image", "pdf": "a PDF", "text": "a text file"}
_NOUNS = {"image": "image", "pdf": "PDF", "text": "text file"}
NAME_CHARS = 100
MAX_SIDE = 8_000  # pixels: Claude refuses a larger image
CUT_MARK = "\n[… the rest of the file was not read]"


class FileTooBig(Exception):
    """More bytes arrived than the limit (or the platform declared more); `size` when it is known."""

    def __init__(self, size: int | None = None) -> None:
        super().__init__(f"over the limit ({size} bytes)" if size is not None else "over the limit")
        self.size = size


class NotFromPlatform(Exception):
    """The address is not one of the platform's own: it is never fetched (and no token is ever sent to it)."""


@dataclass(frozen=True, slots=True)
class Skipped:
    name: str
    reason: str  # words for the person: "too big (12.3 MB; an image can be up to 5 MB)"


@dataclass(frozen=True, slots=True)
class Files:
    """What of a message's files reaches Claude (`blocks`, in the order sent), and what does not, with why."""

    blocks: tuple[Mapping[str, Any], ...] = ()
    read: tuple[tuple[str, Kind], ...] = ()
    skipped: tuple[Skipped, ...] = ()
    cut: tuple[str, ...] = ()  # text files read only in part (the message's text budget)
    text_chars: int = 0  # that budget, for the note

    @property
    def for_claude(self) -> str:
        """A line for the message Claude reads: what the blocks are, and what it cannot see (the person is told)."""
        parts: list[str] = []
        if self.read:
            parts.append("They attached: " + ", ".join(f"{name} ({_NOUNS[kind]})" for name, kind in self.read))
        if self.skipped:
            names = ", ".join(s.name for s in self.skipped)
            parts.append(f"Not shown to you (they are told why separately): {names}")
        return f"[{'. '.join(parts)}]" if parts else ""

    @property
    def reply_note(self) -> str:
        """What the reply adds when something was not read (each file and why) or read only in part, in a line."""
        parts: list[str] = []
        if self.skipped:
            parts.append("I couldn't read " + "; ".join(f"{s.name}: {s.reason}" for s in self.skipped))
        if self.cut:
            parts.append(
                f"I read only the beginning of {', '.join(self.cut)} (up to {self.text_chars:,} characters of text "
                "files a message)"
            )
        return "_(" + ". ".join(parts) + ".)_" if parts else ""

    def unopened(self, names: Sequence[str]) -> Files:
        """These files as Claude refused them (a PDF it cannot open, say): said so, with the rest kept."""
        gone = set(names)
        return Files(
            read=tuple(r for r in self.read if r[0] not in gone),
            skipped=(*self.skipped, *(Skipped(name, "my language model couldn't open it") for name in names)),
            cut=self.cut,
            text_chars=self.text_chars,
        )


NO_FILES = Files()


def _clean_name(name: str) -> str:
    """A file name as the person sees it, without control characters or what would break the text around it."""
    shown = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C" and ch not in '<>"`')
    shown = shown.strip() or "a file"
    return shown if len(shown) <= NAME_CHARS else shown[: NAME_CHARS - 1] + "…"


def _extension(name: str) -> str:
    lowered = name.lower()
    if lowered in ("dockerfile", "makefile"):
        return lowered
    return lowered.rsplit(".", 1)[-1] if "." in lowered else ""


def kind_of(attachment: Attachment) -> Kind | None:
    """What a file is, as declared (its content type, else its extension); None: not a kind Rapport reads."""
    declared = attachment.media_type.split(";", 1)[0].strip().lower()
    extension = _extension(attachment.name)
    if declared in IMAGE_TYPES or (not declared.startswith("image/") and extension in _IMAGE_EXTENSIONS):
        return "image"
    if declared == "application/pdf" or extension == "pdf":
        return "pdf"
    if declared.startswith("text/") or declared in _TEXT_TYPES or extension in _TEXT_EXTENSIONS:
        return "text"
    return None


def _limit(kind: Kind, limits: FileLimits) -> int:
    return {"image": limits.image_bytes, "pdf": limits.pdf_bytes, "text": limits.text_bytes}[kind]


def _size(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1_000_000:.3g} MB"
    return f"{max(count, 1_000) / 1_000:.0f} KB"


def sniff_image(data: bytes) -> str | None:
    """The image type the bytes are (whatever was declared), for the four Claude reads."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from an image's header (PNG, GIF, WebP, JPEG), or None when it cannot be told."""
    try:
        if data.startswith(b"\x89PNG"):
            width, height = struct.unpack(">II", data[16:24])
            return int(width), int(height)
        if data[:3] == b"GIF":
            width, height = struct.unpack("<HH", data[6:10])
            return int(width), int(height)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            chunk = data[12:16]
            if chunk == b"VP8X":
                return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
            if chunk == b"VP8L":
                b0, b1, b2, b3 = data[21:25]
                return 1 + (((b1 & 0x3F) << 8) | b0), 1 + (((b3 & 0x0F) << 10) | (b2 << 2) | ((b1 & 0xC0) >> 6))
            if chunk == b"VP8 ":
                width, height = struct.unpack("<HH", data[26:30])
                return int(width) & 0x3FFF, int(height) & 0x3FFF
            return None
        if data.startswith(b"\xff\xd8"):
            at = 2
            while at + 9 < min(len(data), 2_000_000):
                if data[at] != 0xFF:
                    return None
                marker = data[at + 1]
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    height, width = struct.unpack(">HH", data[at + 5 : at + 9])
                    return int(width), int(height)
                at += 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
    except (struct.error, ValueError):
        return None
    return None


def as_text(data: bytes) -> str | None:
    """The text of a text file (UTF-8, or UTF-16 with its mark), or None for anything binary."""
    for bom, codec in ((b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:  # a cut at the size cap may split the last character
            text = data[:-3].decode("utf-8-sig") if len(data) > 3 else ""
        except UnicodeDecodeError:
            return None
    return None if "\x00" in text else text


def _encoded(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _cleaned(text: str, budget: int) -> tuple[str, bool]:
    """A file's text for Claude: control characters dropped (as from a message), cut to `budget` characters."""
    text = clean_text(text[: budget + 1_000])
    if len(text) <= budget:
        return text, False
    return text[:budget] + CUT_MARK, True


async def _block(name: str, kind: Kind, data: bytes, text_budget: int) -> tuple[Mapping[str, Any], int, bool] | str:
    """Claude's block for the bytes that arrived (with the characters of text it takes, and whether the text was
    cut to the budget), or why they cannot be sent."""
    if kind == "image":
        media_type = sniff_image(data)
        if media_type is None:
            return "it isn't a PNG, JPEG, GIF or WebP image"
        size = image_size(data)
        if size is not None and max(size) > MAX_SIDE:
            return f"too large ({size[0]}×{size[1]} pixels; an image can be up to {MAX_SIDE:,} a side)"
        source = {"type": "base64", "media_type": media_type, "data": await asyncio.to_thread(_encoded, data)}
        return {"type": "image", "source": source}, 0, False
    if kind == "pdf":
        if not data.startswith(b"%PDF-"):
            return "it isn't a PDF"
        source = {"type": "base64", "media_type": "application/pdf", "data": await asyncio.to_thread(_encoded, data)}
        return {"type": "document", "source": source, "title": name}, 0, False
    text = as_text(data)
    if text is None:
        return "it isn't a text file (it holds binary data)"
    if text_budget <= 0:
        return "the message's text files together are over what I read of them"
    shown, was_cut = (
        await asyncio.to_thread(_cleaned, text, text_budget) if len(text) > 50_000 else _cleaned(text, text_budget)
    )
    return {"type": "text", "text": f'<file name="{name}">\n{shown}\n</file>'}, len(shown), was_cut


async def read_files(attachments: Sequence[Attachment], fetch: Fetch, limits: FileLimits, *, platform: str) -> Files:
    """The message's files that may be read, downloaded together (each within `limits.timeout`), as Claude's
    blocks in the order sent; the others with the reason, in words."""
    planned: list[tuple[int, str, Attachment, Kind]] = []
    skipped: dict[int, Skipped] = {}
    declared_total = 0
    for index, attachment in enumerate(attachments):
        name = _clean_name(attachment.name)
        kind = kind_of(attachment)
        if attachment.external:
            skipped[index] = Skipped(name, f"it is a link to a file kept outside {platform.title()}, not opened")
        elif not attachment.url:
            skipped[index] = Skipped(name, f"{platform.title()} didn't let me download it")
        elif kind is None:
            shown = attachment.media_type.split(";", 1)[0] or _extension(attachment.name) or "unknown"
            skipped[index] = Skipped(name, f"I can't read this kind of file ({shown})")
        elif len(planned) >= limits.max_count:
            skipped[index] = Skipped(name, f"I read at most {limits.max_count} files of one message")
        elif attachment.size is not None and attachment.size > _limit(kind, limits):
            words = f"{_WORDS[kind]} can be up to {_size(_limit(kind, limits))}"
            skipped[index] = Skipped(name, f"too big ({_size(attachment.size)}; {words})")
        elif attachment.size is not None and declared_total + attachment.size > limits.total_bytes:
            skipped[index] = Skipped(name, f"the message's files together are over {_size(limits.total_bytes)}")
        else:
            declared_total += attachment.size or 0
            planned.append((index, name, attachment, kind))

    async def download(attachment: Attachment, kind: Kind) -> bytes | str:
        limit = _limit(kind, limits)
        try:
            async with asyncio.timeout(limits.timeout):
                return await fetch(attachment, limit)
        except FileTooBig as exc:
            size = f"{_size(exc.size)}; " if exc.size else ""
            return f"too big ({size}{_WORDS[kind]} can be up to {_size(limit)})"
        except NotFromPlatform:
            return f"it isn't a file {platform.title()} holds, so I didn't open it"
        except TimeoutError:
            return f"the download took longer than {limits.timeout:g} s"
        except Exception as exc:  # noqa: BLE001 - one file's failure costs that file, never the answer
            log.info("a file download failed: %s: %s", type(exc).__name__, exc)
            return "the download failed"

    fetched = await asyncio.gather(*(download(attachment, kind) for _, _, attachment, kind in planned))
    blocks: dict[int, Mapping[str, Any]] = {}
    read: dict[int, tuple[str, Kind]] = {}
    cut: list[str] = []
    total, text_left = 0, limits.text_chars
    for (index, name, _, kind), data in zip(planned, fetched, strict=True):
        if isinstance(data, str):
            skipped[index] = Skipped(name, data)
            continue
        if total + len(data) > limits.total_bytes:
            skipped[index] = Skipped(name, f"the message's files together are over {_size(limits.total_bytes)}")
            continue
        made = await _block(name, kind, data, text_left)
        if isinstance(made, str):
            skipped[index] = Skipped(name, made)
            continue
        block, chars, was_cut = made
        if was_cut:
            cut.append(name)
        total += len(data)
        text_left -= chars
        blocks[index], read[index] = block, (name, kind)
    return Files(
        blocks=tuple(blocks[i] for i in sorted(blocks)),
        read=tuple(read[i] for i in sorted(read)),
        skipped=tuple(skipped[i] for i in sorted(skipped)),
        cut=tuple(cut),
        text_chars=limits.text_chars,
    )


def attachment_note(attachments: Sequence[Attachment]) -> str:
    """What memory keeps of a message's files: their names, never their contents."""
    if not attachments:
        return ""
    return "[attached: " + ", ".join(_clean_name(a.name) for a in attachments) + "]"


def remembered_text(event: MessageReceived, limits: ContextLimits) -> str:
    """A message as short- and long-term memory keep it: its words and a note of what was attached."""
    text = message_text(event.text, limits)
    note = attachment_note(event.attachments)
    return f"{text}\n{note}".strip() if note else text
