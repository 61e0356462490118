"""Connections, shared: one asyncpg pool and one SQLAlchemy engine per distinct DSN, and a bounded
LRU of Agno clients per (DSN, schema) on top of that engine.

Thousands of agent schemas therefore mean thousands of small cached Agno clients (each reflects
its tables once, ~28 statements, on first use), never thousands of connection pools: the number of
open Postgres connections is bounded by ``SESSIONCTL_POOL_SIZE`` times 2 per DSN (ours + Agno's).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import asyncpg

from sessionctl import store
from sessionctl.errors import (
    AgnoNotInstalled,
    DatabaseReadOnly,
    DatabaseRefused,
    DatabaseUnavailable,
    InsufficientPrivilege,
    SessionctlError,
)
from sessionctl.identifiers import Dsn

if TYPE_CHECKING:
    from agno.db.postgres import AsyncPostgresDb, PostgresDb
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine


# How long a spare connection may take to open before the caller does without it (a free one
# is never waited for: see Databases.spare).
SPARE_WAIT = 2.0

# The longest statement asyncpg keeps prepared (its default: 15 KiB): a count of 250 agent schemas'
# tables is ~40 KiB of SQL.
MAX_CACHED_STATEMENT = 256 * 1024

async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """What a connection given back to the pool still needs undone, after asyncpg has rolled back
    a transaction left open: nothing. sessionctl keeps no session state on a connection — every
    setting is ``SET LOCAL``, every advisory lock transaction-scoped, no ``LISTEN``, no cursor held
    outside a transaction — so asyncpg's default reset (four statements, a round trip on every
    release: a third of what an intake request asks of Postgres) would undo nothing."""


# Errors that mean "the database is not there right now" (retry), as opposed to a bad query.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # connection refused / reset / DNS
    asyncio.TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,  # the server is starting up or shutting down
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # seen when the server restarts under a running query
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.PostgresConnectionError,
)
# Errors that mean "this is the wrong database or login": retrying will not help.
REFUSED_DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.InvalidCatalogNameError,  # no such database
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # no such role / not allowed
    asyncpg.exceptions.InvalidPasswordError,
)


def map_db_error(exc: BaseException, dsn: Dsn, doing: str) -> SessionctlError | None:
    """Our error for a driver error (``None``: not a connection-level problem, let it raise)."""
    name = type(exc).__name__
    if isinstance(exc, REFUSED_DB_ERRORS):
        return DatabaseRefused(f"Postgres at {dsn.redacted} refused the login or database ({name}): check DATABASE_URL")
    if isinstance(exc, asyncpg.exceptions.ReadOnlySQLTransactionError):
        return DatabaseReadOnly(
            f"Postgres at {dsn.redacted} is read-only (a replica, or default_transaction_read_only is on):"
            " point DATABASE_URL at the primary"
        )
    if isinstance(exc, asyncpg.exceptions.InsufficientPrivilegeError):
        return InsufficientPrivilege(
            f"Postgres at {dsn.redacted} refused a statement for lack of privilege (SQLSTATE 42501):"
            " run `sessionctl doctor` to see which grant is missing"
        )
    if isinstance(exc, asyncpg.exceptions.DataError):  # a client-side encoding error: a bug, not an outage
        return None
    if isinstance(exc, TRANSIENT_DB_ERRORS):
        return DatabaseUnavailable(f"{doing} Postgres at {dsn.redacted} ({name})")
    return None


def _agno_engine_options() -> dict[str, Any]:
    try:
        from agno.db.postgres.engine import _engine_options
    except ImportError:  # an Agno without the helper: its documented defaults
        return {"pool_pre_ping": True, "pool_recycle": 3600}
    options: dict[str, Any] = _engine_options()
    return options


def _lost(exc: BaseException, dsn: Dsn) -> SessionctlError | None:
    """Our error for a driver error raised while a connection was held (``None``: let it raise)."""
    return None if isinstance(exc, SessionctlError) else map_db_error(exc, dsn, "lost")


class Databases:
    """Per-process registry of pools, engines and Agno clients. Close it on shutdown."""

    def __init__(
        self,
        *,
        pool_size: int = 4,
        client_cache_size: int = 256,
        max_databases: int = 32,
        statement_cache_size: int = 1024,
    ) -> None:
        self.pool_size = pool_size
        # Prepared statements kept per connection. Our statements name an agent's schema, so an
        # erasure across many agents cycles through about ten per agent; a cache smaller than
        # that (asyncpg's default is 100) parses and plans every one again (docs/decisions.md).
        self.statement_cache_size = statement_cache_size
        self.client_cache_size = client_cache_size
        self.max_databases = max_databases
        self._pools: dict[Dsn, asyncpg.Pool] = {}
        self._pool_locks: dict[Dsn, asyncio.Lock] = {}
        self._engines: dict[Dsn, AsyncEngine] = {}
        self._sync_engines: dict[Dsn, Engine] = {}
        self._clients: OrderedDict[tuple[Dsn, str], Any] = OrderedDict()
        self._sync_clients: OrderedDict[tuple[Dsn, str], Any] = OrderedDict()
        self.clients_built = 0  # for tests and metrics: how many Agno clients were constructed
        self._leases: dict[Dsn, int] = {}  # connections handed out or being opened, per database
        self._waiting: dict[Dsn, int] = {}  # jobs waiting for a connection (not spares), per database
        self._evict_lock = asyncio.Lock()

    async def pool(self, dsn: Dsn) -> asyncpg.Pool:
        pool = self._pools.get(dsn)
        if pool is not None:
            self._pools[dsn] = self._pools.pop(dsn)  # most recently used last
            return pool
        await self._make_room()
        lock = self._pool_locks.setdefault(dsn, asyncio.Lock())
        async with lock:
            pool = self._pools.get(dsn)
            if pool is None:
                try:
                    pool = await asyncpg.create_pool(
                        dsn.asyncpg,
                        min_size=0,
                        max_size=self.pool_size,
                        init=store.init_connection,
                        command_timeout=300,
                        timeout=10,
                        statement_cache_size=self.statement_cache_size,
                        # the counts over a fleet are 250-branch statements (store/counts.py): kept
                        # prepared like any other, not re-planned on every call
                        max_cacheable_statement_size=MAX_CACHED_STATEMENT,
                        reset=_nothing_to_reset,
                    )
                except Exception as exc:
                    mapped = map_db_error(exc, dsn, "cannot connect to")
                    if mapped is None:
                        raise
                    raise mapped from exc
                self._pools[dsn] = pool
        return pool

    def known(self) -> list[Dsn]:
        """The databases this process has a pool for now."""
        return list(self._pools)

    def connect(self, dsn: Dsn) -> Connect:
        """``async with databases.connect(dsn) as conn``: a pooled connection; losing the
        database (refused, reset, restarting) raises :class:`DatabaseUnavailable` (retryable)."""
        return Connect(self, dsn)

    @contextlib.asynccontextmanager
    async def spare(self, dsn: Dsn) -> AsyncIterator[asyncpg.Connection | None]:
        """``async with databases.spare(dsn) as conn``: one more pooled connection to a database
        already in use if the pool has one free *now* and no job is waiting for one, else
        ``None``. It never waits for another job to give one back (jobs holding a connection each
        and asking for a second could otherwise wait on each other forever); its holder should
        give it back as soon as :meth:`wanted` says a job waits. For optional parallelism only."""
        pool = self._pools.get(dsn)
        leases = self._leases
        # Every connection of our pools is one of our leases (held, opening or awaited): fewer
        # leases than the pool's size means one is free, and acquiring it waits for nobody.
        if pool is None or self.wanted(dsn) or leases.get(dsn, 0) >= pool.get_max_size():
            yield None
            return
        leases[dsn] = leases.get(dsn, 0) + 1  # counted while it opens: a job arriving then sees the pool full
        try:
            conn: asyncpg.Connection | None = None
            with contextlib.suppress(Exception):  # cannot connect (in time): do without
                conn = await pool.acquire(timeout=SPARE_WAIT)
            if conn is None:
                yield None
                return
            try:
                yield conn
            except Exception as exc:  # losing the database is an outage, as through connect()
                mapped = _lost(exc, dsn)
                if mapped is None:
                    raise
                raise mapped from exc
            finally:
                with contextlib.suppress(Exception):
                    await pool.release(conn)
        finally:
            leases[dsn] -= 1

    def wanted(self, dsn: Dsn) -> bool:
        """Is a job waiting for a connection to this database (so a spare should go back)?"""
        return self._waiting.get(dsn, 0) > 0

    async def _make_room(self) -> None:
        """At most ``max_databases`` pools: close the least recently used one nobody holds or awaits."""
        async with self._evict_lock:
            await self._evict()

    async def _evict(self) -> None:
        while len(self._pools) >= self.max_databases:
            idle = [
                d for d, p in self._pools.items() if self._leases.get(d, 0) == 0 and p.get_size() == p.get_idle_size()
            ]
            if not idle:
                raise DatabaseUnavailable(
                    f"more than {self.max_databases} databases busy at once (SESSIONCTL_MAX_DATABASES)"
                )
            victim = idle[0]
            await self._pools.pop(victim).close()
            engine = self._engines.pop(victim, None)
            if engine is not None:
                await engine.dispose()
            for key in [k for k in self._clients if k[0] == victim]:
                del self._clients[key]

    def engine(self, dsn: Dsn) -> AsyncEngine:
        engine = self._engines.get(dsn)
        if engine is None:
            try:
                from sqlalchemy.ext.asyncio import create_async_engine
            except ImportError as exc:  # pragma: no cover - a dependency of ours
                raise AgnoNotInstalled() from exc
            engine = create_async_engine(
                dsn.sqlalchemy_async, pool_size=self.pool_size, max_overflow=0, **_agno_engine_options()
            )
            self._engines[dsn] = engine
        return engine

    def sync_engine(self, dsn: Dsn) -> Engine:
        engine = self._sync_engines.get(dsn)
        if engine is None:
            from sqlalchemy import create_engine

            engine = create_engine(
                dsn.sqlalchemy_sync, pool_size=self.pool_size, max_overflow=0, **_agno_engine_options()
            )
            self._sync_engines[dsn] = engine
        return engine

    def agno_client(self, dsn: Dsn, schema: str) -> AsyncPostgresDb:
        """The cached Agno ``AsyncPostgresDb`` for one agent schema (LRU, shared engine)."""
        key = (dsn, schema)
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client  # type: ignore[no-any-return]
        try:
            from agno.db.postgres import AsyncPostgresDb
        except ImportError as exc:
            raise AgnoNotInstalled() from exc
        client = AsyncPostgresDb(db_engine=self.engine(dsn), db_schema=schema, create_schema=False)
        self.clients_built += 1
        self._clients[key] = client
        while len(self._clients) > self.client_cache_size:
            self._clients.popitem(last=False)  # the engine is shared: nothing to dispose
        return client

    def agno_sync_client(self, dsn: Dsn, schema: str) -> PostgresDb:
        key = (dsn, schema)
        client = self._sync_clients.get(key)
        if client is not None:
            self._sync_clients.move_to_end(key)
            return client  # type: ignore[no-any-return]
        try:
            from agno.db.postgres import PostgresDb
        except ImportError as exc:
            raise AgnoNotInstalled() from exc
        client = PostgresDb(db_engine=self.sync_engine(dsn), db_schema=schema, create_schema=False)
        self._sync_clients[key] = client
        while len(self._sync_clients) > self.client_cache_size:
            self._sync_clients.popitem(last=False)
        return client

    @property
    def cached_clients(self) -> int:
        return len(self._clients)

    async def close(self) -> None:
        # One at a time off the dicts: a job still running at shutdown may touch them while we
        # await (iterating them raised "dictionary keys changed during iteration").
        self._clients.clear()
        self._sync_clients.clear()
        while self._pools:
            await self._pools.popitem()[1].close()
        while self._engines:
            await self._engines.popitem()[1].dispose()
        while self._sync_engines:
            self._sync_engines.popitem()[1].dispose()


class Connect:
    def __init__(self, databases: Databases, dsn: Dsn) -> None:
        self.databases = databases
        self.dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        leases = self.databases._leases
        leases[self.dsn] = leases.get(self.dsn, 0) + 1  # before the pool exists: it must not be evicted
        try:
            self._pool = await self.databases.pool(self.dsn)
            pool = self._pool
            # Others hold, open or await as many connections as the pool has: this job waits, and
            # spares go back to the pool meanwhile.
            blocked = leases[self.dsn] - 1 >= pool.get_max_size()
            waiting = self.databases._waiting
            waiting[self.dsn] = waiting.get(self.dsn, 0) + blocked
            try:
                self._conn = await pool.acquire()
            finally:
                waiting[self.dsn] -= blocked
        except BaseException as exc:
            leases[self.dsn] -= 1
            if not isinstance(exc, Exception):
                raise
            mapped = map_db_error(exc, self.dsn, "cannot reach")
            if mapped is None:
                raise
            raise mapped from exc
        return self._conn

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._pool is not None and self._conn is not None:
            try:
                with contextlib.suppress(Exception):  # a broken connection is dropped by the pool
                    await self._pool.release(self._conn)
            finally:  # even when cancelled while giving it back
                self.databases._leases[self.dsn] -= 1
        mapped = None if exc is None else _lost(exc, self.dsn)
        if mapped is not None:
            raise mapped from exc
