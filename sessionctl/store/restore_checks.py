"""What an import may write: which of its sessions and runs belong to others, and the
timestamps Agno's upsert replaced."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from sessionctl.store.tables import (
    RUNS,
    SESSIONS,
)

if TYPE_CHECKING:
    from sessionctl.store.catalog import Layout


async def restore_updated_at(conn: asyncpg.Connection, layout: Layout, stamps: list[tuple[str, int | None]]) -> None:
    """Put back the exported ``updated_at`` that Agno's upsert replaced with the write time."""
    await conn.execute(
        f"UPDATE {layout.q(SESSIONS)} s SET updated_at = v.updated_at"
        " FROM unnest($1::text[], $2::bigint[]) AS v(session_id, updated_at) WHERE s.session_id = v.session_id",
        [sid for sid, _ in stamps],
        [ts for _, ts in stamps],
    )


async def sessions_owned_elsewhere(
    conn: asyncpg.Connection, layout: Layout, sessions: list[tuple[str, str | None, str | None]]
) -> list[str]:
    """Of these (session id, user id, session type), the ids of sessions the table holds under
    another user (or none), or of another type: rows an import must not change."""
    rows = await conn.fetch(
        f"SELECT s.session_id FROM {layout.q(SESSIONS)} s"
        " JOIN unnest($1::text[], $2::text[], $3::text[]) AS v(session_id, user_id, session_type)"
        " ON s.session_id = v.session_id"
        " WHERE s.user_id IS DISTINCT FROM v.user_id OR s.session_type IS DISTINCT FROM v.session_type",
        [x[0] for x in sessions],
        [x[1] for x in sessions],
        [x[2] for x in sessions],
    )
    return [r["session_id"] for r in rows]


async def runs_of_other_sessions(conn: asyncpg.Connection, layout: Layout, runs: list[tuple[str, str]]) -> list[str]:
    """Of these (run id, session id), the run ids the runs table holds under another session:
    Agno's ``upsert_run`` would overwrite them (it matches on run_id alone)."""
    if not layout.has(RUNS) or not runs:
        return []
    rows = await conn.fetch(
        f"SELECT r.run_id FROM {layout.q(RUNS)} r"
        " JOIN unnest($1::text[], $2::text[]) AS v(run_id, session_id) ON r.run_id = v.run_id"
        " WHERE r.session_id IS DISTINCT FROM v.session_id",
        [x[0] for x in runs],
        [x[1] for x in runs],
    )
    return [r["run_id"] for r in rows]


async def count_sessions_by_id(conn: asyncpg.Connection, layout: Layout, session_ids: list[str]) -> int:
    return int(
        await conn.fetchval(
            f"SELECT count(*) FROM {layout.q(SESSIONS)} WHERE session_id = ANY($1::text[])", session_ids
        )
    )
