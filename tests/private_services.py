"""A PostgreSQL cluster and a Redis of the fault tests' own, on spare ports: they are stopped, killed and started
again under a running worker, and the shared services on 5432 and 6379 are never touched."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg

from tests.conftest import IN_CI, free_port

__all__ = ["PrivateChroma", "PrivatePostgres", "PrivateRedis", "missing_tools"]

PG_VERSION = os.environ.get("TEST_PG_VERSION", "15")


def missing_tools() -> str | None:
    """Why the fault tests cannot run here (None: they can): they need root's pg_createcluster and redis-server."""
    for tool in ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "redis-server"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if os.geteuid() != 0 and not IN_CI:
        return "pg_createcluster needs root"
    return None


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def _until(check: object, seconds: float, what: str) -> None:
    for _ in range(int(seconds / 0.1)):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} within {seconds:.0f}s")


class PrivatePostgres:
    """`pg_createcluster` on a spare port with trust auth; `stop`/`start` it; `drop` it at the end."""

    def __init__(self) -> None:
        self.name = f"rapport_fault_{uuid.uuid4().hex[:8]}"
        self.port = free_port()

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=120)

    async def create(self) -> None:
        await asyncio.to_thread(
            self._run, "pg_createcluster", PG_VERSION, self.name, "--port", str(self.port), "--", "--auth=trust"
        )
        await self.start()

    async def start(self) -> None:
        await asyncio.to_thread(self._run, "pg_ctlcluster", PG_VERSION, self.name, "start")
        await _until(lambda: _reachable(self.port), 30, "PostgreSQL did not come up")

    async def stop(self) -> None:
        await asyncio.to_thread(self._run, "pg_ctlcluster", PG_VERSION, self.name, "stop", "-m", "fast")
        await _until(lambda: not _reachable(self.port), 30, "PostgreSQL did not stop")

    async def drop(self) -> None:
        await asyncio.to_thread(self._run, "pg_dropcluster", PG_VERSION, self.name, "--stop")

    async def database(self) -> str:
        """A fresh database in the cluster; its URL."""
        name = f"rapport_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(f"postgres://postgres@127.0.0.1:{self.port}/postgres")
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    async def query(self, url: str, sql: str) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(url)
        try:
            return list(await connection.fetch(sql))
        finally:
            await connection.close()


class _Server:
    """A server of the test's own, on a spare port: started, killed, started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self._process: asyncio.subprocess.Process | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    async def start(self) -> None:
        command = self.command()
        self._process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await _until(lambda: _reachable(self.port), 30, f"{command[0]} did not come up")

    async def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            await self._process.wait()
            self._process = None
        await _until(lambda: not _reachable(self.port), 10, "the server did not stop")


class PrivateRedis(_Server):
    """A redis-server that keeps nothing on disk."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self._directory = directory

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        self._directory.mkdir(parents=True, exist_ok=True)
        return ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                "--dir", str(self._directory)]  # fmt: skip


class PrivateChroma(_Server):
    """`chroma run` from the chromadb package, on a directory that outlives a kill."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self._directory = directory

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        chroma = Path(sys.executable).with_name("chroma")
        return [str(chroma), "run", "--path", str(self._directory), "--host", "127.0.0.1", "--port", str(self.port)]
