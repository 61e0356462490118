"""``purge_user_sessions``: one user's erasure at one agent or at every agent, from the preflight to
the receipt. The purge of one schema, which a bulk erasure (``sessionctl/jobs/bulk.py``) shares, is
``sessionctl/jobs/schema_purge.py`` (a big user's index range walked in slices:
``sessionctl/jobs/walk.py``); an every-agent erasure's counted rounds, ``sessionctl/jobs/fleet.py``.

Before anything is deleted, the preflight (``sessionctl/jobs/preflight.py``) checks every target: the role
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
(``sessionctl/media_storages.py``: the objects go after the commit, and must all be gone before the
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

from sessionctl import metrics
from sessionctl.errors import ErasureIncomplete
from sessionctl.jobs.common import media_stores, now_iso, outcome, settle_media, write_receipt
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.declared import declared_stores
from sessionctl.jobs.fleet import purge_fleet
from sessionctl.jobs.holds import refuse_held
from sessionctl.jobs.models import PURGE_USER_SESSIONS, AgentPurgeResult, Completeness, PurgeRequest, PurgeResult
from sessionctl.jobs.person import completeness
from sessionctl.jobs.schema_purge import purge_schema
from sessionctl.jobs.shared import erase_shared_stores
from sessionctl.jobs.spec import Spec, check_access
from sessionctl.jobs.targets import Target, resolve_targets
from sessionctl.logs import get_logger
from sessionctl.privacy import user_hmac

log = get_logger("sessionctl.purge")


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
    if not request.dry_run:  # after the access check (which names a missing grant), before any delete
        await refuse_held(ctx, [request.user_id])
    erased = await erase_targets(ctx, spec, targets, blog)
    agents, checked, stores = erased.agents, erased.checked, erased.stores

    total_remaining = sum(a.remaining for a in agents.values())
    if total_remaining and not request.dry_run:  # unreachable: purge_schema raises first
        raise ErasureIncomplete(f"{total_remaining} sessions of the user remain")
    would = sum_would(agents) if request.dry_run else None
    complete = None
    if not request.dry_run:
        stores.update(media_stores(ctx, await settle_media(ctx, [t.dsn for t in targets], [hmac])))
        complete = await completeness(ctx, [request.user_id], proven=spec.proven, declared=erased.declared)
        complete.exemptions = erased.exemptions
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
        **outcome(complete),
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


@dataclass(slots=True)
class Erased:
    """What an erasure did before its receipt: per agent, per user, the schemas checked, the stores
    beyond the schemas (items per store), and what is left in the declared stores (recounted)."""

    agents: dict[str, AgentPurgeResult]
    per_user: dict[str, dict[str, int]]
    checked: int
    stores: dict[str, int]
    declared: dict[str, int] = field(default_factory=dict)
    exemptions: dict[str, str] = field(default_factory=dict)


async def erase_targets(ctx: JobContext, spec: Spec, targets: list[Target], bl: Any) -> Erased:
    """Erase the users from the targets, then from the stores beyond them. An erasure of scope
    ``all`` at every agent also covers the stores the deployment file declares
    (:mod:`sessionctl.jobs.declared`): all opened and checked before the first delete, their event
    streams erased first (found by the runs, which go with the sessions), the rest after."""
    everything = spec.scope == "all" and spec.shared_files
    async with declared_stores(ctx, spec.users, everything=everything) as declared:
        first: dict[str, int] = {}
        if declared is not None:
            await declared.collect_runs(ctx, targets)
            first = await declared.erase(by_runs=True, dry_run=spec.dry_run)
        agents, per_user, checked = await purge_targets(ctx, spec, targets, bl)
        stores = {**first, **await shared_stores(ctx, spec, targets, bl)}
        if declared is None:
            return Erased(agents, per_user, checked, stores)
        stores.update(await declared.erase(by_runs=False, dry_run=spec.dry_run))
        bl.info("purge.declared_stores", stores=len(declared.backends), items=sum(declared.erased.values()))
        left = {} if spec.dry_run else await declared.remains()
        notes = {b.label: b.exemption for b in declared.backends if b.exemption}
        return Erased(agents, per_user, checked, stores, left, notes)


async def shared_stores(ctx: JobContext, spec: Spec, targets: list[Target], bl: Any) -> dict[str, int]:
    """An all-agents erasure of scope "all": the users' knowledge vectors and login records in every
    database (sessionctl/jobs/shared.py); nothing for any other purge."""
    if spec.scope != "all" or not spec.shared_files:
        return {}
    return await erase_shared_stores(ctx, spec.users, targets, dry_run=spec.dry_run, bl=bl, proven=spec.proven)


async def purge_targets(
    ctx: JobContext, spec: Spec, targets: list[Target], bl: Any
) -> tuple[dict[str, AgentPurgeResult], dict[str, dict[str, int]], int]:
    """Purge the users from every target: the results by agent label, the sessions deleted per
    (raw) user id by agent label, and how many agent schemas were checked. An erasure at every agent
    of scope ``sessions`` counts first and purges only the schemas that hold the users
    (:mod:`sessionctl.jobs.fleet`); scope ``all`` (a user's rows may be in any of a schema's tables)
    and a single agent take every schema in turn."""
    if spec.shared_files and spec.scope != "all":
        return await purge_fleet(ctx, spec, targets, bl)
    agents: dict[str, AgentPurgeResult] = {}
    per_user: dict[str, dict[str, int]] = {}
    for t in targets:
        agents[t.label], per_user[t.label] = await purge_schema(ctx, spec, t, bl.bind(agent=t.label))
    return agents, per_user, len(targets)


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
