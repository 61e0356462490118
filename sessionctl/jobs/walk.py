"""Walking a big user's sessions: the bookkeeping of a round's batches, users grouped by the index,
a user's index range cut into slices walked by several connections at once."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from sessionctl import metrics, store, tracing
from sessionctl.jobs.common import accumulate
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.models import AgentPurgeResult
from sessionctl.jobs.targets import Target

T = TypeVar("T")


class Batches:
    """Bookkeeping of one round's delete batches: totals, per-user counts, metrics, progress, log."""

    def __init__(self, ctx: JobContext, res: AgentPurgeResult, per_user: dict[str, int], bl: Any, kind: str) -> None:
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
        tracing.record(
            "sessionctl.batch",
            started,
            agent=self.res.agent_id,
            sessions=outcome.counts.sessions,
            runs=outcome.counts.runs,
        )
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


async def delete_by_index(
    conn: asyncpg.Connection,
    ctx: JobContext,
    target: Target,
    counts: dict[str, int],
    batches: Batches,
    bl: Any,
) -> None:
    """With the ``(user_id, created_at, session_id)`` index: users whose counted sessions fit a
    batch go together, all their sessions in one statement — these groups by up to
    ``SESSIONCTL_PURGE_WALKERS`` connections at once; a user with more is walked through the
    index in ranges of a batch. No snapshot, no per-session key probe (see bench/purge.py)."""
    size = ctx.settings.batch_size
    groups: list[list[str]] = []
    group: list[str] = []
    grouped = 0
    for user in sorted(counts):
        n = counts[user]
        if n > size:
            await walk_user(conn, ctx, target, user, n, batches, bl)
            continue
        if grouped + n > size and group:
            groups.append(group)
            group, grouped = [], 0
        group.append(user)
        grouped += n
    if group:
        groups.append(group)
    layout = target.layout
    await _in_parallel(
        conn, ctx, target, groups, lambda c, users: store.delete_all_of_users(c, layout, users), batches, bl
    )


async def delete_by_tids(
    conn: asyncpg.Connection,
    ctx: JobContext,
    target: Target,
    found: list[store.TidBatch],
    batches: Batches,
    bl: Any,
) -> None:
    """Without the index, on a plain table: the tuple ids of the users' sessions (read in one scan,
    as a plain ``DELETE`` reads them, already cut into batches) deleted a batch at a time — each
    batch a TID scan that checks the owner again — by up to ``SESSIONCTL_PURGE_WALKERS``
    connections at once."""
    layout = target.layout
    await _in_parallel(
        conn,
        ctx,
        target,
        found,
        lambda c, batch: store.delete_sessions_by_tids(c, layout, batch),
        batches,
        bl,
    )


async def _in_parallel(
    conn: asyncpg.Connection,
    ctx: JobContext,
    target: Target,
    items: list[T],
    delete: Callable[[asyncpg.Connection, T], Awaitable[store.BatchOutcome]],
    batches: Batches,
    bl: Any,
) -> None:
    """Delete a batch per item, by this job's connection and up to ``SESSIONCTL_PURGE_WALKERS`` - 1
    spare ones at once (each batch taken once; a spare connection given back between two batches
    as soon as another job waits for one, as :func:`walk_user` does). The cascade to the runs is
    CPU in Postgres: one connection keeps one backend busy."""
    if not items:
        return
    dbs = ctx.databases
    queue = iter(items)

    async def walker(c: asyncpg.Connection, give_back: Callable[[], bool] | None = None) -> None:
        while give_back is None or not give_back():
            item = next(queue, None)  # one iterator for every walker: each batch is taken once
            if item is None:
                return
            t = time.monotonic()
            await batches.done(await delete(c, item), t)

    spares: list[tuple[contextlib.AsyncExitStack, asyncpg.Connection]] = []
    try:
        spares += await _spares(ctx, target, min(ctx.settings.purge_walkers, len(items)) - 1)
        bl.info("purge.parallel", batches=len(items), walkers=1 + len(spares))

        async def helper(stack: contextlib.AsyncExitStack, spare: asyncpg.Connection) -> None:
            async with stack:
                await walker(spare, give_back=lambda: dbs.wanted(target.dsn))

        await _all_or_none([walker(conn), *(helper(st, c) for st, c in spares)])
        await walker(conn)  # what a walker that gave its connection back left
    finally:
        for stack, _ in spares:
            await stack.aclose()


@dataclass(slots=True)
class _Slice:
    """A part ``[start, stop)`` of a user's index range, and how far its walk got."""

    start: store.SessionKey | None
    stop: store.SessionKey | None
    after: store.SessionKey | None = None
    walked: int = 0
    over: bool = False


async def walk_user(
    conn: asyncpg.Connection, ctx: JobContext, target: Target, user: str, n: int, batches: Batches, bl: Any
) -> None:
    """Delete a user's ``n`` (counted) sessions in index ranges of a batch. Up to
    ``SESSIONCTL_PURGE_WALKERS`` walkers take equal slices of the user's index range at once, each
    on its own connection: the cascade to the runs is CPU in Postgres, and one walker keeps one
    backend busy (docs/decisions.md). An extra walker uses a spare connection — one the
    pool has free now, while no job waits for one — and gives it back between two batches as soon
    as a job waits; this job's own connection then walks the rest of that slice."""
    size, layout, dbs = ctx.settings.batch_size, target.layout, ctx.databases
    parts = min(ctx.settings.purge_walkers, -(-n // size))  # never more walkers than batches
    spares: list[tuple[contextlib.AsyncExitStack, asyncpg.Connection]] = []
    try:
        spares += await _spares(ctx, target, parts - 1)
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
    batches: Batches

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


async def _spares(
    ctx: JobContext, target: Target, wanted: int
) -> list[tuple[contextlib.AsyncExitStack, asyncpg.Connection]]:
    """Up to ``wanted`` spare connections to the target's database (ones the pool has free now,
    while no job waits for one), each with the stack that gives it back."""
    got: list[tuple[contextlib.AsyncExitStack, asyncpg.Connection]] = []
    while len(got) < wanted:
        stack = contextlib.AsyncExitStack()
        spare = await stack.enter_async_context(ctx.databases.spare(target.dsn))
        if spare is None:
            await stack.aclose()
            break
        got.append((stack, spare))
    return got


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
