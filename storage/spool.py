"""The inbox's spool: what it keeps on local disk while the database does not answer.

JSON lines, appended and fsync'd one record at a time, so an event is on disk before the platform hears that we
have it; read back in order when the process starts, and emptied once the inbox has written it all to the
database. A spool lives on the container's disk: it survives a crash or a restart of the process, not the
container being replaced (docs/deploy.md says so).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Spool"]

log = logging.getLogger(__name__)

FILE = "inbox.jsonl"


class Spool:
    """Records in order, on disk; `append` returns once the record is durable."""

    def __init__(self, directory: str | Path) -> None:
        self._path = Path(directory) / FILE
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def load(self) -> list[dict[str, Any]]:
        """Every record written and not yet emptied; a torn last line (a crash mid-write) is dropped."""
        if not self._path.exists():
            return []
        records: list[dict[str, Any]] = []
        with self._path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning("spool %s: line %d is incomplete and was dropped", self._path, number)
        return records

    async def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        async with self._lock:
            await asyncio.to_thread(self._write, line)

    async def replace(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Keep only `records` (after a flush): written beside the spool and renamed over it, atomically."""
        text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
        async with self._lock:
            await asyncio.to_thread(self._swap, text)

    def _write(self, line: str) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a", encoding="utf-8") as spool:
            spool.write(line)
            spool.flush()
            os.fsync(spool.fileno())

    def _swap(self, text: str) -> None:
        if not text and not self._path.exists():
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fresh = self._path.with_suffix(".tmp")
        with fresh.open("w", encoding="utf-8") as spool:
            spool.write(text)
            spool.flush()
            os.fsync(spool.fileno())
        os.replace(fresh, self._path)
