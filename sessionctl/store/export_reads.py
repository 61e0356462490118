"""Reading sessions out: an export's keyset pages, each session rendered as one line by Postgres,
and the rows and runs Agno's own merge needs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from sessionctl.store.params import Params
from sessionctl.store.tables import (
    RUNS,
    SESSIONS,
    ExportKey,
)

if TYPE_CHECKING:
    from sessionctl.store.catalog import Layout


async def sessions_by_ids(conn: asyncpg.Connection, layout: Layout, session_ids: list[str]) -> list[dict[str, Any]]:
    """Session rows by id (for exporting a snapshot before deleting it), in id order."""
    rows = await conn.fetch(
        f"SELECT * FROM {layout.q(SESSIONS)} WHERE session_id = ANY($1::text[]) ORDER BY session_id", session_ids
    )
    return [dict(r) for r in rows]


async def runs_for_sessions(
    conn: asyncpg.Connection, layout: Layout, session_ids: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """``run_data`` of the runs table per session, in Agno's order (run_index, created_at, run_id)."""
    if not layout.has(RUNS) or not session_ids:
        return {}
    rows = await conn.fetch(
        f"SELECT session_id, run_data FROM {layout.q(RUNS)} WHERE session_id = ANY($1::text[])"
        " ORDER BY session_id, run_index ASC NULLS LAST, created_at ASC, run_id ASC",
        session_ids,
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["session_id"], []).append(r["run_data"])
    return out


# -- exporting -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """Which sessions an export (or export-then-erase) covers: a user (or all), a half-open time range."""

    user_id: str | None = None
    since: int | None = None  # epoch seconds, inclusive
    until: int | None = None  # epoch seconds, exclusive
    by: str = "created"  # "created": created_at; "updated": coalesce(updated_at, created_at)
    # None: every session; False: only those with a creation time; True: only those without (an
    # export walks them apart, last, where Layout.created_at_nullable)
    undated: bool | None = None

    def where(self, p: Params) -> str:
        """The window's condition on the session row, its values bound through ``p``."""
        conds: list[str] = []
        col = "coalesce(updated_at, created_at)" if self.by == "updated" else "created_at"
        if self.user_id is not None:
            conds.append(f"user_id = {p(self.user_id)}")
        if self.since is not None:
            conds.append(f"{col} >= {p(self.since)}")
        if self.until is not None:
            conds.append(f"{col} < {p(self.until)}")
        if self.undated is not None:
            conds.append("created_at IS NULL" if self.undated else "created_at IS NOT NULL")
        return " AND ".join(conds) or "TRUE"


async def count_window(conn: asyncpg.Connection, layout: Layout, window: Window) -> int:
    p = Params()
    where = window.where(p)
    return int(await conn.fetchval(f"SELECT count(*) FROM {layout.q(SESSIONS)} WHERE {where}", *p.values))


def _export_bounds(window: Window, after: ExportKey | None, upto: ExportKey | None, p: Params) -> str:
    """The keyset conditions of an export page on ``s``: after ``after``, up to ``upto`` inclusive,
    in ``created_at, session_id`` order — by session id alone among sessions without a creation
    time (``window.undated``), each bound the index can use."""
    sql = ""
    if window.undated:
        if after is not None:
            sql += f" AND s.session_id > {p(after[1])}"
        if upto is not None:
            sql += f" AND s.session_id <= {p(upto[1])}"
        return sql
    if after is not None:
        sql += f" AND (s.created_at, s.session_id) > ({p(after[0])}, {p(after[1])})"
    if upto is not None:
        sql += f" AND (s.created_at, s.session_id) <= ({p(upto[0])}, {p(upto[1])})"
    return sql


def export_key(row: Any) -> ExportKey:
    """A row's place in an export's order (``created_at``, ``session_id``)."""
    at = row["created_at"]
    return (None if at is None else int(at), str(row["session_id"]))


async def export_page_end(
    conn: asyncpg.Connection, layout: Layout, window: Window, *, after: ExportKey | None, limit: int
) -> tuple[ExportKey | None, bool]:
    """Where the page of ``limit`` sessions of the window after ``after`` ends — the key of its
    last session, ``None`` when fewer remain — and whether it is the window's last page: known
    before the page is rendered, so the next one can start. Cheap where the order is indexed
    (``layout.user_index`` for a user's window)."""
    p = Params()
    where = window.where(p) + _export_bounds(window, after, None, p)
    rows = await conn.fetch(  # the page's last session, and the next page's first if any
        f"SELECT s.created_at, s.session_id FROM {layout.q(SESSIONS)} s WHERE {where}"
        f" ORDER BY s.created_at, s.session_id OFFSET {p(limit - 1)} LIMIT 2",
        *p.values,
    )
    return (export_key(rows[0]) if rows else None), len(rows) < 2


async def export_lines(
    conn: asyncpg.Connection,
    layout: Layout,
    window: Window,
    *,
    envelope: dict[str, Any],
    after: ExportKey | None,
    limit: int,
    upto: ExportKey | None = None,
) -> list[asyncpg.Record]:
    """One keyset page of the window (oldest first, after ``after``, up to ``upto`` inclusive,
    at most ``limit``), each session rendered by Postgres as one
    export line, ``envelope`` plus ``"session"``: every column of the row and its ``runs`` — as
    COPY would render it, with no JSON decoding or encoding in the worker. Returns
    ``created_at, session_id, line``.

    ``runs`` is what Agno's ``merge_runs_table_with_legacy_blob`` returns, computed in SQL for
    the two layouts Agno writes: runs only in ``agno_runs`` (3.x: in run_index, created_at,
    run_id order), or only in a 2.x blob (its run dicts with a run_id, in blob order). A session
    with runs in both places (half migrated), or a blob that is not a JSON array, gets ``line``
    NULL: the caller renders it with Agno's own merge.
    """
    p = Params()
    where = window.where(p) + _export_bounds(window, after, upto, p)
    table_runs = "NULL::jsonb"
    join = ""
    if layout.has(RUNS):
        join = (
            " LEFT JOIN LATERAL (SELECT jsonb_agg(r.run_data ORDER BY r.run_index ASC NULLS LAST, r.created_at ASC,"
            f" r.run_id ASC) AS runs FROM {layout.q(RUNS)} r WHERE r.session_id = s.session_id) tr ON TRUE"
        )
        table_runs = "tr.runs"
    if layout.legacy_runs_column:
        blob_runs = (
            "(SELECT coalesce(jsonb_agg(e ORDER BY o), '[]') FROM jsonb_array_elements(s.runs) WITH ORDINALITY x(e, o)"
            " WHERE jsonb_typeof(e) = 'object' AND coalesce(e -> 'run_id', 'null') <> 'null')"
        )
        empty_blob = "(s.runs IS NULL OR s.runs = 'null' OR s.runs = '[]')"
        runs = (
            f"CASE WHEN {empty_blob} THEN coalesce({table_runs}, '[]')"
            f" WHEN jsonb_typeof(s.runs) = 'array' AND {table_runs} IS NULL THEN {blob_runs} END"
        )
    else:
        runs = f"coalesce({table_runs}, '[]')"
    # The envelope is written around the session's JSON as text: nesting the session in a jsonb
    # object would copy every session once more. As bytea, the line reaches the worker as bytes,
    # never decoded and re-encoded.
    head = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))[:-1] + ',"session":'
    # The window's columns are the session row's: tr and m only add "runs".
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT s.created_at, s.session_id, (SELECT convert_to({p(head)}::text"
        " || (to_jsonb(s) || jsonb_build_object('runs', m.runs))::text || E'}\\n', 'UTF8')"
        "  WHERE m.runs IS NOT NULL) AS line"
        f" FROM {layout.q(SESSIONS)} s{join} CROSS JOIN LATERAL (SELECT {runs} AS runs) m"
        f" WHERE {where} ORDER BY s.created_at, s.session_id LIMIT {p(limit)}",
        *p.values,
    )
    return rows
