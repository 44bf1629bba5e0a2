"""The embedded Chroma store, owned by a process of its own.

Chroma's local (Rust) core holds the GIL for the whole of a write: measured on the 2-core machine, an upsert of
64 vectors kept every other thread of the process, the event loop included, waiting for about 100 ms. Run in a
thread, that stalled every conversation each time the memory writer stored a batch. In a child process the
same work costs the loop only the pickling of the arguments. A server (CHROMA_URL) needs none of this: its
client spends its time waiting on the network, which a thread does well.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

__all__ = ["ChromaProcess"]

log = logging.getLogger(__name__)

# The child's own state: one client and collection, opened by the pool's initializer (one worker, one owner).
_client: Any = None
_collection: Any = None


def _die_with(parent: int) -> None:
    """Exit as soon as the worker is gone, however it went (SIGKILL and OOM give it no chance to stop us): a
    store left running would hold its files and memory with nobody to answer. Its exit also closes the last
    copy of multiprocessing's resource-tracker pipe, so the tracker ends too."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _open(path: str, collection: str, configuration: dict[str, Any], parent: int) -> None:
    global _client, _collection
    threading.Thread(target=_die_with, args=(parent,), name="die-with-worker", daemon=True).start()
    # Chroma indexes what it is given in background threads, seconds of CPU for every few thousand vectors
    # (measured: both cores busy for most of a minute after 10,000 memories were added). That work can wait;
    # the answers cannot, so it runs at a lower priority than the event loop and the databases.
    os.nice(10)
    import chromadb
    from chromadb.config import Settings

    _client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
    _collection = _client.get_or_create_collection(
        collection,
        embedding_function=None,
        configuration=configuration,
    )


def _invoke(method: str, kwargs: dict[str, Any]) -> Any:
    if method == "heartbeat":
        return _client.heartbeat()
    return getattr(_collection, method)(**kwargs)


class ChromaProcess:
    """Calls on one collection of an embedded store, run in a child process that owns the store.

    A child that dies (killed, out of memory) is replaced on the next call, which is tried once more.
    """

    def __init__(self, path: str, collection: str, configuration: dict[str, Any]) -> None:
        self._initargs = (path, collection, configuration, os.getpid())
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent runs threads (the event loop's helpers, ONNX Runtime) that fork would copy
        # in whatever state they were.
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_open,
            initargs=self._initargs,
        )

    async def call(self, method: str, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool = self._pool
            try:
                return await loop.run_in_executor(pool, _invoke, method, kwargs)
            except BrokenProcessPool:
                if attempt == 2:
                    raise
                log.warning("the Chroma process died; starting a new one")
                if self._pool is pool:
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = self._start()
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
