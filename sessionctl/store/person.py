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
from sessionctl.store.counts import count_each
from sessionctl.store.params import users_match
from sessionctl.store.shared_stores import VECTOR, SharedTable, find_shared_tables
from sessionctl.store.tables import PAYLOADS, RUNS, SESSIONS

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
    keyed = await user_keyed_tables_of(conn, schemas)
    others = await _shared_selects(conn, set(schemas)) if shared else []
    needs = [access.Need(s, t, access.READ) for s, t, _ in keyed if f"{s}.{t}" not in skip]
    needs += [
        access.Need(schema, table, access.READ) for (schema, table), _ in others if f"{schema}.{table}" not in skip
    ]
    tally = Tally()
    for problem in await access.problems(conn, needs):
        label, _, why = problem.partition(": ")
        tally.unreadable[label] = why
    # every readable table in the statements, those in ``skip`` gated off: the same statements for
    # every erasure while the catalog is unchanged (store/counts.py)
    selects = [(f"{s}.{t}", where) for (s, t), where in others]
    selects += [(f"{s}.{t}", _where_users(s, t, textual, len(users))) for s, t, textual in keyed]
    selects = [(label, where) for label, where in selects if label not in tally.unreadable]
    gated = {i for i, (label, _) in enumerate(selects) if label in skip}
    counted = await count_each(conn, [where for _, where in selects], users, gated)
    tally.rows = {label: n for i, ((label, _), n) in enumerate(zip(selects, counted, strict=True)) if i not in gated}
    if sessionctl_tables:
        tally.rows[MEDIA_PENDING] = await media_sql.count_of_users(conn, hmacs)
        if exports:
            tally.rows[EXPORT_FILES] = await exports_sql.count_live(conn, hmacs)
    return tally


def _where_users(schema: str, table: str, textual: bool, users: int) -> str:
    """``FROM … WHERE`` the user-keyed table names one of the users of ``$1`` (a column of another
    type compared as its text)."""
    return f"FROM {_q(schema, table)} WHERE {users_match(users, 'user_id' if textual else 'user_id::text')}"


async def _shared_selects(conn: asyncpg.Connection, inside: set[str]) -> list[tuple[tuple[str, str], str]]:
    """((schema, table), ``FROM … WHERE``) of every vector and authz table outside the agent schemas
    counted with their own tables, and of ``fs.agno_fs`` where it exists. (The pair, not its label:
    a schema's name may hold a dot.)"""
    out = []
    for t in await find_shared_tables(conn):
        if t.kind == VECTOR and t.schema in inside:
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
