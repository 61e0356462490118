"""``purge_users``: a bulk erasure — every agent schema once, all the users' sessions in
set-based batches (``user_id IN (…)``), per-user counts as HMACs, one receipt per user."""

from __future__ import annotations

from datetime import UTC, datetime

from sessionctl import export_lifetime, metrics, store
from sessionctl.errors import ErasureIncomplete
from sessionctl.jobs.common import media_stores, now_iso, outcome, settle_media
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.holds import refuse_held
from sessionctl.jobs.models import PURGE_USERS, AgentPurgeResult, BulkPurgeRequest, BulkPurgeResult, Completeness
from sessionctl.jobs.person import completeness
from sessionctl.jobs.purge import erase_targets, receipt_scope, sum_would
from sessionctl.jobs.spec import Spec, check_access
from sessionctl.jobs.targets import resolve_targets
from sessionctl.logs import get_logger
from sessionctl.store import migrations, receipts

log = get_logger("sessionctl.purge")


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
    if not request.dry_run:  # after the access check (which names a missing grant), before any delete
        await refuse_held(ctx, users)
    deleted: dict[str, int] = dict.fromkeys(users, 0)
    remaining: dict[str, int] = dict.fromkeys(users, 0)
    erased = await erase_targets(ctx, spec, targets, blog)
    agents, per_agent, checked, stores = erased.agents, erased.per_user, erased.checked, erased.stores
    for per_user in per_agent.values():
        for u, n in per_user.items():
            deleted[u] += n
    # per user, where the users were (every other schema was proved to hold none of them)
    for target in (t for t in targets if t.label in agents):
        async with ctx.databases.connect(target.dsn) as conn:
            left = await store.count_sessions_per_user(conn, target.layout, users)
        for u in users:
            remaining[u] += left.get(u, 0)
    hmacs = dict(zip(users, ctx.hmacs(users), strict=True))
    complete: Completeness | None = None
    if not request.dry_run:
        if any(remaining.values()):  # unreachable: purge_schema proves zero per schema first
            raise ErasureIncomplete(f"{sum(remaining.values())} sessions of the users remain")
        stores.update(media_stores(ctx, await settle_media(ctx, [t.dsn for t in targets], hmacs.values())))
        complete = await completeness(ctx, users, proven=spec.proven, declared=erased.declared)
        complete.exemptions = erased.exemptions
        stores = await _bulk_receipts(ctx, request, hmacs, deleted, agents, started, stores, checked, complete)
        metrics.SESSIONS_DELETED.labels(PURGE_USERS).inc(sum(deleted.values()))
        metrics.RUNS_DELETED.labels(PURGE_USERS).inc(sum(a.runs_deleted for a in agents.values()))
    would = sum_would(agents) if request.dry_run else None
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
        stores=stores or None,
        schemas_checked=checked,
        started_at=started,
        finished_at=now_iso(),
        requested_by=request.requested_by,
        **outcome(complete),
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
    stores: dict[str, int],
    checked: int,
    complete: Completeness,
) -> dict[str, int]:
    """One receipt per user, in one transaction with the deletion of the users' export files."""
    dsn = ctx.settings.dsn
    stores = dict(stores)
    shared = {
        "job_id": ctx.job_id,
        "kind": PURGE_USERS,
        "target": request.target,
        "agents": {label: a.schema_name for label, a in agents.items()},  # the same for every user
        "started_at": datetime.fromisoformat(started),
        "finished_at": datetime.now(UTC),
        "requested_by": request.requested_by,
        "scope": receipt_scope(request.scope, request.memories),
        "stores": stores,  # for all the users of the job together
        "origin": "request",
        "complete": complete.complete,
        "remains": complete.remains,
        "exemptions": complete.exemptions,
    }
    sessions = {hmacs[u]: deleted[u] for u in request.user_ids}
    async with ctx.databases.connect(dsn) as conn:
        await migrations.ensure(conn, dsn.redacted)
        async with conn.transaction():
            if files := await export_lifetime.remove_for_people(conn, list(sessions), by=ctx.job_id):
                stores["export files"] = files
            await receipts.record_many(
                conn, shared=shared, sessions=sessions, schemas_checked=checked, enqueued_at=ctx.enqueued_at
            )
    return stores
