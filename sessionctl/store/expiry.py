"""What a retention policy may clean beyond sessions in an agent schema (``[*.items]``): memories,
traces (with their spans) and evaluation runs, each by its own time — in batches, each batch one
statement that re-checks the cutoff — leaving out the rows of people under a legal hold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from sessionctl.store.catalog import Layout
from sessionctl.store.counts import kept_out
from sessionctl.store.params import Params, rowcount
from sessionctl.store.tables import SPANS, TRACES


@dataclass(frozen=True, slots=True)
class Expirable:
    table: str
    older: str  # the row is older than $1 (epoch seconds)


ITEMS: dict[str, Expirable] = {
    # Agno keeps epoch seconds here; updated_at may be NULL (never updated)
    "memories": Expirable("agno_memories", "coalesce(updated_at, created_at) < $1"),
    "evals": Expirable("agno_eval_runs", "coalesce(updated_at, created_at) < $1"),
    # ISO 8601 text (agno's TRACE_TABLE_SCHEMA)
    "traces": Expirable(TRACES, "created_at::timestamptz < to_timestamp($1)"),
}


async def _where(
    conn: asyncpg.Connection, layout: Layout, e: Expirable, cutoff: int, keep: list[str] | None
) -> tuple[str, list[Any]]:
    """The condition on the item's rows older than ``cutoff``, none of them of the users of ``keep``
    (under a legal hold) where the table says whose a row is; with its bind values."""
    p = Params([cutoff])
    where = e.older
    if keep and await _has_owner(conn, layout, e.table):
        where += " AND " + kept_out(p, keep)
    return where, p.values


async def _has_owner(conn: asyncpg.Connection, layout: Layout, table: str) -> bool:
    """The table has a ``user_id`` column (Agno's memories, evals and traces do)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1)"
            " AND attname = 'user_id' AND NOT attisdropped)",
            layout.q(table),
        )
    )


async def count_expired_items(
    conn: asyncpg.Connection, layout: Layout, item: str, cutoff: int, keep: list[str] | None = None
) -> int:
    e = ITEMS[item]
    if not layout.has(e.table):
        return 0
    where, args = await _where(conn, layout, e, cutoff, keep)
    return int(await conn.fetchval(f"SELECT count(*) FROM {layout.q(e.table)} WHERE {where}", *args))


async def delete_expired_items(
    conn: asyncpg.Connection, layout: Layout, item: str, cutoff: int, limit: int, keep: list[str] | None = None
) -> int:
    """One batch of ``limit`` items older than ``cutoff`` (a trace with its spans), none of the users
    of ``keep``, in one transaction; how many items went."""
    e = ITEMS[item]
    if not layout.has(e.table):
        return 0
    q = layout.q(e.table)
    where, args = await _where(conn, layout, e, cutoff, keep)
    gone = f"DELETE FROM {q} WHERE ctid IN (SELECT ctid FROM {q} WHERE {where} LIMIT {int(limit)}) AND {where}"
    if item == "traces" and layout.has(SPANS):  # the spans of exactly the traces deleted
        spans = f"DELETE FROM {layout.q(SPANS)} WHERE trace_id IN (SELECT trace_id FROM gone)"
        both = f"WITH gone AS ({gone} RETURNING trace_id), s AS ({spans}) SELECT count(*) FROM gone"
        return int(await conn.fetchval(both, *args))
    return rowcount(await conn.execute(gone, *args))
