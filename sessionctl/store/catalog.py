"""What an agent schema holds, read from the catalog: its Agno tables and their layout, the
schemas of a database that are Agno session stores, the tables keyed by user, their sizes.

Which tables a schema has is read once per schema (:func:`read_layout`): Agno 3.x keeps runs in
``agno_runs`` (foreign-keyed to the session, ``ON DELETE CASCADE``); Agno 2.x keeps them in the
``runs`` jsonb column of the session row; a migrated schema may have both. pg_catalog, not
information_schema, throughout: its views are slow with thousands of schemas and hide the tables a
role may not read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from sessionctl.identifiers import quote_ident
from sessionctl.store.tables import (
    KNOWN_USER_TABLES,
    MEMORIES,
    RUNS,
    SESSIONS,
    SPANS,
    TOOL_RESULTS,
    TRACES,
    TRANSCRIPTS,
)

# The tables a Layout knows about (what ``Layout.has`` is asked).
LAYOUT_TABLES = KNOWN_USER_TABLES | {SESSIONS, RUNS, MEMORIES, TRANSCRIPTS, TOOL_RESULTS, SPANS, TRACES}



@dataclass(frozen=True, slots=True)
class Layout:
    """The Agno tables (of :data:`LAYOUT_TABLES`) one agent schema holds, as read from the catalog."""

    schema: str
    tables: frozenset[str]
    legacy_runs_column: bool  # agno 2.x: runs inside agno_sessions.runs
    payload_table: bool  # fs.agno_fs exists in this database
    # agno_runs.session_id references agno_sessions(session_id) ON DELETE CASCADE, agno_runs is a
    # plain table: the enabled state (pg_trigger.tgenabled: O, A, R or D) of the cascade's trigger;
    # "" when there is no such cascade.
    runs_cascade: str = ""
    # a valid index led by (user_id, created_at, session_id) on a plain agno_sessions (neither
    # partitioned nor inherited from): the purge may walk it in ranges deleted by tuple id
    user_index: bool = False
    # agno_sessions.created_at may be NULL, in it or in a table inheriting from it (Agno declares
    # it NOT NULL; a hand-altered table may not): an export walks such sessions apart, last
    created_at_nullable: bool = False
    # agno_sessions is a plain table (neither partitioned nor inherited from): a tuple id names one
    # row of it, so a purge may delete by tuple ids read in one scan
    plain: bool = False

    def has(self, table: str) -> bool:
        return table in self.tables

    def q(self, table: str) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(table)}"


async def init_connection(conn: asyncpg.Connection) -> None:
    """Decode json/jsonb to Python objects, as Agno's SQLAlchemy engine does."""
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def schema_exists(conn: asyncpg.Connection, schema: str) -> bool:
    row = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
    return row is not None


# Agno's session table, as far as our SQL relies on it: these columns, of these types.
REQUIRED_SESSION_COLUMNS: dict[str, frozenset[str]] = {
    "session_id": frozenset({"character varying", "text"}),
    "session_type": frozenset({"character varying", "text"}),
    "user_id": frozenset({"character varying", "text"}),
    "created_at": frozenset({"bigint", "integer"}),
    "updated_at": frozenset({"bigint", "integer"}),
}


async def session_table_problems(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Why ``schema.agno_sessions`` is not Agno's session table (empty when it is)."""
    return (await session_tables_problems(conn, [schema]))[schema]


async def session_tables_problems(conn: asyncpg.Connection, schemas: list[str]) -> dict[str, list[str]]:
    """:func:`session_table_problems` of many schemas, in one catalog query."""
    # pg_catalog, not information_schema: its views are slow in a database of thousands of agent
    # schemas (docs/decisions.md), and hide the tables a role may not read. Only the required
    # columns that are missing or of another type come back: none, in a healthy fleet.
    required = list(REQUIRED_SESSION_COLUMNS)
    allowed = [(column, t) for column, types in REQUIRED_SESSION_COLUMNS.items() for t in sorted(types)]
    rows = await conn.fetch(
        "SELECT x.schema, x.col AS column_name, format_type(x.typ, NULL) AS data_type FROM ("
        "  SELECT s.schema, r.col, (SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid = c.oid"
        "    AND a.attname = r.col AND a.attnum > 0 AND NOT a.attisdropped) AS typ"
        "  FROM unnest($1::text[]) AS s(schema) CROSS JOIN unnest($2::text[]) AS r(col)"
        "  LEFT JOIN pg_namespace n ON n.nspname = s.schema"
        "  LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = 'agno_sessions' AND c.relkind IN ('r', 'p')"
        "  OFFSET 0) x"  # each column's type looked up once, by pg_attribute's (attrelid, attname) index
        " WHERE x.typ IS NULL OR NOT EXISTS (SELECT 1 FROM unnest($3::text[], $4::text[]) AS ok(col, typ)"
        "  WHERE ok.col = x.col AND ok.typ = format_type(x.typ, NULL))",
        schemas,
        required,
        [c for c, _ in allowed],
        [t for _, t in allowed],
    )
    wrong: dict[str, dict[str, str | None]] = {schema: {} for schema in schemas}
    for r in rows:
        wrong[r["schema"]][r["column_name"]] = r["data_type"]
    out: dict[str, list[str]] = {}
    for schema, columns in wrong.items():
        out[schema] = [
            f"no {column} column" if columns[column] is None else f"{column} is {columns[column]}"
            for column in required
            if column in columns
        ]
    return out


async def read_layout(conn: asyncpg.Connection, schema: str) -> Layout | None:
    """The schema's Agno tables, or ``None`` when it has no ``agno_sessions`` table.

    The caller checks :func:`session_table_problems` (see ``AgentHandle.layout``).
    """
    return (await read_layouts(conn, [schema])).get(schema)


# Per schema: the enabled state of the runs' ON DELETE CASCADE trigger (when agno_runs is a plain
# table with that foreign key); whether a valid btree index is led by (user_id, created_at,
# session_id), ascending, in the columns' own collations, on a plain table (a range walk deletes by
# tuple id, and tuple ids repeat across partitions and inheriting tables); whether created_at may
# be NULL in the table or in any table inheriting from it (a child may drop NOT NULL; a partition
# may not). Tables are resolved once per schema (``r``), not again for every catalog row.


_DETAILS = """
        SELECT s.schema,
          (SELECT t.tgenabled::text FROM pg_constraint c
             JOIN pg_trigger t ON t.tgconstraint = c.oid AND t.tgrelid = c.confrelid
              AND t.tgfoid = 'pg_catalog."RI_FKey_cascade_del"'::regproc
            WHERE c.contype = 'f' AND c.confdeltype = 'c' AND c.conrelid = r.runs
              AND c.confrelid = r.sessions AND (SELECT relkind FROM pg_class WHERE oid = c.conrelid) = 'r'
              AND c.conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = c.conrelid
                                     AND attname = 'session_id')]
              AND c.confkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = c.confrelid
                                      AND attname = 'session_id')] LIMIT 1) AS cascade,
          (SELECT (SELECT relkind = 'r' AND NOT relhassubclass FROM pg_class WHERE oid = r.sessions)
             AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = r.sessions AND i.indisvalid
               AND i.indisready AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts >= 3
               AND (SELECT array_agg(a.attname::text ORDER BY k.n)
                      FROM unnest(i.indkey[0:2]) WITH ORDINALITY k(attnum, n)
                      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
                   = ARRAY['user_id', 'created_at', 'session_id']
               AND (SELECT bool_and(o = 0) FROM unnest(i.indoption[0:2]) o)
               AND (SELECT bool_and(ic.c = a.attcollation)
                      FROM unnest(i.indkey[0:2], i.indcollation[0:2]) ic(k, c)
                      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ic.k)
               AND (SELECT amname FROM pg_am JOIN pg_class c ON c.relam = pg_am.oid
                     WHERE c.oid = i.indexrelid) = 'btree')) AS user_index,
          (SELECT relkind = 'r' AND NOT relhassubclass FROM pg_class WHERE oid = r.sessions) AS plain,
          (WITH RECURSIVE t(oid) AS (SELECT r.sessions::oid
             UNION SELECT i.inhrelid FROM pg_inherits i JOIN t ON i.inhparent = t.oid)
           SELECT bool_or(NOT a.attnotnull) FROM pg_attribute a JOIN t ON a.attrelid = t.oid
            WHERE a.attname = 'created_at' AND NOT a.attisdropped) AS nullable
        FROM unnest($1::text[]) AS s(schema),
        LATERAL (SELECT to_regclass(quote_ident(s.schema) || '.agno_sessions')::oid AS sessions,
                        to_regclass(quote_ident(s.schema) || '.agno_runs')::oid AS runs OFFSET 0) AS r
        """


async def read_layouts(conn: asyncpg.Connection, schemas: list[str]) -> dict[str, Layout]:
    """The layouts of many schemas in two catalog queries (schemas without ``agno_sessions`` are
    left out): an all-agents job over 2,000 schemas reads them at once, not in 10,000 round trips."""
    async with conn.transaction():
        # Over thousands of schemas these statements are estimated costly enough for JIT
        # compilation, which costs several times what running them does; and, prepared, their
        # generic plans (Postgres's choice from the sixth call on) take 20 times as long as a plan
        # for the actual list (docs/decisions.md).
        await conn.execute("SET LOCAL jit = off; SET LOCAL plan_cache_mode = force_custom_plan")
        # By name, through pg_class's (relname, relnamespace) index: listing a schema's tables
        # otherwise scans every schema's.
        rows = await conn.fetch(
            """
            SELECT n.nspname AS schema, c.relname AS table_name,
                   EXISTS (SELECT 1 FROM pg_attribute a
                            WHERE a.attrelid = c.oid AND a.attname = 'runs' AND NOT a.attisdropped) AS has_runs
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname = ANY($2::name[]) AND c.relkind IN ('r', 'p') AND n.nspname = ANY($1::text[])
            """,
            schemas,
            sorted(LAYOUT_TABLES),
        )
        tables: dict[str, dict[str, bool]] = {}
        for r in rows:
            tables.setdefault(r["schema"], {})[r["table_name"]] = r["has_runs"]
        found = [schema for schema in schemas if SESSIONS in tables.get(schema, {})]
        if not found:
            return {}
        details = await conn.fetch(_DETAILS, found)
        payload = await conn.fetchval("SELECT to_regclass('fs.agno_fs') IS NOT NULL")
    out: dict[str, Layout] = {}
    for d in details:
        schema = d["schema"]
        t = tables[schema]
        out[schema] = Layout(
            created_at_nullable=bool(d["nullable"]),
            schema=schema,
            tables=frozenset(t),
            legacy_runs_column=bool(t[SESSIONS]),
            payload_table=bool(payload),
            runs_cascade=(d["cascade"] or "") if RUNS in t else "",
            user_index=bool(d["user_index"]),
            plain=bool(d["plain"]),
        )
    return out


async def discover_agent_schemas(conn: asyncpg.Connection) -> list[str]:
    """Schemas holding an Agno sessions table (the agents of this database), sorted."""
    rows = await conn.fetch(
        """
        SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relname = 'agno_sessions' AND c.relkind IN ('r', 'p')
         ORDER BY n.nspname
        """
    )
    return [r["nspname"] for r in rows]


EXACT_COUNT_BYTES = 8 << 20  # tables up to this size are counted; bigger ones estimated by the planner


async def table_sizes(conn: asyncpg.Connection, schema: str) -> dict[str, dict[str, Any]]:
    """Size and rows of each Agno table: counted exactly up to 8 MiB where this role may read it
    (the planner's estimate is 0 or -1 before the first ANALYZE), else the planner's estimate
    (``"exact": False``)."""
    rows = await conn.fetch(
        "SELECT c.relname, pg_total_relation_size(c.oid) AS bytes, greatest(c.reltuples, 0)::bigint AS rows,"
        " has_schema_privilege(c.relnamespace, 'USAGE') AND has_table_privilege(c.oid, 'SELECT') AS readable"
        " FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)"
        " AND c.relkind IN ('r', 'p') AND c.relname LIKE 'agno\\_%' ORDER BY 1",
        schema,
    )
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        exact = r["readable"] and int(r["bytes"]) <= EXACT_COUNT_BYTES
        n = int(r["rows"])
        if exact:
            n = int(await conn.fetchval(f"SELECT count(*) FROM {quote_ident(schema)}.{quote_ident(r['relname'])}"))
        out[r["relname"]] = {"bytes": int(r["bytes"]), "rows": n, "exact": exact}
    return out


async def server_version(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SHOW server_version"))


async def recorded_agent_ids(conn: asyncpg.Connection, layout: Layout, limit: int = 2) -> list[str]:
    """Up to ``limit`` distinct agent ids the schema's sessions record (``agno_sessions.agent_id``,
    as the agent was created): read from its first 1,000 sessions that have one, so a big table is
    not scanned. ``[]`` when none record one, or the table has no such column."""
    has_column = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'agent_id'"
        " AND NOT attisdropped)",
        layout.q(SESSIONS),
    )
    if not has_column:
        return []
    rows = await conn.fetch(
        f"SELECT DISTINCT agent_id FROM (SELECT agent_id FROM {layout.q(SESSIONS)} WHERE agent_id IS NOT NULL"
        " LIMIT 1000) AS s ORDER BY 1 LIMIT $1",
        limit,
    )
    return [str(r["agent_id"]) for r in rows]
