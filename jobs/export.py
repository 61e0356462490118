"""``export_sessions``: stream sessions to a JSON Lines file, atomically, with a manifest — and, for
export-then-erase, erase them only once the export verifies.

The procedure:

1. resolve the target file in ``EXPORT_DIR`` (a plain name; symlinks and '..' refused). If this
   very job already published it (a retry after a crash), keep it; if anyone else did, refuse;
2. per agent schema, read keyset pages (``created_at, session_id``) of the window, two at once
   (``jobs/readahead.py``), attach the runs wherever they live, and write each session as one
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
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from jobs import preflight
from jobs.common import accumulate, media_stores, now_iso, settle_media, write_receipt
from jobs.context import JobContext
from jobs.models import EXPORT_SESSIONS, AgentPurgeResult, ExportRequest, ExportResult
from jobs.person import completeness
from jobs.readahead import PageReader
from jobs.targets import Target, resolve_targets
from sessionctl import exportfile, exports, metrics, store
from sessionctl.agents import merge_runs
from sessionctl.errors import ExportMismatch, InvalidRequest
from sessionctl.logs import get_logger
from sessionctl.privacy import user_hmac
from sessionctl.store import access, person
from sessionctl.store import media as media_sql

log = get_logger("sessionctl.export")


def _window(req: ExportRequest) -> store.Window:
    return store.Window(user_id=req.user_id, since=req.since, until=req.until, by=req.by)


async def export_sessions(ctx: JobContext, req: ExportRequest) -> ExportResult:
    started = now_iso()
    hmac = user_hmac(ctx.hash_key, req.user_id) if req.user_id is not None else None
    blog = log.bind(job_id=ctx.job_id, user_hmac=hmac, job_try=ctx.job_try)
    t0 = time.monotonic()
    try:
        directory = exportfile.ensure_directory(Path(ctx.settings.export_dir))
    except OSError as exc:
        raise exportfile.storage_error(exc, Path(ctx.settings.export_dir).absolute()) from None
    data_path, manifest_path = exportfile.target_paths(directory, req.out)
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
        await _verify(ctx, targets, window, data_path, manifest)
        purge = await _erase_exported(ctx, req, targets, window, data_path, blog, started)

    result = ExportResult(
        job_id=ctx.job_id,
        status="succeeded",
        path=str(data_path),
        manifest_path=str(manifest_path),
        format=exportfile.FORMAT,
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
    manifest = exportfile.read_manifest(data)
    if manifest is None or manifest.get("job_id") != job_id:
        return None
    if not data.exists():  # died between publishing the manifest and the data: start again
        manifest_path.unlink()
        return None
    exportfile.verify_file(key, data, manifest)
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
        writer = exportfile.AtomicExport(directory, req.out, req.compress, tag)
    except OSError as exc:
        raise exportfile.storage_error(exc, directory) from None
    counts: dict[str, int] = {}
    schemas: dict[str, str] = {}
    processed = read_ahead = 0
    # A page is written (and compressed) in a thread while the next ones are read (up to
    # SESSIONCTL_EXPORT_READERS at once, jobs/readahead.py): readers + 2 pages in memory at most.
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
                envelope=_envelope(t),
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
            stores.update(await _person_records(ctx, targets, req.user_id, writer))
        manifest = {
            "format": exportfile.FORMAT,
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

        def commit() -> exportfile.Written:
            try:
                return writer.commit(manifest, ctx.hash_key)
            except OSError as exc:  # said here: inside the connection below an OSError is the database's
                raise exportfile.storage_error(exc, directory) from None

        async with ctx.databases.connect(ctx.settings.dsn) as conn:
            written = await exports.publish(
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
            raise exportfile.storage_error(exc, directory) from None
        raise
    finally:
        thread.shutdown(wait=False)
    await ctx.progress.update(processed=processed, total=processed, agent=None, force=True)
    blog.info("export.written", sessions=processed, bytes=written.size, pages_read_ahead=read_ahead)
    return written.manifest


async def _person_records(ctx: JobContext, targets: list[Target], user_id: str, writer: Any) -> dict[str, int]:
    """Scope "all": after the sessions, the person's rows in every other store an erasure of scope
    "all" clears — each user-keyed table of the agent schemas, the vector and authz tables and
    ``fs.agno_fs`` of each database — and the media objects their runs uploaded (the references: the
    objects stay in their storage). One record a row; rows (objects) per store."""
    stores: dict[str, int] = {}

    async def put(where: str, records: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(writer.write_records, records)
        stores[where] = stores.get(where, 0) + len(records)

    by_db: dict[tuple[str, str, int, str], list[Target]] = {}
    for t in targets:
        by_db.setdefault(t.dsn.target, []).append(t)
    for group in by_db.values():
        async with ctx.databases.connect(group[0].dsn) as conn:
            for t in group:
                schema = t.layout.schema
                env = _envelope(t)
                for table in await store.user_keyed_tables(conn, schema):
                    if table == store.SESSIONS:
                        continue
                    label = f"{schema}.{table}"
                    async for rows in person.person_rows(conn, schema, table, user_id):
                        await put(label, [{**env, "store": label, "row": r} for r in rows])
                refs = await media_sql.refs_of_user(
                    conn,
                    t.layout.q(store.RUNS) if t.layout.has(store.RUNS) else None,
                    t.layout.q(store.SESSIONS),
                    t.layout.legacy_runs_column,
                    user_id,
                )
                if refs:
                    await put("media", [{**env, "store": "media", "media": ref} for ref in refs])
            inside = {t.layout.schema for t in group}
            for shared in await store.find_shared_tables(conn):
                if shared.kind == store.VECTOR and shared.schema in inside:
                    continue  # exported with its agent schema's tables
                async for rows in person.shared_rows(conn, shared, user_id):
                    await put(
                        shared.label, [{"v": exportfile.FORMAT_VERSION, "store": shared.label, "row": r} for r in rows]
                    )
            async for rows in person.payload_rows(conn, user_id):
                await put(
                    "fs.agno_fs", [{"v": exportfile.FORMAT_VERSION, "store": "fs.agno_fs", "row": r} for r in rows]
                )
    return stores


def _envelope(target: Target) -> dict[str, Any]:
    return {"v": exportfile.FORMAT_VERSION, "agent": target.label, "schema": target.layout.schema}


def export_records(
    target: Target, rows: list[dict[str, Any]], runs: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Session rows as ``sessionctl-export/1`` records: runs attached wherever they live (Agno's merge)."""
    records = []
    for row in rows:
        row["runs"] = merge_runs(runs.get(row["session_id"], []), row.get("runs"))
        records.append({**_envelope(target), "session": row})
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
            merged[rec["session"]["session_id"]] = exportfile.dumps_line(rec)
    lines = []
    for r in rows:
        line = r["line"] if r["line"] is not None else merged.get(r["session_id"])
        if line is not None:
            lines.append(line)
    return lines


def _id_chunks(path: Path, size: int) -> Iterator[list[tuple[str, str, int | None]]]:
    """(agent label, session id, last-change stamp) of the export's lines, ``size`` at a time (the
    stamp is ``None`` for a session with neither an update nor a creation time)."""
    with exportfile.open_records(path) as records:
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


async def _verify(
    ctx: JobContext, targets: list[Target], window: store.Window, data: Path, manifest: dict[str, Any]
) -> None:
    """The file is what the (authenticated) manifest says, and the manifest is what the database
    holds now."""
    try:
        await asyncio.to_thread(exportfile.verify_file, ctx.hash_key, data, manifest)
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


async def _erase_exported(
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
