"""What a re-sweep reads: every distinct person key of a store with how many rows and since when
(streamed, one ``GROUP BY`` scan per table), and the erasure receipts of a batch of HMACs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from sessionctl.identifiers import quote_ident

# Receipts of these kinds erased all of a user's sessions at their target (a re-sweep looks for
# users they name). Export-then-erase erases a window of them, which its receipt does not record:
# sessions outside it were never asked to go, so it is not one of them.
ERASURE_KINDS = ["purge_user_sessions", "purge_users"]
ERASED_IN_MEMORY = 500_000  # up to this many erased HMACs are held in a set; more: looked up by batch


@dataclass(frozen=True, slots=True)
class Swept:
    """One store a re-sweep reads: a table, the column that names the person, and how it dates rows."""

    schema: str
    table: str
    key: str  # user_id, or id / subject / actor in AgentOS's tables
    place: str  # "agent" (a table of an agent schema) or "database" (vector and authz tables)
    created: str | None  # created_at's type: "int8" (epoch seconds), "timestamptz", … or None

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.table}"


async def created_types(conn: asyncpg.Connection, schemas: list[str]) -> dict[tuple[str, str], str]:
    """The type of ``created_at`` of every table of these schemas that has one."""
    rows = await conn.fetch(
        "SELECT n.nspname AS s, c.relname AS t, ty.typname AS ty FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'created_at' AND NOT a.attisdropped"
        " JOIN pg_type ty ON ty.oid = a.atttypid"
        " WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p')",
        schemas,
    )
    return {(r["s"], r["t"]): r["ty"] for r in rows}


def _first_seen(created: str | None) -> str:
    if created in ("int8", "int4", "numeric", "float8"):
        return "to_timestamp(min(created_at))"
    if created in ("timestamptz", "timestamp"):
        return "min(created_at)::timestamptz"
    return "NULL::timestamptz"


async def person_counts(
    conn: asyncpg.Connection, swept: Swept, batch: int = 10_000
) -> AsyncIterator[list[tuple[str, int, Any]]]:
    """Every distinct person of the store: (key, rows, oldest row's time or None), ``batch`` at a
    time from a server-side cursor — one scan, bounded memory, whatever the table's size."""
    q = f"{quote_ident(swept.schema)}.{quote_ident(swept.table)}"
    key = quote_ident(swept.key)
    sql = (
        f"SELECT {key}::text AS k, count(*) AS n, {_first_seen(swept.created)} AS first"
        f" FROM {q} WHERE {key} IS NOT NULL GROUP BY 1"
    )
    async with conn.transaction(readonly=True):
        out: list[tuple[str, int, Any]] = []
        async for r in conn.cursor(sql, prefetch=batch):
            out.append((r["k"], int(r["n"]), r["first"]))
            if len(out) >= batch:
                yield out
                out = []
        if out:
            yield out


async def erased_hmacs(conn: asyncpg.Connection, cap: int = ERASED_IN_MEMORY) -> set[str] | None:
    """Every HMAC an erasure receipt names, when there are at most ``cap`` (``None``: more)."""
    if await conn.fetchval("SELECT to_regclass('sessionctl.receipts')") is None:
        return set()
    rows = await conn.fetch(
        "SELECT DISTINCT user_hmac FROM sessionctl.receipts WHERE kind = ANY($1::text[]) LIMIT $2",
        ERASURE_KINDS,
        cap + 1,
    )
    return None if len(rows) > cap else {r["user_hmac"] for r in rows}


async def erasures_of(conn: asyncpg.Connection, hmacs: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The erasure receipts of these HMACs (target, scope, schemas erased, finished_at), by HMAC."""
    if not hmacs or await conn.fetchval("SELECT to_regclass('sessionctl.receipts')") is None:
        return {}
    rows = await conn.fetch(
        "SELECT user_hmac, target, scope, agents, finished_at FROM sessionctl.receipts"
        " WHERE user_hmac = ANY($1::text[]) AND kind = ANY($2::text[])",
        hmacs,
        ERASURE_KINDS,
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        agents = r["agents"]
        if isinstance(agents, str):  # a connection without the pool's jsonb codec
            agents = json.loads(agents)
        schemas = {v["schema"] if isinstance(v, dict) else v for v in (agents or {}).values()}
        out.setdefault(r["user_hmac"], []).append(
            {"target": r["target"], "scope": r["scope"], "schemas": schemas, "finished_at": r["finished_at"]}
        )
    return out
