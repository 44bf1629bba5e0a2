"""Vectors move from the embedded Chroma store into the memory rows, once, without embedding them again.

Until this release the embedded default kept vectors in a Chroma store at CHROMA_PATH. Migration 0009 gives each
memory row a vector column; a migration cannot open Chroma, so the worker does this part behind its first start:
page by page, each row without a vector gets Chroma's, and only a memory Chroma does not have is embedded anew.
Until a person's vectors are in, their search is by words for those memories (core.recall says so in /ready).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from core.ports import Embedder
from storage.database import Database
from storage.long_term import ChromaVectors, open_chroma
from storage.memory_store import MemoryRows

__all__ = ["has_legacy_vectors", "move_vectors"]

log = logging.getLogger(__name__)

_PAGE = 1_000


async def has_legacy_vectors(database: Database, chroma_path: str) -> bool:
    """An embedded Chroma store is there, and rows still wait for its vectors."""
    if not (Path(chroma_path) / "chroma.sqlite3").exists():
        return False
    rows = await database.connection().execute_query_dict("SELECT 1 AS one FROM memory WHERE vector IS NULL LIMIT 1")
    return bool(rows)


async def move_vectors(
    rows: MemoryRows, chroma: ChromaVectors, embedder: Embedder, moved: Callable[[str], None]
) -> tuple[int, int]:
    """Every row without a vector gets one: Chroma's, else a new embedding. `moved(user_key)` after each
    person's page. Returns (copied, embedded). Safe to stop and run again: it starts from what is still empty."""
    copied = embedded = 0
    after = -1
    while True:
        page = await rows.without_vectors(after, _PAGE)
        if not page:
            break
        by_person: dict[str, list[dict[str, object]]] = {}
        for row in page:
            by_person.setdefault(str(row["user_key"]), []).append(row)
        for user_key, mine in by_person.items():
            ids = [str(row["id"]) for row in mine]
            found, _, matrix = await chroma.vectors(user_key, ids)
            vectors = {memory_id: matrix[i].tolist() for i, memory_id in enumerate(found)}
            lacking = [row for row in mine if row["id"] not in vectors]
            if lacking:
                fresh = await embedder.embed([str(row["text"]) for row in lacking])
                vectors.update((str(row["id"]), vector) for row, vector in zip(lacking, fresh, strict=True))
            await rows.set_vectors(vectors)
            copied += len(found)
            embedded += len(lacking)
            moved(user_key)
        after = int(str(page[-1]["seq"]))
    return copied, embedded


async def import_from(database: Database, chroma_path: str, embedder: Embedder, moved: Callable[[str], None]) -> None:
    """The whole move, logged; the Chroma store is closed after (and can then be deleted)."""
    chroma = ChromaVectors(open_chroma(path=chroma_path, url=None))
    try:
        copied, embedded = await move_vectors(MemoryRows(database), chroma, embedder, moved)
    finally:
        chroma.close()
    log.info(
        "moved %d memory vectors from the Chroma store at %s into the database (%d embedded anew); "
        "that store is no longer read",
        copied,
        chroma_path,
        embedded,
    )
