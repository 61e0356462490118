"""An access export of scope "all": after the person's sessions, their rows in every other store an
erasure of scope "all" clears, and the list of the media objects their runs uploaded."""

from __future__ import annotations

import asyncio
from typing import Any

from sessionctl import export_files, store
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.declared import declared_stores
from sessionctl.jobs.targets import Target
from sessionctl.store import media_refs as media_sql
from sessionctl.store import person


def envelope(target: Target) -> dict[str, Any]:
    """What every record of an agent schema begins with: the format version, the agent, its schema."""
    return {"v": export_files.FORMAT_VERSION, "agent": target.label, "schema": target.layout.schema}


async def person_records(
    ctx: JobContext, targets: list[Target], user_id: str, writer: Any, *, everything: bool = False
) -> dict[str, int]:
    """Scope "all": after the sessions, the person's rows in every other store an erasure of scope
    "all" clears — each user-keyed table of the agent schemas, the vector and authz tables and
    ``fs.agno_fs`` of each database — and the media objects their runs uploaded (the references: the
    objects stay in their storage); at every agent (``everything``), their items in the stores the
    deployment file declares too. One record a row; rows (objects, items) per store."""
    stores: dict[str, int] = {}

    async def put(where: str, records: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(writer.write_records, records)
        stores[where] = stores.get(where, 0) + len(records)

    by_db: dict[tuple[str, str, int, str], list[Target]] = {}
    for t in targets:
        by_db.setdefault(t.dsn.target, []).append(t)
    for group in by_db.values():
        async with ctx.databases.connect(group[0].dsn) as conn:
            for t in group:
                schema = t.layout.schema
                env = envelope(t)
                for table in await store.user_keyed_tables(conn, schema):
                    if table == store.SESSIONS:
                        continue
                    label = f"{schema}.{table}"
                    async for rows in person.person_rows(conn, schema, table, user_id):
                        await put(label, [{**env, "store": label, "row": r} for r in rows])
                refs = await media_sql.refs_of_user(
                    conn,
                    t.layout.q(store.RUNS) if t.layout.has(store.RUNS) else None,
                    t.layout.q(store.SESSIONS),
                    t.layout.legacy_runs_column,
                    user_id,
                )
                if refs:
                    await put("media", [{**env, "store": "media", "media": ref} for ref in refs])
            inside = {t.layout.schema for t in group}
            for shared in await store.find_shared_tables(conn):
                if shared.kind == store.VECTOR and shared.schema in inside:
                    continue  # exported with its agent schema's tables
                async for rows in person.shared_rows(conn, shared, user_id):
                    await put(
                        shared.label,
                        [{"v": export_files.FORMAT_VERSION, "store": shared.label, "row": r} for r in rows],
                    )
            async for rows in person.payload_rows(conn, user_id):
                await put(
                    "fs.agno_fs", [{"v": export_files.FORMAT_VERSION, "store": "fs.agno_fs", "row": r} for r in rows]
                )
    await declared_records(ctx, user_id, put, everything=everything)
    return stores


async def declared_records(ctx: JobContext, user_id: str, put: Any, *, everything: bool) -> None:
    """The person's items in each store of the deployment file (at every agent), a record each."""
    async with declared_stores(ctx, [user_id], everything=everything) as declared:
        for backend in declared.backends if declared is not None else []:
            head = {"v": export_files.FORMAT_VERSION, "store": backend.label}
            items = [{**head, "item": item} async for item in backend.rows(user_id)]
            if items:
                await put(backend.label, items)
