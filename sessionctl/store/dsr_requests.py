"""The deadline ledger's rows (``sessionctl.dsr_requests``): one data-subject request each — the
person's HMAC (and, while open, their sealed id), what was asked, due dates and extensions, the
jobs that served it, how it ended. Every statement on that table is here."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

REQUEST_COLUMNS = (
    "request_id, kind, request_ref, user_hmac, target, options, received_at, first_due_at, due_at, extensions,"
    " status, dry_run, job_ids, last_job_status, callback_url, requested_by, token_name, completed_at, receipt_id,"
    " complete, remains, late, job_added_at, created_at, connector_request_id"
)
# Requests still waiting for a job to end: open ones, and dry runs not finished yet (a dry run is never
# an open request of the ledger: it is recorded with status "dry_run" from the start).
PENDING = "(status = 'open' OR (status = 'dry_run' AND completed_at IS NULL))"


async def insert_request(conn: asyncpg.Connection, row: dict[str, Any]) -> asyncpg.Record | None:
    """Record a request with its first job: what intake answers of it (``request_id, job_ids,
    due_at, dry_run`` — the rest is what the caller just sent); ``None`` when one with the same
    ``(kind, request_ref)`` exists (the caller compares them)."""
    return await conn.fetchrow(
        "INSERT INTO sessionctl.dsr_requests (request_id, kind, request_ref, user_hmac, target, options, received_at,"
        " first_due_at, due_at, callback_url, requested_by, token_name, dry_run, status, subject, job_ids)"
        " VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $8, $9, $10, $11, $12, $13, $14, $15)"
        " ON CONFLICT (kind, request_ref) DO NOTHING RETURNING request_id, job_ids, due_at, dry_run",
        row["request_id"],
        row["kind"],
        row["request_ref"],
        row["user_hmac"],
        row["target"],
        json.dumps(row["options"]),
        row["received_at"],
        row["due_at"],
        row["callback_url"],
        row["requested_by"],
        row["token_name"],
        row["dry_run"],
        "dry_run" if row["dry_run"] else "open",
        row["subject"],
        row["job_ids"],
    )


async def lock_by_ref(conn: asyncpg.Connection, kind: str, request_ref: str) -> asyncpg.Record | None:
    """The request of this ``(kind, request_ref)``, locked until the transaction ends."""
    return await conn.fetchrow(
        f"SELECT {REQUEST_COLUMNS} FROM sessionctl.dsr_requests WHERE kind = $1 AND request_ref = $2 FOR UPDATE",
        kind,
        request_ref,
    )


async def lock_pending(conn: asyncpg.Connection, request_id: str) -> asyncpg.Record | None:
    """A request still waiting for a job, with its sealed subject, locked (``None``: closed, gone,
    or locked by another worker right now)."""
    return await conn.fetchrow(
        f"SELECT {REQUEST_COLUMNS}, subject FROM sessionctl.dsr_requests WHERE request_id = $1 AND {PENDING}"
        " FOR UPDATE SKIP LOCKED",
        request_id,
    )


async def lock_request(conn: asyncpg.Connection, request_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {REQUEST_COLUMNS} FROM sessionctl.dsr_requests WHERE request_id = $1 FOR UPDATE", request_id
    )


async def get_request(conn: asyncpg.Connection, request_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {REQUEST_COLUMNS} FROM sessionctl.dsr_requests WHERE request_id = $1", request_id
    )


async def job_of_request(conn: asyncpg.Connection, request_id: str, job_id: str) -> asyncpg.Record | None:
    """The status and completion time of the request this job serves (``None``: no request of this
    id lists this job)."""
    return await conn.fetchrow(
        "SELECT status, completed_at FROM sessionctl.dsr_requests WHERE request_id = $1 AND $2 = ANY(job_ids)",
        request_id,
        job_id,
    )


async def add_job(conn: asyncpg.Connection, request_id: str, job_id: str) -> None:
    """Another job serves the request (asked again after a failure, a retry, or its job vanished
    with Redis): its outcome is awaited anew."""
    await conn.execute(
        "UPDATE sessionctl.dsr_requests SET job_ids = array_append(job_ids, $2), last_job_status = NULL,"
        " job_added_at = now() WHERE request_id = $1 AND NOT ($2 = ANY(job_ids))",
        request_id,
        job_id,
    )


async def list_requests(
    conn: asyncpg.Connection,
    *,
    open_only: bool = False,
    overdue_only: bool = False,
    token_name: str | None = None,
    limit: int = 100,
) -> list[asyncpg.Record]:
    """Open requests first, soonest due first; ``overdue_only``: open and past due; ``token_name``:
    only the requests that token made."""
    where = []
    args: list[Any] = [limit]
    if open_only or overdue_only:
        where.append("status = 'open'")
    if overdue_only:
        where.append("due_at < now()")
    if token_name is not None:
        args.append(token_name)
        where.append(f"token_name = ${len(args)}")
    cond = f"WHERE {' AND '.join(where)}" if where else ""
    return list(
        await conn.fetch(
            f"SELECT {REQUEST_COLUMNS} FROM sessionctl.dsr_requests {cond}"
            " ORDER BY status = 'open' DESC, due_at, created_at LIMIT $1",
            *args,
        )
    )


async def jobs_of_token(conn: asyncpg.Connection, token_name: str, limit: int) -> list[str]:
    """The job ids of the requests this token made, newest request first."""
    rows = await conn.fetch(
        "SELECT j FROM (SELECT job_ids, created_at FROM sessionctl.dsr_requests WHERE token_name = $1"
        " ORDER BY created_at DESC LIMIT $2) r, unnest(r.job_ids) WITH ORDINALITY AS u(j, i)"
        " ORDER BY r.created_at DESC, u.i DESC",
        token_name,
        limit,
    )
    return [str(r["j"]) for r in rows]


async def move_due(
    conn: asyncpg.Connection, request_id: str, until: datetime, entry: dict[str, Any]
) -> asyncpg.Record | None:
    """Set an open request's due date and list why (``entry``: an extension or a correction, already
    checked against the rules by :mod:`sessionctl.ledger`)."""
    return await conn.fetchrow(
        "UPDATE sessionctl.dsr_requests SET due_at = $2, extensions = extensions || jsonb_build_array($3::text::jsonb)"
        f" WHERE request_id = $1 AND status = 'open' RETURNING {REQUEST_COLUMNS}",
        request_id,
        until,
        json.dumps(entry),
    )


async def open_and_overdue(conn: asyncpg.Connection) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT count(*) AS open, count(*) FILTER (WHERE due_at < now()) AS overdue"
        " FROM sessionctl.dsr_requests WHERE status = 'open'"
    )
    return int(row["open"]), int(row["overdue"])


async def pending_count(conn: asyncpg.Connection) -> int:
    """Requests whose job has not ended yet (open ones and unfinished dry runs)."""
    return int(await conn.fetchval(f"SELECT count(*) FROM sessionctl.dsr_requests WHERE {PENDING}"))


async def unsettled(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Requests waiting for their newest job, oldest first: the newest job id, when it was added."""
    return list(
        await conn.fetch(
            "SELECT request_id, kind, job_ids[array_length(job_ids, 1)] AS job_id, job_added_at,"
            " now() - job_added_at AS age FROM sessionctl.dsr_requests"
            f" WHERE {PENDING} AND last_job_status IS NULL AND array_length(job_ids, 1) > 0"
            " ORDER BY job_added_at LIMIT $1",
            limit,
        )
    )


async def receipt_of_job(conn: asyncpg.Connection, job_id: str) -> asyncpg.Record | None:
    """The (first) receipt a job wrote: its id, counts, stores, and whether the person is gone."""
    return await conn.fetchrow(
        "SELECT id, counts, stores, complete, remains FROM sessionctl.receipts WHERE job_id = $1 ORDER BY id LIMIT 1",
        job_id,
    )


async def settle(
    conn: asyncpg.Connection,
    job_id: str,
    status: str,
    receipt_id: int | None,
    complete: bool | None = None,
    remains: dict[str, int] | None = None,
) -> list[asyncpg.Record]:
    """The job ended with ``status`` (``succeeded``, ``dry_run``, ``on_hold`` or ``failed``): the
    requests it served and that were waiting for it become ``completed`` (late or not; the sealed id
    destroyed), finished dry runs, ``on_hold`` (a legal hold stopped the erasure), or stay open
    (failed; a new job may serve them). The requests settled now,
    with their callback URL (each once: a request already closed is not returned again)."""
    closing = {"succeeded": "completed", "dry_run": "dry_run", "on_hold": "on_hold"}.get(status)
    return list(
        await conn.fetch(
            "UPDATE sessionctl.dsr_requests SET last_job_status = $2,"
            " status = CASE WHEN $3::text IS NULL THEN status WHEN dry_run THEN 'dry_run' ELSE $3 END,"
            " completed_at = CASE WHEN $3::text IS NULL THEN completed_at ELSE now() END,"
            " late = CASE WHEN $3::text IS NULL OR dry_run OR $3 = 'on_hold' THEN late ELSE now() > due_at END,"
            " subject = CASE WHEN $3::text IS NULL THEN subject END,"
            " receipt_id = coalesce($4, receipt_id), complete = coalesce($5, complete),"
            " remains = coalesce($6::text::jsonb, remains)"
            f" WHERE $1 = ANY(job_ids) AND {PENDING}"
            " AND (last_job_status IS DISTINCT FROM $2 OR $3::text IS NOT NULL)"
            f" RETURNING {REQUEST_COLUMNS}",
            job_id,
            status,
            closing,
            receipt_id,
            complete,
            None if remains is None else json.dumps(remains),
        )
    )


async def requests_of_job(conn: asyncpg.Connection, job_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            f"SELECT {REQUEST_COLUMNS} FROM sessionctl.dsr_requests WHERE $1 = ANY(job_ids) ORDER BY created_at",
            job_id,
        )
    )
