"""``purge_user_sessions`` (one user, one agent or every agent), and the per-schema purge it shares
with ``purge_users`` (a bulk erasure of up to 10,000 users: ``jobs/bulk.py``). Walking a big
user's index range in slices lives in ``jobs/walk.py``.

Before anything is deleted, the preflight (``jobs/preflight.py``) checks every target: the role
sees every row it will count and may delete what it must, the database takes writes, the receipt
can be written. Then, per agent schema (its layout read once: 3.x runs table, 2.x runs in the row,
transcripts, tool results), rounds of "delete, then recount":

- **with the doctor's** ``(user_id, created_at, session_id)`` **index**, in the first round: the
  users' sessions are counted per user; users whose sessions fit a batch go together, all of theirs
  in one statement; a user with more is walked through the index in ranges of a batch, each range
  deleted by tuple id, by up to ``SESSIONCTL_PURGE_WALKERS`` walkers at once on spare pooled
  connections (given back as soon as another job waits);
- **without it** (and in later rounds): up to a batch + 1 of the users' session ids are read; if
  they fit a batch they are deleted in one statement, else the ids are noted in a temporary table
  (one scan: Agno has no index on ``user_id``) and deleted in batches walked by primary key.

Each batch is one transaction that removes what Agno's ``delete_sessions`` removes (runs —
by the cascade where it fires —, transcripts, tool-result rows and their payloads), re-checking the
owner in the delete itself, and notes the keys of the media those sessions uploaded
(``sessionctl/media.py``: the objects go after the commit, and must all be gone before the
receipt). The recount is our own SQL: sessions that arrived meanwhile (late
writes) are purged by the next round, up to ``MAX_ROUNDS``; success only when the count is 0, and
only after the receipt is written. Scope ``all`` then erases (or anonymizes) the users' rows in every
other user-keyed table and recounts every table with a ``user_id`` column; ``--memories`` only
``agno_memories``. A database error raises (retried), so a success is never reported while rows
remain. A dry run counts what would be deleted and deletes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from jobs import preflight
from jobs.common import media_stores, now_iso, settle_media, write_receipt
from jobs.context import JobContext
from jobs.models import (
    PURGE_USER_SESSIONS,
    AgentPurgeResult,
    Completeness,
    PurgeRequest,
    PurgeResult,
)
from jobs.person import completeness
from jobs.shared import erase_shared_stores
from jobs.targets import Target, resolve_targets
from jobs.walk import Batches, delete_by_index, delete_by_tids
from sessionctl import metrics, store, tracing
from sessionctl.errors import ErasureIncomplete, UnknownUserData
from sessionctl.logs import get_logger
from sessionctl.privacy import user_hmac
from sessionctl.store import access

log = get_logger("sessionctl.purge")

# Rounds of "delete until empty, then recount" before a still-growing user is handed back to the
# queue as a retryable ErasureIncomplete (a writer racing the purge).
MAX_ROUNDS = 5


async def purge_user_sessions(ctx: JobContext, request: PurgeRequest) -> PurgeResult:
    started = now_iso()
    hmac = user_hmac(ctx.hash_key, request.user_id)
    blog = log.bind(job_id=ctx.job_id, user_hmac=hmac, job_try=ctx.job_try)
    blog.info(
        "purge.start", target=request.target, dry_run=request.dry_run, memories=request.memories, scope=request.scope
    )
    t0 = time.monotonic()

    spec = Spec([request.user_id], request.dry_run, request.memories, request.scope, request.all_agents)
    targets = await resolve_targets(ctx, request.agent_id, request.all_agents)
    await check_access(ctx, spec, targets)
    agents, _, checked = await purge_targets(ctx, spec, targets, blog)
    stores = await shared_stores(ctx, spec, targets, blog)

    total_remaining = sum(a.remaining for a in agents.values())
    if total_remaining and not request.dry_run:  # unreachable: purge_schema raises first
        raise ErasureIncomplete(f"{total_remaining} sessions of the user remain")
    would = sum_would(agents) if request.dry_run else None
    complete = None
    if not request.dry_run:
        stores.update(media_stores(ctx, await settle_media(ctx, [t.dsn for t in targets], [hmac])))
        complete = await completeness(ctx, [request.user_id], proven=spec.proven)
        stores = await _receipt(ctx, request, hmac, agents, started, stores, checked, complete)
        metrics.SESSIONS_DELETED.labels(PURGE_USER_SESSIONS).inc(sum(a.sessions_deleted for a in agents.values()))
        metrics.RUNS_DELETED.labels(PURGE_USER_SESSIONS).inc(sum(a.runs_deleted for a in agents.values()))
    result = PurgeResult(
        job_id=ctx.job_id,
        status="dry_run" if request.dry_run else "succeeded",
        dry_run=request.dry_run,
        user_hmac=hmac,
        target=request.target,
        sessions_deleted=sum(a.sessions_deleted for a in agents.values()),
        runs_deleted=sum(a.runs_deleted for a in agents.values()),
        memories_deleted=sum(a.memories_deleted for a in agents.values()),
        remaining=total_remaining,
        late_sessions=sum(a.late_sessions for a in agents.values()),
        would_delete=would,
        agents=agents,
        stores=stores or None,
        schemas_checked=checked,
        started_at=started,
        finished_at=now_iso(),
        requested_by=request.requested_by,
        origin=request.origin,
        complete=None if complete is None else complete.complete,
        remains=None if complete is None else complete.remains,
        request_id=request.request_id,
    )
    blog.info(
        "purge.done",
        status=result.status,
        agents=len(agents),
        sessions_deleted=result.sessions_deleted,
        runs_deleted=result.runs_deleted,
        remaining=result.remaining,
        complete=result.complete,
        elapsed_ms=round((time.monotonic() - t0) * 1000, 1),
    )
    return result


@dataclass(frozen=True, slots=True)
class Spec:
    """What one purge erases in each schema: these users' sessions (and more, by scope)."""

    users: list[str]
    dry_run: bool = False
    memories: bool = False
    scope: str = "sessions"  # "all": every user-keyed table (store.USER_STORES)
    shared_files: bool = False  # all agents: also the user's files in the database-wide fs.agno_fs
    kind: str = PURGE_USER_SESSIONS  # the job kind its metrics are labelled with
    # (database, "schema.table") the purge itself recounted to 0 at its end: the final recount of
    # the person (jobs/person.py) need not count them again
    proven: set[tuple[str, str]] = field(default_factory=set)

    def prove(self, target: Target, *tables: str) -> None:
        self.proven.update((target.dsn.where, f"{target.layout.schema}.{t}") for t in tables)


async def shared_stores(ctx: JobContext, spec: Spec, targets: list[Target], bl: Any) -> dict[str, int]:
    """An all-agents erasure of scope "all": the users' knowledge vectors and login records in every
    database (jobs/shared.py); nothing for any other purge."""
    if spec.scope != "all" or not spec.shared_files:
        return {}
    return await erase_shared_stores(ctx, spec.users, targets, dry_run=spec.dry_run, bl=bl, proven=spec.proven)


async def check_access(ctx: JobContext, spec: Spec, targets: list[Target]) -> None:
    """Before the first delete, in every target: the role sees every row it will count and may
    delete what it must; the receipt can be written (jobs/preflight.py)."""

    def needs(layout: store.Layout, tables: list[str]) -> list[access.Need]:
        return access.erasure_needs(
            layout,
            memories=spec.memories,
            scope=spec.scope,
            user_tables=tables,
            shared_files=spec.shared_files,
            dry_run=spec.dry_run,
        )

    await preflight.check(
        ctx,
        targets,
        needs,
        writes=not spec.dry_run,
        receipt=not spec.dry_run,
        user_tables=spec.scope == "all",
        shared=spec.scope == "all" and spec.shared_files,
        what="a dry run" if spec.dry_run else "this erasure",
        nothing="Nothing was counted" if spec.dry_run else "Nothing was deleted",
    )


async def purge_targets(
    ctx: JobContext, spec: Spec, targets: list[Target], bl: Any
) -> tuple[dict[str, AgentPurgeResult], dict[str, dict[str, int]], int]:
    """Purge the users from every target: the results by agent label, the sessions deleted per
    (raw) user id by agent label, and how many agent schemas were checked.

    An erasure at every agent (scope ``sessions``, with or without memories) first counts the users'
    rows in all schemas of a database with a few statements (:func:`store.count_users_per_schema`)
    and purges only the schemas that hold them; then recounts every schema the same way — the
    proof — and purges again where late writes landed, up to ``MAX_ROUNDS``. Its result lists the
    agents that held the users (``schemas_checked`` says how many were checked). Scope ``all`` (a
    user's rows may be in any of a schema's tables) and a single agent take every schema in turn."""
    agents: dict[str, AgentPurgeResult] = {}
    per_user: dict[str, dict[str, int]] = {}
    if not spec.shared_files or spec.scope == "all":
        for t in targets:
            agents[t.label], per_user[t.label] = await purge_schema(ctx, spec, t, bl.bind(agent=t.label))
        return agents, per_user, len(targets)
    pending = targets
    for round_ in range(MAX_ROUNDS):
        held = await _holding(ctx, spec, pending)
        for t in (t for t in pending if held.get(t.label)):
            try:
                res, users = await purge_schema(ctx, spec, t, bl.bind(agent=t.label))
            except asyncpg.UndefinedTableError:
                if await _exists(ctx, t):
                    raise
                bl.warning("purge.schema_dropped", schema=t.layout.schema)  # its rows went with it
                continue
            agents[t.label] = _merged(agents.get(t.label), res)
            for u, n in users.items():
                per_user.setdefault(t.label, {})[u] = per_user.get(t.label, {}).get(u, 0) + n
        if spec.dry_run:
            break
        known = {(t.dsn.target, t.layout.schema) for t in targets}
        targets = await _still_there(ctx, targets, bl)  # an agent may be created or dropped meanwhile
        created = [t for t in targets if (t.dsn.target, t.layout.schema) not in known]
        if created:  # checked as every target was, before anything of it is counted or deleted
            await check_access(ctx, spec, created)
        left = await _holding(ctx, spec, targets)  # every schema, recounted: the proof
        pending = [t for t in targets if left.get(t.label)]
        if not pending:
            for t in targets:
                spec.prove(
                    t, store.SESSIONS, *([store.MEMORIES] if spec.memories and t.layout.has(store.MEMORIES) else [])
                )
            break
        bl.warning("purge.late_writes", schemas=len(pending), round=round_ + 1)
    else:
        raise ErasureIncomplete(
            f"{len(pending)} agents still hold rows of the user after {MAX_ROUNDS} rounds (something keeps writing)"
        )
    await ctx.progress.update(
        processed=sum(a.sessions_deleted for a in agents.values()),
        total=sum(a.sessions_deleted for a in agents.values()),
        agent=f"{len(targets)} agents checked",
        force=True,
    )
    return agents, per_user, len(targets)


async def _exists(ctx: JobContext, t: Target) -> bool:
    async with ctx.databases.connect(t.dsn) as conn:
        return await store.read_layout(conn, t.layout.schema) is not None


async def _still_there(ctx: JobContext, targets: list[Target], bl: Any) -> list[Target]:
    """The agents now: those dropped since the job began are gone (with the user's rows); those
    created since are added, so the recount covers them too."""
    before = {(t.dsn.target, t.layout.schema) for t in targets}
    dsns = {t.dsn.target: t.dsn for t in targets} or {ctx.settings.dsn.target: ctx.settings.dsn}
    seen: set[tuple[tuple[str, str, int, str], str]] = set()
    for dsn in dsns.values():
        async with ctx.databases.connect(dsn) as conn:
            seen |= {(dsn.target, s) for s in await store.discover_agent_schemas(conn)}
    if seen == before:  # one catalog query per database; the full resolution only on a change
        return targets
    now = await resolve_targets(ctx, None, True)
    after = {(t.dsn.target, t.layout.schema) for t in now}
    if before != after:
        bl.info("purge.agents_changed", dropped=len(before - after), created=len(after - before))
    return now


async def _holding(ctx: JobContext, spec: Spec, targets: list[Target]) -> dict[str, int]:
    """The users' rows per agent label (sessions; memories too with ``--memories``), counted with
    a few statements per database."""
    by_db: dict[tuple[str, str, int, str], list[Target]] = {}
    for t in targets:
        by_db.setdefault(t.dsn.target, []).append(t)
    out: dict[str, int] = {}
    for group in by_db.values():
        async with ctx.databases.connect(group[0].dsn) as conn:
            try:
                counted = await store.count_users_per_schema(
                    conn, [t.layout for t in group], spec.users, memories=spec.memories
                )
            except asyncpg.UndefinedTableError:  # an agent dropped meanwhile: its rows went with it
                live = await store.read_layouts(conn, [t.layout.schema for t in group])
                counted = await store.count_users_per_schema(
                    conn,
                    [live[t.layout.schema] for t in group if t.layout.schema in live],
                    spec.users,
                    memories=spec.memories,
                )
        out.update({t.label: counted.get(t.layout.schema, 0) for t in group})
    return out


def _merged(before: AgentPurgeResult | None, now: AgentPurgeResult) -> AgentPurgeResult:
    """One agent's result over several rounds: counts added, the last round's remaining."""
    if before is None:
        return now
    for name in (
        "sessions_deleted",
        "runs_deleted",
        "transcripts_deleted",
        "tool_results_deleted",
        "tool_result_payloads_deleted",
        "tool_results_without_payload",
        "memories_deleted",
        "batches",
        "late_sessions",
    ):
        setattr(now, name, getattr(before, name) + getattr(now, name))
    return now


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
    users = spec.users
    per_user: dict[str, int] = {}
    async with ctx.databases.connect(target.dsn) as conn:
        if spec.dry_run:
            counts = await store.count_user(conn, layout, users, memories=spec.memories or spec.scope == "all")
            res.would_delete = counts.as_dict()
            if spec.scope == "all":
                rows = await store.remaining_user_rows(conn, layout.schema, users)
                res.would_delete.update({f"table:{t}": n for t, n in rows.items() if n})
                if spec.shared_files:
                    res.would_delete["table:fs.agno_fs"] = await store.count_user_files(conn, users)
            res.remaining = counts.sessions
            bl.info("purge.dry_run", **counts.as_dict())
            return res, per_user

        initial: int | None = None
        for round_ in range(MAX_ROUNDS):
            batches = Batches(ctx, res, per_user, bl, spec.kind)
            if layout.user_index and round_ == 0:
                per_user_counted = await store.count_sessions_per_user(conn, layout, users)
                initial = sum(per_user_counted.values())
                await batches.start(total=initial)
                await delete_by_index(conn, ctx, target, per_user_counted, batches, bl)
            elif layout.plain:  # one scan for the tuple ids, batches by tuple id (no per-id probe)
                tids = await store.user_session_tids(conn, layout, users)
                initial = len(tids) if initial is None else initial
                await batches.start(total=res.sessions_deleted + len(tids))
                if tids:
                    await delete_by_tids(conn, ctx, target, tids, batches, bl)
            else:
                size = ctx.settings.batch_size
                few = await store.some_user_session_ids(conn, layout, users, size + 1)
                found = len(few) if len(few) <= size else await store.snapshot_user_session_ids(conn, layout, users)
                initial = found if initial is None else initial
                await batches.start(total=res.sessions_deleted + found)
                if len(few) <= size:  # all of them, in one batch
                    if few:
                        t = time.monotonic()
                        await batches.done(await store.delete_user_sessions(conn, layout, users, few), t)
                else:
                    await _delete_snapshot(conn, ctx, layout, users, batches)
            res.remaining = await store.count_user_sessions(conn, layout, users)  # the proof
            if res.remaining == 0:
                break
            bl.warning("purge.late_writes", remaining=res.remaining)
        initial = initial or 0
        res.late_sessions = max(0, res.sessions_deleted - initial)
        await ctx.progress.update(processed=res.sessions_deleted, total=res.sessions_deleted, agent=label, force=True)
        if res.remaining:
            raise ErasureIncomplete(
                f"agent {label}: {res.remaining} sessions remain after {MAX_ROUNDS} rounds "
                "(something keeps writing them)"
            )
        spec.prove(target, store.SESSIONS)
        if spec.scope == "all":
            proved = await _erase_everything_else(conn, layout, users, res, label, spec.shared_files)
            spec.prove(target, *proved)
        elif spec.memories:
            res.memories_deleted = await store.delete_user_memories(conn, layout, users)
            left = await store.count_user(conn, layout, users, memories=True)
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


async def _receipt(
    ctx: JobContext,
    request: PurgeRequest,
    hmac: str,
    agents: dict[str, AgentPurgeResult],
    started: str,
    stores: dict[str, int],
    checked: int,
    complete: Completeness,
) -> dict[str, int]:
    """Append the durable receipt of this erasure (before the job reports success); the stores it
    lists (with the export files of the person deleted in its transaction)."""
    return await write_receipt(
        ctx,
        kind=PURGE_USER_SESSIONS,
        user_hmac=hmac,
        target=request.target,
        agents=agents,
        started=started,
        requested_by=request.requested_by,
        scope=receipt_scope(request.scope, request.memories),
        stores=stores,
        origin=request.origin,
        schemas_checked=checked,
        completeness=complete,
    )


def receipt_scope(scope: str, memories: bool) -> str:
    """What a receipt says was erased at each agent: ``sessions``, ``memories`` (sessions and
    memories) or ``all``."""
    return "memories" if scope == "sessions" and memories else scope


def sum_would(agents: dict[str, AgentPurgeResult]) -> dict[str, int]:
    """A dry run's counts over all agents."""
    total: dict[str, int] = {}
    for a in agents.values():
        for k, v in (a.would_delete or {}).items():
            total[k] = total.get(k, 0) + v
    return total
