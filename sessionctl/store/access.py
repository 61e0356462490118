"""What the database lets this role see and change — asked of the catalog before anything is deleted.

A count only proves an erasure when the role sees every row. Row-level security filters rows out
of a count without an error (and a policy may filter DELETE but not SELECT); a missing grant fails
a statement halfway through a job, after other agents were already erased. So every job that
deletes (or counts to prove) first asks Postgres, for each table it will touch: does the table
exist, may this role use its schema, does it hold each privilege the job needs, and is
row-level security active for it *now* (``row_security_active``: false for a superuser, a role
with ``BYPASSRLS``, or the owner of a table without ``FORCE ROW LEVEL SECURITY``). Any problem
fails the job permanently before the first delete, naming the table and the grant.

The same list of needs prints the minimal grants (``sessionctl grants``), so what the preflight
asks for and what the documentation tells an administrator to grant cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from sessionctl.identifiers import quote_ident
from sessionctl.store import catalog, shared_stores, tables
from sessionctl.store.tables import MEMORIES, RUNS, SESSIONS, SPANS, TOOL_RESULTS, TRACES, TRANSCRIPTS


@dataclass(frozen=True, slots=True)
class Need:
    """Privileges one job needs on one table (``schema.table`` as in the catalog)."""

    schema: str
    table: str
    privileges: tuple[str, ...]  # of SELECT, INSERT, UPDATE, DELETE

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def qualified(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.table)}"


READ = ("SELECT",)
ERASE = ("SELECT", "DELETE")
ANONYMIZE = ("SELECT", "UPDATE")
RECEIPT_NEEDS = (
    Need("sessionctl", "receipts", ("SELECT", "INSERT")),
    Need("sessionctl", "schema_migrations", READ),
)
RECEIPT_SEQUENCE = "sessionctl.receipts_id_seq"
# Media keys pending deletion, noted in the database the sessions were in (sessionctl.media_storages).
MEDIA_NEEDS = (Need("sessionctl", "media_pending", ("SELECT", "INSERT", "UPDATE", "DELETE")),)
MEDIA_SEQUENCE = "sessionctl.media_pending_id_seq"
# The DSR service: a worker settles the requests its jobs served and delivers their webhooks;
# `sessionctl serve` also records requests and reads the tokens.
DSR_NEEDS = (
    Need("sessionctl", "dsr_requests", ("SELECT", "INSERT", "UPDATE")),
    Need("sessionctl", "webhook_deliveries", ("SELECT", "INSERT", "UPDATE")),
    Need("sessionctl", "api_tokens", READ),
    Need("sessionctl", "exports", ("SELECT", "INSERT", "UPDATE")),
    # every erasure reads the legal holds first; the service places and releases them
    Need("sessionctl", "legal_holds", ("SELECT", "INSERT", "UPDATE")),
    # DSR platforms' requests: filed by the service (or a worker's pull), answered by a worker
    Need("sessionctl", "connector_requests", ("SELECT", "INSERT", "UPDATE")),
)
DSR_SEQUENCE = "sessionctl.webhook_deliveries_id_seq, sessionctl.legal_holds_id_seq"
# Every export notes its file in sessionctl.exports (an erasure deletes the person's, they expire).
EXPORT_NEEDS = (Need("sessionctl", "exports", ("SELECT", "INSERT", "UPDATE")),)


def erasure_needs(
    layout: catalog.Layout,
    *,
    memories: bool = False,
    scope: str = "sessions",
    user_tables: Iterable[str] = (),
    shared_files: bool = False,
    dry_run: bool = False,
) -> list[Need]:
    """The tables a purge of this schema touches, and what it must be allowed there. A dry run
    only counts: it needs to see every row (SELECT, no row-level security), not to delete."""
    s = layout.schema
    erase = READ if dry_run else ERASE
    needs = [Need(s, SESSIONS, erase)]
    for table in (RUNS, TRANSCRIPTS, TOOL_RESULTS):
        if layout.has(table):
            needs.append(Need(s, table, erase))
    if layout.payload_table and (layout.has(TOOL_RESULTS) or shared_files):
        needs.append(Need("fs", "agno_fs", erase))
    if (memories or scope == "all") and layout.has(MEMORIES):
        needs.append(Need(s, MEMORIES, erase))
    if scope == "all":
        needs += _every_user_table(layout, user_tables, needs, dry_run=dry_run)
    return needs


def _every_user_table(
    layout: catalog.Layout, user_tables: Iterable[str], known: list[Need], *, dry_run: bool
) -> list[Need]:
    """Scope "all": every other user-keyed table of the schema, by what an erasure does there
    (delete, anonymise; an unknown table is only counted: ``UnknownUserData`` names it)."""
    s = layout.schema
    erase = READ if dry_run else ERASE
    actions = {st.table: st.action for st in tables.USER_STORES}
    needs = []
    for table in user_tables:
        if any(n.table == table and n.schema == s for n in known):
            continue
        action = actions.get(table)
        privs = READ if dry_run or action is None else (ANONYMIZE if action == "anonymize" else ERASE)
        needs.append(Need(s, table, privs))
    if layout.has(TRACES) and layout.has(SPANS):
        needs.append(Need(s, SPANS, erase))
    return needs


def shared_needs(tables: Iterable[shared_stores.SharedTable], *, dry_run: bool = False) -> list[Need]:
    """Vector and authz tables an erasure of scope "all" clears (or, in a dry run, counts)."""
    return [Need(t.schema, t.table, READ if dry_run else (ANONYMIZE if t.anonymizes else ERASE)) for t in tables]


def export_needs(layout: catalog.Layout, *, then_erase: bool, user_tables: Iterable[str] = ()) -> list[Need]:
    """An export reads the sessions and their runs (and, of scope "all", every user-keyed table);
    export-then-erase also deletes like a purge."""
    if then_erase:
        return erasure_needs(layout)
    tables = dict.fromkeys([t for t in (SESSIONS, RUNS) if t == SESSIONS or layout.has(t)] + list(user_tables))
    return [Need(layout.schema, t, READ) for t in tables]


# Each need's table, looked up by schema and name together (OFFSET 0 keeps the lookup a subquery of
# its own: flattened into the join, Postgres's generic plan for this statement — from its sixth
# call on a pooled connection — probed pg_class by name alone and filtered every schema's table of
# that name: 130 ms instead of 5 ms a call at 1,000 agents, seconds at 2,000, on every job). Only
# the needs with a problem come back.
PROBLEMS = """
SELECT w.schema, w.tbl, w.priv, c.oid IS NOT NULL AS present,
       has_schema_privilege(n.oid, 'USAGE') AS usage,
       CASE WHEN c.oid IS NOT NULL THEN has_table_privilege(c.oid, w.priv) END AS granted,
       CASE WHEN c.oid IS NOT NULL THEN row_security_active(c.oid) END AS rls
  FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS w(schema, tbl, priv, i)
  LEFT JOIN pg_namespace n ON n.nspname = w.schema
  LEFT JOIN LATERAL (
        SELECT c.oid FROM pg_class c
         WHERE c.relname = w.tbl AND c.relnamespace = n.oid AND c.relkind IN ('r', 'p') OFFSET 0
       ) c ON true
 WHERE c.oid IS NULL OR NOT has_schema_privilege(n.oid, 'USAGE') OR NOT has_table_privilege(c.oid, w.priv)
    OR row_security_active(c.oid)
 ORDER BY w.i
"""


async def problems(conn: asyncpg.Connection, needs: Iterable[Need]) -> list[str]:
    """What stops this role from doing (and proving) the job on these tables; empty when nothing.

    Tables are found by name in pg_class (no privilege is needed to read the catalog, and a schema
    the role may not use is reported as such instead of raising). Only the needs with a problem
    come back from Postgres: none, on a deployment set up right."""
    wanted = [(n.schema, n.table, p) for n in needs for p in n.privileges]
    if not wanted:
        return []
    rows = await conn.fetch(
        PROBLEMS,
        [w[0] for w in wanted],
        [w[1] for w in wanted],
        [w[2] for w in wanted],
    )
    found: dict[str, list[str]] = {}
    for r in rows:
        label = f"{r['schema']}.{r['tbl']}"
        issues = found.setdefault(label, [])
        if not r["present"]:
            _add(issues, "does not exist")
        elif not r["usage"]:
            _add(issues, f"no USAGE on schema {r['schema']}")
        else:
            if not r["granted"]:
                _add(issues, f"no {r['priv']}")
            if r["rls"]:
                _add(issues, "row-level security hides rows from this role")
    return [f"{label}: {', '.join(issues)}" for label, issues in found.items() if issues]


def _add(issues: list[str], issue: str) -> None:
    if issue not in issues:
        issues.append(issue)


async def role(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SELECT current_user"))


async def read_only(conn: asyncpg.Connection) -> bool:
    """A replica in recovery, or a session that may not write (``default_transaction_read_only``)."""
    return bool(await conn.fetchval("SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"))


async def may_create_temp_tables(conn: asyncpg.Connection) -> bool:
    """A purge without the user index notes a big user's session ids in a temporary table."""
    return bool(await conn.fetchval("SELECT has_database_privilege(current_database(), 'TEMPORARY')"))


async def receipt_problems(conn: asyncpg.Connection) -> list[str]:
    """What stops this role from appending a receipt (the schema is assumed migrated)."""
    found = await problems(conn, RECEIPT_NEEDS)
    if not found:
        usable = await conn.fetchval(
            "SELECT has_sequence_privilege(c.oid, 'USAGE') FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'sessionctl'"
            " AND c.relname = 'receipts_id_seq'"
        )
        if not usable:
            found.append(f"{RECEIPT_SEQUENCE}: no USAGE")
    return found


async def rls_enabled(conn: asyncpg.Connection, needs: Iterable[Need]) -> list[str]:
    """Which of these tables have row-level security enabled (whoever the role)."""
    labels = sorted({n.label for n in needs})
    rows = await conn.fetch(
        "SELECT n.nspname || '.' || c.relname AS label FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname || '.' || c.relname = ANY($1::text[]) AND c.relrowsecurity ORDER BY 1",
        labels,
    )
    return [r["label"] for r in rows]


def grant_statements(role_name: str, database: str, needs: Iterable[Need], *, receipts: bool = True) -> list[str]:
    """``GRANT`` statements that give ``role_name`` exactly these needs (and, once the receipts
    schema exists, what writing a receipt needs)."""
    r = quote_ident(role_name)
    lines = [f"GRANT CONNECT, TEMPORARY ON DATABASE {quote_ident(database)} TO {r};"]
    by_table: dict[str, list[str]] = {}
    schemas: list[str] = []
    for n in [*needs, *((*RECEIPT_NEEDS, *MEDIA_NEEDS, *DSR_NEEDS) if receipts else ())]:
        if n.schema not in schemas:
            schemas.append(n.schema)
        privs = by_table.setdefault(n.qualified, [])
        privs.extend(p for p in n.privileges if p not in privs)
    lines += [f"GRANT USAGE ON SCHEMA {quote_ident(s)} TO {r};" for s in schemas]
    lines += [f"GRANT {', '.join(p)} ON {t} TO {r};" for t, p in by_table.items()]
    if receipts:
        lines.append(f"GRANT USAGE ON SEQUENCE {RECEIPT_SEQUENCE}, {MEDIA_SEQUENCE}, {DSR_SEQUENCE} TO {r};")
    return lines
