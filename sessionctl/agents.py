"""Agent handles: the xpander SDK's per-agent session helpers, made local and made whole.

``AgentHandle`` offers ``aget_db`` / ``get_db``, ``aget_user_sessions`` / ``get_user_sessions``,
``aget_session`` / ``get_session`` and ``adelete_session`` / ``delete_session`` with the SDK's
error contract:

- ``LookupError`` (:class:`AgentNotFound`): the agent has no session storage (no schema or no
  ``agno_sessions`` table);
- ``ImportError`` (:class:`AgnoNotInstalled`): Agno's Postgres extras are missing;
- ``ValueError`` (:class:`InvalidConnectionURI`): the connection URI is invalid;
- ``NotImplementedError`` (:class:`NotAgnoStorage`): the table is not Agno's session layout.

Better than the SDK: Agno clients are cached per agent (bounded LRU, engine shared per DSN), and
``aget_user_sessions`` returns *all* of a user's sessions, newest first with ``session_id`` as the
tie-breaker, read in keyset pages by our own SQL (so a database error raises instead of reading
as "no sessions").
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.databases import Connect, Databases
from sessionctl.errors import AgentNotFound, AgnoNotInstalled, NotAgnoStorage
from sessionctl.identifiers import Dsn, validate_agent_id, validate_user_id

if TYPE_CHECKING:
    from agno.session import Session

T = TypeVar("T")
LIST_PAGE_SIZE = 500


class AgentHandle:
    """One agent's session storage: where it lives and the helpers to read and delete it."""

    def __init__(
        self,
        agent_id: str,
        *,
        settings: Settings,
        databases: Databases,
        dsn: Dsn | None = None,
        schema: str | None = None,
    ):
        self.agent_id = validate_agent_id(agent_id)
        self.settings = settings
        self.databases = databases
        self.dsn = dsn or settings.dsn
        self.schema = schema or settings.schema_for(agent_id)

    @classmethod
    async def resolve(cls, agent_id: str, *, settings: Settings, databases: Databases, chain: Any) -> AgentHandle:
        """The agent where the resolvers say it lives (``sessionctl.resolvers``)."""
        loc = await chain.resolve(agent_id)
        return cls(agent_id, settings=settings, databases=databases, dsn=loc.dsn, schema=loc.schema)

    def __repr__(self) -> str:
        return f"AgentHandle({self.agent_id!r}, schema={self.schema!r}, db={self.dsn.redacted!r})"

    # -- storage checks ------------------------------------------------------------------------

    async def layout(self) -> store.Layout:
        """The agent's Agno tables, read now; raises the contract's errors when there are none."""
        async with self.connection() as conn:
            layout = await store.read_layout(conn, self.schema)
            if layout is None:
                exists = await store.schema_exists(conn, self.schema)
                where = f"schema {self.schema} in {self.dsn.where}"
                raise AgentNotFound(
                    f"agent {self.agent_id} has no session storage: "
                    + (f"{where} has no agno_sessions table" if exists else f"{where} does not exist")
                    + " (check the agent id, DATABASE_URL and SESSIONCTL_SCHEMA_TEMPLATE)"
                )
            problems = await store.session_table_problems(conn, self.schema)
        if problems:
            raise NotAgnoStorage(
                f"agent {self.agent_id}: {self.schema}.agno_sessions is not an Agno session table "
                f"({', '.join(problems)})"
            )
        return layout

    def connection(self) -> Connect:
        return self.databases.connect(self.dsn)

    # -- the SDK's helpers -----------------------------------------------------------------------

    async def aget_db(self, async_db: bool = True) -> Any:
        """The agent's cached Agno client (``AsyncPostgresDb``; ``PostgresDb`` with ``async_db=False``)."""
        await self.layout()
        if async_db:
            return self.databases.agno_client(self.dsn, self.schema)
        return self.databases.agno_sync_client(self.dsn, self.schema)

    async def aiter_user_sessions(self, user_id: str, *, page_size: int = LIST_PAGE_SIZE) -> AsyncIterator[Session]:
        """Every session of the user, newest first (``created_at``, then ``session_id``), as Agno objects."""
        async for page in self.aiter_user_session_rows(user_id, page_size=page_size):
            for row in page:
                yield _deserialize(row)

    async def aiter_user_session_rows(
        self, user_id: str, *, page_size: int = LIST_PAGE_SIZE
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Keyset pages of the user's session rows, with ``runs`` attached the way Agno reads them."""
        validate_user_id(user_id)
        layout = await self.layout()
        after: store.SessionKey | None = None
        while True:
            async with self.connection() as conn:
                rows = await store.list_user_sessions_page(conn, layout, user_id, after=after, limit=page_size)
                runs = await store.runs_for_sessions(conn, layout, [r["session_id"] for r in rows])
            if not rows:
                return
            for row in rows:
                row["runs"] = merge_runs(runs.get(row["session_id"], []), row.get("runs"))
            yield rows
            after = (rows[-1]["created_at"], rows[-1]["session_id"])

    async def aget_user_sessions(self, user_id: str) -> list[Session]:
        return [s async for s in self.aiter_user_sessions(user_id)]

    async def aget_session(self, session_id: str) -> Session | None:
        if not session_id:
            raise ValueError("session id is empty")
        layout = await self.layout()
        async with self.connection() as conn:
            row = await store.get_session_row(conn, layout, session_id)
            if row is None:
                return None
            runs = await store.runs_for_sessions(conn, layout, [session_id])
        row["runs"] = merge_runs(runs.get(session_id, []), row.get("runs"))
        return _deserialize(row)

    async def adelete_session(self, session_id: str, user_id: str | None = None) -> bool:
        """Delete one session and what Agno's cascade deletes with it; ``True`` if it existed."""
        if not session_id:
            raise ValueError("session id is empty")
        layout = await self.layout()
        async with self.connection() as conn:
            outcome = await store.delete_session_by_id(conn, layout, session_id, user_id)
        return outcome.counts.sessions > 0

    # -- sync twins (run on a private event loop thread, with their own connections) ------------

    def get_db(self) -> Any:
        return _bridge(self.settings).run(lambda h: h.aget_db(async_db=False), self)

    def get_user_sessions(self, user_id: str) -> list[Session]:
        sessions: list[Session] = _bridge(self.settings).run(lambda h: h.aget_user_sessions(user_id), self)
        return sessions

    def get_session(self, session_id: str) -> Session | None:
        session: Session | None = _bridge(self.settings).run(lambda h: h.aget_session(session_id), self)
        return session

    def delete_session(self, session_id: str, user_id: str | None = None) -> bool:
        return bool(_bridge(self.settings).run(lambda h: h.adelete_session(session_id, user_id), self))


def merge_runs(table_runs: list[dict[str, Any]], legacy: Any) -> list[dict[str, Any]]:
    try:
        from agno.db.utils import merge_runs_table_with_legacy_blob
    except ImportError as exc:
        raise AgnoNotInstalled() from exc
    merged: list[dict[str, Any]] = merge_runs_table_with_legacy_blob(table_runs, legacy)
    return merged


def _deserialize(row: dict[str, Any]) -> Session:
    try:
        from agno.db.utils import deserialize_session
    except ImportError as exc:
        raise AgnoNotInstalled() from exc
    return deserialize_session(None, dict(row))


class _SyncBridge:
    """A private event loop on a daemon thread, with its own pools, for the sync helpers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sessionctl-sync", daemon=True)
        self.thread.start()
        self.databases = Databases(pool_size=settings.pool_size, client_cache_size=settings.client_cache_size)

    def run(self, call: Any, handle: AgentHandle) -> Any:
        twin = AgentHandle(
            handle.agent_id, settings=handle.settings, databases=self.databases, dsn=handle.dsn, schema=handle.schema
        )
        coro: Coroutine[Any, Any, Any] = call(twin)
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


_bridge_instance: _SyncBridge | None = None
_bridge_lock = threading.Lock()


def _bridge(settings: Settings) -> _SyncBridge:
    """One bridge per process: its pools are keyed by DSN, so every handle can share it."""
    global _bridge_instance
    with _bridge_lock:
        if _bridge_instance is None:
            _bridge_instance = _SyncBridge(settings)
        return _bridge_instance


async def stream_user_sessions(
    settings: Settings, agent_id: str, user_id: str, limit: int | None, emit: Callable[[dict[str, Any]], None]
) -> int:
    """Hand each of a user's session rows, newest first, to ``emit`` (at most ``limit``); how many
    (``sessionctl sessions``)."""
    from sessionctl.resolvers import build_chain

    validate_user_id(user_id)
    dbs = Databases(pool_size=1)
    shown = 0
    try:
        handle = await AgentHandle.resolve(agent_id, settings=settings, databases=dbs, chain=build_chain(settings))
        async for page in handle.aiter_user_session_rows(user_id):
            for row in page:
                if limit is not None and shown >= limit:
                    return shown
                emit(row)
                shown += 1
    finally:
        await dbs.close()
    return shown
