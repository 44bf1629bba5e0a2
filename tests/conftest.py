"""Shared fixtures: the real embedding model (once), a fake Claude, and storage on every backend we ship."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from logging import Logger
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from discord.gateway import DiscordWebSocket
from discord.http import Route
from redis.asyncio import Redis
from tortoise.context import TortoiseContext
from tortoise.migrations.api import migrate as run_migrations

from adapters.discord import DiscordAdapter, DiscordConfig
from adapters.slack import SlackAdapter, SlackConfig
from bot.config import Settings
from bot.http import AppState, make_app
from bot.wiring import Services, build_services
from storage.database import Database, tortoise_config
from storage.embeddings import default_model_path, load_model
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.slack_api import FakeSlackAPI

IN_CI = os.environ.get("CI") == "true"
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Outside CI a missing service skips with its reason; in CI it fails loudly."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}: CI must start it (.ci/run)", pytrace=False)
    pytest.skip(f"{message}; start it to run this test")


@pytest.fixture(autouse=True)
def _logger_levels_as_they_were() -> Iterator[None]:
    """Each test leaves the loggers' levels as it found them. bot.logs.configure_logging sets the root's and the
    noisy libraries' levels, and slack_bolt, on every request it dispatches, gives the logger named after the app
    ("rapport") the level of the one it was handed (adapters.slack's, WARNING): after any Slack test, a logger
    under "rapport." dropped INFO lines (test_logs' masking test, under the whole suite)."""
    loggers = logging.root.manager.loggerDict
    fresh = (logging.NOTSET, False)  # a logger made during the test
    before = {name: (found.level, found.disabled) for name, found in loggers.items() if isinstance(found, Logger)}
    root = logging.root.level
    yield
    for name, found in list(loggers.items()):
        if isinstance(found, Logger) and (found.level, found.disabled) != before.get(name, fresh):
            level, found.disabled = before.get(name, fresh)
            found.setLevel(level)
    if logging.root.level != root:
        logging.root.setLevel(root)


@pytest.fixture(scope="session")
def embedding_model() -> Any:
    """The real all-MiniLM-L6-v2, loaded once for the whole run."""
    return load_model(default_model_path())


@pytest_asyncio.fixture(scope="session")
async def fake_claude_server() -> AsyncIterator[FakeAnthropic]:
    server = FakeAnthropic()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def fake_claude(fake_claude_server: FakeAnthropic) -> FakeAnthropic:
    fake_claude_server.reset()
    return fake_claude_server


class Migrated:
    """Databases with every migration applied, made once per run: a storage set-up's database is a copy of one
    (SQLite) or is created from it (PostgreSQL's TEMPLATE) rather than migrated again, which cost ~0.4 s (SQLite)
    and ~1 s (PostgreSQL) of every test's set-up. Migrating from nothing is still tested: tests/test_storage.py,
    the tests that build their own set-ups, and every worker process."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._sqlite: Path | None = None
        self.postgres: str | None = None

    async def sqlite(self) -> Path:
        async with self._lock:
            if self._sqlite is None:
                directory = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="rapport-migrated-"))
                await Database(f"sqlite://{directory}/rapport.sqlite3").migrate()
                self._sqlite = directory / "rapport.sqlite3"
            return self._sqlite

    async def postgres_template(self) -> str:
        async with self._lock:
            if self.postgres is None:
                name = f"rapport_template_{uuid.uuid4().hex[:12]}"
                await _admin(f'CREATE DATABASE "{name}"')
                await Database(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}").migrate()  # no session stays open
                self.postgres = name
            return self.postgres

    async def drop(self) -> None:
        if self.postgres is not None:
            await _admin(f'DROP DATABASE IF EXISTS "{self.postgres}" WITH (FORCE)')
        if self._sqlite is not None:
            shutil.rmtree(self._sqlite.parent, ignore_errors=True)


MIGRATED = Migrated()


async def _admin(sql: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


@pytest_asyncio.fixture(scope="session", autouse=True)
async def _migrated_databases() -> AsyncIterator[None]:
    yield
    await MIGRATED.drop()


@asynccontextmanager
async def fresh_postgres(*, migrated: bool = False) -> AsyncIterator[str]:
    """A fresh PostgreSQL database, dropped afterwards: empty, or `migrated` already."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"rapport_test_{uuid.uuid4().hex[:12]}"
    template = f' TEMPLATE "{await MIGRATED.postgres_template()}"' if migrated else ""
    await _admin(f'CREATE DATABASE "{name}"{template}')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def database_at(migration: str, sqlite: Path | None) -> AsyncIterator[str]:
    """A database in an earlier release's shape, migrated up to `migration` only (its name in
    storage/migrations): a SQLite file at `sqlite`, or with None a fresh PostgreSQL database. Its URL."""
    async with contextlib.AsyncExitStack() as stack:
        url = f"sqlite://{sqlite}" if sqlite is not None else await stack.enter_async_context(fresh_postgres())
        async with TortoiseContext():
            await run_migrations(config=tortoise_config(url), target=f"rapport.{migration}")
        yield url


@asynccontextmanager
async def redis_namespace() -> AsyncIterator[str]:
    """A key prefix of its own on the real Redis; its keys are deleted afterwards."""
    require_service("Redis", "127.0.0.1", 6379)
    prefix = f"rapport-test-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        redis = Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in redis.scan_iter(f"{prefix}:*")]
            if keys:
                await redis.delete(*keys)
        finally:
            await redis.aclose()


def make_settings(tmp_path: Path, fake: FakeAnthropic, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "ANTHROPIC_API_KEY": "sk-test-not-a-real-key",
        "ANTHROPIC_BASE_URL": fake.url,
        "CLAUDE_MAX_RETRIES": 1,
        "CLAUDE_TIMEOUT": 5,
        "DATABASE_URL": f"sqlite://{tmp_path}/rapport.sqlite3",
        "CHROMA_PATH": str(tmp_path / "chroma"),
        # Recorded payloads carry the times they were recorded at: years old, far past "too old to answer".
        "STALE_AFTER_SECONDS": 10 * 365 * 86_400,
        # The line that tells someone new that Rapport remembers ends their first answer; the tests that are about
        # other things compare answers whole, and tests/test_person_model.py turns it back on.
        "CONSENT_NOTE": "",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def settings_on(backend: str, tmp_path: Path, fake: FakeAnthropic, **overrides: Any) -> AsyncIterator[Settings]:
    """Settings for one storage set-up (`embedded`: SQLite, in-process short-term memory, local Chroma; `served`:
    PostgreSQL and Redis too, each fresh and dropped after), with `overrides` on top: what each module's `settings`
    fixture yields."""
    if backend == "embedded":
        database = tmp_path / "rapport.sqlite3"  # make_settings' own
        if "DATABASE_URL" not in overrides and not database.exists():
            await asyncio.to_thread(shutil.copyfile, await MIGRATED.sqlite(), database)
        yield make_settings(tmp_path, fake, **overrides)
        return
    async with fresh_postgres(migrated=True) as pg, redis_namespace() as prefix:
        yield make_settings(tmp_path, fake, DATABASE_URL=pg, REDIS_URL=REDIS_URL, REDIS_PREFIX=prefix, **overrides)


@pytest_asyncio.fixture(params=["embedded", "served"])
async def settings(
    request: pytest.FixtureRequest, tmp_path: Path, fake_claude: FakeAnthropic
) -> AsyncIterator[Settings]:
    """Both storage set-ups."""
    async with settings_on(request.param, tmp_path, fake_claude) as chosen:
        yield chosen


@pytest_asyncio.fixture
async def services(settings: Settings, embedding_model: Any) -> AsyncIterator[Services]:
    built = await build_services(settings, model=embedding_model)
    built.start()
    yield built
    await shut(built)


async def settled(services: Services, timeout: float = 15.0) -> None:
    """Wait until nothing is under way: no turn being worked through, no job held."""
    await eventually(_idle(services), timeout)


def _idle(services: Services) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return services.turns.serving == 0 and services.assistant.pending == 0

    return check


async def shut(*replicas: Services, timeout: float = 10.0) -> None:
    """What the worker does on SIGTERM: let the turns and jobs under way finish, then close (every replica's
    work first: replicas in one test process share tortoise's connection)."""
    for services in replicas:
        await services.turns.stop_taking()
    for services in replicas:
        await services.turns.drain(timeout)
        await services.assistant.drain(timeout)
    for services in replicas:
        await services.close()


async def ready(value: Any) -> Any:
    """`value`, as an awaitable (what a search takes for an embedding that may still be on its way)."""
    return value


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait for background work to make `check` true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`chroma run` from the chromadb package: the server replicas share through CHROMA_URL."""
    port = free_port()
    chroma = Path(sys.executable).with_name("chroma")
    process = subprocess.Popen(
        [
            str(chroma),
            "run",
            "--path",
            str(tmp_path_factory.mktemp("chroma-server")),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError("chroma run exited") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


# --- the platforms' fakes with Rapport's adapters on them (tests that need other set-ups define their own) -----

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@asynccontextmanager
async def running(services: Services, fake: FakeDiscord, **config: Any) -> AsyncIterator[DiscordAdapter]:
    """The adapter on the fake; discord.py's global addresses are as before once it stops."""
    base, gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    config.setdefault("file_origins", frozenset())  # no test downloads from Discord's real CDN
    settings = DiscordConfig(token="fake-token", api_base=fake.api_base, guild_id=int(fake.guilds[0]["id"]), **config)
    adapter = DiscordAdapter(services.assistant, services.turns, settings)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()
        assert (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY) == (base, gateway)


@pytest_asyncio.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    fake.add_guild()
    await fake.start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture
async def rapport(services: Services, discord_fake: FakeDiscord) -> AsyncIterator[DiscordAdapter]:
    async with running(services, discord_fake) as adapter:
        await discord_fake.until(lambda: adapter.connected)
        yield adapter


@pytest_asyncio.fixture
async def slack_api() -> AsyncIterator[FakeSlackAPI]:
    api = FakeSlackAPI()
    await api.start()
    yield api
    await api.stop()


@pytest_asyncio.fixture
async def adapter(services: Services, slack_api: FakeSlackAPI) -> AsyncIterator[SlackAdapter]:
    """Slack in HTTP mode on the fake Web API (requests signed with SLACK_SECRET)."""
    config = SlackConfig(
        bot_token="xoxb-test-token", signing_secret=SLACK_SECRET, api_url=slack_api.url, file_origins=frozenset()
    )
    slack = SlackAdapter(services.assistant, services.turns, config)
    await slack.start()
    yield slack
    await settled(services)
    await slack.stop()
    assert await slack.drain(15)


@pytest_asyncio.fixture
async def client(services: Services, adapter: SlackAdapter) -> AsyncIterator[TestClient]:
    state = AppState(services=services, adapters=[adapter], slack_events=adapter.handle_http)
    async with TestClient(TestServer(make_app(state))) as test_client:
        yield test_client
