"""Vectors move from the embedded Chroma store into the memory rows, once, without embedding them again.

Until this release the embedded default kept vectors in a Chroma store at CHROMA_PATH. Migration 0009 gives each
memory row a vector column; a migration cannot open Chroma, so the worker does this part behind its first start:
page by page, each row without a vector gets Chroma's, and only a memory Chroma does not have is embedded anew.
Since migration 0010 a memory is embedded with its speaker's name, so Chroma's vector (of the bare words) is taken
only for a memory without a speaker; the rest are embedded again.
Until a person's vectors are in, their search is by words for those memories (core.recall says so in /ready).
A row with no vector and no old store to take it from (CHROMA_URL was set, then unset) is embedded anew.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from core.ports import Embedder
from core.recall import said_by
from storage.database import Database
from storage.long_term import ChromaVectors, open_chroma
from storage.memory_store import MemoryRows

__all__ = ["import_from", "move_vectors", "old_store", "rows_without_vectors"]

log = logging.getLogger(__name__)

_PAGE = 1_000
_EMBED = 16  # texts embedded at a time


async def rows_without_vectors(database: Database) -> bool:
    """Some memory rows have no vector (from before vectors lived there, or a Chroma server kept them)."""
    rows = await database.connection().execute_query_dict("SELECT 1 AS one FROM memory WHERE vector IS NULL LIMIT 1")
    return bool(rows)


def old_store(chroma_path: str) -> str | None:
    """The embedded Chroma store of an earlier release at this path, if there is one."""
    return chroma_path if (Path(chroma_path) / "chroma.sqlite3").exists() else None


async def move_vectors(
    rows: MemoryRows,
    chroma: ChromaVectors | None,
    embedder: Embedder,
    moved: Callable[[str, Mapping[str, Sequence[float]]], None],
) -> tuple[int, int]:
    """Every row without a vector gets one: Chroma's, else a new embedding (a few texts at a time, so that the
    people talking meanwhile do not wait behind them). `moved(user_key, vectors)` after each person's page.
    Returns (copied, embedded). Safe to stop and run again: it starts from what is still empty."""
    copied = embedded = 0
    after = -1
    while True:
        page = await rows.without_vectors(after, _PAGE)
        if not page:
            break
        by_person: dict[str, list[dict[str, Any]]] = {}
        for row in page:
            by_person.setdefault(str(row["user_key"]), []).append(row)
        for user_key, mine in by_person.items():
            vectors: dict[str, Sequence[float]] = {}
            # The old store's vectors are of the bare words: they stand only for a memory without a speaker, which
            # embeds the same either way (core.recall.embedded_text); the others are embedded as they now are.
            bare = [str(row["id"]) for row in mine if not row["speaker"]]
            if chroma is not None and bare:
                found, _, matrix = await chroma.vectors(user_key, bare)
                vectors.update((memory_id, matrix[i].tolist()) for i, memory_id in enumerate(found))
                copied += len(found)
            lacking = [row for row in mine if row["id"] not in vectors]
            for start in range(0, len(lacking), _EMBED):
                chunk = lacking[start : start + _EMBED]
                fresh = await embedder.embed([said_by(str(row["speaker"] or ""), str(row["text"])) for row in chunk])
                vectors.update((str(row["id"]), vector) for row, vector in zip(chunk, fresh, strict=True))
            embedded += len(lacking)
            await rows.set_vectors(vectors)
            moved(user_key, vectors)
        after = int(page[-1]["seq"])
    return copied, embedded


async def import_from(
    database: Database,
    chroma_path: str | None,
    embedder: Embedder,
    moved: Callable[[str, Mapping[str, Sequence[float]]], None],
) -> None:
    """The whole move, logged; an old Chroma store is closed after (and can then be deleted)."""
    chroma = None if chroma_path is None else ChromaVectors(open_chroma(path=chroma_path, url=None))
    try:
        copied, embedded = await move_vectors(MemoryRows(database), chroma, embedder, moved)
    finally:
        if chroma is not None:
            await asyncio.to_thread(chroma.close)
    if chroma_path is not None:
        log.info(
            "moved %d memory vectors from the Chroma store at %s into the database (%d embedded anew); "
            "that store is no longer read",
            copied,
            chroma_path,
            embedded,
        )
    else:
        log.info("embedded %d memories that had no vector", embedded)
