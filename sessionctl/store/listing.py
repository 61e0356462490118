"""A user's sessions, newest first, in keyset pages (the per-agent API and ``sessionctl sessions``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg

from sessionctl.store.tables import (
    SESSIONS,
    SessionKey,
)

if TYPE_CHECKING:
    from sessionctl.store.catalog import Layout



async def list_user_sessions_page(
    conn: asyncpg.Connection,
    layout: Layout,
    user_id: str,
    *,
    after: SessionKey | None,
    limit: int,
) -> list[dict[str, Any]]:
    """One keyset page of the user's session rows, newest first (``created_at DESC, session_id DESC``).

    Rows are returned as Agno stores them (every column of ``agno_sessions``), with ``runs`` set to
    the run dicts of the runs table merged over any 2.x blob — see :func:`runs_for_sessions`.
    """
    s = layout.q(SESSIONS)
    if after is None:
        rows = await conn.fetch(
            f"SELECT * FROM {s} WHERE user_id = $1 ORDER BY created_at DESC, session_id DESC LIMIT $2",
            user_id,
            limit,
        )
    else:
        rows = await conn.fetch(
            f"SELECT * FROM {s} WHERE user_id = $1 AND (created_at, session_id) < ($2, $3)"
            " ORDER BY created_at DESC, session_id DESC LIMIT $4",
            user_id,
            after[0],
            after[1],
            limit,
        )
    return [dict(r) for r in rows]


async def get_session_row(conn: asyncpg.Connection, layout: Layout, session_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT * FROM {layout.q(SESSIONS)} WHERE session_id = $1", session_id)
    return dict(row) if row is not None else None
