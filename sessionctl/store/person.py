"""A person's rows in every store of one database that sessionctl can count: every table with a
``user_id`` column of the agent schemas, the vector and authz tables found by layout, Agno's shared
payloads (``fs.agno_fs``), the media keys still pending deletion and the export files still kept —
the recount that says whether an erasure is *complete*, and what ``verify`` prints. It also reads a
person's rows out of those stores, for an access export of scope ``all``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from sessionctl.identifiers import quote_ident
from sessionctl.store import access
from sessionctl.store import export_registry as exports_sql
from sessionctl.store import media_refs as media_sql
from sessionctl.store.shared_stores import VECTOR, SharedTable, find_shared_tables
from sessionctl.store.tables import PAYLOADS, RUNS, SESSIONS

TABLES_PER_COUNT = 250  # tables counted by one statement (a UNION ALL of one count each)
# Up to this many people, each table is counted by a statement Postgres builds and runs itself (a
# temporary function looping over the tables): no plan of a 250-branch union per chunk
# (docs/decisions.md). More people (or a role that may not create temporary objects, a standby):
# the union, the list sent once per chunk.
FEW_PEOPLE = 100
MEDIA_PENDING = "sessionctl.media_pending"
EXPORT_FILES = "sessionctl.exports"


@dataclass(slots=True)
class Tally:
    """Rows of the person per store label (``schema.table``); the stores this role cannot count
    (no privilege, row-level security) in ``unreadable``, with why."""

    rows: dict[str, int] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


async def user_keyed_tables_of(conn: asyncpg.Connection, schemas: list[str]) -> list[tuple[str, str, bool]]:
    """(schema, table, textual) of every table with a ``user_id`` column in these schemas, from
    pg_catalog (which, unlike information_schema, lists the tables this role may not read too: they
    are reported, never skipped); ``textual``: the column is text or varchar (compared as it is, so
    an index on it serves), else compared as its text. Partitions are counted through their parent."""
    rows = await conn.fetch(
        "SELECT n.nspname AS s, c.relname AS t, a.atttypid IN ('text'::regtype, 'varchar'::regtype) AS textual"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped"
        " WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1, 2",
        schemas,
    )
    return [(str(r["s"]), str(r["t"]), bool(r["textual"])) for r in rows]


def _q(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


_COUNT_EACH = """
CREATE OR REPLACE FUNCTION pg_temp.sessionctl_count_each(s text[], t text[], textual bool[], users text[])
RETURNS TABLE (i int, n bigint) LANGUAGE plpgsql AS $$
BEGIN
    FOR k IN 1 .. coalesce(array_length(s, 1), 0) LOOP
        i := k;
        EXECUTE format('SELECT count(*) FROM %I.%I WHERE %s = ANY($1)', s[k], t[k],
                       CASE WHEN textual[k] THEN 'user_id' ELSE 'user_id::text' END) USING users INTO n;
        RETURN NEXT;
    END LOOP;
END $$
"""


async def _count_each(
    conn: asyncpg.Connection, tables: list[tuple[str, str, bool]], users: list[str]
) -> dict[str, int] | None:
    """The users' rows in each of these user-keyed tables, every count run by Postgres in one call of
    a temporary function (the users a parameter, never spliced into SQL); ``None`` when this role
    may not create it here (no TEMPORARY, a standby)."""
    out: dict[str, int] = {}
    try:
        await conn.execute(_COUNT_EACH)
    except (asyncpg.InsufficientPrivilegeError, asyncpg.ReadOnlySQLTransactionError):
        return None
    # a transaction a chunk: every count holds a lock on its table until the transaction ends, and
    # thousands would overflow the lock table (max_locks_per_transaction)
    for start in range(0, len(tables), TABLES_PER_COUNT):
        chunk = tables[start : start + TABLES_PER_COUNT]
        rows = await conn.fetch(
            "SELECT i, n FROM pg_temp.sessionctl_count_each($1::text[], $2::text[], $3::bool[], $4::text[])",
            [t[0] for t in chunk],
            [t[1] for t in chunk],
            [t[2] for t in chunk],
            users,
        )
        out.update({f"{chunk[r['i'] - 1][0]}.{chunk[r['i'] - 1][1]}": int(r["n"]) for r in rows})
    return out


async def _count(conn: asyncpg.Connection, selects: list[tuple[str, str]], users: list[str]) -> dict[str, int]:
    """``selects``: (label, ``FROM … WHERE …`` over ``$1``, the users): each counted, many per statement."""
    out: dict[str, int] = {}
    for start in range(0, len(selects), TABLES_PER_COUNT):
        chunk = selects[start : start + TABLES_PER_COUNT]
        union = " UNION ALL ".join(f"SELECT {i} AS i, count(*) AS n {body}" for i, (_, body) in enumerate(chunk))
        async with conn.transaction():
            await conn.execute("SET LOCAL jit = off")  # many cheap counts: never worth compiling
            rows = await conn.fetch(union, users)
        for r in rows:
            out[chunk[int(r["i"])][0]] = int(r["n"])
    return out


async def count_person(
    conn: asyncpg.Connection,
    users: list[str],
    hmacs: list[str],
    *,
    schemas: list[str],
    shared: bool = True,
    sessionctl_tables: bool = True,
    exports: bool = True,
    skip: set[str] | None = None,
) -> Tally:
    """The people's rows in this database: every user-keyed table of ``schemas``; with ``shared``,
    every vector and authz table elsewhere, and ``fs.agno_fs``; with ``sessionctl_tables``, the media
    keys pending deletion and (with ``exports``) the export files kept (by HMAC). The stores in
    ``skip`` (``schema.table``: an erasure just recounted them to 0) are not counted again."""
    skip = skip or set()
    keyed = [t for t in await user_keyed_tables_of(conn, schemas) if f"{t[0]}.{t[1]}" not in skip]
    others = await _shared_selects(conn, set(schemas), skip) if shared else []
    needs = [access.Need(s, t, access.READ) for s, t, _ in keyed]
    needs += [access.Need(schema, table, access.READ) for (schema, table), _ in others]
    tally = Tally()
    for problem in await access.problems(conn, needs):
        label, _, why = problem.partition(": ")
        tally.unreadable[label] = why
    readable = [t for t in keyed if f"{t[0]}.{t[1]}" not in tally.unreadable]
    each = await _count_each(conn, readable, users) if len(users) <= FEW_PEOPLE else None
    selects = [(f"{s}.{t}", where) for (s, t), where in others if f"{s}.{t}" not in tally.unreadable]
    if each is None:  # one statement per chunk of tables instead
        selects += [(f"{s}.{t}", _where_users(s, t, textual)) for s, t, textual in readable]
    tally.rows = {**await _count(conn, selects, users), **(each or {})}
    if sessionctl_tables:
        tally.rows[MEDIA_PENDING] = await media_sql.count_of_users(conn, hmacs)
        if exports:
            tally.rows[EXPORT_FILES] = await exports_sql.count_live(conn, hmacs)
    return tally


def _where_users(schema: str, table: str, textual: bool) -> str:
    """``FROM … WHERE`` the user-keyed table names one of the users of ``$1``: a semi-join on the
    list (hashed, where ``= ANY`` would scan the whole list for every row)."""
    column = "user_id" if textual else "user_id::text"
    return f"FROM {_q(schema, table)} WHERE {column} IN (SELECT unnest($1::text[]))"


async def _shared_selects(
    conn: asyncpg.Connection, inside: set[str], skip: set[str]
) -> list[tuple[tuple[str, str], str]]:
    """((schema, table), ``FROM … WHERE``) of every vector and authz table outside the agent schemas
    counted with their own tables, and of ``fs.agno_fs`` where it exists. (The pair, not its label:
    a schema's name may hold a dot.)"""
    out = []
    for t in await find_shared_tables(conn):
        if (t.kind == VECTOR and t.schema in inside) or t.label in skip:
            continue  # a vector table of an agent schema has a user_id column: counted with it
        out.append(((t.schema, t.table), f"FROM {t.q} WHERE {t.layout.where}"))
    if await conn.fetchval("SELECT to_regclass('fs.agno_fs')") is not None:
        out.append((("fs", "agno_fs"), f"FROM {PAYLOADS} WHERE user_id IN (SELECT unnest($1::text[]))"))
    return out


# ---- a person's rows, read out (access exports of scope "all") ------------------------------------


async def person_rows(
    conn: asyncpg.Connection, schema: str, table: str, user_id: str, page: int = 500
) -> AsyncIterator[list[dict[str, Any]]]:
    """The person's rows of one user-keyed table of an agent schema, every column as JSON, in pages.
    ``agno_sessions`` is exported as sessions; ``agno_runs`` only for the runs the person made in
    sessions of others (team sessions): their own sessions' runs go inside the sessions."""
    q = _q(schema, table)
    where = "t.user_id = $1"
    if table == RUNS:
        where += f" AND t.session_id NOT IN (SELECT session_id FROM {_q(schema, SESSIONS)} WHERE user_id = $1)"
    async for rows in _pages(conn, f"SELECT to_jsonb(t) AS r FROM {q} t WHERE {where}", [user_id], page):
        yield rows


async def shared_rows(
    conn: asyncpg.Connection, table: SharedTable, user_id: str, page: int = 500
) -> AsyncIterator[list[dict[str, Any]]]:
    """The person's rows of a vector or authz table (or of ``fs.agno_fs``), every column as JSON."""
    async for rows in _pages(
        conn, f"SELECT to_jsonb(t) AS r FROM {table.q} t WHERE {table.layout.where}", [[user_id]], page
    ):
        yield rows


async def payload_rows(conn: asyncpg.Connection, user_id: str, page: int = 500) -> AsyncIterator[list[dict[str, Any]]]:
    if await conn.fetchval("SELECT to_regclass('fs.agno_fs')") is None:
        return
    async for rows in _pages(conn, f"SELECT to_jsonb(t) AS r FROM {PAYLOADS} t WHERE t.user_id = $1", [user_id], page):
        yield rows


async def _pages(conn: asyncpg.Connection, sql: str, args: list[Any], page: int) -> AsyncIterator[list[dict[str, Any]]]:
    """The rows of ``sql`` (one ``r`` jsonb column), ``page`` at a time, from a cursor in one
    transaction (one snapshot)."""
    async with conn.transaction():
        cursor = await conn.cursor(sql, *args)
        while rows := await cursor.fetch(page):
            yield [_obj(r["r"]) for r in rows]


def _obj(value: Any) -> dict[str, Any]:
    import json

    return dict(json.loads(value)) if isinstance(value, str) else dict(value)


async def agno_schemas(conn: asyncpg.Connection) -> list[str]:
    """Every schema holding one of Agno's tables (``agno_*``) — agent schemas, and also one where an
    agent kept only memories (Agno creates each table on first use) — but sessionctl's own."""
    rows = await conn.fetch(
        "SELECT DISTINCT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relname LIKE 'agno\\_%' AND c.relkind IN ('r', 'p')"
        " AND n.nspname NOT IN ('sessionctl', 'pg_catalog', 'information_schema', 'fs') ORDER BY 1"
    )
    return [str(r["nspname"]) for r in rows]
