"""Export-then-erase: the file is checked against its authenticated manifest and the manifest's
counts against the database *now*; only then are exactly the exported sessions *as exported*
deleted — owner-checked, and only while unchanged since — and none of the window must remain. A
session that changed after the export is left alone and fails the job: what was not handed over is
not erased."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sessionctl import export_files, metrics, store
from sessionctl.errors import ExportMismatch
from sessionctl.jobs.common import accumulate, media_stores, settle_media, write_receipt
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.holds import refuse_held
from sessionctl.jobs.models import EXPORT_SESSIONS, AgentPurgeResult, ExportRequest
from sessionctl.jobs.person import completeness
from sessionctl.jobs.targets import Target
from sessionctl.logs import get_logger
from sessionctl.privacy import user_hmac

log = get_logger("sessionctl.export")


def _id_chunks(path: Path, size: int) -> Iterator[list[tuple[str, str, int | None]]]:
    """(agent label, session id, last-change stamp) of the export's lines, ``size`` at a time (the
    stamp is ``None`` for a session with neither an update nor a creation time)."""
    with export_files.open_records(path) as records:
        chunk: list[tuple[str, str, int | None]] = []
        for rec in records:
            if "session" not in rec:
                continue  # a record of another store (scope "all"): not erased by export-then-erase
            sess = rec["session"]
            stamp = sess.get("updated_at") if sess.get("updated_at") is not None else sess.get("created_at")
            chunk.append((rec["agent"], sess["session_id"], None if stamp is None else int(stamp)))
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


async def _aid_chunks(path: Path, size: int) -> Any:
    """The chunks of :func:`_id_chunks`, each read in a thread."""
    gen = _id_chunks(path, size)
    while (chunk := await asyncio.to_thread(next, gen, None)) is not None:
        yield chunk


async def verify(
    ctx: JobContext, targets: list[Target], window: store.Window, data: Path, manifest: dict[str, Any]
) -> None:
    """The file is what the (authenticated) manifest says, and the manifest is what the database
    holds now."""
    try:
        await asyncio.to_thread(export_files.verify_file, ctx.hash_key, data, manifest)
    except ExportMismatch as exc:
        raise ExportMismatch(f"{exc}; nothing erased") from None
    lines: dict[str, int] = {}
    async for chunk in _aid_chunks(data, ctx.settings.batch_size):
        for agent, _, _ in chunk:
            lines[agent] = lines.get(agent, 0) + 1
    expected = {k: v for k, v in manifest["counts"].items() if v}
    if lines != expected:
        raise ExportMismatch(f"export {data.name!r}: line counts do not match its manifest; nothing erased")
    for t in targets:
        async with ctx.databases.connect(t.dsn) as conn:
            now = await store.count_window(conn, t.layout, window)
        if now != manifest["counts"].get(t.label, 0):
            raise ExportMismatch(
                f"agent {t.label}: the database holds {now} matching sessions, the export "
                f"{manifest['counts'].get(t.label, 0)}; nothing erased — request export-then-erase again "
                "(with a new --out name) to hand over and erase the current set"
            )


async def erase_exported(
    ctx: JobContext,
    req: ExportRequest,
    targets: list[Target],
    window: store.Window,
    data: Path,
    blog: Any,
    started: str,
) -> dict[str, Any]:
    """Delete exactly the exported sessions *as exported* — owner-checked, and only if unchanged since
    (same last-change stamp) — then prove none in the window remain. A session that changed after
    the export (the user kept chatting) is left alone and fails the job: what was not handed over
    is not erased."""
    assert req.user_id is not None
    await refuse_held(ctx, [req.user_id])
    by_label = {t.label: t for t in targets}
    results = {t.label: AgentPurgeResult(agent_id=t.label, schema_name=t.layout.schema) for t in targets}
    batch: dict[str, list[tuple[str, int | None]]] = {}

    async def flush(label: str) -> None:
        pairs = batch.pop(label, [])
        if pairs:
            t = by_label[label]
            async with ctx.databases.connect(t.dsn) as conn:
                outcome = await store.delete_unchanged_sessions(conn, t.layout, req.user_id or "", pairs)
                accumulate(results[label], outcome)

    async for chunk in _aid_chunks(data, ctx.settings.batch_size):
        for label, sid, stamp in chunk:
            batch.setdefault(label, []).append((sid, stamp))
            if len(batch[label]) >= ctx.settings.batch_size:
                await flush(label)
    for label in list(batch):
        await flush(label)
    for t in targets:
        async with ctx.databases.connect(t.dsn) as conn:
            results[t.label].remaining = await store.count_window(conn, t.layout, window)
        if results[t.label].remaining:
            raise ExportMismatch(
                f"agent {t.label}: {results[t.label].remaining} sessions arrived or changed after the export and "
                "were not erased (they were not handed over); request export-then-erase again with a new --out"
            )
    total = sum(r.sessions_deleted for r in results.values())
    media = await settle_media(ctx, [t.dsn for t in targets], [user_hmac(ctx.hash_key, req.user_id)])
    complete = await completeness(ctx, [req.user_id])
    await write_receipt(
        ctx,
        kind=EXPORT_SESSIONS + "+erase",
        user_hmac=user_hmac(ctx.hash_key, req.user_id),
        target=req.target,
        agents=results,
        started=started,
        requested_by=req.requested_by,
        stores=media_stores(ctx, media) or None,
        completeness=complete,
        keep_export=ctx.job_id,  # the handover itself: what the person (or the operator) asked for
    )
    metrics.SESSIONS_DELETED.labels(EXPORT_SESSIONS).inc(total)
    metrics.RUNS_DELETED.labels(EXPORT_SESSIONS).inc(sum(r.runs_deleted for r in results.values()))
    blog.info("export.erased", sessions_deleted=total)
    return {
        "sessions_deleted": total,
        "runs_deleted": sum(r.runs_deleted for r in results.values()),
        "remaining": 0,
        "agents": {k: v.model_dump(mode="json") for k, v in results.items()},
        "complete": complete.complete,
        "remains": complete.remains,
    }
