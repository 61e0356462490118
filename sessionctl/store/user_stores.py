"""Erasing and counting a user's rows in the user-keyed tables of an agent schema (scope "all"), as
:data:`~sessionctl.store.tables.USER_STORES` declares them."""

from __future__ import annotations

import asyncpg

from sessionctl.identifiers import quote_ident
from sessionctl.store.catalog import Layout
from sessionctl.store.params import USERS_1, rowcount
from sessionctl.store.tables import (
    PAYLOADS,
    SESSIONS,
    SPANS,
    TOOL_RESULTS,
    TRACES,
    USER_STORES,
)


async def user_keyed_tables(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Every table of the schema with a ``user_id`` column: where a user's data can be — read from
    pg_catalog, which (unlike information_schema) also lists tables this role may not read: a
    recount then fails loudly on them instead of skipping them. Partitions are counted through
    their parent."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped"
        " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname",
        schema,
    )
    return [r["relname"] for r in rows]


async def erase_user_stores(
    conn: asyncpg.Connection, layout: Layout, users: list[str], *, shared_files: bool
) -> dict[str, int]:
    """Delete (or anonymize) the users' rows in every user-keyed table but ``agno_sessions`` (which the
    session purge handles), in one transaction; rows touched per table.

    ``fs.agno_fs`` is shared by every agent of the database: payloads that this schema's tool-result
    rows point at always go; the user's *other* files only when ``shared_files`` (an all-agents
    erasure) — an erasure at one agent must not delete files of the user's other agents.
    """
    counts: dict[str, int] = {}
    async with conn.transaction():
        for st in USER_STORES:
            if st.place != "agent" or st.table == SESSIONS or not layout.has(st.table):
                continue
            q = layout.q(st.table)
            if st.table == TRACES and layout.has(SPANS):
                counts[SPANS] = rowcount(
                    await conn.execute(
                        f"DELETE FROM {layout.q(SPANS)} WHERE trace_id IN (SELECT trace_id FROM {q} WHERE {USERS_1})",
                        users,
                    )
                )
            if st.table == TOOL_RESULTS and layout.payload_table:
                row = await conn.fetchrow(
                    f"WITH tr AS (DELETE FROM {q} WHERE {USERS_1} RETURNING namespace, path),"
                    f" p AS (DELETE FROM {PAYLOADS} f USING tr WHERE f.namespace = tr.namespace AND f.path = tr.path"
                    " RETURNING 1) SELECT (SELECT count(*) FROM tr) AS t, (SELECT count(*) FROM p) AS p",
                    users,
                )
                counts[st.table] = int(row["t"])
                counts["fs.agno_fs"] = int(row["p"])
                continue
            if st.action == "delete":
                status = await conn.execute(f"DELETE FROM {q} WHERE {USERS_1}", users)
            else:
                status = await conn.execute(f"UPDATE {q} SET user_id = NULL WHERE {USERS_1}", users)
            counts[st.table] = rowcount(status)
        if shared_files and layout.payload_table:  # the user's files no index row of this schema points at
            counts["fs.agno_fs"] = counts.get("fs.agno_fs", 0) + rowcount(
                await conn.execute(f"DELETE FROM {PAYLOADS} WHERE {USERS_1}", users)
            )
    return counts


async def count_user_files(conn: asyncpg.Connection, users: list[str]) -> int:
    if await conn.fetchval("SELECT to_regclass('fs.agno_fs')") is None:
        return 0
    return int(await conn.fetchval(f"SELECT count(*) FROM {PAYLOADS} WHERE {USERS_1}", users))


async def remaining_user_rows(conn: asyncpg.Connection, schema: str, users: list[str]) -> dict[str, int]:
    """The users' rows left in every user-keyed table of the schema (known to us or not)."""
    out: dict[str, int] = {}
    for table in await user_keyed_tables(conn, schema):
        q = f"{quote_ident(schema)}.{quote_ident(table)}"
        out[table] = int(await conn.fetchval(f"SELECT count(*) FROM {q} WHERE {USERS_1}", users))
    return out
