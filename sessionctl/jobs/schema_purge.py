"""Purging one agent schema of some users (:func:`purge_schema`): rounds of "delete, then
recount" until the recount is 0 — by the doctor's index in ranges, by tuple ids read in one scan on
a plain table, or by ids (one batch, or a snapshot walked by primary key) — then, by scope, the
users' memories or every other user-keyed table, each recounted. A dry run counts and deletes
nothing."""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from sessionctl import store, tracing
from sessionctl.errors import ErasureIncomplete, UnknownUserData
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.models import AgentPurgeResult
from sessionctl.jobs.spec import MAX_ROUNDS, Spec
from sessionctl.jobs.targets import Target
from sessionctl.jobs.walk import Batches, delete_by_index, delete_by_tids


async def purge_schema(ctx: JobContext, spec: Spec, target: Target, bl: Any) -> tuple[AgentPurgeResult, dict[str, int]]:
    """Purge one agent schema; the result and the sessions deleted per (raw) user id (a trace span
    of its own, ``sessionctl.agent``)."""
    with tracing.span("sessionctl.agent", agent=target.label, schema=target.layout.schema) as span:
        res, per_user = await _purge_schema(ctx, spec, target, bl)
        tracing.set_attributes(span, sessions_deleted=res.sessions_deleted, batches=res.batches)
    return res, per_user


async def _purge_schema(
    ctx: JobContext, spec: Spec, target: Target, bl: Any
) -> tuple[AgentPurgeResult, dict[str, int]]:
    label, layout = target.label, target.layout
    res = AgentPurgeResult(agent_id=label, schema_name=layout.schema)
    per_user: dict[str, int] = {}
    async with ctx.databases.connect(target.dsn) as conn:
        if spec.dry_run:
            await _dry_run(conn, spec, layout, res, bl)
            return res, per_user
        await _rounds(conn, ctx, spec, target, res, per_user, bl)
        spec.prove(target, store.SESSIONS)
        if spec.scope == "all":
            proved = await _erase_everything_else(conn, layout, spec.users, res, label, spec.shared_files)
            spec.prove(target, *proved)
        elif spec.memories:
            res.memories_deleted = await store.delete_user_memories(conn, layout, spec.users)
            left = await store.count_user(conn, layout, spec.users, memories=True)
            if left.memories:
                raise ErasureIncomplete(f"agent {label}: {left.memories} memories remain")
            spec.prove(target, store.MEMORIES)
    bl.info(
        "purge.agent_done",
        sessions_deleted=res.sessions_deleted,
        runs_deleted=res.runs_deleted,
        memories_deleted=res.memories_deleted,
        late_sessions=res.late_sessions,
        batches=res.batches,
    )
    return res, per_user


async def _dry_run(conn: asyncpg.Connection, spec: Spec, layout: store.Layout, res: AgentPurgeResult, bl: Any) -> None:
    """What the purge would delete here, counted; nothing deleted."""
    users = spec.users
    counts = await store.count_user(conn, layout, users, memories=spec.memories or spec.scope == "all")
    res.would_delete = counts.as_dict()
    if spec.scope == "all":
        rows = await store.remaining_user_rows(conn, layout.schema, users)
        res.would_delete.update({f"table:{t}": n for t, n in rows.items() if n})
        if spec.shared_files:
            res.would_delete["table:fs.agno_fs"] = await store.count_user_files(conn, users)
    res.remaining = counts.sessions
    bl.info("purge.dry_run", **counts.as_dict())


async def _rounds(
    conn: asyncpg.Connection,
    ctx: JobContext,
    spec: Spec,
    target: Target,
    res: AgentPurgeResult,
    per_user: dict[str, int],
    bl: Any,
) -> None:
    """Rounds of "delete, then recount" until the recount — the proof — is 0; sessions that
    arrived meanwhile are counted as late. Still growing after ``MAX_ROUNDS``: retried."""
    initial: int | None = None
    for round_ in range(MAX_ROUNDS):
        batches = Batches(ctx, res, per_user, bl, spec.kind)
        found = await _one_round(conn, ctx, spec.users, target, batches, res, first=round_ == 0)
        initial = found if initial is None else initial
        res.remaining = await store.count_user_sessions(conn, target.layout, spec.users)  # the proof
        if res.remaining == 0:
            break
        bl.warning("purge.late_writes", remaining=res.remaining)
    res.late_sessions = max(0, res.sessions_deleted - (initial or 0))
    await ctx.progress.update(
        processed=res.sessions_deleted, total=res.sessions_deleted, agent=target.label, force=True
    )
    if res.remaining:
        raise ErasureIncomplete(
            f"agent {target.label}: {res.remaining} sessions remain after {MAX_ROUNDS} rounds "
            "(something keeps writing them)"
        )


async def _one_round(
    conn: asyncpg.Connection,
    ctx: JobContext,
    users: list[str],
    target: Target,
    batches: Batches,
    res: AgentPurgeResult,
    *,
    first: bool,
) -> int:
    """Delete the users' sessions found now, by the best way the schema allows; how many were found."""
    layout = target.layout
    if layout.user_index and first:  # walk the doctor's index, per user, in ranges
        counted = await store.count_sessions_per_user(conn, layout, users)
        await batches.start(total=sum(counted.values()))
        await delete_by_index(conn, ctx, target, counted, batches, batches.bl)
        return sum(counted.values())
    if layout.plain:  # one scan for the tuple ids, batches by tuple id (no per-id probe)
        tids = await store.user_session_tid_batches(conn, layout, users, ctx.settings.batch_size)
        found = sum(b.n for b in tids)
        await batches.start(total=res.sessions_deleted + found)
        if tids:
            await delete_by_tids(conn, ctx, target, tids, batches, batches.bl)
        return found
    size = ctx.settings.batch_size
    few = await store.some_user_session_ids(conn, layout, users, size + 1)
    if len(few) <= size:  # all of them, in one batch
        await batches.start(total=res.sessions_deleted + len(few))
        if few:
            t = time.monotonic()
            await batches.done(await store.delete_user_sessions(conn, layout, users, few), t)
        return len(few)
    found = await store.snapshot_user_session_ids(conn, layout, users)
    await batches.start(total=res.sessions_deleted + found)
    await _delete_snapshot(conn, ctx, layout, users, batches)
    return found


async def _erase_everything_else(
    conn: asyncpg.Connection,
    layout: store.Layout,
    users: list[str],
    res: AgentPurgeResult,
    label: str,
    shared_files: bool,
) -> list[str]:
    """Scope "all": every other user-keyed table, then a recount of every table with a user_id
    column; the tables proved to hold none of the users."""
    res.tables = await store.erase_user_stores(conn, layout, users, shared_files=shared_files)
    res.memories_deleted = res.tables.get(store.MEMORIES, 0)
    vectors = [t for t in await store.find_shared_tables(conn, [layout.schema]) if t.kind == store.VECTOR]
    for t in vectors:  # PgVector tables the app keeps in the agent's own schema
        res.tables[t.table] = (await store.erase_shared(conn, [t], users))[t.label]
    known = store.KNOWN_USER_TABLES | {t.table for t in vectors}
    left = {t: n for t, n in (await store.remaining_user_rows(conn, layout.schema, users)).items() if n}
    unknown = sorted(t for t in left if t not in known)
    if unknown:
        raise UnknownUserData(
            f"agent {label}: {', '.join(unknown)} hold rows of the user in a user_id column sessionctl does not "
            "know how to erase; nothing there was erased — upgrade sessionctl (or erase them by hand), then ask again"
        )
    if left:
        raise ErasureIncomplete(f"agent {label}: rows remain in {', '.join(sorted(left))}")
    return list(await store.user_keyed_tables(conn, layout.schema))


async def _delete_snapshot(
    conn: asyncpg.Connection, ctx: JobContext, layout: store.Layout, users: list[str], batches: Batches
) -> None:
    """Delete the snapshot's sessions in batches of ids, walked by primary key."""
    after: str | None = None
    while True:
        t = time.monotonic()
        ids = await store.next_snapshot_ids(conn, after, ctx.settings.batch_size)
        if not ids:
            return
        after = ids[-1]
        await batches.done(await store.delete_user_sessions(conn, layout, users, ids), t)
