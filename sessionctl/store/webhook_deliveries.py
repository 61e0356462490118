"""The completion webhooks owed to callers (``sessionctl.webhook_deliveries``): noted with the
request's settling (with an event id, made once), claimed by a worker, each attempt recorded, and
resent when an operator or the caller asks (the same event id and body, attempts kept)."""

from __future__ import annotations

import json
import secrets
from typing import Any

import asyncpg


async def add_delivery(conn: asyncpg.Connection, request_id: str, job_id: str, url: str, body: dict[str, Any]) -> bool:
    """Note a delivery owed (once per request and job). Its event id is the body's ``event_id``, or
    one made now and put into the body: the same for every attempt and resend."""
    event_id = str(body.get("event_id") or "evt_" + secrets.token_hex(16))
    status = await conn.execute(
        "INSERT INTO sessionctl.webhook_deliveries (request_id, job_id, url, body, event_id)"
        " VALUES ($1, $2, $3, $4::text::jsonb, $5) ON CONFLICT (request_id, job_id) DO NOTHING",
        request_id,
        job_id,
        url,
        json.dumps({**body, "event_id": event_id}),
        event_id,
    )
    return bool(status.endswith(" 1"))


async def claim_deliveries(conn: asyncpg.Connection, limit: int, claim_s: float) -> list[asyncpg.Record]:
    """Up to ``limit`` deliveries due now, each claimed for ``claim_s`` seconds: a worker that dies
    mid-delivery leaves the claim to expire, and another worker (or this one, restarted) delivers."""
    return list(
        await conn.fetch(
            "UPDATE sessionctl.webhook_deliveries d SET next_at = now() + make_interval(secs => $2)"
            " WHERE d.id IN (SELECT id FROM sessionctl.webhook_deliveries"
            "  WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_at <= now()"
            "  ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
            " RETURNING d.id, d.kind, d.request_id, d.job_id, d.url, d.event_id, d.created_at,"
            # the body always names its event id (a row noted before event ids had it added by migration 8)
            " d.body || jsonb_build_object('event_id', d.event_id) AS body,"
            " jsonb_array_length(d.attempts) AS tries",
            limit,
            claim_s,
        )
    )


async def record_attempt(
    conn: asyncpg.Connection,
    delivery_id: int,
    attempt: dict[str, Any],
    *,
    delivered: bool,
    retry_in_s: float | None,
) -> None:
    """Note an attempt; delivered, or due again in ``retry_in_s`` (``None``: given up)."""
    await conn.execute(
        "UPDATE sessionctl.webhook_deliveries SET attempts = attempts || jsonb_build_array($2::text::jsonb),"
        " delivered_at = CASE WHEN $3 THEN now() END,"
        " gave_up_at = CASE WHEN NOT $3 AND $4::float8 IS NULL THEN now() END,"
        " next_at = CASE WHEN $4::float8 IS NULL THEN next_at ELSE now() + make_interval(secs => $4) END"
        " WHERE id = $1",
        delivery_id,
        json.dumps(attempt),
        delivered,
        retry_in_s,
    )


async def deliveries_of_jobs(conn: asyncpg.Connection, job_ids: list[str]) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT id, event_id, request_id, job_id, url, attempts, delivered_at, gave_up_at, next_at, created_at"
            " FROM sessionctl.webhook_deliveries WHERE job_id = ANY($1::text[]) ORDER BY id",
            job_ids,
        )
    )


async def lock_delivery(conn: asyncpg.Connection, delivery_id: int) -> asyncpg.Record | None:
    """A delivery with the token that made its request (``token_name``), locked for a resend."""
    return await conn.fetchrow(
        "SELECT d.id, d.event_id, d.request_id, d.job_id, r.token_name FROM sessionctl.webhook_deliveries d"
        " JOIN sessionctl.dsr_requests r ON r.request_id = d.request_id WHERE d.id = $1 FOR UPDATE OF d",
        delivery_id,
    )


async def resend(conn: asyncpg.Connection, delivery_id: int) -> asyncpg.Record | None:
    """Make a delivery due again at once — delivered or given up before, or not — with its event id
    and body; its attempts are kept (the next ones are added). ``None``: no such delivery."""
    return await conn.fetchrow(
        "UPDATE sessionctl.webhook_deliveries SET next_at = now(), delivered_at = NULL, gave_up_at = NULL"
        " WHERE id = $1 RETURNING id, event_id, request_id, job_id, jsonb_array_length(attempts) AS tries",
        delivery_id,
    )
