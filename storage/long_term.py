"""Memory vectors in ChromaDB, for deployments that keep them in a server (CHROMA_URL), and for moving an old
embedded store's vectors into the database: one collection for everyone, filtered by person on every call.

Who may read a memory is decided by its row in the database (core.privacy's audience, which a migration can
place anew): the vectors read here go into that person's index, which filters by the rows' audiences. The
audience kept in Chroma's metadata is informative only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlparse

import chromadb
import numpy as np
from chromadb.api import ClientAPI
from chromadb.config import Settings as ChromaSettings

from core.ports import Memory
from storage.chroma_process import ChromaProcess

__all__ = ["ChromaCollection", "ChromaVectors", "open_chroma"]

COLLECTION = "rapport_memories"
# embedding_function=None wherever the collection is opened: we always pass our own vectors (Chroma's default
# would download a model).
CONFIGURATION: dict[str, Any] = {"hnsw": {"space": "cosine"}}
_PAGE = 2_000


class ChromaCollection(Protocol):
    """Where the calls on the collection run: `method` is a Collection method's name, or "heartbeat"."""

    async def call(self, method: str, **kwargs: Any) -> Any: ...

    def close(self) -> None: ...


class _ServerCollection:
    """A Chroma server's collection: its client mostly waits on the network, so a thread is enough."""

    def __init__(self, client: ClientAPI) -> None:
        self._client = client
        self._collection = client.get_or_create_collection(
            COLLECTION,
            embedding_function=None,
            configuration=CONFIGURATION,  # type: ignore[arg-type]
        )

    async def call(self, method: str, **kwargs: Any) -> Any:
        if method == "heartbeat":
            return await asyncio.to_thread(self._client.heartbeat)
        return await asyncio.to_thread(getattr(self._collection, method), **kwargs)

    def close(self) -> None:
        pass


def open_chroma(*, path: str, url: str | None) -> ChromaCollection:
    """A Chroma server when `url` is set (shared by replicas, blocking: call it in a thread), else an embedded
    store at `path` in a process of its own (started on the first call)."""
    if url:
        parsed = urlparse(url)
        ssl = parsed.scheme == "https"
        client = chromadb.HttpClient(
            host=parsed.hostname or "localhost",
            port=parsed.port or (443 if ssl else 8000),
            ssl=ssl,
            settings=ChromaSettings(anonymized_telemetry=False),
        )
        return _ServerCollection(client)
    return ChromaProcess(path, COLLECTION, CONFIGURATION)


def _where(user_key: str) -> dict[str, Any]:
    return {"user_key": user_key}


class ChromaVectors:
    """A Chroma store of memory vectors (a server through CHROMA_URL, or an old embedded store to move in), always
    filtered by person. Chroma's client is synchronous, so no call runs on the event loop."""

    def __init__(self, collection: ChromaCollection) -> None:
        self._collection = collection

    async def ping(self) -> None:
        await self._collection.call("heartbeat")

    def close(self) -> None:
        self._collection.close()

    async def add(self, memories: Sequence[Memory], embeddings: Sequence[Sequence[float]]) -> None:
        if not memories:
            return
        await self._collection.call(
            "upsert",
            ids=[m.id for m in memories],
            embeddings=np.asarray(embeddings, dtype=np.float32),
            metadatas=[
                {"user_key": m.user_key, "scope": m.scope, "created_at": m.created_at.timestamp()} for m in memories
            ],
        )

    async def vectors(self, user_key: str, ids: Sequence[str] | None) -> tuple[list[str], list[str], np.ndarray]:
        """A person's stored vectors (all of them, or these ids): ids, scopes and a float32 matrix.

        Read in pages: Chroma's local store turns one large read into one SQL statement and fails past
        SQLite's variable limit (seen at 100,000 memories).
        """
        if ids is not None and not ids:
            return [], [], np.zeros((0, 0), dtype=np.float32)
        found_ids: list[str] = []
        scopes: list[str] = []
        chunks: list[np.ndarray] = []
        offset = 0
        while True:
            page_ids = list(ids[offset : offset + _PAGE]) if ids is not None else None
            result = await self._collection.call(
                "get",
                ids=page_ids,
                where=_where(user_key),
                include=["embeddings", "metadatas"],
                limit=None if ids is not None else _PAGE,
                offset=None if ids is not None else offset,
            )
            found_ids += result["ids"]
            scopes += [str(m["scope"]) for m in result["metadatas"] or []]
            if result["embeddings"] is not None and len(result["embeddings"]):
                chunks.append(np.asarray(result["embeddings"], dtype=np.float32))
            offset += _PAGE
            if (ids is not None and offset >= len(ids)) or (ids is None and len(result["ids"]) < _PAGE):
                break
        matrix = np.vstack(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
        return found_ids, scopes, matrix

    async def count(self, user_key: str) -> int:
        result = await self._collection.call("get", where=_where(user_key), include=[])
        return len(result["ids"])

    async def remove(self, user_key: str, memory_ids: Sequence[str]) -> None:
        if memory_ids:
            await self._collection.call("delete", ids=list(memory_ids), where=_where(user_key))

    async def forget_user(self, user_key: str) -> None:
        await self._collection.call("delete", where=_where(user_key))
