"""The completion webhooks owed to callers (``sessionctl.webhook_deliveries``): noted with the
request's settling, claimed by a worker, each attempt recorded."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


async def add_delivery(conn: asyncpg.Connection, request_id: str, job_id: str, url: str, body: dict[str, Any]) -> bool:
    status = await conn.execute(
        "INSERT INTO sessionctl.webhook_deliveries (request_id, job_id, url, body) VALUES ($1, $2, $3, $4::text::jsonb)"
        " ON CONFLICT (request_id, job_id) DO NOTHING",
        request_id,
        job_id,
        url,
        json.dumps(body),
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
            " RETURNING d.id, d.request_id, d.job_id, d.url, d.body, d.created_at,"
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
            "SELECT id, request_id, job_id, url, attempts, delivered_at, gave_up_at, next_at, created_at"
            " FROM sessionctl.webhook_deliveries WHERE job_id = ANY($1::text[]) ORDER BY id",
            job_ids,
        )
    )
