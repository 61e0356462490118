"""What a retention policy may clean beyond sessions in an agent schema (``[*.items]``): memories,
traces (with their spans) and evaluation runs, each by its own time — in batches, each batch one
statement that re-checks the cutoff."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from sessionctl.store.catalog import Layout
from sessionctl.store.params import rowcount
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


async def count_expired_items(conn: asyncpg.Connection, layout: Layout, item: str, cutoff: int) -> int:
    e = ITEMS[item]
    if not layout.has(e.table):
        return 0
    return int(await conn.fetchval(f"SELECT count(*) FROM {layout.q(e.table)} WHERE {e.older}", cutoff))


async def delete_expired_items(conn: asyncpg.Connection, layout: Layout, item: str, cutoff: int, limit: int) -> int:
    """One batch of ``limit`` items older than ``cutoff`` (a trace with its spans), in one
    transaction; how many items went."""
    e = ITEMS[item]
    if not layout.has(e.table):
        return 0
    q = layout.q(e.table)
    gone = f"DELETE FROM {q} WHERE ctid IN (SELECT ctid FROM {q} WHERE {e.older} LIMIT {int(limit)}) AND {e.older}"
    if item == "traces" and layout.has(SPANS):  # the spans of exactly the traces deleted
        spans = f"DELETE FROM {layout.q(SPANS)} WHERE trace_id IN (SELECT trace_id FROM gone)"
        both = f"WITH gone AS ({gone} RETURNING trace_id), s AS ({spans}) SELECT count(*) FROM gone"
        return int(await conn.fetchval(both, cutoff))
    return rowcount(await conn.execute(gone, cutoff))
