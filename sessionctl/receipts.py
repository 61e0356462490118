"""Durable receipts of erasures, in a schema of our own (``sessionctl``) in Postgres.

Redis results expire; receipts do not. Every successful purge (and export-then-erase) appends one
row: job id, kind, the user's HMAC, the agents and per-table counts, ``remaining = 0`` (a CHECK
constraint: a receipt cannot claim less), late sessions, start and finish, and who asked (a free
label). No content, no raw user id. The table is append-only: a trigger refuses UPDATE, DELETE and
TRUNCATE. The schema is created by small versioned migrations, applied at worker start-up under an
advisory lock (several workers may start at once).

This module holds every statement on our own schema; ``store.py`` holds those on Agno's tables.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

SCHEMA = "sessionctl"
_LOCK_KEY = 0x5E55C7  # pg_advisory_xact_lock key for migrations

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE sessionctl.receipts (
            id            bigserial PRIMARY KEY,
            job_id        text        NOT NULL UNIQUE,
            kind          text        NOT NULL,
            user_hmac     text        NOT NULL,
            target        text        NOT NULL,
            agents        jsonb       NOT NULL,
            counts        jsonb       NOT NULL,
            remaining     integer     NOT NULL CHECK (remaining = 0),
            late_sessions integer     NOT NULL DEFAULT 0,
            started_at    timestamptz NOT NULL,
            finished_at   timestamptz NOT NULL,
            requested_by  text,
            recorded_at   timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX receipts_user_hmac ON sessionctl.receipts (user_hmac, finished_at);
        CREATE FUNCTION sessionctl.receipts_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'sessionctl.receipts is append-only';
        END $$;
        CREATE TRIGGER receipts_no_update BEFORE UPDATE OR DELETE ON sessionctl.receipts
            FOR EACH ROW EXECUTE FUNCTION sessionctl.receipts_append_only();
        CREATE TRIGGER receipts_no_truncate BEFORE TRUNCATE ON sessionctl.receipts
            FOR EACH STATEMENT EXECUTE FUNCTION sessionctl.receipts_append_only();
        """,
    ),
    (
        2,
        """
        -- a bulk erasure is one job for many users: one receipt per (job, user)
        ALTER TABLE sessionctl.receipts DROP CONSTRAINT receipts_job_id_key;
        ALTER TABLE sessionctl.receipts ADD CONSTRAINT receipts_job_user UNIQUE (job_id, user_hmac);
        """,
    ),
]


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply the migrations not applied yet; the schema version after."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE SCHEMA IF NOT EXISTS sessionctl;"
            " CREATE TABLE IF NOT EXISTS sessionctl.schema_migrations"
            " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM sessionctl.schema_migrations")}
        for version, sql in MIGRATIONS:
            if version not in done:
                await conn.execute(sql)
                await conn.execute("INSERT INTO sessionctl.schema_migrations (version) VALUES ($1)", version)
        return max(v for v, _ in MIGRATIONS)


_migrated: set[str] = set()


async def ensure(conn: asyncpg.Connection, key: str) -> None:
    """:func:`migrate` once per process per database (``key``: the redacted DSN)."""
    if key not in _migrated:
        await migrate(conn)
        _migrated.add(key)


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
) -> bool:
    """Append a receipt; ``False`` if this job already has one (a retry after a crash)."""
    status = await conn.execute(
        "INSERT INTO sessionctl.receipts (job_id, kind, user_hmac, target, agents, counts, remaining,"
        " late_sessions, started_at, finished_at, requested_by)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, 0, $7, $8, $9, $10) ON CONFLICT (job_id, user_hmac) DO NOTHING",
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
    )
    return bool(status.endswith(" 1"))


async def record_many(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> None:
    """Append many receipts in one statement (a bulk erasure: one per user). One INSERT of arrays,
    not one execution per row: 10,000 receipts took over a second through ``executemany``."""
    cols = [
        "job_id",
        "kind",
        "user_hmac",
        "target",
        "agents",
        "counts",
        "late_sessions",
        "started_at",
        "finished_at",
        "requested_by",
    ]
    values = {c: [r[c] for r in rows] for c in cols}
    for c in ("agents", "counts"):  # as JSON text: an array of jsonb would need a codec per element
        values[c] = [v if isinstance(v, str) else json.dumps(v) for v in values[c]]
    await conn.execute(
        "INSERT INTO sessionctl.receipts (job_id, kind, user_hmac, target, agents, counts, remaining,"
        " late_sessions, started_at, finished_at, requested_by)"
        " SELECT job_id, kind, user_hmac, target, agents::jsonb, counts::jsonb, 0, late_sessions, started_at,"
        " finished_at, requested_by FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
        " $6::text[], $7::int[], $8::timestamptz[], $9::timestamptz[], $10::text[])"
        " AS x(job_id, kind, user_hmac, target, agents, counts, late_sessions, started_at, finished_at, requested_by)"
        " ON CONFLICT (job_id, user_hmac) DO NOTHING",
        *(values[c] for c in cols),
    )


async def find(conn: asyncpg.Connection, user_hmac: str) -> list[dict[str, Any]]:
    """A user's receipts, oldest first; none when the schema does not exist yet."""
    if await conn.fetchval("SELECT to_regclass('sessionctl.receipts')") is None:
        return []
    rows = await conn.fetch(
        "SELECT job_id, kind, user_hmac, target, agents, counts, remaining, late_sessions, started_at,"
        " finished_at, requested_by, recorded_at FROM sessionctl.receipts WHERE user_hmac = $1 ORDER BY finished_at",
        user_hmac,
    )
    out = []
    for r in rows:
        d = dict(r)
        for k in ("started_at", "finished_at", "recorded_at"):
            d[k] = d[k].isoformat()
        out.append(d)
    return out
