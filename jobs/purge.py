"""Erasure jobs: ``purge_user_sessions`` (one user, one agent or every agent) and ``purge_users``
(a bulk erasure of up to 10,000 users in set-based batches).

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
owner in the delete itself. The recount is our own SQL: sessions that arrived meanwhile (late
writes) are purged by the next round, up to ``MAX_ROUNDS``; success only when the count is 0, and
only after the receipt is written. Scope ``all`` then erases (or anonymizes) the users' rows in every
other user-keyed table and recounts every table with a ``user_id`` column; ``--memories`` only
``agno_memories``. A database error raises (retried), so a success is never reported while rows
remain. A dry run counts what would be deleted and deletes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from jobs import preflight
from jobs.common import accumulate, now_iso, write_receipt
from jobs.context import JobContext
from jobs.models import (
    PURGE_USER_SESSIONS,
    PURGE_USERS,
    AgentPurgeResult,
    BulkPurgeRequest,
    BulkPurgeResult,
    PurgeRequest,
    PurgeResult,
)
from jobs.targets import Target, resolve_targets
from sessionctl import metrics, store
from sessionctl.errors import ErasureIncomplete, UnknownUserData
from sessionctl.logs import get_logger
from sessionctl.privacy import user_hmac
from sessionctl.store import access, receipts

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
    agents: dict[str, AgentPurgeResult] = {}
    for target in targets:
        agents[target.label], _ = await purge_schema(ctx, spec, target, blog.bind(agent=target.label))

    total_remaining = sum(a.remaining for a in agents.values())
    if total_remaining and not request.dry_run:  # unreachable: purge_schema raises first
        raise ErasureIncomplete(f"{total_remaining} sessions of the user remain")
    would = _sum_would(agents) if request.dry_run else None
    if not request.dry_run:
        await _receipt(ctx, request, hmac, agents, started)
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
        started_at=started,
        finished_at=now_iso(),
        requested_by=request.requested_by,
    )
    blog.info(
        "purge.done",
        status=result.status,
        agents=len(agents),
        sessions_deleted=result.sessions_deleted,
        runs_deleted=result.runs_deleted,
        remaining=result.remaining,
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
        what="a dry run" if spec.dry_run else "this erasure",
        nothing="Nothing was counted" if spec.dry_run else "Nothing was deleted",
    )


async def purge_schema(ctx: JobContext, spec: Spec, target: Target, bl: Any) -> tuple[AgentPurgeResult, dict[str, int]]:
    """Purge one agent schema; the result and the sessions deleted per (raw) user id."""
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
            batches = _Batches(ctx, res, per_user, bl, spec.kind)
            if layout.user_index and round_ == 0:
                per_user_counted = await store.count_sessions_per_user(conn, layout, users)
                initial = sum(per_user_counted.values())
                await batches.start(total=initial)
                await _delete_by_index(conn, ctx, target, per_user_counted, batches, bl)
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
        if spec.scope == "all":
            await _erase_everything_else(conn, layout, users, res, label, spec.shared_files)
        elif spec.memories:
            res.memories_deleted = await store.delete_user_memories(conn, layout, users)
            left = await store.count_user(conn, layout, users, memories=True)
            if left.memories:
                raise ErasureIncomplete(f"agent {label}: {left.memories} memories remain")
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
) -> None:
    """Scope "all": every other user-keyed table, then a recount of every table with a user_id column."""
    res.tables = await store.erase_user_stores(conn, layout, users, shared_files=shared_files)
    res.memories_deleted = res.tables.get(store.MEMORIES, 0)
    left = {t: n for t, n in (await store.remaining_user_rows(conn, layout.schema, users)).items() if n}
    unknown = sorted(t for t in left if t not in store.KNOWN_USER_TABLES)
    if unknown:
        raise UnknownUserData(
            f"agent {label}: {', '.join(unknown)} hold rows of the user in a user_id column sessionctl does not "
            "know how to erase; nothing there was erased — upgrade sessionctl (or erase them by hand), then ask again"
        )
    if left:
        raise ErasureIncomplete(f"agent {label}: rows remain in {', '.join(sorted(left))}")


class _Batches:
    """Bookkeeping of one round's delete batches: totals, per-user counts, metrics, progress, log."""

    def __init__(
        self, ctx: JobContext, res: AgentPurgeResult, per_user: dict[str, int], bl: Any, kind: str
    ) -> None:
        self.ctx, self.res, self.per_user, self.bl, self.kind = ctx, res, per_user, bl, kind
        self.total = 0

    async def start(self, *, total: int) -> None:
        self.total = total
        await self.ctx.progress.update(
            processed=self.res.sessions_deleted, total=total, agent=self.res.agent_id, force=True
        )

    async def done(self, outcome: store.BatchOutcome, started: float) -> None:
        for u, n in outcome.per_user.items():
            self.per_user[u] = self.per_user.get(u, 0) + n
        metrics.BATCH_SECONDS.labels(self.kind).observe(time.monotonic() - started)
        accumulate(self.res, outcome)
        # Late writes can make a batch bigger than counted: the total never falls behind.
        self.total = max(self.total, self.res.sessions_deleted)
        await self.ctx.progress.update(processed=self.res.sessions_deleted, total=self.total, agent=self.res.agent_id)
        self.bl.info(
            "purge.batch",
            batch=self.res.batches,
            sessions=outcome.counts.sessions,
            runs=outcome.counts.runs,
            elapsed_ms=round((time.monotonic() - started) * 1000, 1),
        )


async def _delete_snapshot(
    conn: asyncpg.Connection, ctx: JobContext, layout: store.Layout, users: list[str], batches: _Batches
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


async def _delete_by_index(
    conn: asyncpg.Connection,
    ctx: JobContext,
    target: Target,
    counts: dict[str, int],
    batches: _Batches,
    bl: Any,
) -> None:
    """With the ``(user_id, created_at, session_id)`` index: users whose counted sessions fit a
    batch go together, all their sessions in one statement; a user with more is walked through
    the index in ranges of a batch. No snapshot, no per-session key probe (see bench/purge.py)."""
    size = ctx.settings.batch_size
    group: list[str] = []
    grouped = 0

    async def flush() -> None:
        nonlocal group, grouped
        if group:
            t = time.monotonic()
            await batches.done(await store.delete_all_of_users(conn, target.layout, group), t)
        group, grouped = [], 0

    for user in sorted(counts):
        n = counts[user]
        if n > size:
            await _walk_user(conn, ctx, target, user, n, batches, bl)
            continue
        if grouped + n > size:
            await flush()
        group.append(user)
        grouped += n
    await flush()


@dataclass(slots=True)
class _Slice:
    """A part ``[start, stop)`` of a user's index range, and how far its walk got."""

    start: store.SessionKey | None
    stop: store.SessionKey | None
    after: store.SessionKey | None = None
    walked: int = 0
    over: bool = False


async def _walk_user(
    conn: asyncpg.Connection, ctx: JobContext, target: Target, user: str, n: int, batches: _Batches, bl: Any
) -> None:
    """Delete a user's ``n`` (counted) sessions in index ranges of a batch. Up to
    ``SESSIONCTL_PURGE_WALKERS`` walkers take equal slices of the user's index range at once, each
    on its own connection: the cascade to the runs is CPU in Postgres, and one walker keeps one
    backend busy (measured in bench/purge.py). An extra walker uses a spare connection — one the
    pool has free now, while no job waits for one — and gives it back between two batches as soon
    as a job waits; this job's own connection then walks the rest of that slice."""
    size, layout, dbs = ctx.settings.batch_size, target.layout, ctx.databases
    parts = min(ctx.settings.purge_walkers, -(-n // size))  # never more walkers than batches
    spares: list[tuple[contextlib.AsyncExitStack, asyncpg.Connection]] = []
    try:
        while 1 + len(spares) < parts:
            stack = contextlib.AsyncExitStack()
            spare = await stack.enter_async_context(dbs.spare(target.dsn))
            if spare is None:
                await stack.aclose()
                break
            spares.append((stack, spare))
        cuts: list[store.SessionKey | None] = [None]
        if spares:
            cuts += await store.split_keys(conn, layout, user, n, 1 + len(spares))
        cuts.append(None)
        slices = [_Slice(start, stop) for start, stop in itertools.pairwise(cuts)]
        for stack, _ in spares[len(slices) - 1 :]:  # fewer cuts than spares (NULL creation times)
            await stack.aclose()
        bl.info("purge.walk", sessions=n, walkers=len(slices))
        # Walk at most what was counted and a batch more per slice: a writer racing the purge
        # leaves the rest to the recount and the next round, which bounds the rounds.
        walk = _SliceWalk(layout, user, size, n // len(slices) + size, batches)

        async def helper(stack: contextlib.AsyncExitStack, spare: asyncpg.Connection, part: _Slice) -> None:
            async with stack:
                await walk(spare, part, give_back=lambda: dbs.wanted(target.dsn))

        await _all_or_none(
            [walk(conn, slices[0]), *(helper(st, c, part) for (st, c), part in zip(spares, slices[1:], strict=False))]
        )
        for part in slices:  # what a walker that gave its connection back left
            await walk(conn, part)
    finally:
        for stack, _ in spares:
            await stack.aclose()


@dataclass(frozen=True, slots=True)
class _SliceWalk:
    layout: store.Layout
    user: str
    size: int
    bound: int
    batches: _Batches

    async def __call__(
        self, conn: asyncpg.Connection, part: _Slice, give_back: Callable[[], bool] | None = None
    ) -> None:
        """Walk the slice from where it got to, a batch per statement, until it is over (or, for
        a spare connection, until ``give_back()`` says a job waits for it)."""
        while not part.over:
            if give_back is not None and give_back():
                return
            t = time.monotonic()
            outcome, part.after = await store.delete_user_range(
                conn, self.layout, self.user, part.after, self.size, start=part.start, stop=part.stop
            )
            if outcome.counts.sessions:
                await self.batches.done(outcome, t)
            part.walked += outcome.counts.sessions
            part.over = part.after is None or part.walked > self.bound


async def _all_or_none(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Run these together; the first failure cancels the others and is raised as itself (not as
    an ExceptionGroup: the worker's retry policy and the database error mapping look at its type)."""
    if len(coros) == 1:
        await coros[0]
        return
    try:
        async with asyncio.TaskGroup() as tg:
            for coro in coros:
                tg.create_task(coro)
    except BaseExceptionGroup as group:
        raise group.exceptions[0]  # noqa: B904 - the group is the context, the member is the error


async def _receipt(
    ctx: JobContext, request: PurgeRequest, hmac: str, agents: dict[str, AgentPurgeResult], started: str
) -> None:
    """Append the durable receipt of this erasure (before the job reports success)."""
    await write_receipt(
        ctx,
        kind=PURGE_USER_SESSIONS,
        user_hmac=hmac,
        target=request.target,
        agents=agents,
        started=started,
        requested_by=request.requested_by,
    )


async def purge_users(ctx: JobContext, request: BulkPurgeRequest) -> BulkPurgeResult:
    """Bulk erasure: every agent schema once, all the users' sessions in set-based batches
    (``user_id = ANY($users)``), per-user counts as HMACs, one receipt per user."""
    started = now_iso()
    users = request.user_ids
    blog = log.bind(job_id=ctx.job_id, job_try=ctx.job_try, users=len(users))
    blog.info("purge_users.start", target=request.target, dry_run=request.dry_run, scope=request.scope)
    spec = Spec(users, request.dry_run, request.memories, request.scope, request.all_agents, kind=PURGE_USERS)
    targets = await resolve_targets(ctx, request.agent_id, request.all_agents)
    await check_access(ctx, spec, targets)
    agents: dict[str, AgentPurgeResult] = {}
    deleted: dict[str, int] = dict.fromkeys(users, 0)
    remaining: dict[str, int] = dict.fromkeys(users, 0)
    for target in targets:
        agents[target.label], per_user = await purge_schema(ctx, spec, target, blog.bind(agent=target.label))
        async with ctx.databases.connect(target.dsn) as conn:
            left = await store.count_sessions_per_user(conn, target.layout, users)
        for u in users:
            deleted[u] += per_user.get(u, 0)
            remaining[u] += left.get(u, 0)
    hmacs = {u: user_hmac(ctx.hash_key, u) for u in users}
    if not request.dry_run:
        if any(remaining.values()):  # unreachable: purge_schema proves zero per schema first
            raise ErasureIncomplete(f"{sum(remaining.values())} sessions of the users remain")
        await _bulk_receipts(ctx, request, hmacs, deleted, agents, started)
        metrics.SESSIONS_DELETED.labels(PURGE_USERS).inc(sum(deleted.values()))
        metrics.RUNS_DELETED.labels(PURGE_USERS).inc(sum(a.runs_deleted for a in agents.values()))
    would = _sum_would(agents) if request.dry_run else None
    result = BulkPurgeResult(
        job_id=ctx.job_id,
        status="dry_run" if request.dry_run else "succeeded",
        dry_run=request.dry_run,
        target=request.target,
        users_count=len(users),
        sessions_deleted=sum(deleted.values()),
        runs_deleted=sum(a.runs_deleted for a in agents.values()),
        remaining=sum(remaining.values()),
        users={hmacs[u]: {"sessions_deleted": deleted[u], "remaining": remaining[u]} for u in users},
        agents=agents,
        would_delete=would,
        started_at=started,
        finished_at=now_iso(),
        requested_by=request.requested_by,
    )
    blog.info("purge_users.done", status=result.status, sessions_deleted=result.sessions_deleted, agents=len(agents))
    return result


async def _bulk_receipts(
    ctx: JobContext,
    request: BulkPurgeRequest,
    hmacs: dict[str, str],
    deleted: dict[str, int],
    agents: dict[str, AgentPurgeResult],
    started: str,
) -> None:
    dsn = ctx.settings.dsn
    schemas = json.dumps({label: a.schema_name for label, a in agents.items()})  # the same for every user
    started_at, finished_at = datetime.fromisoformat(started), datetime.now(UTC)
    rows = [
        {
            "job_id": ctx.job_id,
            "kind": PURGE_USERS,
            "user_hmac": hmacs[u],
            "target": request.target,
            "agents": schemas,
            "counts": json.dumps({"sessions": deleted[u]}),
            "late_sessions": 0,
            "started_at": started_at,
            "finished_at": finished_at,
            "requested_by": request.requested_by,
        }
        for u in request.user_ids
    ]
    async with ctx.databases.connect(dsn) as conn:
        await receipts.ensure(conn, dsn.redacted)
        await receipts.record_many(conn, rows, enqueued_at=ctx.enqueued_at)


def _sum_would(agents: dict[str, AgentPurgeResult]) -> dict[str, int]:
    """A dry run's counts over all agents."""
    total: dict[str, int] = {}
    for a in agents.values():
        for k, v in (a.would_delete or {}).items():
            total[k] = total.get(k, 0) + v
    return total
