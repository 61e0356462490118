"""Durable receipts of erasures, in a schema of our own (``sessionctl``) in Postgres.

Redis results expire; receipts do not. Every successful purge (and export-then-erase) appends one
row: job id, kind, the user's HMAC, the agents and per-table counts, ``remaining = 0`` (a CHECK
constraint: a receipt cannot claim less), late sessions, start and finish, who asked (a free
label), the scope, the rows outside the agent schemas (``stores``: vector and authz tables, media
objects) and the origin (a request, or a re-sweep). No content, no raw user id. The table is
append-only: a trigger refuses UPDATE, DELETE and TRUNCATE. The schema also holds
``media_pending``: keys of offloaded media whose sessions were deleted, until the objects go.
The schema is created and upgraded by :mod:`sessionctl.store.migrations`.

This module holds every statement on our own schema; the rest of ``store`` those on Agno's tables.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from sessionctl.errors import InsufficientPrivilege, ReceiptConflict
from sessionctl.store import access, migrations

SCHEMA = "sessionctl"
# A retry of the same job may find the receipt its earlier try wrote; one that started this long
# before the job was even enqueued (clocks of producer and worker a little apart) is another's.
CLOCK_SKEW = timedelta(seconds=60)


async def preflight(conn: asyncpg.Connection, key: str) -> None:
    """Before anything is deleted: the receipt of this erasure can be written."""
    await migrations.ensure(conn, key)
    found = await access.receipt_problems(conn)
    if found:
        who = await conn.fetchval("SELECT current_user")
        raise InsufficientPrivilege(
            f"role {who} cannot write receipts ({'; '.join(found)}): run `sessionctl grants --role {who}` and apply"
            " what it prints; nothing was deleted"
        )


async def record(
    conn: asyncpg.Connection,
    *,
    job_id: str,
    kind: str,
    user_hmac: str,
    target: str,
    agents: dict[str, Any],
    counts: dict[str, int],
    late_sessions: int,
    started_at: datetime,
    finished_at: datetime,
    requested_by: str | None,
    enqueued_at: datetime | None = None,
    scope: str = "sessions",
    stores: dict[str, int] | None = None,
    origin: str = "request",
    complete: bool | None = None,
    remains: dict[str, int] | None = None,
    exemptions: dict[str, str] | None = None,
) -> bool:
    """Append the receipt; ``False`` if an earlier try of this same job already wrote it (a retry
    after a crash). A receipt under this job id that records another erasure raises
    :class:`ReceiptConflict`: a receipt is never silently skipped."""
    row = await conn.fetchrow(
        "INSERT INTO sessionctl.receipts (job_id, kind, user_hmac, target, agents, counts, remaining,"
        " late_sessions, started_at, finished_at, requested_by, scope, stores, origin, complete, remains, exemptions)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, 0, $7, $8, $9, $10, $11, $12::jsonb, $13, $14, $15::jsonb,"
        " $16::jsonb)"
        " ON CONFLICT (job_id, user_hmac) DO NOTHING RETURNING id",
        job_id,
        kind,
        user_hmac,
        target,
        agents,  # the pool's jsonb codec encodes (store.init_connection)
        counts,
        late_sessions,
        started_at,
        finished_at,
        requested_by,
        scope,
        stores or {},
        origin,
        complete,
        remains or {},
        exemptions or {},
    )
    if row is not None:
        return True
    await _check_earlier_tries(conn, job_id, kind, target, [user_hmac], enqueued_at)
    return False


async def _check_earlier_tries(
    conn: asyncpg.Connection,
    job_id: str,
    kind: str,
    target: str,
    hmacs: list[str],
    enqueued_at: datetime | None,
) -> None:
    """The receipts already under (job_id, user) must be this job's own earlier tries: same kind
    and target, started after this job was enqueued. Anything else is another erasure's proof."""
    rows = await conn.fetch(
        "SELECT kind, target, started_at FROM sessionctl.receipts WHERE job_id = $1 AND user_hmac = ANY($2::text[])",
        job_id,
        hmacs,
    )
    own = [
        r
        for r in rows
        if r["kind"] == kind
        and r["target"] == target
        and (enqueued_at is None or r["started_at"] >= enqueued_at - CLOCK_SKEW)
    ]
    if len(rows) != len(hmacs) or len(own) != len(rows):
        raise ReceiptConflict(
            f"job {job_id} already has a receipt of another erasure (job ids must never repeat: was Redis reset"
            " under a producer of an older sessionctl?); this erasure is not reported done — ask again"
        )


async def record_many(
    conn: asyncpg.Connection,
    *,
    shared: dict[str, Any],
    sessions: dict[str, int],
    schemas_checked: int,
    enqueued_at: datetime | None = None,
) -> None:
    """Append one receipt per user of a bulk erasure, in one statement: ``shared`` holds the
    columns every receipt of the job has alike (``job_id``, ``kind``, ``target``, ``agents``,
    ``started_at``, ``finished_at``, ``requested_by``, ``scope``, ``stores``, ``origin``, ``complete``
    and ``remains`` — of all the users together), sent once;
    ``sessions`` the sessions deleted per user HMAC. The per-user ``counts`` are built in the
    database: one statement of arrays, not ``executemany`` (docs/decisions.md). Rows already there
    must be this job's own earlier try (see
    :func:`record`)."""
    hmacs = list(sessions)
    # The job's first try to get here (no receipt under its id yet) inserts them plainly: ON
    # CONFLICT's speculative insertion costs ~15 % more per row, and the ids written need not come
    # back. A concurrent writer of the same job id (impossible under its lease) would fail this on
    # the unique key: the job's next try takes the ON CONFLICT path below.
    earlier = "SELECT EXISTS (SELECT FROM sessionctl.receipts WHERE job_id = $1)"
    first = not await conn.fetchval(earlier, shared["job_id"])
    insert = (
        "INSERT INTO sessionctl.receipts (job_id, kind, user_hmac, target, agents, counts, remaining,"
        " late_sessions, started_at, finished_at, requested_by, scope, stores, origin, complete, remains, exemptions)"
        # JSON sent as text: a pooled connection's jsonb codec would encode a str as a JSON string
        " SELECT $1, $2, x.h, $3, $4::text::jsonb, jsonb_build_object('sessions', x.n, 'schemas_checked', $5::int),"
        " 0, 0, $6, $7, $8, $9, $10::text::jsonb, $11, $14, $15::text::jsonb, $16::text::jsonb"
        " FROM unnest($12::text[], $13::bigint[]) AS x(h, n)"
    )
    values = (
        shared["job_id"],
        shared["kind"],
        shared["target"],
        json.dumps(shared["agents"]),
        schemas_checked,
        shared["started_at"],
        shared["finished_at"],
        shared["requested_by"],
        shared["scope"],
        json.dumps(shared["stores"]),
        shared["origin"],
        hmacs,
        [sessions[h] for h in hmacs],
        shared.get("complete"),
        json.dumps(shared.get("remains") or {}),
        json.dumps(shared.get("exemptions") or {}),
    )
    if first:
        await conn.execute(insert, *values)
        return
    written = await conn.fetch(insert + " ON CONFLICT (job_id, user_hmac) DO NOTHING RETURNING user_hmac", *values)
    if len(written) < len(hmacs):
        done = {r["user_hmac"] for r in written}
        left = [h for h in hmacs if h not in done]
        await _check_earlier_tries(conn, shared["job_id"], shared["kind"], shared["target"], left, enqueued_at)


async def find(conn: asyncpg.Connection, user_hmac: str) -> list[dict[str, Any]]:
    """A user's receipts, oldest first; none when the schema does not exist yet."""
    if await conn.fetchval("SELECT to_regclass('sessionctl.receipts')") is None:
        return []
    rows = await conn.fetch(
        "SELECT id, job_id, kind, user_hmac, target, agents, counts, remaining, late_sessions, started_at,"
        " finished_at, requested_by, recorded_at, scope, stores, origin, complete, remains, exemptions"
        " FROM sessionctl.receipts"
        " WHERE user_hmac = $1 ORDER BY finished_at",
        user_hmac,
    )
    out = []
    for r in rows:
        d = dict(r)
        for k in ("started_at", "finished_at", "recorded_at"):
            d[k] = d[k].isoformat()
        out.append(d)
    return out
