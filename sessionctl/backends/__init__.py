"""The stores outside Agno's Postgres schemas that the deployment file declares
(:mod:`sessionctl.deployment`): one :class:`~sessionctl.backends.base.Backend` per store, opened
for a job and checked before anything is deleted anywhere."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sessionctl.backends.base import Backend, Person
from sessionctl.deployment import Deployment

__all__ = ["Backend", "Person", "backend_for", "opened"]


def backend_for(decl: Any) -> Backend:
    """The backend of a declared store (its client library imported only when it is opened)."""
    kind = decl.kind
    if kind == "lancedb":
        from sessionctl.backends.lancedb import LanceDbBackend

        return LanceDbBackend(decl)
    if kind == "qdrant":
        from sessionctl.backends.qdrant import QdrantBackend

        return QdrantBackend(decl)
    if kind == "chroma":
        from sessionctl.backends.chroma import ChromaBackend

        return ChromaBackend(decl)
    if kind in ("sqlite", "mysql"):
        from sessionctl.backends.sql_db import MySqlBackend, SqliteBackend

        return SqliteBackend(decl) if kind == "sqlite" else MySqlBackend(decl)
    if kind == "agentfs":
        from sessionctl.backends.agentfs import AgentFsBackend

        return AgentFsBackend(decl)
    from sessionctl.backends.redis_stores import EventStreamBackend, RedisSessionBackend

    return RedisSessionBackend(decl) if kind == "redis" else EventStreamBackend(decl)


@contextlib.asynccontextmanager
async def opened(deployment: Deployment) -> AsyncIterator[list[Backend]]:
    """Every declared store, opened and checked (reachable; what it names exists) — all of them
    before the caller touches any — and closed after."""
    backends: list[Backend] = []
    try:
        for decl in deployment.stores:
            backend = backend_for(decl)
            backends.append(backend)
            await backend.open()
        yield backends
    finally:
        for backend in backends:  # each one, whatever another's close raised
            with contextlib.suppress(Exception):
                await backend.close()
