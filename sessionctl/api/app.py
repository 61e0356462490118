"""``sessionctl serve``: the DSR service over HTTP — intake of erasures and exports, job states,
receipts, the deadline ledger, health, and the console (``sessionctl/api/console.py``).

It only enqueues (through the same :class:`~sessionctl.producer.Producer` as the CLI) and reads;
workers do the work. No endpoint takes a raw user id in its path or query: they come in POST
bodies, and leave only as HMACs. OpenAPI at ``/openapi.json``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from sessionctl import ledger, webhooks
from sessionctl.api.auth import Caller, Tokens, need
from sessionctl.config import Settings, load_settings
from sessionctl.databases import Databases
from sessionctl.errors import SessionctlError
from sessionctl.logs import get_logger
from sessionctl.privacy import user_hmac
from sessionctl.producer import Producer
from sessionctl.store import ledger as ledger_sql
from sessionctl.store import receipts

log = get_logger("sessionctl.api")

Text = Annotated[str, Field(min_length=1, max_length=200)]
Reader = Annotated[Caller, Depends(need("read"))]
Eraser = Annotated[Caller, Depends(need("erase"))]
Exporter = Annotated[Caller, Depends(need("export"))]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DsrIn(_In):
    user_id: str = Field(description="the data subject's id, exactly as the agents stored it (never normalised)")
    agent_id: str | None = None
    all_agents: bool = False
    requested_by: Text | None = None
    request_ref: Text | None = Field(None, description="your reference; asking again with it returns that request")
    received_at: AwareDatetime | None = Field(None, description="when the request reached you (default: now)")
    callback_url: Annotated[str, Field(max_length=2000)] | None = None


class ErasureIn(DsrIn):
    scope: Literal["sessions", "all"] = "sessions"
    memories: bool = False
    dry_run: bool = False


class ExportIn(DsrIn):
    since: int | None = Field(None, ge=0)
    until: int | None = Field(None, ge=0)
    by: Literal["created", "updated"] = "created"
    compress: Literal["none", "gz", "zst"] = "none"


class Accepted(BaseModel):
    job_id: str
    request_id: str
    status: str
    due_at: datetime
    collapsed: bool


class ReceiptSearch(_In):
    user_id: str = Field(min_length=1, max_length=1000)


class Extension(_In):
    until: AwareDatetime
    reason: Text


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        databases = Databases(pool_size=settings.pool_size, client_cache_size=8)
        app.state.settings = settings
        app.state.databases = databases
        app.state.connect = lambda: databases.connect(settings.dsn)
        app.state.tokens = Tokens(app.state.connect)
        async with Producer(settings) as producer:
            app.state.producer = producer
            try:
                yield
            finally:
                await databases.close()

    app = FastAPI(
        title="sessionctl",
        version="1",
        summary="Bulk erasure and export of Agno sessions, for data-subject requests",
        lifespan=lifespan,
    )

    @app.exception_handler(SessionctlError)
    async def _refused(request: Request, exc: SessionctlError) -> JSONResponse:
        code = 422 if isinstance(exc, ValueError | LookupError) else 503
        return JSONResponse({"detail": str(exc), "error_type": type(exc).__name__}, status_code=code)

    @app.exception_handler(asyncpg.DataError)
    async def _unstorable(request: Request, exc: asyncpg.DataError) -> JSONResponse:
        # input Postgres cannot hold or compare (a NUL character, a number or date out of range)
        detail = "a value in the request cannot be stored in Postgres (a NUL character, a number or date out of range)"
        return JSONResponse({"detail": detail, "error_type": "InvalidRequest"}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the default answer echoes the input (a user id): only where and what is wrong
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "Redis or Postgres unreachable"}})
    async def readyz(request: Request) -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            await (await request.app.state.producer.redis()).ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = type(exc).__name__
        try:
            async with request.app.state.connect() as conn:
                await conn.fetchval("SELECT 1")
            checks["postgres"] = "ok"
        except Exception as exc:
            checks["postgres"] = type(exc).__name__
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503)

    @app.post("/v1/erasures", status_code=202, tags=["intake"], responses={422: {"description": "bad input"}})
    async def erasure(body: ErasureIn, request: Request, who: Eraser) -> Accepted:
        """Ask for a user's erasure at one agent or every agent; a worker does it."""
        options = {"scope": body.scope, "memories": body.memories, "dry_run": body.dry_run}

        async def enqueue(producer: Producer, request_id: str) -> Any:
            return await producer.purge_user_sessions(
                user_id=body.user_id,
                agent_id=body.agent_id,
                all_agents=body.all_agents,
                requested_by=body.requested_by or who.name,
                **options,  # type: ignore[arg-type]
            )

        return await _intake(request, "erasure", body, options, enqueue)

    @app.post("/v1/exports", status_code=202, tags=["intake"], responses={422: {"description": "bad input"}})
    async def export(body: ExportIn, request: Request, who: Exporter) -> Accepted:
        """Ask for an export of a user's sessions (the file stays in EXPORT_DIR; download it from
        ``/v1/exports/{job_id}/file``)."""
        options = {"since": body.since, "until": body.until, "by": body.by, "compress": body.compress}

        async def enqueue(producer: Producer, request_id: str) -> Any:
            suffix = {"none": "", "gz": ".gz", "zst": ".zst"}[body.compress]
            return await producer.export_sessions(
                out=f"{request_id}.jsonl{suffix}",
                user_id=body.user_id,
                agent_id=body.agent_id,
                all_agents=body.all_agents,
                requested_by=body.requested_by or who.name,
                **options,  # type: ignore[arg-type]
            )

        return await _intake(request, "export", body, options, enqueue)

    @app.get("/v1/exports/{job_id}/file", tags=["intake"], responses={404: {"description": "no such file"}})
    async def export_file(job_id: str, request: Request, _: Exporter) -> FileResponse:
        """The file a finished export wrote."""
        state = await request.app.state.producer.status(job_id)
        result = state.result or {}
        if state.status != "succeeded" or result.get("kind") != "export_sessions":
            raise HTTPException(404, "no finished export with this job id")
        base = Path(settings.export_dir).resolve()
        path = Path(str(result["path"])).resolve()
        if base not in path.parents or not path.is_file():
            raise HTTPException(404, "the export file is no longer in EXPORT_DIR")
        return FileResponse(path, media_type="application/octet-stream", filename=path.name)

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], responses={404: {"description": "unknown job"}})
    async def job(job_id: str, request: Request, _: Reader) -> dict[str, Any]:
        """What ``sessionctl status --json`` prints, with the requests it served and each webhook attempt."""
        state = await request.app.state.producer.status(job_id)
        async with request.app.state.connect() as conn:
            served = [_request_out(r) for r in await ledger_sql.requests_of_job(conn, job_id)]
            hooks = [_delivery_out(d) for d in await ledger_sql.deliveries_of_jobs(conn, [job_id])]
        if state.status == "not_found" and not served:
            raise HTTPException(404, "no job with this id (or its record expired)")
        return {**state.as_dict(), "requests": served, "webhooks": hooks}

    @app.get("/v1/jobs", tags=["jobs"])
    async def jobs(
        request: Request,
        _: Reader,
        status: Literal["queued", "running", "retrying", "succeeded", "dry_run", "failed"] | None = None,
        kind: Literal["purge_user_sessions", "purge_users", "export_sessions", "purge_expired_sessions", "resweep"]
        | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        """Recent jobs, newest first."""
        listing = await request.app.state.producer.jobs(status=status, kind=kind, limit=limit)
        return {"jobs": list(listing), "malformed": listing.malformed}

    @app.post("/v1/receipts/search", tags=["receipts"])
    async def receipts_search(body: ReceiptSearch, request: Request, _: Reader) -> dict[str, Any]:
        """A user's receipts, oldest first (POST: the id never sits in a URL or an access log)."""
        hmac = user_hmac(settings.hash_key_bytes, body.user_id)
        async with request.app.state.connect() as conn:
            found = await receipts.find(conn, hmac)
        return {"user_hmac": hmac, "receipts": found}

    @app.get("/v1/requests", tags=["requests"])
    async def requests(
        request: Request,
        _: Reader,
        open: bool = False,
        overdue: bool = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """The deadline ledger: open requests first, soonest due first."""
        async with request.app.state.connect() as conn:
            rows = await ledger_sql.list_requests(conn, open_only=open, overdue_only=overdue, limit=limit)
        return {"requests": [_request_out(r) for r in rows]}

    @app.post(
        "/v1/requests/{request_id}/extend",
        tags=["requests"],
        responses={404: {"description": "unknown request"}, 422: {"description": "not open, or not later"}},
    )
    async def extend(request_id: str, body: Extension, request: Request, _: Eraser) -> dict[str, Any]:
        """Move an open request's due date later, with the reason recorded (GDPR art. 12(3) allows
        two further months where needed, the data subject informed)."""
        async with request.app.state.connect() as conn:
            row = await ledger_sql.extend(conn, request_id, body.until, body.reason)
            if row is None:
                current = await ledger_sql.get_request(conn, request_id)
        if row is None:
            if current is None:
                raise HTTPException(404, "no request with this id")
            raise HTTPException(422, "only an open request can be extended, and only to a later date than it is due")
        return _request_out(row)

    from sessionctl.api import console

    app.include_router(console.router(settings))

    async def _intake(request: Request, kind: str, body: DsrIn, options: dict[str, Any], enqueue: Any) -> Accepted:
        producer: Producer = request.app.state.producer
        if body.callback_url is not None:
            if settings.webhook_secret is None:
                raise HTTPException(422, "callback_url needs SESSIONCTL_WEBHOOK_SECRET set on this service and workers")
            webhooks.check_callback(body.callback_url, settings.webhook_allowed_hosts)
        received = body.received_at or datetime.now(UTC)
        if received > datetime.now(UTC) + timedelta(minutes=5):
            raise HTTPException(422, "received_at is in the future")
        existing = None
        hmac = user_hmac(settings.hash_key_bytes, body.user_id)
        target = "*" if body.all_agents else str(body.agent_id)
        if body.request_ref is not None:
            async with request.app.state.connect() as conn:
                existing = await ledger_sql.find_by_ref(conn, kind, body.request_ref)
            if existing is not None and (existing["user_hmac"], existing["target"]) != (hmac, target):
                raise HTTPException(422, "request_ref names another request (another user or target): use a new one")
        if existing is not None and not (existing["status"] == "open" and existing["last_job_status"] == "failed"):
            return await _accepted(producer, existing, collapsed=True)  # asked again: that request, no new job
        request_id = existing["request_id"] if existing is not None else ledger.new_request_id()
        enq = await enqueue(producer, request_id)
        row = {
            "request_id": request_id,
            "kind": kind,
            "request_ref": body.request_ref,
            "user_hmac": hmac,
            "target": target,
            "options": options,
            "received_at": received,
            "due_at": ledger.due_date(received, settings.dsr_deadline_days),
            "callback_url": body.callback_url,
            "requested_by": body.requested_by,
            "job_ids": [enq.job_id],
        }
        async with request.app.state.connect() as conn:
            recorded = await ledger_sql.insert_request(conn, row)
            if enq.job_id not in recorded["job_ids"]:  # the request existed (asked again after a failure)
                await ledger_sql.add_job(conn, recorded["request_id"], enq.job_id)
                recorded = await ledger_sql.get_request(conn, recorded["request_id"])
                assert recorded is not None
        log.info(
            "dsr.received", request_id=recorded["request_id"], job_id=enq.job_id, kind=kind, collapsed=enq.collapsed
        )
        return await _accepted(producer, recorded, collapsed=enq.collapsed)

    return app


async def _accepted(producer: Producer, row: Any, *, collapsed: bool) -> Accepted:
    job_id = row["job_ids"][-1]
    status = (await producer.status(job_id)).status if collapsed else "queued"  # just enqueued: queued
    return Accepted(
        job_id=job_id, request_id=row["request_id"], status=status, due_at=row["due_at"], collapsed=collapsed
    )


def _request_out(row: Any) -> dict[str, Any]:
    d = dict(row)
    d.pop("callback_url", None)  # where the callback goes is the operator's, not every reader's
    for k in ("received_at", "due_at", "completed_at", "created_at"):
        if d.get(k) is not None:
            d[k] = d[k].isoformat()
    if isinstance(d.get("options"), str):
        d["options"] = json.loads(d["options"])
    d["overdue"] = d["status"] == "open" and row["due_at"] < datetime.now(UTC)
    d["job_ids"] = list(d["job_ids"])
    return d


def _delivery_out(row: Any) -> dict[str, Any]:
    d = dict(row)
    for k in ("delivered_at", "gave_up_at", "next_at", "created_at"):
        if d.get(k) is not None:
            d[k] = d[k].isoformat()
    if isinstance(d.get("attempts"), str):
        d["attempts"] = json.loads(d["attempts"])
    d.pop("url", None)
    return d
