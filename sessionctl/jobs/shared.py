"""An all-agents erasure of scope "all" also clears what a deployment keeps about a user outside
any one agent: PgVector knowledge tables (``ai`` by default, or any schema) and AgentOS's login
records (``agno_authz_*``), in every database the targets live in — found by layout
(:mod:`sessionctl.store.shared_stores`), erased, then recounted (the proof)."""

from __future__ import annotations

from typing import Any

from sessionctl import store
from sessionctl.errors import ErasureIncomplete
from sessionctl.identifiers import Dsn
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.targets import Target


async def erase_shared_stores(
    ctx: JobContext,
    users: list[str],
    targets: list[Target],
    *,
    dry_run: bool,
    bl: Any,
    proven: set[tuple[str, str]] | None = None,
) -> dict[str, int]:
    """Rows deleted or anonymised (in a dry run: that would be) per ``schema.table`` — prefixed by
    the database name when the targets span several databases. Raises when rows remain."""
    by_db: dict[tuple[str, str, int, str], Dsn] = {}
    agent_schemas: dict[tuple[str, str, int, str], set[str]] = {}
    for t in targets or []:
        by_db.setdefault(t.dsn.target, t.dsn)
        agent_schemas.setdefault(t.dsn.target, set()).add(t.layout.schema)
    if not by_db:  # no agent schema anywhere: the user's knowledge and login may still be there
        by_db[ctx.settings.dsn.target] = ctx.settings.dsn
    out: dict[str, int] = {}
    for dsn in by_db.values():
        prefix = f"{dsn.database}/" if len(by_db) > 1 else ""
        async with ctx.databases.connect(dsn) as conn:
            inside = agent_schemas.get(dsn.target, set())  # vector tables there went with their agent
            tables = [
                t for t in await store.find_shared_tables(conn) if not (t.kind == store.VECTOR and t.schema in inside)
            ]
            if dry_run:
                counts = await store.count_shared(conn, tables, users)
            else:
                counts = await store.erase_shared(conn, tables, users)
                left = {k: n for k, n in (await store.count_shared(conn, tables, users)).items() if n}
                if left:
                    raise ErasureIncomplete(f"rows of the user remain in {', '.join(sorted(left))}")
                if proven is not None:
                    proven.update((dsn.where, t.label) for t in tables)
        out.update({prefix + k: n for k, n in counts.items()})
    if out:
        bl.info("purge.shared_stores", tables=len(out), rows=sum(out.values()))
    return out
