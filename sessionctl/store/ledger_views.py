"""What the console and the audit exports read of the ledger: requests found by what an officer
types (a request id, a ticket ref, a job id, a person's HMAC), filtered and paged; a request's
receipts and webhook deliveries. Read-only; every statement is here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from sessionctl.store.dsr_requests import REQUEST_COLUMNS

STATES = ("open", "completed", "on_hold", "dry_run")


@dataclass(frozen=True, slots=True)
class Filters:
    """What a list of requests is narrowed to (all optional)."""

    q: str | None = None  # a request id, a ticket ref, or a job id
    person: str | None = None  # a user HMAC (a user id typed in, hashed)
    ids: tuple[str, ...] = ()  # with ``person``: these requests too (the ones a typed ticket ref names)
    state: str | None = None
    kind: str | None = None
    overdue: bool = False
    late: bool = False
    token_name: str | None = None  # only this token's requests (None: every token's, for audit)

    def where(self) -> tuple[str, list[Any]]:
        conds: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if self.q:
            p = arg(self.q)
            conds.append(f"(request_id = {p} OR request_ref = {p} OR {p} = ANY(job_ids))")
        if self.person and self.ids:
            conds.append(f"(user_hmac = {arg(self.person)} OR request_id = ANY({arg(list(self.ids))}::text[]))")
        elif self.person:
            conds.append(f"user_hmac = {arg(self.person)}")
        if self.state in STATES:
            conds.append(f"status = {arg(self.state)}")
        if self.kind in ("erasure", "export"):
            conds.append(f"kind = {arg(self.kind)}")
        if self.overdue:
            conds.append("status = 'open' AND due_at < now()")
        if self.late:
            conds.append("late")
        if self.token_name is not None:
            conds.append(f"token_name = {arg(self.token_name)}")
        return ("WHERE " + " AND ".join(conds)) if conds else "", args


ORDER = " ORDER BY status = 'open' DESC, due_at, created_at, request_id"


async def page(conn: asyncpg.Connection, f: Filters, *, limit: int, offset: int) -> tuple[list[asyncpg.Record], int]:
    """One page of the requests ``f`` selects (open ones first, soonest due first), and how many in all."""
    where, args = f.where()
    total = int(await conn.fetchval(f"SELECT count(*) FROM sessionctl.dsr_requests {where}", *args))
    n = len(args)
    rows = await conn.fetch(
        f"SELECT {REQUEST_COLUMNS} FROM sessionctl.dsr_requests {where}{ORDER} LIMIT ${n + 1} OFFSET ${n + 2}",
        *args,
        limit,
        offset,
    )
    return list(rows), total


async def recently_closed(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """The requests closed most recently (completed, on hold, finished dry runs)."""
    return list(
        await conn.fetch(
            f"SELECT {REQUEST_COLUMNS} FROM sessionctl.dsr_requests WHERE status <> 'open' AND completed_at IS NOT NULL"
            " ORDER BY completed_at DESC LIMIT $1",
            limit,
        )
    )


async def named(conn: asyncpg.Connection, typed: str) -> tuple[bool, list[str]]:
    """What a search names: (a request id or job id, exactly?; the ids of the requests whose ticket
    ref it is)."""
    row = await conn.fetchrow(
        "SELECT bool_or(request_id = $1 OR $1 = ANY(job_ids)) AS by_id,"
        " coalesce(array_agg(request_id) FILTER (WHERE request_ref = $1), '{}') AS by_ref"
        " FROM sessionctl.dsr_requests WHERE request_id = $1 OR request_ref = $1 OR $1 = ANY(job_ids)",
        typed,
    )
    return bool(row["by_id"]), list(row["by_ref"])


async def every(conn: asyncpg.Connection, f: Filters) -> list[asyncpg.Record]:
    """Every request ``f`` selects, in the list's order (the audit CSV)."""
    where, args = f.where()
    return list(await conn.fetch(f"SELECT {REQUEST_COLUMNS} FROM sessionctl.dsr_requests {where}{ORDER}", *args))


async def receipts_of(conn: asyncpg.Connection, job_ids: list[str]) -> list[asyncpg.Record]:
    """The receipts the request's jobs wrote, oldest first."""
    return list(
        await conn.fetch(
            "SELECT id, job_id, kind, user_hmac, target, agents, counts, stores, scope, complete, remains, exemptions,"
            " started_at, finished_at, recorded_at FROM sessionctl.receipts WHERE job_id = ANY($1::text[])"
            " ORDER BY id",
            job_ids,
        )
    )


async def deliveries_of(conn: asyncpg.Connection, request_id: str) -> list[asyncpg.Record]:
    """The webhook deliveries (and DSR-platform answers) owed for the request, with every attempt."""
    return list(
        await conn.fetch(
            "SELECT d.id, d.kind, d.event_id, d.job_id, d.attempts, d.delivered_at, d.gave_up_at, d.next_at,"
            " d.created_at FROM sessionctl.webhook_deliveries d"
            " LEFT JOIN sessionctl.dsr_requests r ON r.request_id = $1"
            " WHERE d.request_id = $1 OR (r.connector_request_id IS NOT NULL"
            "  AND d.job_id LIKE 'connector:' || r.connector_request_id || ':%')"
            " ORDER BY d.id",
            request_id,
        )
    )


async def delivery(conn: asyncpg.Connection, delivery_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, request_id, job_id, kind FROM sessionctl.webhook_deliveries WHERE id = $1", delivery_id
    )
