"""DSR platforms' requests (``sessionctl.connector_requests``): one per request a platform sent
(Transcend, Ketch), with the ledger requests it became and how it ended. Every statement on that
table, and on the ledger rows and deliveries a connector request owns, is here."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

COLUMNS = (
    "id, platform, kind, platform_ref, replay_key, identifier_hmac, user_hmacs, request_ids, status, outcome,"
    " received_at, completed_at"
)


async def insert(conn: asyncpg.Connection, row: dict[str, Any]) -> asyncpg.Record | None:
    """Record a platform's request; ``None`` when its replay key was seen before."""
    return await conn.fetchrow(
        "INSERT INTO sessionctl.connector_requests (id, platform, kind, platform_ref, replay_key, identifier_hmac,"
        " user_hmacs, reply, status, completed_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $9 = 'open' THEN NULL ELSE now() END)"
        f" ON CONFLICT (platform, replay_key) DO NOTHING RETURNING {COLUMNS}",
        row["id"],
        row["platform"],
        row["kind"],
        row["platform_ref"],
        row["replay_key"],
        row["identifier_hmac"],
        row["user_hmacs"],
        row["reply"],
        row["status"],
    )


async def by_replay_key(conn: asyncpg.Connection, platform: str, replay_key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM sessionctl.connector_requests WHERE platform = $1 AND replay_key = $2",
        platform,
        replay_key,
    )


async def by_ref(conn: asyncpg.Connection, platform: str, kind: str, platform_ref: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM sessionctl.connector_requests WHERE platform = $1 AND kind = $2 AND platform_ref = $3"
        " ORDER BY received_at LIMIT 1",
        platform,
        kind,
        platform_ref,
    )


async def get(conn: asyncpg.Connection, connector_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {COLUMNS}, reply FROM sessionctl.connector_requests WHERE id = $1", connector_id
    )


async def attach(conn: asyncpg.Connection, connector_id: str, request_ids: list[str]) -> None:
    """The ledger requests this platform request became."""
    await conn.execute(
        "UPDATE sessionctl.connector_requests SET request_ids = $2 WHERE id = $1", connector_id, request_ids
    )
    await conn.execute(
        "UPDATE sessionctl.dsr_requests SET connector_request_id = $1 WHERE request_id = ANY($2::text[])",
        connector_id,
        request_ids,
    )


async def lock_unsettled(conn: asyncpg.Connection, connector_id: str) -> asyncpg.Record | None:
    """The platform request, locked, while it waits for its ledger requests or ended failed (a
    retried part may still complete it); ``None`` otherwise."""
    return await conn.fetchrow(
        f"SELECT {COLUMNS}, reply FROM sessionctl.connector_requests WHERE id = $1"
        " AND status IN ('open', 'failed') FOR UPDATE",
        connector_id,
    )


async def children(conn: asyncpg.Connection, connector_id: str) -> list[asyncpg.Record]:
    """Its ledger requests: how each ended, its receipt, the jobs that served it."""
    return list(
        await conn.fetch(
            "SELECT request_id, user_hmac, status, completed_at, last_job_status, receipt_id, complete, remains,"
            " job_ids FROM sessionctl.dsr_requests WHERE connector_request_id = $1 ORDER BY request_id",
            connector_id,
        )
    )


async def close(conn: asyncpg.Connection, connector_id: str, status: str, outcome: dict[str, Any]) -> None:
    await conn.execute(
        "UPDATE sessionctl.connector_requests SET status = $2, outcome = $3::text::jsonb, completed_at = now()"
        " WHERE id = $1",
        connector_id,
        status,
        json.dumps(outcome),
    )


async def add_answer(
    conn: asyncpg.Connection, connector_id: str, request_id: str | None, platform: str, body: dict[str, Any]
) -> bool:
    """Note the answer owed to the platform (delivered like a webhook: durable, retried): one per
    platform request and outcome (a request that failed and then, retried, succeeded gets both)."""
    status = await conn.execute(
        "INSERT INTO sessionctl.webhook_deliveries (request_id, job_id, url, body, kind)"
        " VALUES ($1, $2, $3, $4::text::jsonb, $5) ON CONFLICT (job_id) WHERE kind <> 'webhook' DO NOTHING",
        request_id,
        f"connector:{connector_id}:{body.get('status')}",
        platform,
        json.dumps(body),
        platform,
    )
    return bool(status.endswith(" 1"))


async def set_reply(conn: asyncpg.Connection, connector_id: str, reply: bytes) -> None:
    """How to answer, replaced (the platform sent the request again with a new nonce)."""
    await conn.execute("UPDATE sessionctl.connector_requests SET reply = $2 WHERE id = $1", connector_id, reply)
