"""Memory vectors in ChromaDB: one collection for everyone, filtered by person and scope on every query."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import chromadb
import numpy as np
from chromadb.api import ClientAPI
from chromadb.config import Settings as ChromaSettings

from core.ports import Memory, Scope

__all__ = ["ChromaVectors", "chroma_client"]

COLLECTION = "rapport_memories"
_PAGE = 2_000


def chroma_client(*, path: str, url: str | None) -> ClientAPI:
    """A Chroma server when `url` is set (shared by replicas), else an embedded store at `path`."""
    settings = ChromaSettings(anonymized_telemetry=False)
    if url:
        parsed = urlparse(url)
        ssl = parsed.scheme == "https"
        return chromadb.HttpClient(
            host=parsed.hostname or "localhost", port=parsed.port or (443 if ssl else 8000), ssl=ssl, settings=settings
        )
    return chromadb.PersistentClient(path=path, settings=settings)


def _where(user_key: str, scopes: Sequence[Scope] | None = None) -> dict[str, Any]:
    if scopes is None:
        return {"user_key": user_key}
    return {"$and": [{"user_key": user_key}, {"scope": {"$in": list(scopes)}}]}


class ChromaVectors:
    """Implements core.ports.VectorIndex. Chroma's client is synchronous, so every call runs in a thread."""

    def __init__(self, client: ClientAPI, *, collection: str = COLLECTION) -> None:
        self._client = client
        # embedding_function=None: we always pass our own vectors (Chroma's default would download a model).
        self._collection = client.get_or_create_collection(
            collection, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
        )

    async def ping(self) -> None:
        await asyncio.to_thread(self._client.heartbeat)

    async def add(self, memories: Sequence[Memory], embeddings: Sequence[Sequence[float]]) -> None:
        if not memories:
            return
        await asyncio.to_thread(
            self._collection.upsert,
            ids=[m.id for m in memories],
            embeddings=np.asarray(embeddings, dtype=np.float32),
            metadatas=[
                {"user_key": m.user_key, "scope": m.scope, "created_at": m.created_at.timestamp()} for m in memories
            ],
        )

    async def nearest(
        self, user_key: str, embedding: Sequence[float], *, scopes: Sequence[Scope], limit: int
    ) -> list[tuple[str, float]]:
        if limit <= 0 or not scopes:
            return []
        result = await asyncio.to_thread(
            self._collection.query,
            query_embeddings=np.asarray([embedding], dtype=np.float32),
            n_results=limit,
            where=_where(user_key, scopes),
            include=["metadatas", "distances"],
        )
        ids = result["ids"][0]
        metadatas = (result["metadatas"] or [[]])[0]
        distances = (result["distances"] or [[]])[0]
        return [
            (memory_id, 1.0 - float(distance))
            for memory_id, meta, distance in zip(ids, metadatas, distances, strict=True)
            # The where clause already filters; this re-check makes a leak impossible even if it were dropped.
            if meta["user_key"] == user_key and meta["scope"] in scopes
        ]

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
            result = await asyncio.to_thread(
                self._collection.get,
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
        result = await asyncio.to_thread(self._collection.get, where=_where(user_key), include=[])
        return len(result["ids"])

    async def forget_user(self, user_key: str) -> None:
        await asyncio.to_thread(self._collection.delete, where=_where(user_key))
