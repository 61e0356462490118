"""Before a job deletes anything: can it do the whole job, and prove it?

- every table it touches, in every target schema, exists, is usable by this role with the
  privileges the job needs, and has no row-level security active for the role (a count under RLS
  proves nothing) — see :mod:`sessionctl.store.access`;
- every database it writes to takes writes (not a replica, not ``default_transaction_read_only``);
- the receipt of an erasure can be written (schema up to date, INSERT granted).

Any problem raises a permanent error naming the tables and the grants, before the first delete:
an all-agents erasure is never left half done for want of a grant. The targets of one database
are checked in one catalog query.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from sessionctl import store
from sessionctl.errors import DatabaseReadOnly, InsufficientPrivilege
from sessionctl.identifiers import Dsn
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.targets import Target
from sessionctl.store import access, migrations, receipts

NeedsOf = Callable[[store.Layout, list[str]], list[access.Need]]  # (layout, user-keyed tables) -> needs
SHOWN = 6  # problems named in one error line; the rest are counted


async def check(
    ctx: JobContext,
    targets: list[Target],
    needs_of: NeedsOf,
    *,
    writes: bool,
    receipt: bool,
    user_tables: bool = False,
    shared: bool = False,
    what: str = "this erasure",
    nothing: str = "Nothing was deleted",
    registry: bool = False,
) -> None:
    """Raise before anything is deleted if the role cannot do (and prove) the job on ``targets``.
    ``user_tables``: the needs depend on every user-keyed table of the schema (scope "all"), vector
    tables inside a target schema included; ``shared``: also every vector and authz table of each
    database (an all-agents erasure of scope "all"); ``registry``: the job notes an export file in
    ``sessionctl.exports`` (every export does)."""
    found: list[str] = []
    role = ""
    by_db: dict[tuple[str, str, int, str], list[Target]] = {}
    for t in targets:
        by_db.setdefault(t.dsn.target, []).append(t)
    for group in by_db.values():
        dsn = group[0].dsn
        async with ctx.databases.connect(dsn) as conn:
            role = role or await access.role(conn)
            if writes:
                await _writable(conn, dsn)
            needs = await _needs(conn, group, needs_of, user_tables=user_tables, shared=shared, writes=writes)
            found += await access.problems(conn, needs)
            found += await _writes_beside(ctx, conn, group, writes=writes)
    if registry:
        async with ctx.databases.connect(ctx.settings.dsn) as conn:
            await _writable(conn, ctx.settings.dsn)
            await migrations.ensure(conn, ctx.settings.dsn.redacted)
            found += await access.problems(conn, access.EXPORT_NEEDS)
    if found:
        raise InsufficientPrivilege(_message(role, found, what, nothing))
    if receipt:
        async with ctx.databases.connect(ctx.settings.dsn) as conn:
            await _writable(conn, ctx.settings.dsn)
            await receipts.preflight(conn, ctx.settings.dsn.redacted)


async def _needs(
    conn: asyncpg.Connection, group: list[Target], needs_of: NeedsOf, *, user_tables: bool, shared: bool, writes: bool
) -> list[access.Need]:
    """What the job needs in the targets of one database (and, with ``shared``, in its vector and
    authz tables)."""
    needs: list[access.Need] = []
    everywhere = await store.find_shared_tables(conn) if user_tables else []
    for t in group:
        tables = await store.user_keyed_tables(conn, t.layout.schema) if user_tables else []
        needs += needs_of(t.layout, tables)
        inside = [s for s in everywhere if s.schema == t.layout.schema and s.kind == store.VECTOR]
        needs += access.shared_needs(inside, dry_run=not writes)
    if shared:
        needs += access.shared_needs(everywhere, dry_run=not writes)
    return needs


async def _writes_beside(ctx: JobContext, conn: asyncpg.Connection, group: list[Target], *, writes: bool) -> list[str]:
    """What a job that deletes also writes in this database: the media keys it notes, the snapshot
    of a big user's session ids without the index (a temporary table)."""
    if not writes:
        return []
    dsn = group[0].dsn
    found = await _media_table(conn, dsn) if ctx.media is not None and ctx.media.storages else []
    if not all(t.layout.user_index for t in group) and not await access.may_create_temp_tables(conn):
        found.append(f"database {dsn.database}: no TEMPORARY (a purge without the user index needs it)")
    return found


async def _media_table(conn: asyncpg.Connection, dsn: Dsn) -> list[str]:
    """Media keys are noted beside the sessions, in that database's ``sessionctl.media_pending``."""
    try:
        await migrations.ensure(conn, dsn.redacted)
    except InsufficientPrivilege:
        return [f"database {dsn.database}: sessionctl.media_pending is missing (run `sessionctl migrate` there)"]
    return await access.problems(conn, access.MEDIA_NEEDS)


async def _writable(conn: asyncpg.Connection, dsn: Dsn) -> None:
    if await access.read_only(conn):
        raise DatabaseReadOnly(
            f"Postgres at {dsn.redacted} is read-only (a replica, or default_transaction_read_only is on):"
            " point DATABASE_URL at the primary; nothing was deleted"
        )


def _message(role: str, found: list[str], what: str, nothing: str) -> str:
    shown = "; ".join(found[:SHOWN]) + (f"; and {len(found) - SHOWN} more" if len(found) > SHOWN else "")
    fix = f"run `sessionctl grants --role {role}` and apply what it prints"
    if any("row-level security" in f for f in found):
        fix = f"ALTER ROLE {role} BYPASSRLS (or run as the tables' owner), and {fix}"
    return f"role {role} cannot do and prove {what}: {shown}. {nothing} — {fix}"
