"""The registry of export files (``sessionctl.exports``): one row per export job, so an erasure
finds and deletes the person's exports, and exports made for a data-subject request expire."""

from __future__ import annotations

from datetime import datetime

import asyncpg

# Erasures take this advisory lock shared while they delete the person's exports and write their
# receipt; an export takes it exclusively while it checks for such a receipt and publishes.
LOCK = 0x5E55C8


async def lock_for_erasure(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", LOCK)


async def lock_for_publish(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK)


async def erased_since(conn: asyncpg.Connection, user_hmac: str, since: datetime) -> bool:
    """Did an erasure of this person finish (write its receipt) at or after ``since``?"""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM sessionctl.receipts WHERE user_hmac = $1 AND finished_at >= $2)",
            user_hmac,
            since,
        )
    )


async def withdrawn(conn: asyncpg.Connection, job_id: str) -> bool:
    """Was this job's export deleted already (its person erased, or expired)? A retry publishes nothing."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM sessionctl.exports WHERE job_id = $1 AND deleted_at IS NOT NULL)", job_id
        )
    )


async def register(
    conn: asyncpg.Connection,
    *,
    job_id: str,
    path: str,
    user_hmac: str | None,
    request_id: str | None,
    started_at: datetime,
    ttl_s: int | None,
) -> None:
    """Note a file being published (a retry of the same job notes it again, unchanged)."""
    await conn.execute(
        "INSERT INTO sessionctl.exports (job_id, path, user_hmac, request_id, started_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, CASE WHEN $6::float8 IS NULL THEN NULL"
        " ELSE now() + make_interval(secs => $6::float8) END)"
        " ON CONFLICT (job_id) DO NOTHING",
        job_id,
        path,
        user_hmac,
        request_id,
        started_at,
        ttl_s,
    )


async def live_of_people(conn: asyncpg.Connection, hmacs: list[str]) -> list[asyncpg.Record]:
    """The exports of these people that still exist (not deleted, not expired)."""
    return list(
        await conn.fetch(
            "SELECT job_id, path FROM sessionctl.exports WHERE user_hmac = ANY($1::text[]) AND deleted_at IS NULL",
            hmacs,
        )
    )


async def latest_of_requests(conn: asyncpg.Connection, request_ids: list[str]) -> list[asyncpg.Record]:
    """Each request's newest export file that still exists (a request re-run after Redis lost its job
    may have more than one job; the one that wrote a file counts)."""
    return list(
        await conn.fetch(
            "SELECT DISTINCT ON (request_id) request_id, job_id, path, user_hmac FROM sessionctl.exports"
            " WHERE request_id = ANY($1::text[]) AND deleted_at IS NULL ORDER BY request_id, published_at DESC",
            request_ids,
        )
    )


async def expired(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT job_id, path FROM sessionctl.exports WHERE expires_at < now() AND deleted_at IS NULL"
            " ORDER BY expires_at LIMIT $1",
            limit,
        )
    )


async def mark_deleted(conn: asyncpg.Connection, job_ids: list[str], by: str) -> None:
    await conn.execute(
        "UPDATE sessionctl.exports SET deleted_at = now(), deleted_by = $2 WHERE job_id = ANY($1::text[])",
        job_ids,
        by,
    )


async def get(conn: asyncpg.Connection, job_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT job_id, path, user_hmac, request_id, published_at, expires_at, deleted_at, deleted_by"
        " FROM sessionctl.exports WHERE job_id = $1",
        job_id,
    )


async def count_live(conn: asyncpg.Connection, hmacs: list[str]) -> int:
    """These people's exports that still exist (``verify`` counts them)."""
    if await conn.fetchval("SELECT to_regclass('sessionctl.exports')") is None:
        return 0
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM sessionctl.exports WHERE user_hmac = ANY($1::text[]) AND deleted_at IS NULL", hmacs
        )
    )
