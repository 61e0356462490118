"""The indexes sessionctl's queries need (``sessionctl doctor``), and building them concurrently."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from sessionctl.identifiers import quote_ident
from sessionctl.store.media_refs import ANY_REF
from sessionctl.store.tables import RUNS, SESSIONS


@dataclass(frozen=True, slots=True)
class IndexSpec:
    name: str
    table: str
    keys: str  # the index's key list (and predicate), SQL
    first_column: str | None  # an existing valid index led by this column covers the need
    purpose: str


NEEDED_INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec(
        "sessionctl_sessions_user",
        SESSIONS,
        "(user_id, created_at, session_id)",
        "user_id",
        "per-user reads and deletes: purge, listing newest first, a user's export (Agno has none on user_id)",
    ),
    IndexSpec(
        "sessionctl_sessions_age",
        SESSIONS,
        "((coalesce(updated_at, created_at)))",
        None,
        "retention: sessions past a cutoff by last update, falling back to creation",
    ),
    IndexSpec(
        "sessionctl_runs_media",
        RUNS,
        # The very condition the erasure's read of media references has (store/media_refs.py), so the
        # planner takes this index for it: only the runs that point at offloaded media are read.
        f"(session_id) WHERE run_data @? '{ANY_REF}'",
        None,
        "erasure: the runs that point at offloaded media, found without reading every run"
        " (Agno keeps no column for it); only the runs with media are indexed",
    ),
)


async def index_applies(conn: asyncpg.Connection, schema: str, spec: IndexSpec) -> bool:
    """Does the schema have the table the index is for (a 2.x layout has no runs table)?"""
    table = f"{quote_ident(schema)}.{quote_ident(spec.table)}"
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table))


async def index_status(conn: asyncpg.Connection, schema: str, spec: IndexSpec) -> dict[str, Any]:
    """Is the need met: by our index (valid or not), or by another valid index led by the same column?"""
    ours = await conn.fetchrow(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
        schema,
        spec.name,
    )
    covered_by = None
    if spec.first_column is not None:
        covered_by = await conn.fetchval(
            "SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
            " JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]"
            " WHERE n.nspname = $1 AND t.relname = $2 AND a.attname = $3 AND i.indisvalid"
            " ORDER BY ic.relname = $4 DESC LIMIT 1",
            schema,
            spec.table,
            spec.first_column,
            spec.name,
        )
    valid = bool(ours and ours["indisvalid"])
    return {
        "index": spec.name,
        "table": spec.table,
        "purpose": spec.purpose,
        "present": valid or covered_by is not None,
        "invalid": ours is not None and not ours["indisvalid"],
        "covered_by": covered_by if covered_by and covered_by != spec.name else None,
    }


async def create_index(conn: asyncpg.Connection, schema: str, spec: IndexSpec) -> None:
    """``CREATE INDEX CONCURRENTLY IF NOT EXISTS`` (never blocks writes; outside a transaction). An
    invalid leftover of an interrupted build would satisfy ``IF NOT EXISTS``: it is dropped first."""
    table = f"{quote_ident(schema)}.{quote_ident(spec.table)}"
    index = f"{quote_ident(schema)}.{quote_ident(spec.name)}"
    status = await index_status(conn, schema, spec)
    if status["invalid"]:
        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index}")
    await conn.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote_ident(spec.name)} ON {table} {spec.keys}")
