"""``sessionctl import``: write an export back through Agno's own API.

Before anything is written:

1. the manifest authenticates the file (unless ``--no-verify``): its HMAC under
   ``SESSIONCTL_HASH_KEY``, then the file's size and sha256 — an edited file or manifest is
   refused, a recomputed checksum included;
2. every line is read once and checked for shape: a session id, a user, runs with run ids;
   no session or run appears twice in the file under different owners;
3. the target schema is asked whether any of the file's sessions exists there under another user
   (or none) or of another type, and whether any of its runs exists under another session. Agno's
   ``upsert_run`` overwrites a run by ``run_id`` alone, and ``upsert_session`` takes over a session
   whose user is NULL: either would change a row that is not this file's. Any such row refuses
   the whole file, naming the lines.

Then each line's session is rebuilt with Agno's ``deserialize_session`` and written with
``upsert_session``, its runs with ``upsert_run`` (in their exported order), so the restored rows
are exactly what Agno itself would write — in Agno 3.x's layout, whatever layout they came from.
Agno's upsert sets ``updated_at`` to the write time; the exported value is put back afterwards.
Agno's client reports a failed write only as ``None``: each write is checked, and the restored
sessions are counted with our own SQL at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sessionctl import export_files, store
from sessionctl.agents import AgentHandle
from sessionctl.config import Settings
from sessionctl.errors import ExportMismatch, InvalidRequest, unexpected

CHUNK = 200
CHECK_CHUNK = 5000  # ids asked of the database at once before writing


@dataclass(slots=True)
class ImportResult:
    file: str
    agent_id: str
    schema_name: str
    sessions: int = 0
    runs: int = 0
    verified: bool = False
    by_source_agent: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Plan:
    """What the file would write: each session's owner and type, each run's session, by line."""

    sessions: dict[str, tuple[str | None, str | None, int]] = field(default_factory=dict)
    runs: dict[str, tuple[str, int]] = field(default_factory=dict)
    lines: int = 0


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The session records of an export file, with their line numbers (the records of a person's
    other stores, in an export of scope "all", are not restored: only sessions are written back)."""
    with export_files.open_records(path) as records:
        for n, rec in enumerate(records, 1):
            if isinstance(rec, dict) and rec.get("v") == export_files.FORMAT_VERSION and "store" in rec:
                continue
            if not isinstance(rec, dict) or rec.get("v") != export_files.FORMAT_VERSION or "session" not in rec:
                raise InvalidRequest(f"{path.name} line {n} is not a {export_files.FORMAT} record: nothing was written")
            yield n, rec


def _chunks(path: Path, size: int) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    chunk: list[tuple[int, dict[str, Any]]] = []
    for item in _records(path):
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _plan(path: Path) -> _Plan:
    """Read the whole file once: its shape, and the ids it would write (no content kept)."""
    plan = _Plan()
    clash: list[int] = []
    for n, rec in _records(path):
        plan.lines += 1
        row = rec["session"]
        sid, user, kind = row.get("session_id") if isinstance(row, dict) else None, None, None
        if isinstance(row, dict):
            user, kind = row.get("user_id"), row.get("session_type")
        runs = row.get("runs") if isinstance(row, dict) else None
        if (
            not isinstance(sid, str)
            or not isinstance(user, str | None)
            or not isinstance(kind, str | None)
            or not isinstance(runs, list | None)
            or not all(isinstance(r, dict) and isinstance(r.get("run_id"), str) for r in runs or [])
        ):
            raise InvalidRequest(
                f"{path.name} line {n}: a session needs a session_id, a user_id (or null) and runs with run ids;"
                " nothing was written"
            )
        if sid in plan.sessions and plan.sessions[sid][:2] != (user, kind):
            clash.append(n)
        plan.sessions.setdefault(sid, (user, kind, n))
        for run in runs or []:
            rid = run["run_id"]
            if rid in plan.runs and plan.runs[rid][0] != sid:
                clash.append(n)
            plan.runs.setdefault(rid, (sid, n))
    if clash:
        raise InvalidRequest(
            f"{path.name}: {_lines(clash)} repeat a session or run of another line under another owner;"
            " nothing was written"
        )
    return plan


def _lines(numbers: list[int]) -> str:
    ns = sorted(set(numbers))
    shown = ", ".join(map(str, ns[:10])) + (f" and {len(ns) - 10} more" if len(ns) > 10 else "")
    return f"line {shown}" if len(ns) == 1 else f"lines {shown}"


async def _refuse_foreign_rows(handle: AgentHandle, path: Path, plan: _Plan) -> None:
    """Refuse the file if writing it would change a session or run that is not the file's."""
    layout = await handle.layout()
    sessions = [(sid, user, kind) for sid, (user, kind, _) in plan.sessions.items()]
    runs = [(rid, sid) for rid, (sid, _) in plan.runs.items()]
    bad: list[int] = []
    async with handle.connection() as conn:
        for i in range(0, len(sessions), CHECK_CHUNK):
            for sid in await store.sessions_owned_elsewhere(conn, layout, sessions[i : i + CHECK_CHUNK]):
                bad.append(plan.sessions[sid][2])
        for i in range(0, len(runs), CHECK_CHUNK):
            for rid in await store.runs_of_other_sessions(conn, layout, runs[i : i + CHECK_CHUNK]):
                bad.append(plan.runs[rid][1])
    if bad:
        raise InvalidRequest(
            f"{path.name}: {_lines(bad)} would overwrite a session of another user (or of no user, or of another"
            f" type) or a run of another session in {handle.schema}; nothing was written"
        )


def _before(result: ImportResult) -> str:
    return f"the {result.sessions} sessions before it were written"


async def import_export(path: Path, handle: AgentHandle, *, verify: bool = True, key: bytes) -> ImportResult:
    if not path.is_file():
        raise InvalidRequest(f"no such export file: {path}")
    result = ImportResult(file=str(path), agent_id=handle.agent_id, schema_name=handle.schema)
    manifest: dict[str, Any] | None = None
    if verify:
        manifest = export_files.read_manifest(path)
        if manifest is None:
            raise InvalidRequest(f"{path.name} has no manifest beside it; pass --no-verify to import it anyway")
        await asyncio.to_thread(export_files.verify_file, key, path, manifest)
        result.verified = True
    plan = await asyncio.to_thread(_plan, path)
    if manifest is not None and manifest.get("sessions") != plan.lines:
        raise ExportMismatch(f"{path.name}: {plan.lines} lines, the manifest says {manifest.get('sessions')}")
    await _refuse_foreign_rows(handle, path, plan)

    from agno.db.postgres import AsyncPostgresDb
    from agno.db.utils import deserialize_session

    db = AsyncPostgresDb(db_engine=handle.databases.engine(handle.dsn), db_schema=handle.schema)
    gen = _chunks(path, CHUNK)
    layout = await handle.layout()
    while (chunk := await asyncio.to_thread(next, gen, None)) is not None:
        stamps: list[tuple[str, int | None]] = []
        for n, rec in chunk:
            row = dict(rec["session"])
            runs = row.pop("runs", None) or []
            try:
                session = deserialize_session(None, row)
                written = await db.upsert_session(session)
                for i, run in enumerate(runs):
                    await db.upsert_run(run, session_id=row["session_id"], user_id=row.get("user_id"), run_index=i)
            except Exception as exc:  # Agno's or the driver's text may quote the row: class and SQLSTATE only
                why = unexpected(exc).removesuffix("; see the worker log")
                raise InvalidRequest(f"{path.name} line {n} could not be written ({why}); {_before(result)}") from None
            if written is None:
                raise InvalidRequest(
                    f"{path.name} line {n} could not be written: the database refused the session (see the Postgres"
                    f" log); {_before(result)}"
                )
            stamps.append((row["session_id"], row.get("updated_at")))
            result.sessions += 1
            result.runs += len(runs)
            src = str(rec.get("agent", "?"))
            result.by_source_agent[src] = result.by_source_agent.get(src, 0) + 1
        async with handle.connection() as conn:
            await store.restore_updated_at(conn, layout, stamps)
            present = await store.count_sessions_by_id(conn, layout, [sid for sid, _ in stamps])
        if present != len(stamps):
            raise InvalidRequest(
                f"only {present} of {len(stamps)} sessions of a chunk are in the database after writing"
            )
    return result


async def import_file(settings: Settings, path: Path, agent_id: str, *, verify: bool = True) -> ImportResult:
    """``sessionctl import``: :func:`import_export` into the agent where ``DATABASE_URL`` and the
    naming rule put it."""
    from sessionctl.databases import Databases

    dbs = Databases(pool_size=2)
    try:
        handle = AgentHandle(agent_id, settings=settings, databases=dbs)
        return await import_export(path, handle, verify=verify, key=settings.hash_key_bytes)
    finally:
        await dbs.close()
