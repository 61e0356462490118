"""An erasure at every agent (scope ``sessions``, with or without memories): the users' rows
counted in all schemas of a database with a few statements (:func:`store.count_users_per_schema`),
only the schemas that hold them purged, then every schema recounted the same way — the proof — and
purged again where late writes landed, up to ``MAX_ROUNDS``. Agents created meanwhile are checked
and counted too; those dropped meanwhile took the user's rows with them."""

from __future__ import annotations

from typing import Any

import asyncpg

from sessionctl import store
from sessionctl.errors import ErasureIncomplete
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.models import AgentPurgeResult
from sessionctl.jobs.schema_purge import purge_schema
from sessionctl.jobs.spec import MAX_ROUNDS, Spec, check_access
from sessionctl.jobs.targets import Target, resolve_targets

Results = tuple[dict[str, AgentPurgeResult], dict[str, dict[str, int]], int]


async def purge_fleet(ctx: JobContext, spec: Spec, targets: list[Target], bl: Any) -> Results:
    """The results by agent label (those that held the users), the sessions deleted per (raw)
    user id by agent label, and how many agent schemas were checked."""
    agents: dict[str, AgentPurgeResult] = {}
    per_user: dict[str, dict[str, int]] = {}
    pending = targets
    for round_ in range(MAX_ROUNDS):
        held = await _holding(ctx, spec, pending)
        await _purge_holders(ctx, spec, [t for t in pending if held.get(t.label)], agents, per_user, bl)
        if spec.dry_run:
            break
        targets = await _recheck(ctx, spec, targets, bl)  # an agent may be created or dropped meanwhile
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
    deleted = sum(a.sessions_deleted for a in agents.values())
    await ctx.progress.update(processed=deleted, total=deleted, agent=f"{len(targets)} agents checked", force=True)
    return agents, per_user, len(targets)


async def _purge_holders(
    ctx: JobContext,
    spec: Spec,
    holders: list[Target],
    agents: dict[str, AgentPurgeResult],
    per_user: dict[str, dict[str, int]],
    bl: Any,
) -> None:
    """Purge the schemas that hold the users, adding to each agent's result over the rounds."""
    for t in holders:
        try:
            res, users = await purge_schema(ctx, spec, t, bl.bind(agent=t.label))
        except asyncpg.UndefinedTableError:
            if await _exists(ctx, t):
                raise
            bl.warning("purge.schema_dropped", schema=t.layout.schema)  # its rows went with it
            continue
        agents[t.label] = _merged(agents.get(t.label), res)
        mine = per_user.setdefault(t.label, {})
        for u, n in users.items():
            mine[u] = mine.get(u, 0) + n


async def _recheck(ctx: JobContext, spec: Spec, targets: list[Target], bl: Any) -> list[Target]:
    """The agents now; those created since the job began are checked as every target was, before
    anything of them is counted or deleted."""
    known = {(t.dsn.target, t.layout.schema) for t in targets}
    now = await _still_there(ctx, targets, bl)
    created = [t for t in now if (t.dsn.target, t.layout.schema) not in known]
    if created:
        await check_access(ctx, spec, created)
    return now


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
