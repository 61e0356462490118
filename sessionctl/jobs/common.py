"""What the jobs share: the time as results write it, adding a batch to an agent's counts, and
the durable receipt of an erasure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sessionctl import export_lifetime, store
from sessionctl.errors import MediaDeleteFailed
from sessionctl.identifiers import Dsn
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.models import AgentPurgeResult, Completeness
from sessionctl.store import migrations, receipts

MEDIA_ATTEMPTS = 3  # in-job attempts at the keys a storage refused, before the job is retried


def now_iso() -> str:
    """Now, UTC, ISO 8601 with milliseconds (``started_at``/``finished_at`` of every result)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


async def write_receipt(
    ctx: JobContext,
    *,
    kind: str,
    user_hmac: str,
    target: str,
    agents: dict[str, AgentPurgeResult],
    started: str,
    requested_by: str | None,
    scope: str = "sessions",
    stores: dict[str, int] | None = None,
    origin: str = "request",
    schemas_checked: int | None = None,
    completeness: Completeness | None = None,
    keep_export: str | None = None,
) -> dict[str, int]:
    """Append the durable receipt of an erasure, in one transaction with the deletion of the person's
    export files (all but ``keep_export``'s: export-then-erase's own handover; counted in the
    receipt's stores): once the receipt is written, no export of the person exists or is published
    (:mod:`sessionctl.export_lifetime`)."""
    totals: dict[str, int] = {}
    per_agent: dict[str, Any] = {}
    for label, a in agents.items():
        counts = {
            "sessions": a.sessions_deleted,
            "runs": a.runs_deleted,
            "transcripts": a.transcripts_deleted,
            "tool_results": a.tool_results_deleted,
            "tool_result_payloads": a.tool_result_payloads_deleted,
            "memories": a.memories_deleted,
        }
        per_agent[label] = {"schema": a.schema_name, **counts, "late_sessions": a.late_sessions}
        if a.tables:
            per_agent[label]["tables"] = a.tables
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    if schemas_checked is not None:
        totals["schemas_checked"] = schemas_checked
    dsn = ctx.settings.dsn
    stores = dict(stores or {})
    async with ctx.databases.connect(dsn) as conn:
        await migrations.ensure(conn, dsn.redacted)
        async with conn.transaction():
            if files := await export_lifetime.remove_for_people(conn, [user_hmac], by=ctx.job_id, keep_job=keep_export):
                stores["export files"] = files
            await receipts.record(
                conn,
                job_id=ctx.job_id,
                kind=kind,
                user_hmac=user_hmac,
                target=target,
                agents=per_agent,
                counts=totals,
                late_sessions=sum(a.late_sessions for a in agents.values()),
                started_at=datetime.fromisoformat(started),
                finished_at=datetime.now(UTC),
                requested_by=requested_by,
                enqueued_at=ctx.enqueued_at,
                scope=scope,
                stores=stores,
                origin=origin,
                complete=None if completeness is None else completeness.complete,
                remains=None if completeness is None else completeness.remains,
                exemptions=None if completeness is None else completeness.exemptions,
            )
    return stores


async def settle_media(ctx: JobContext, dsns: Iterable[Dsn], hmacs: Iterable[str] = ()) -> int:
    """Before an erasure reports success (and writes its receipt): every media object its batches
    noted — in this try or an earlier one — and every one still noted for its users (``hmacs``)
    is gone. Objects deleted by this try; raises the retryable :class:`MediaDeleteFailed` while a
    storage keeps refusing (the keys stay noted)."""
    sink = ctx.media
    if sink is None or not sink.storages:
        # Keys are only ever noted by a worker given media storages (without one, a reference
        # rolls its batch back): nothing to settle, and no round trip per job to find that out.
        return 0
    unique = {d.target: d for d in dsns}
    users = list(hmacs)
    left = 0
    for attempt in range(MEDIA_ATTEMPTS):
        left = 0
        for dsn in unique.values():
            async with ctx.databases.connect(dsn) as conn:
                left += await sink.retry_pending(conn, users)
        if not left:
            return sink.deleted
        await asyncio.sleep(0.2 * 2**attempt)
    raise MediaDeleteFailed(
        f"{left} media objects of the erased sessions could not be deleted (the storage refused or is"
        " unreachable); they stay noted in sessionctl.media_pending and are retried — the erasure is not done"
    )


def media_stores(ctx: JobContext, deleted: int) -> dict[str, int]:
    """What a result and a receipt say of the media: objects deleted, and objects the erased runs
    referenced but left (not the erased sessions' own: another session's key, or still referenced)."""
    out = {"media objects": deleted} if deleted else {}
    if ctx.media is not None and ctx.media.left:
        out["media objects left (not the session's own)"] = ctx.media.left
    return out


def accumulate(res: AgentPurgeResult, outcome: store.BatchOutcome) -> None:
    c = outcome.counts
    res.batches += 1
    res.sessions_deleted += c.sessions
    res.runs_deleted += c.runs
    res.transcripts_deleted += c.transcripts
    res.tool_results_deleted += c.tool_results
    res.tool_result_payloads_deleted += c.tool_result_payloads
    res.tool_results_without_payload += outcome.tool_results_without_payload


def outcome(complete: Completeness | None) -> dict[str, Any]:
    """An erasure result's fields about the person (none for a dry run)."""
    if complete is None:
        return {"complete": None, "remains": None, "exemptions": None}
    return {"complete": complete.complete, "remains": complete.remains, "exemptions": complete.exemptions or None}
