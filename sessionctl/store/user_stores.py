"""Every Agno table that holds a user's data, and how an erasure of scope "all" treats each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from sessionctl.identifiers import quote_ident
from sessionctl.store.params import USERS_1, rowcount
from sessionctl.store.tables import (
    PAYLOADS,
    SESSIONS,
    SPANS,
    TOOL_RESULTS,
    TRACES,
)

if TYPE_CHECKING:
    from sessionctl.store.catalog import Layout


@dataclass(frozen=True, slots=True)
class UserStore:
    """One Agno table that holds a user's data, and how an erasure treats it."""

    table: str
    action: str  # "delete" the user's rows, or "anonymize" them (the person's columns set to NULL)
    note: str
    # "agent": a table of each agent schema, keyed by user_id, erased with scope "all";
    # "database": found by layout anywhere in a database (store.shared_stores), erased with scope
    # "all" across all agents (or, for a vector table inside an agent schema, with that agent);
    # "media": objects of a MediaStorage that the erased sessions' runs point at (sessionctl.media)
    place: str = "agent"


# Every Agno table with a user_id column, in the order an erasure visits them (children first).
# tests/test_scope_all.py fails when Agno declares a user-keyed table this list does not know.
USER_STORES: tuple[UserStore, ...] = (
    UserStore("agno_sessions", "delete", "sessions, purged first with their runs, transcripts and tool results"),
    UserStore("agno_sessions_sandbox_bindings", "delete", "sandbox leases of the user's sessions"),
    UserStore("agno_runs", "delete", "runs the user made in sessions owned by others (team sessions)"),
    UserStore("agno_memories", "delete", "what agents remember about the user"),
    UserStore("agno_learnings", "delete", "what agents learned from the user"),
    UserStore("agno_compactions", "delete", "folded transcripts (archived messages, verbatim)"),
    UserStore("agno_tool_results", "delete", "offloaded tool results and their payloads in fs.agno_fs"),
    UserStore("agno_traces", "delete", "traces of the user's runs, with their spans"),
    UserStore("agno_eval_runs", "delete", "evaluations run on the user's data"),
    UserStore("agno_approvals", "delete", "approval requests of the user's runs"),
    UserStore("agno_jobs", "delete", "queued background runs, with the user's input"),
    UserStore("agno_schedule_runs", "delete", "runs of the user's schedules"),
    UserStore("agno_schedules", "delete", "the user's schedules"),
    UserStore("agno_knowledge", "delete", "content the user added"),
    UserStore("agno_metrics", "delete", "the user's daily usage aggregates"),
    UserStore("agno_auth_tokens", "delete", "the user's OAuth tokens"),
    UserStore("agno_components", "anonymize", "agents/teams the user defined: shared configuration"),
    UserStore("agno_company_products", "anonymize", "shared business records the user created"),
    UserStore("agno_company_projects", "anonymize", "shared business records the user created"),
    UserStore("agno_company_sources", "anonymize", "shared business records the user created"),
    UserStore("agno_company_tasks", "anonymize", "shared business records the user created"),
    UserStore("agno_service_accounts", "anonymize", "service accounts the user created: still in use"),
    UserStore("PgVector tables (any name; ai by default)", "delete", "the user's knowledge chunks", "database"),
    UserStore("agno_authz_users", "delete", "the AgentOS login record: email, name, metadata", "database"),
    UserStore("agno_authz_grouping", "delete", "the user's role assignments", "database"),
    UserStore("agno_authz_audit", "anonymize", "change events keep what happened, not who (actor, target)", "database"),
    UserStore("agno_authz_decisions", "anonymize", "access events keep the route, not who (actor, token)", "database"),
    UserStore("offloaded media", "delete", "images, audio, video, files of the user's runs", "media"),
)
KNOWN_USER_TABLES = frozenset(s.table for s in USER_STORES if s.place == "agent")


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
