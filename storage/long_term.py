"""Long-term memory in ChromaDB: one collection for everyone, filtered by person and scope on every query."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import chromadb
from chromadb.api import ClientAPI
from chromadb.config import Settings as ChromaSettings

from core.ports import Memory, MemoryHit, Scope

__all__ = ["ChromaMemory", "chroma_client"]

COLLECTION = "rapport_memories"
_REPLY_CHARS = 2_000


def chroma_client(*, path: str, url: str | None) -> ClientAPI:
    """A Chroma server when `url` is set (shared by replicas), else an embedded store at `path`."""
    settings = ChromaSettings(anonymized_telemetry=False)
    if url:
        parsed = urlparse(url)
        ssl = parsed.scheme == "https"
        return chromadb.HttpClient(
            host=parsed.hostname or "localhost",
            port=parsed.port or (443 if ssl else 8000),
            ssl=ssl,
            settings=settings,
        )
    return chromadb.PersistentClient(path=path, settings=settings)


def _where(user_key: str, scopes: Sequence[Scope] | None = None) -> dict[str, Any]:
    if scopes is None:
        return {"user_key": user_key}
    return {"$and": [{"user_key": user_key}, {"scope": {"$in": list(scopes)}}]}


class ChromaMemory:
    """Implements core.ports.LongTermMemory. Chroma's client is synchronous, so every call runs in a thread."""

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
            embeddings=[list(e) for e in embeddings],  # type: ignore[arg-type]
            documents=[m.text for m in memories],
            metadatas=[
                {
                    "user_key": m.user_key,
                    "scope": m.scope,
                    "conversation_id": m.conversation_id,
                    "created_at": m.created_at.timestamp(),
                    "speaker": m.speaker,
                    "reply": m.reply[:_REPLY_CHARS],
                }
                for m in memories
            ],
        )

    async def search(
        self, user_key: str, embedding: Sequence[float], *, scopes: Sequence[Scope], limit: int
    ) -> list[MemoryHit]:
        if limit <= 0 or not scopes:
            return []
        result = await asyncio.to_thread(
            self._collection.query,
            query_embeddings=[list(embedding)],  # type: ignore[arg-type]
            n_results=limit,
            where=_where(user_key, scopes),
            include=["documents", "metadatas", "distances"],
        )
        ids = result["ids"][0]
        documents = (result["documents"] or [[]])[0]
        metadatas = (result["metadatas"] or [[]])[0]
        distances = (result["distances"] or [[]])[0]
        hits = []
        for memory_id, text, meta, distance in zip(ids, documents, metadatas, distances, strict=True):
            # The where clause already filters; this re-check makes a leak impossible even if it were dropped.
            if meta["user_key"] != user_key or meta["scope"] not in scopes:
                continue
            memory = Memory(
                id=memory_id,
                user_key=str(meta["user_key"]),
                text=text or "",
                scope=meta["scope"],  # type: ignore[arg-type]
                conversation_id=str(meta.get("conversation_id", "")),
                created_at=datetime.fromtimestamp(float(meta["created_at"]), UTC),  # type: ignore[arg-type]
                speaker=str(meta.get("speaker", "")),
                reply=str(meta.get("reply", "")),
            )
            hits.append(MemoryHit(memory=memory, score=1.0 - float(distance)))
        return hits

    async def count(self, user_key: str) -> int:
        result = await asyncio.to_thread(self._collection.get, where=_where(user_key), include=[])
        return len(result["ids"])

    async def forget_user(self, user_key: str) -> None:
        await asyncio.to_thread(self._collection.delete, where=_where(user_key))
