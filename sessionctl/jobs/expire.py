"""``purge_expired_sessions``: apply the retention policy to every agent schema (or one).

Per agent and per (cutoff, session types) bucket of its rule:

1. note the ids of sessions last updated (or created) before the cutoff — one scan;
2. with ``export_before_delete``, write them to ``EXPORT_DIR`` first (atomically, with a manifest)
   and only then delete;
3. delete in batches walked by primary key, each batch one statement that re-checks the cutoff
   (a session updated meanwhile is kept) and takes runs, transcripts and tool results with it;
   pause between batches; stop when the run's time budget is spent (status ``partial``: the next
   run continues where this one stopped — a repeated run is harmless, it only finds less);
4. count what is left past the cutoff with our own SQL.

People under a legal hold (``sessionctl hold place``) are read once at the start and left out of
every step — the snapshot (so of an export too), each batch's re-check, the counts, the items a
rule names and the declared stores: a hold preserves everything of the person, even from routine
retention.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import asyncpg

from sessionctl import export_files, metrics, store
from sessionctl.errors import InvalidRequest
from sessionctl.jobs import preflight
from sessionctl.jobs.common import now_iso, settle_media
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.expire_items import check_stores, clean_items, clean_stores, item_needs
from sessionctl.jobs.export import export_records
from sessionctl.jobs.holds import held_user_ids
from sessionctl.jobs.models import PURGE_EXPIRED_SESSIONS, RetentionRequest, RetentionResult
from sessionctl.jobs.targets import Target, resolve_targets
from sessionctl.logs import get_logger
from sessionctl.retention_policy import Bucket, buckets, load_policy
from sessionctl.store import access

log = get_logger("sessionctl.retention")


async def purge_expired_sessions(ctx: JobContext, req: RetentionRequest) -> RetentionResult:
    started = now_iso()
    policy = load_policy(ctx.settings.retention_file)
    now = int(time.time())
    as_of = req.as_of if req.as_of is not None else now
    if as_of > now + 60:
        raise InvalidRequest("retention as_of is in the future: it would delete sessions before they are due")
    blog = log.bind(job_id=ctx.job_id, job_try=ctx.job_try, as_of=as_of)
    blog.info("retention.start", target=req.target, dry_run=req.dry_run, tick=req.tick)
    deadline = time.monotonic() + ctx.settings.retention_budget
    agents: dict[str, dict[str, Any]] = {}
    partial = False
    targets = await resolve_targets(ctx, req.agent_id, req.agent_id is None)
    governed = [t for t in targets if policy.rule_for(t.label, t.layout.schema, ctx.settings.schema_template)]
    items = {i for t in governed for i in _rule(policy, ctx, t).items}
    every = req.agent_id is None  # declared stores belong to no one agent: a run at every agent cleans them
    await check_stores(ctx, policy if every else None)  # before anything is deleted
    keep = await held_user_ids(ctx)  # once: a hold placed during the run is honoured by the next one
    await preflight.check(
        ctx,
        governed,
        lambda layout, _: [
            *access.erasure_needs(layout, dry_run=req.dry_run),
            *item_needs(layout, items, dry_run=req.dry_run),
        ],
        writes=not req.dry_run,
        receipt=False,
        what="this retention run",
        nothing="Nothing was deleted",
    )
    for target in targets:
        match = policy.rule_for(target.label, target.layout.schema, ctx.settings.schema_template)
        if match is None:
            agents[target.label] = {"schema": target.layout.schema, "policy": None, "deleted": 0, "remaining": 0}
            continue
        agents[target.label], spent = await _clean_target(ctx, req, target, match, as_of, deadline, partial, blog, keep)
        partial = partial or spent
    stores = await clean_stores(ctx, policy, as_of, dry_run=req.dry_run, keep=keep) if every else {}
    deleted = sum(a["deleted"] for a in agents.values())
    remaining = sum(a["remaining"] for a in agents.values()) + _left(agents, stores)
    media = 0 if req.dry_run else await settle_media(ctx, [t.dsn for t in governed])
    status = "dry_run" if req.dry_run else ("partial" if partial or remaining else "succeeded")
    metrics.SESSIONS_DELETED.labels(PURGE_EXPIRED_SESSIONS).inc(deleted)
    blog.info("retention.done", status=status, sessions_deleted=deleted, remaining=remaining, held=len(keep))
    return RetentionResult(
        job_id=ctx.job_id,
        status=status,  # type: ignore[arg-type]
        dry_run=req.dry_run,
        as_of=as_of,
        target=req.target,
        sessions_deleted=deleted,
        remaining=remaining,
        held=len(keep),
        media_deleted=media,
        agents=agents,
        stores=stores or None,
        started_at=started,
        finished_at=now_iso(),
        requested_by=req.requested_by,
    )


async def _clean_target(
    ctx: JobContext,
    req: RetentionRequest,
    target: Target,
    match: tuple[str, Any],
    as_of: int,
    deadline: float,
    partial: bool,
    blog: Any,
    keep: list[str],
) -> tuple[dict[str, Any], bool]:
    """One agent schema under its rule: each bucket of sessions, then the items the rule names —
    none of the people of ``keep`` (under a legal hold); its report, and whether the time budget
    ran out."""
    entry, rule = match
    report: dict[str, Any] = {"schema": target.layout.schema, "policy": entry, "buckets": []}
    for bucket in buckets(rule, as_of):
        if partial and not req.dry_run:
            report["buckets"].append({**bucket.describe(), "skipped": "time budget spent", "remaining": 0})
            continue
        b = await _clean_bucket(ctx, req, target, bucket, rule.export_before_delete, as_of, deadline, blog, keep)
        partial = partial or b.pop("partial", False)
        report["buckets"].append(b)
    report["deleted"] = sum(b.get("deleted", 0) for b in report["buckets"])
    report["remaining"] = sum(b["remaining"] for b in report["buckets"])
    if rule.items:
        report["items"] = await clean_items(ctx, target, rule, as_of, dry_run=req.dry_run, deadline=deadline, keep=keep)
    return report, partial


def _rule(policy: Any, ctx: JobContext, target: Target) -> Any:
    match = policy.rule_for(target.label, target.layout.schema, ctx.settings.schema_template)
    assert match is not None
    return match[1]


def _left(agents: dict[str, dict[str, Any]], stores: dict[str, dict[str, int]]) -> int:
    """What remains past the cutoffs beyond sessions: the items of each schema, each store's."""
    items = sum(int(i["remaining"]) for a in agents.values() for i in a.get("items", {}).values())
    return items + sum(s["remaining"] for s in stores.values())


async def _clean_bucket(
    ctx: JobContext,
    req: RetentionRequest,
    target: Target,
    bucket: Bucket,
    export_first: bool,
    as_of: int,
    deadline: float,
    blog: Any,
    keep: list[str],
) -> dict[str, Any]:
    """One bucket's sessions past its cutoff, none of the people of ``keep``: counted (a dry run),
    or noted, exported first if asked, deleted in batches and counted again."""
    layout = target.layout
    types = list(bucket.types) if bucket.types else None
    exclude = list(bucket.exclude) if bucket.exclude else None
    out: dict[str, Any] = bucket.describe()
    async with ctx.databases.connect(target.dsn) as conn:
        if req.dry_run:
            out["would_delete"] = await store.count_expired(conn, layout, bucket.cutoff, types, exclude, keep)
            out["remaining"] = out["would_delete"]
            return out
        found = await store.snapshot_expired(conn, layout, bucket.cutoff, types, exclude, keep)
        if export_first and found:
            out["export"] = await _export_snapshot(conn, ctx, target, bucket, as_of)
        deleted, after = 0, None
        pause = ctx.settings.retention_pause_ms / 1000
        while True:
            ids = await store.next_snapshot_ids(conn, after, ctx.settings.batch_size)
            if not ids:
                break
            if time.monotonic() > deadline:  # work left and no time: the next run continues
                out["partial"] = True
                blog.warning("retention.budget_spent", agent=target.label, deleted=deleted)
                break
            after = ids[-1]
            t = time.monotonic()
            outcome = await store.delete_expired_sessions(conn, layout, ids, bucket.cutoff, types, exclude, keep)
            metrics.BATCH_SECONDS.labels(PURGE_EXPIRED_SESSIONS).observe(time.monotonic() - t)
            metrics.RUNS_DELETED.labels(PURGE_EXPIRED_SESSIONS).inc(outcome.counts.runs)
            deleted += outcome.counts.sessions
            await ctx.progress.update(processed=deleted, total=found, agent=target.label)
            if pause:
                await asyncio.sleep(pause)  # leave room for the agents' own traffic
        out["deleted"] = deleted
        out["remaining"] = await store.count_expired(conn, layout, bucket.cutoff, types, exclude, keep)  # the proof
    blog.info("retention.bucket", agent=target.label, cutoff=bucket.cutoff, deleted=deleted, remaining=out["remaining"])
    return out


async def _export_snapshot(
    conn: asyncpg.Connection, ctx: JobContext, target: Target, bucket: Bucket, as_of: int
) -> dict[str, Any]:
    """Write the snapshot's sessions to EXPORT_DIR (published before anything is deleted)."""
    directory = export_files.ensure_directory(Path(ctx.settings.export_dir))
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in target.layout.schema)
    kind = "-".join(bucket.types or ()) or "all"
    base = f"retention-{safe}-{kind}-{as_of}"
    name = base + ".jsonl.gz"
    n = 1
    while (directory / name).exists() or (directory / (name + export_files.MANIFEST_SUFFIX)).exists():
        n += 1  # a retried run: never overwrite, the earlier file stays valid
        name = f"{base}-{n}.jsonl.gz"
    tag = hashlib.sha256(f"{ctx.job_id}{name}".encode()).hexdigest()[:12]
    writer = export_files.AtomicExport(directory, name, "gz", tag)
    count, after = 0, None
    try:
        while ids := await store.next_snapshot_ids(conn, after, ctx.settings.export_page_size):
            after = ids[-1]
            rows = await store.sessions_by_ids(conn, target.layout, ids)
            runs = await store.runs_for_sessions(conn, target.layout, ids)
            await asyncio.to_thread(writer.write_records, export_records(target, rows, runs))
            count += len(rows)
        manifest = {
            "format": export_files.FORMAT,
            "file": name,
            "compress": "gz",
            "job_id": ctx.job_id,
            "user_hmac": None,
            "target": target.label,
            "window": {"until": bucket.cutoff, "by": "updated", "types": bucket.types, "exclude_types": bucket.exclude},
            "counts": {target.label: count},
            "schemas": {target.label: target.layout.schema},
            "sessions": count,
            "written_at": now_iso(),
        }
        written = await asyncio.to_thread(writer.commit, manifest, ctx.hash_key)
    except BaseException as exc:
        writer.abort()
        if isinstance(exc, OSError):
            raise export_files.storage_error(exc, directory) from None
        raise
    return {"path": str(written.path), "sessions": count, "sha256": written.sha256}
