"""``export_sessions``: stream sessions to a JSON Lines file, atomically, with a manifest — and, for
export-then-erase, erase them only once the export verifies.

The procedure:

1. resolve the target file in ``EXPORT_DIR`` (a plain name; symlinks and '..' refused). If this
   very job already published it (a retry after a crash), keep it; if anyone else did, refuse;
2. per agent schema, read keyset pages (``created_at, session_id``) of the window, two at once
   (``sessionctl/jobs/readahead.py``), attach the runs wherever they live, and write each session as one
   line, in order — memory stays bounded by ``SESSIONCTL_EXPORT_READERS`` + 2 pages;
3. fsync, publish manifest then data under their final names (never overwriting), report progress;
4. export-then-erase: re-read the file, check its sha256 and per-agent line counts against the
   manifest and the manifest's counts against the database *now*; only then delete exactly the
   exported sessions (owner-checked, batched) and prove with our own count that none remain.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sessionctl import export_files, export_lifetime, metrics, store
from sessionctl.agents import merge_runs
from sessionctl.errors import InvalidRequest
from sessionctl.jobs import preflight
from sessionctl.jobs.common import now_iso
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.export_erase import erase_exported, verify
from sessionctl.jobs.export_stores import envelope, person_records
from sessionctl.jobs.models import ExportRequest, ExportResult
from sessionctl.jobs.readahead import PageReader
from sessionctl.jobs.targets import Target, resolve_targets
from sessionctl.logs import get_logger
from sessionctl.privacy import user_hmac
from sessionctl.store import access

log = get_logger("sessionctl.export")


def _window(req: ExportRequest) -> store.Window:
    return store.Window(user_id=req.user_id, since=req.since, until=req.until, by=req.by)


async def export_sessions(ctx: JobContext, req: ExportRequest) -> ExportResult:
    started = now_iso()
    hmac = user_hmac(ctx.hash_key, req.user_id) if req.user_id is not None else None
    blog = log.bind(job_id=ctx.job_id, user_hmac=hmac, job_try=ctx.job_try)
    t0 = time.monotonic()
    try:
        directory = export_files.ensure_directory(Path(ctx.settings.export_dir))
    except OSError as exc:
        raise export_files.storage_error(exc, Path(ctx.settings.export_dir).absolute()) from None
    data_path, manifest_path = export_files.target_paths(directory, req.out)
    targets = await resolve_targets(ctx, req.agent_id, req.all_agents)
    everything = req.scope == "all"
    await preflight.check(
        ctx,
        targets,
        lambda layout, tables: access.export_needs(layout, then_erase=req.then_purge, user_tables=tables),
        writes=req.then_purge,
        receipt=req.then_purge,
        user_tables=everything,
        shared=everything,
        what="export-then-erase" if req.then_purge else "this export",
        nothing="Nothing was exported or deleted" if req.then_purge else "Nothing was exported",
        registry=True,
    )
    window = _window(req)
    blog.info("export.start", target=req.target, out=req.out, compress=req.compress, then_purge=req.then_purge)

    manifest = _published_by_this_job(data_path, manifest_path, ctx.job_id, ctx.hash_key)
    if manifest is None:
        if data_path.exists() or manifest_path.exists():
            raise InvalidRequest(f"export {req.out!r} already exists in EXPORT_DIR: choose another --out name")
        manifest = await _write(ctx, req, targets, window, directory, hmac, started, blog)
    else:
        blog.info("export.reuse", out=req.out)  # a retry after the file was published

    purge: dict[str, Any] | None = None
    if req.then_purge:
        await verify(ctx, targets, window, data_path, manifest)
        purge = await erase_exported(ctx, req, targets, window, data_path, blog, started)

    result = ExportResult(
        job_id=ctx.job_id,
        status="succeeded",
        path=str(data_path),
        manifest_path=str(manifest_path),
        format=export_files.FORMAT,
        sessions=manifest["sessions"],
        agents=manifest["counts"],
        bytes=manifest["bytes"],
        sha256=manifest["sha256"],
        compress=manifest["compress"],
        user_hmac=hmac,
        window=manifest["window"],
        started_at=started,
        finished_at=now_iso(),
        requested_by=req.requested_by,
        purge=purge,
        scope=req.scope,
        stores=manifest.get("stores"),
        request_id=req.request_id,
    )
    blog.info(
        "export.done",
        sessions=result.sessions,
        bytes=result.bytes,
        erased=None if purge is None else purge["sessions_deleted"],
        elapsed_ms=round((time.monotonic() - t0) * 1000, 1),
    )
    return result


def _published_by_this_job(data: Path, manifest_path: Path, job_id: str, key: bytes) -> dict[str, Any] | None:
    """The manifest, if this job already published the export intact; cleans up a half publish."""
    if not manifest_path.exists():
        return None
    manifest = export_files.read_manifest(data)
    if manifest is None or manifest.get("job_id") != job_id:
        return None
    if not data.exists():  # died between publishing the manifest and the data: start again
        manifest_path.unlink()
        return None
    export_files.verify_file(key, data, manifest)
    return manifest


async def _write(
    ctx: JobContext,
    req: ExportRequest,
    targets: list[Target],
    window: store.Window,
    directory: Path,
    hmac: str | None,
    started: str,
    blog: Any,
) -> dict[str, Any]:
    tag = hashlib.sha256(ctx.job_id.encode()).hexdigest()[:12]
    try:
        writer = export_files.AtomicExport(directory, req.out, req.compress, tag)
    except OSError as exc:
        raise export_files.storage_error(exc, directory) from None
    counts: dict[str, int] = {}
    schemas: dict[str, str] = {}
    processed = read_ahead = 0
    # A page is written (and compressed) in a thread while the next ones are read (up to
    # SESSIONCTL_EXPORT_READERS at once, sessionctl/jobs/readahead.py): readers + 2 pages in memory at most.
    thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sessionctl-export")
    writing: concurrent.futures.Future[None] | None = None
    try:
        totals: dict[str, int] = {}
        for t in targets:
            async with ctx.databases.connect(t.dsn) as conn:
                totals[t.label] = await store.count_window(conn, t.layout, window)
        total = sum(totals.values())
        await ctx.progress.update(processed=0, total=total, agent=None, force=True)
        for t in targets:
            counts[t.label] = 0
            schemas[t.label] = t.layout.schema
            pages = PageReader(
                ctx.databases,
                t,
                window,
                envelope=envelope(t),
                limit=ctx.settings.export_page_size,
                readers=ctx.settings.export_readers,
                render=_lines,
            )
            async with pages:
                while (lines := await pages.next()) is not None:
                    if writing is not None:
                        await asyncio.wrap_future(writing)
                        writing = None
                    writing = thread.submit(writer.write_lines, lines)
                    counts[t.label] += len(lines)
                    processed += len(lines)
                    metrics.SESSIONS_EXPORTED.inc(len(lines))
                    await ctx.progress.update(processed=processed, total=total, agent=t.label)
            read_ahead += pages.read_ahead
        if writing is not None:
            await asyncio.wrap_future(writing)
            writing = None
        stores = {f"{schemas[label]}.agno_sessions": n for label, n in counts.items()}
        if req.scope == "all" and req.user_id is not None:
            stores.update(await person_records(ctx, targets, req.user_id, writer, everything=req.all_agents))
        manifest = {
            "format": export_files.FORMAT,
            "file": req.out,
            "compress": req.compress,
            "job_id": ctx.job_id,
            "user_hmac": hmac,
            "target": req.target,
            "window": {"since": req.since, "until": req.until, "by": req.by},
            "counts": counts,
            "schemas": schemas,
            "sessions": processed,
            "started_at": started,
            "written_at": now_iso(),
            "requested_by": req.requested_by,
            "scope": req.scope,
            "stores": stores,
        }

        def commit() -> export_files.Written:
            try:
                return writer.commit(manifest, ctx.hash_key)
            except OSError as exc:  # said here: inside the connection below an OSError is the database's
                raise export_files.storage_error(exc, directory) from None

        async with ctx.databases.connect(ctx.settings.dsn) as conn:
            written = await export_lifetime.publish(
                conn,
                commit,
                job_id=ctx.job_id,
                path=writer.final,
                user_hmac=hmac,
                request_id=req.request_id,
                started_at=datetime.fromisoformat(started),
                ttl_s=ctx.settings.export_ttl if req.request_id is not None else None,
            )
    except BaseException as exc:
        # Let the thread finish with the file before it is removed (even when this job is being
        # cancelled: the thread itself cannot be).
        await asyncio.to_thread(thread.shutdown, wait=True)
        writer.abort()
        if isinstance(exc, OSError):  # a full disk, a read-only mount: said as such, with where
            raise export_files.storage_error(exc, directory) from None
        raise
    finally:
        thread.shutdown(wait=False)
    await ctx.progress.update(processed=processed, total=processed, agent=None, force=True)
    blog.info("export.written", sessions=processed, bytes=written.size, pages_read_ahead=read_ahead)
    return written.manifest


def export_records(
    target: Target, rows: list[dict[str, Any]], runs: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Session rows as ``sessionctl-export/1`` records: runs attached wherever they live (Agno's merge)."""
    records = []
    for row in rows:
        row["runs"] = merge_runs(runs.get(row["session_id"], []), row.get("runs"))
        records.append({**envelope(target), "session": row})
    return records


async def _lines(conn: Any, target: Target, rows: list[Any]) -> list[bytes]:
    """The page's lines as Postgres rendered them; the few it left to Agno's merge (runs split
    between the runs table and a 2.x blob) rendered here, in their place. Read in the page's
    snapshot (the caller's transaction); a session gone all the same is left out."""
    left = [r["session_id"] for r in rows if r["line"] is None]
    merged: dict[str, bytes] = {}
    if left:
        full = await store.sessions_by_ids(conn, target.layout, left)
        runs = await store.runs_for_sessions(conn, target.layout, left)
        for rec in export_records(target, full, runs):
            merged[rec["session"]["session_id"]] = export_files.dumps_line(rec)
    lines = []
    for r in rows:
        line = r["line"] if r["line"] is not None else merged.get(r["session_id"])
        if line is not None:
            lines.append(line)
    return lines
