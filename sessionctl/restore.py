"""``sessionctl import``: write an export back through Agno's own API.

Each line's session is rebuilt with Agno's ``deserialize_session`` and written with
``upsert_session``, its runs with ``upsert_run`` (in their exported order), so the restored rows
are exactly what Agno itself would write — in Agno 3.x's layout, whatever layout they came from.
Agno's upsert sets ``updated_at`` to the write time; the exported value is put back afterwards.
Agno's client reports a failed write only as ``None``: each write is checked, and the restored
sessions are counted with our own SQL at the end.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sessionctl import exportfile, store
from sessionctl.agents import AgentHandle
from sessionctl.errors import ExportMismatch, InvalidRequest

CHUNK = 200


@dataclass(slots=True)
class ImportResult:
    file: str
    agent_id: str
    schema_name: str
    sessions: int = 0
    runs: int = 0
    verified: bool = False
    by_source_agent: dict[str, int] = field(default_factory=dict)


def _chunks(path: Path, size: int) -> Any:
    with exportfile.open_records(path) as records:
        chunk: list[dict[str, Any]] = []
        for rec in records:
            if not isinstance(rec, dict) or rec.get("v") != exportfile.FORMAT_VERSION or "session" not in rec:
                raise InvalidRequest(f"{path.name} is not a {exportfile.FORMAT} file (a line has no 'v': 1 record)")
            chunk.append(rec)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


async def import_export(path: Path, handle: AgentHandle, *, verify: bool = True) -> ImportResult:
    if not path.is_file():
        raise InvalidRequest(f"no such export file: {path}")
    result = ImportResult(file=str(path), agent_id=handle.agent_id, schema_name=handle.schema)
    manifest: dict[str, Any] | None = None
    if verify:
        manifest = exportfile.read_manifest(path)
        if manifest is None:
            raise InvalidRequest(f"{path.name} has no manifest beside it; pass --no-verify to import it anyway")
        sha, size = await asyncio.to_thread(exportfile.file_sha256, path)
        if sha != manifest.get("sha256") or size != manifest.get("bytes"):
            raise ExportMismatch(f"{path.name} does not match its manifest (sha256/size): not imported")
        result.verified = True

    from agno.db.postgres import AsyncPostgresDb
    from agno.db.utils import deserialize_session

    db = AsyncPostgresDb(db_engine=handle.databases.engine(handle.dsn), db_schema=handle.schema)
    gen = _chunks(path, CHUNK)
    while (chunk := await asyncio.to_thread(next, gen, None)) is not None:
        stamps: list[tuple[str, int | None]] = []
        for rec in chunk:
            row = dict(rec["session"])
            runs = row.pop("runs", None) or []
            session = deserialize_session(None, row)
            if await db.upsert_session(session) is None:
                raise InvalidRequest(
                    f"session {row.get('session_id')!r} could not be written: it exists under another user, "
                    "or the database refused it (see the Postgres log)"
                )
            for i, run in enumerate(runs):
                await db.upsert_run(run, session_id=row["session_id"], user_id=row.get("user_id"), run_index=i)
            stamps.append((row["session_id"], row.get("updated_at")))
            result.sessions += 1
            result.runs += len(runs)
            src = str(rec.get("agent", "?"))
            result.by_source_agent[src] = result.by_source_agent.get(src, 0) + 1
        layout = await handle.layout()
        async with handle.connection() as conn:
            await store.restore_updated_at(conn, layout, stamps)
            present = await store.count_sessions_by_id(conn, layout, [sid for sid, _ in stamps])
        if present != len(stamps):
            raise InvalidRequest(
                f"only {present} of {len(stamps)} sessions of a chunk are in the database after writing"
            )
    if manifest is not None and manifest.get("sessions") != result.sessions:
        raise ExportMismatch(f"{path.name}: {result.sessions} lines, the manifest says {manifest.get('sessions')}")
    return result
