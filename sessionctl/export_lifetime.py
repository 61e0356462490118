"""Export files die with their person, and exports made for a data-subject request expire.

Every export is noted in ``sessionctl.exports`` as it is published (:func:`publish`). An erasure,
in the transaction that writes its receipt, deletes the files of the person's exports
(:func:`remove_for_people`; the count goes into the receipt's stores), and an export whose person
was erased after it started publishes nothing (:class:`~sessionctl.errors.ExportWithdrawn`): an
advisory lock, shared by erasures and exclusive for a publish, orders the two. Exports made for a
request over HTTP expire ``SESSIONCTL_EXPORT_TTL`` seconds after they were published
(:func:`expire`, run by every worker's deliveries round). Files are deleted at the path the exporting
worker wrote: ``SESSIONCTL_EXPORT_DIR`` must be one directory shared by every worker and the service.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import asyncpg

from sessionctl.errors import ExportWithdrawn
from sessionctl.export_files import MANIFEST_SUFFIX
from sessionctl.logs import get_logger
from sessionctl.store import export_registry as sql

log = get_logger("sessionctl.export_lifetime")
T = TypeVar("T")


async def publish(
    conn: asyncpg.Connection,
    commit: Callable[[], T],
    *,
    job_id: str,
    path: Path,
    user_hmac: str | None,
    request_id: str | None,
    started_at: datetime,
    ttl_s: int | None,
) -> T:
    """Publish an export (``commit``: the file's atomic rename, run in a thread) and note it, unless
    its person was erased since it started — then raise :class:`ExportWithdrawn`."""
    async with conn.transaction():
        await sql.lock_for_publish(conn)
        if await sql.withdrawn(conn, job_id) or (
            user_hmac is not None and await sql.erased_since(conn, user_hmac, started_at)
        ):
            raise ExportWithdrawn()
        await sql.register(
            conn,
            job_id=job_id,
            path=str(path),
            user_hmac=user_hmac,
            request_id=request_id,
            started_at=started_at,
            ttl_s=ttl_s,
        )
        written = await asyncio.to_thread(commit)
    return written


def _unlink(path: str) -> None:
    for p in (Path(path), Path(path + MANIFEST_SUFFIX)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


async def remove_for_people(conn: asyncpg.Connection, hmacs: list[str], *, by: str, keep_job: str | None = None) -> int:
    """Inside an erasure's receipt transaction: delete the files of these people's exports (but the
    one ``keep_job`` wrote: export-then-erase's own handover), and mark them deleted. How many."""
    await sql.lock_for_erasure(conn)
    rows = [r for r in await sql.live_of_people(conn, hmacs) if r["job_id"] != keep_job]
    for r in rows:
        await asyncio.to_thread(_unlink, str(r["path"]))
    if rows:
        await sql.mark_deleted(conn, [str(r["job_id"]) for r in rows], by)
        log.info("exports.deleted_with_person", job_id=by, files=len(rows))
    return len(rows)


async def expire(conn: asyncpg.Connection, limit: int = 100) -> int:
    """Delete the exports past their expiry (``SESSIONCTL_EXPORT_TTL``); how many."""
    rows = await sql.expired(conn, limit)
    for r in rows:
        await asyncio.to_thread(_unlink, str(r["path"]))
    if rows:
        await sql.mark_deleted(conn, [str(r["job_id"]) for r in rows], "expired")
        log.info("exports.expired", files=len(rows))
    return len(rows)
