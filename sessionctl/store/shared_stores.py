"""Agno's stores of a user that are not tables of one agent schema, recognised by their layout
wherever they are in a database: PgVector knowledge tables (schema ``ai`` by default, any table
name; inside an agent schema too) and AgentOS's authorization tables (``agno_authz_*``, renameable).

Each kind is declared once in :data:`SHARED_LAYOUTS`: the columns that recognise it, the columns
that name a person, and how an erasure treats its rows (``store.tables.USER_STORES`` lists
them beside the agent tables, for the docs and the tests). One catalog query finds them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from sessionctl.identifiers import quote_ident
from sessionctl.store.params import rowcount

VECTOR = "vector"
AUTHZ_USERS = "authz_users"
AUTHZ_GROUPING = "authz_grouping"
AUTHZ_AUDIT = "authz_audit"
AUTHZ_DECISIONS = "authz_decisions"


@dataclass(frozen=True, slots=True)
class SharedLayout:
    """How one kind of shared table is recognised, where it names a person, and what an erasure does."""

    kind: str
    columns: frozenset[str]  # all present: the table is of this kind
    where: str  # SQL over the row: it names one of the users ($1, text[])
    erase: str  # the statement's head: "DELETE FROM {t}" or "UPDATE {t} SET …" ({t}: the table)


_ANY = "= ANY($1::text[])"
SHARED_LAYOUTS: tuple[SharedLayout, ...] = (
    # agno.vectordb.pgvector.PgVector: a user's chunks (per-user knowledge isolation, agno >= 3.0)
    SharedLayout(
        VECTOR,
        frozenset(
            {
                "id",
                "name",
                "meta_data",
                "filters",
                "content",
                "embedding",
                "usage",
                "content_hash",
                "content_id",
                "user_id",
            }
        ),
        f"user_id {_ANY}",
        "DELETE FROM {t}",
    ),
    # agno.db.schemas.authz: the user directory (email, name, metadata), keyed by the JWT subject
    SharedLayout(
        AUTHZ_USERS,
        frozenset({"id", "email", "name", "disabled", "user_metadata"}),
        f"id {_ANY}",
        "DELETE FROM {t}",
    ),
    # role assignments of the subject (a role's own inheritance rows name roles, not people)
    SharedLayout(AUTHZ_GROUPING, frozenset({"subject", "role"}), f"subject {_ANY}", "DELETE FROM {t}"),
    # the change trail: keep the event, drop the person — as actor, or as the target of a user.* event
    # together with the before/after summaries (email, name, roles) of that person
    SharedLayout(
        AUTHZ_AUDIT,
        frozenset({"event_id", "actor", "action", "target", "before", "after"}),
        f"(actor {_ANY} OR target {_ANY})",
        "UPDATE {t} SET actor = CASE WHEN actor = ANY($1::text[]) THEN NULL ELSE actor END,"
        " before = CASE WHEN target = ANY($1::text[]) THEN NULL ELSE before END,"
        " after = CASE WHEN target = ANY($1::text[]) THEN NULL ELSE after END,"
        " target = CASE WHEN target = ANY($1::text[]) THEN NULL ELSE target END",
    ),
    # the access trail: keep the allow/deny, drop who it was and the reference to their token
    SharedLayout(
        AUTHZ_DECISIONS,
        frozenset({"event_id", "actor", "action", "target", "token_ref", "scopes"}),
        f"actor {_ANY}",
        "UPDATE {t} SET actor = NULL, token_ref = NULL",
    ),
)
_BY_KIND = {s.kind: s for s in SHARED_LAYOUTS}
# Columns at least one kind needs: the catalog query looks only at tables that have one of them.
_MARKERS = ["embedding", "email", "subject", "actor"]


@dataclass(frozen=True, slots=True)
class SharedTable:
    kind: str
    schema: str
    table: str

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def q(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.table)}"

    @property
    def layout(self) -> SharedLayout:
        return _BY_KIND[self.kind]

    @property
    def anonymizes(self) -> bool:
        return self.layout.erase.startswith("UPDATE")


def classify(columns: set[str], vector_typed: bool, name: str = "agno_authz") -> str | None:
    """The kind of a table with these columns (``vector_typed``: its ``embedding`` is a pgvector
    type). Authz layouts are generic (``subject, role``), so an authz table must also keep
    ``authz`` in its name (Agno's defaults are ``agno_authz_*``): another application's table of
    the same shape is never taken for Agno's."""
    for layout in SHARED_LAYOUTS:
        if not layout.columns <= columns:
            continue
        if layout.kind == VECTOR:
            if vector_typed:
                return VECTOR
        elif "authz" in name:
            return layout.kind
    return None


async def find_shared_tables(conn: asyncpg.Connection, schemas: list[str] | None = None) -> list[SharedTable]:
    """Every vector and authz table of the database (or of these schemas), by layout. One catalog
    query; pg_catalog also lists tables this role may not read, so the preflight names them."""
    rows = await conn.fetch(
        """
        SELECT n.nspname AS schema, c.relname AS tbl, array_agg(a.attname::text) AS cols,
               bool_or(a.attname = 'embedding' AND t.typname IN ('vector', 'halfvec')) AS vector_typed
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          JOIN pg_type t ON t.oid = a.atttypid
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'sessionctl') AND n.nspname NOT LIKE 'pg\\_%'
           AND ($2::text[] IS NULL OR n.nspname = ANY($2::text[]))
           AND EXISTS (SELECT 1 FROM pg_attribute m WHERE m.attrelid = c.oid AND m.attname = ANY($1::name[])
                        AND NOT m.attisdropped)
         GROUP BY 1, 2 ORDER BY 1, 2
        """,
        _MARKERS,
        schemas,
    )
    found = []
    for r in rows:
        kind = classify(set(r["cols"]), bool(r["vector_typed"]), r["tbl"])
        if kind is not None:
            found.append(SharedTable(kind, r["schema"], r["tbl"]))
    return found


async def erase_shared(conn: asyncpg.Connection, tables: list[SharedTable], users: list[str]) -> dict[str, int]:
    """Delete or anonymise the users' rows in these tables, in one transaction; rows per table."""
    counts: dict[str, int] = {}
    async with conn.transaction():
        for t in tables:
            lay = t.layout
            status = await conn.execute(f"{lay.erase.format(t=t.q)} WHERE {lay.where}", users)
            counts[t.label] = rowcount(status)
    return counts


async def count_shared(conn: asyncpg.Connection, tables: list[SharedTable], users: list[str]) -> dict[str, int]:
    """The rows of these tables that still name one of the users (the proof; 0 everywhere when erased)."""
    if not tables:
        return {}
    union = " UNION ALL ".join(
        f"SELECT {i} AS i, count(*) AS n FROM {t.q} WHERE {t.layout.where}" for i, t in enumerate(tables)
    )
    rows = await conn.fetch(union, users)
    by_index = {int(r["i"]): int(r["n"]) for r in rows}
    return {t.label: by_index[i] for i, t in enumerate(tables)}
