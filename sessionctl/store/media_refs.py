"""Media references of the sessions a batch deletes, and the keys pending deletion in a storage
(``sessionctl.media_pending`` of the database the sessions were in); see :mod:`sessionctl.media_storages`."""

from __future__ import annotations

import json
from contextvars import ContextVar
from typing import Any, Protocol

import asyncpg

from sessionctl.errors import MediaStorageNotConfigured

# Every object with a ``media_reference`` anywhere in a run's JSON (input, messages, outputs, team
# members, workflow steps): strict mode, so nothing is found twice.
REFS_PATH = "strict $.** ? (exists(@.media_reference)).media_reference"
# Whether a run holds any reference at all: a cheaper test, made first, since most runs hold none.
ANY_REF = "lax $.**.media_reference"


class MediaCollector(Protocol):
    async def collect(self, conn: asyncpg.Connection, refs: list[dict[str, Any]], shared: set[str]) -> None: ...
    async def committed(self, conn: asyncpg.Connection) -> None: ...
    def rolled_back(self, conn: asyncpg.Connection) -> None: ...


# The collector of the job running in this task (set by the worker): each delete hands it the media
# references of the sessions it deleted, inside its transaction. None outside a job: a reference
# then rolls the delete back (MediaStorageNotConfigured) rather than orphan the object.
CURRENT: ContextVar[MediaCollector | None] = ContextVar("sessionctl_media", default=None)


def refs_of_runs_table(runs: str, deleted: str) -> str:
    """A CTE body: (session id, user id, reference) for the runs of the deleted sessions (agno 3.x
    ``agno_runs.run_data``) that those very sessions uploaded. ``deleted``: ``= ANY(…)`` over them.
    Read in the delete's own snapshot, before the cascade removes the runs."""
    return (
        f"SELECT r.session_id AS s, g.user_id AS u, ref FROM {runs} r JOIN gone g ON g.session_id = r.session_id,"
        f" LATERAL jsonb_path_query(r.run_data, '{REFS_PATH}') AS ref"
        f" WHERE r.session_id {deleted} AND r.run_data @? '{ANY_REF}'"
        " AND ref ->> 'session_id' = r.session_id AND ref ->> 'storage_key' IS NOT NULL"
    )


def refs_in_row(alias: str) -> str:
    """The references of a 2.x session row (runs inside ``agno_sessions.runs``), as a jsonb array."""
    return (
        f"CASE WHEN {alias}.runs @? '{ANY_REF}' THEN jsonb_path_query_array({alias}.runs, '{REFS_PATH}') END"
        " AS media_refs"
    )


REFS_OF_LEGACY_ROWS = (
    "SELECT g.session_id AS s, g.user_id AS u, ref FROM gone g, LATERAL jsonb_array_elements(g.media_refs) AS ref"
    " WHERE g.media_refs IS NOT NULL AND ref ->> 'session_id' = g.session_id AND ref ->> 'storage_key' IS NOT NULL"
)


async def hand_over(
    conn: asyncpg.Connection, refs: Any, runs_table: str | None, sessions_table: str, legacy: bool
) -> MediaCollector | None:
    """Inside the delete's transaction: give the references to this job's collector (or refuse),
    with the keys that runs of sessions *not* deleted still reference — those objects are not the
    erased sessions' alone, and stay."""
    if isinstance(refs, str):  # a connection without the pool's jsonb codec
        refs = json.loads(refs)
    if not refs:
        return None
    sink = CURRENT.get()
    if sink is None:
        raise MediaStorageNotConfigured(
            "the sessions to erase point at offloaded media and no media storage is configured here: run the"
            " erasure through a worker with SESSIONCTL_MEDIA_STORAGES; nothing of this batch was deleted"
        )
    keys = sorted({str(r["ref"]["storage_key"]) for r in refs})
    shared = await keys_still_referenced(conn, runs_table, sessions_table, legacy, keys)
    await sink.collect(conn, refs, shared)
    return sink


async def keys_still_referenced(
    conn: asyncpg.Connection, runs_table: str | None, sessions_table: str, legacy: bool, keys: list[str]
) -> set[str]:
    """Which of these storage keys a run still in the schema references (read after the delete, in
    its transaction: the deleted sessions' runs are gone, so any reference left is another session's)."""
    parts = []
    if runs_table is not None:
        parts.append(
            f"SELECT ref ->> 'storage_key' AS k FROM {runs_table} r,"
            f" LATERAL jsonb_path_query(r.run_data, '{REFS_PATH}') AS ref WHERE r.run_data @? '{ANY_REF}'"
        )
    if legacy:
        parts.append(
            f"SELECT ref ->> 'storage_key' FROM {sessions_table} s,"
            f" LATERAL jsonb_path_query(s.runs, '{REFS_PATH}') AS ref WHERE s.runs @? '{ANY_REF}'"
        )
    if not parts or not keys:
        return set()
    rows = await conn.fetch(f"SELECT DISTINCT k FROM ({' UNION ALL '.join(parts)}) x WHERE k = ANY($1::text[])", keys)
    return {str(r["k"]) for r in rows}


async def exists(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("SELECT to_regclass('sessionctl.media_pending')") is not None


async def add_pending(
    conn: asyncpg.Connection, job_id: str, rows: list[tuple[str, str, str, str]]
) -> list[tuple[int, str, str]]:
    """Note keys (storage, key, user HMAC, session id) as pending; (id, storage, key) of each."""
    if not rows:
        return []
    noted = await conn.fetch(
        "INSERT INTO sessionctl.media_pending (job_id, storage, storage_key, user_hmac, session_id)"
        " SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])"
        " ON CONFLICT (storage, storage_key) DO UPDATE SET job_id = excluded.job_id RETURNING id, storage, storage_key",
        job_id,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
    )
    return [(int(r["id"]), str(r["storage"]), str(r["storage_key"])) for r in noted]


async def settle(conn: asyncpg.Connection, gone: list[int], failed: list[int]) -> None:
    """Forget the keys whose objects are gone; count an attempt on the others."""
    if gone:
        await conn.execute("DELETE FROM sessionctl.media_pending WHERE id = ANY($1::bigint[])", gone)
    if failed:
        await conn.execute(
            "UPDATE sessionctl.media_pending SET attempts = attempts + 1, last_attempt_at = now()"
            " WHERE id = ANY($1::bigint[])",
            failed,
        )


_OF = "WHERE job_id = $1 OR user_hmac = ANY($2::text[])"


async def pending_of(conn: asyncpg.Connection, job_id: str, hmacs: list[str]) -> list[tuple[int, str, str]]:
    """Keys this job noted, or noted for these users by any job (an earlier, failed one)."""
    rows = await conn.fetch(
        f"SELECT id, storage, storage_key FROM sessionctl.media_pending {_OF} ORDER BY id", job_id, hmacs
    )
    return [(int(r["id"]), str(r["storage"]), str(r["storage_key"])) for r in rows]


async def count_of(conn: asyncpg.Connection, job_id: str, hmacs: list[str]) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM sessionctl.media_pending {_OF}", job_id, hmacs))


async def count_of_users(conn: asyncpg.Connection, hmacs: list[str]) -> int:
    """Objects of these users' erased sessions not deleted yet (``verify`` counts them)."""
    if not await exists(conn):
        return 0
    return int(
        await conn.fetchval("SELECT count(*) FROM sessionctl.media_pending WHERE user_hmac = ANY($1::text[])", hmacs)
    )


async def refs_of_user(
    conn: asyncpg.Connection, runs_table: str | None, sessions_table: str, legacy: bool, user_id: str
) -> list[dict[str, Any]]:
    """The media references the user's sessions uploaded (an access export lists the objects):
    from ``agno_runs`` (3.x) and from runs inside the session rows (2.x)."""
    parts = []
    if runs_table is not None:
        parts.append(
            f"SELECT ref FROM {runs_table} r JOIN {sessions_table} s ON s.session_id = r.session_id,"
            f" LATERAL jsonb_path_query(r.run_data, '{REFS_PATH}') AS ref WHERE s.user_id = $1"
            f" AND r.run_data @? '{ANY_REF}' AND ref ->> 'session_id' = r.session_id"
            " AND ref ->> 'storage_key' IS NOT NULL"
        )
    if legacy:
        parts.append(
            f"SELECT ref FROM {sessions_table} s, LATERAL jsonb_path_query(s.runs, '{REFS_PATH}') AS ref"
            f" WHERE s.user_id = $1 AND s.runs @? '{ANY_REF}' AND ref ->> 'session_id' = s.session_id"
            " AND ref ->> 'storage_key' IS NOT NULL"
        )
    if not parts:
        return []
    rows = await conn.fetch(f"SELECT DISTINCT ref FROM ({' UNION ALL '.join(parts)}) x", user_id)
    return [json.loads(r["ref"]) if isinstance(r["ref"], str) else dict(r["ref"]) for r in rows]


async def stale_pending(conn: asyncpg.Connection, older_than_s: int, limit: int) -> list[tuple[int, str, str]]:
    """Any job's keys pending for longer than this, oldest first (the re-sweep retries those a lost
    job left)."""
    if not await exists(conn):
        return []
    rows = await conn.fetch(
        "SELECT id, storage, storage_key FROM sessionctl.media_pending"
        " WHERE noted_at < now() - make_interval(secs => $1) ORDER BY id LIMIT $2",
        older_than_s,
        limit,
    )
    return [(int(r["id"]), str(r["storage"]), str(r["storage_key"])) for r in rows]
