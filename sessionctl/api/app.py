"""``sessionctl serve``: the DSR service over HTTP — intake of erasures and exports
(:mod:`.intake`), job states, receipts, the deadline ledger, health, and the console
(:mod:`.console`).

It records and enqueues (through the same :class:`~sessionctl.producer.Producer` as the CLI) and
reads; workers do the work. No endpoint takes a raw user id in its path or query: they come in POST
bodies, and leave only as HMACs. A token sees the requests and jobs it made (``audit``: all of
them); an export's file goes only to the token that asked for it. The OpenAPI spec is served as
``SESSIONCTL_OPENAPI`` says (off by default).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from sessionctl import __version__, ledger
from sessionctl.api import intake
from sessionctl.api.auth import Caller, Tokens, need
from sessionctl.api.models import Accepted, DueDateChange, ErasureIn, ExportIn, ReceiptSearch, WebhookBody
from sessionctl.config import Settings, load_settings
from sessionctl.databases import Databases
from sessionctl.errors import AgentNotFound, InvalidRequest, NotAgnoStorage, SessionctlError
from sessionctl.jobstate import STATUS_FILTERS
from sessionctl.logs import get_logger
from sessionctl.privacy import user_hmac
from sessionctl.producer import Producer
from sessionctl.store import exports as exports_sql
from sessionctl.store import ledger as ledger_sql
from sessionctl.store import receipts

log = get_logger("sessionctl.api")

Anyone = Annotated[Caller, Depends(need(None))]
Reader = Annotated[Caller, Depends(need("read"))]
Eraser = Annotated[Caller, Depends(need("erase"))]
Exporter = Annotated[Caller, Depends(need("export"))]
StatusFilter = Literal["queued", "running", "retrying", "succeeded", "dry_run", "partial", "failed", "ended"]
KindFilter = Literal["purge_user_sessions", "purge_users", "export_sessions", "purge_expired_sessions", "resweep"]
Responses = dict[int | str, dict[str, Any]]
ERRORS: Responses = {
    401: {"description": "no token, or a token that is not valid here"},
    403: {"description": "the token lacks the scope"},
}
# A server path or a connection string in an error's text (an unknown agent names where it looked):
# what a caller sees is the error without them.
_SERVER_DETAIL = re.compile(r"(postgres(ql)?|rediss?)://\S+|(?<![\w.])/[\w.@-]+(/[\w.@-]+)+")


def public(message: str) -> str:
    """An error's text as a caller may read it: no server path, no connection string."""
    return _SERVER_DETAIL.sub("(server detail withheld)", message)


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
        version=__version__,
        summary="Erasure and export of what Agno agents keep about a person, for data-subject requests",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    _errors(app)
    _spec(app, settings)
    _webhooks(app)

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

    intake_errors: Responses = {
        **ERRORS,
        409: {"description": "request_ref names another request"},
        422: {"description": "bad input"},
    }

    @app.post("/v1/erasures", status_code=202, tags=["intake"], responses=intake_errors)
    async def erasure(body: ErasureIn, request: Request, who: Eraser) -> Accepted:
        """Erase a person: by default everything sessionctl knows of them at every agent (``scope:
        sessions`` or an ``agent_id`` narrows it). A worker does it; the webhook and the request
        say whether it was ``complete``."""
        return await intake.take(
            settings, request.app.state.connect, request.app.state.producer, "erasure", body, body.options(), who
        )

    @app.post("/v1/exports", status_code=202, tags=["intake"], responses=intake_errors)
    async def export(body: ExportIn, request: Request, who: Exporter) -> Accepted:
        """Export what sessionctl holds of a person (by default everything, at every agent); the
        token that asked downloads it from ``/v1/exports/{job_id}/file`` until it expires."""
        return await intake.take(
            settings, request.app.state.connect, request.app.state.producer, "export", body, body.options(), who
        )

    @app.get(
        "/v1/exports/{job_id}/file",
        tags=["intake"],
        responses={**ERRORS, 404: {"description": "no export of yours"}, 410: {"description": "expired or erased"}},
    )
    async def export_file(job_id: str, request: Request, who: Exporter) -> FileResponse:
        """The file an export of yours wrote: only to the token that asked for it, only while it is kept."""
        async with request.app.state.connect() as conn:
            served = [r for r in await ledger_sql.requests_of_job(conn, job_id) if r["kind"] == "export"]
            made = await exports_sql.get(conn, job_id)
        if not served or served[0]["token_name"] != who.name or made is None:
            raise HTTPException(404, "no export of yours with this job id")
        if made["deleted_at"] is not None:
            why = (
                "expired (SESSIONCTL_EXPORT_TTL)"
                if made["deleted_by"] == "expired"
                else "deleted: its person was erased"
            )
            raise HTTPException(410, f"this export was {why}")
        base = Path(settings.export_dir).resolve()
        path = Path(str(made["path"])).resolve()
        if base not in path.parents or not path.is_file():
            raise HTTPException(404, "the export file is no longer in EXPORT_DIR")
        return FileResponse(path, media_type="application/octet-stream", filename=path.name)

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], responses={**ERRORS, 404: {"description": "unknown job"}})
    async def job(job_id: str, request: Request, who: Reader) -> dict[str, Any]:
        """What ``sessionctl status --json`` prints, with the requests it served and each webhook attempt."""
        async with request.app.state.connect() as conn:
            served = [dict(r) for r in await ledger_sql.requests_of_job(conn, job_id)]
            hooks = [_delivery_out(d) for d in await ledger_sql.deliveries_of_jobs(conn, [job_id])]
        if who.owner is not None and not any(r["token_name"] == who.owner for r in served):
            raise HTTPException(404, "no job of yours with this id")
        state = await request.app.state.producer.status(job_id)
        if state.status == "not_found" and not served:
            raise HTTPException(404, "no job with this id (or its record expired)")
        return {**state.as_dict(), "requests": [_request_out(r) for r in served], "webhooks": hooks}

    @app.get("/v1/jobs", tags=["jobs"], responses=ERRORS)
    async def jobs(
        request: Request,
        who: Reader,
        status: StatusFilter | None = None,
        kind: KindFilter | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        """Recent jobs, newest first: yours (``audit``: everyone's). ``status`` is one of the job
        index's states, or ``ended`` (any final one)."""
        producer: Producer = request.app.state.producer
        if who.owner is None:
            listing = await producer.jobs(status=status, kind=kind, limit=limit)
            return {"jobs": list(listing), "malformed": listing.malformed}
        async with request.app.state.connect() as conn:
            ids = await ledger_sql.jobs_of_token(conn, who.owner, 1000)
        mine = await producer.jobs_by_id(ids)
        wanted = STATUS_FILTERS[status] if status else None
        rows = [r for r in mine if (wanted is None or r["state"] in wanted) and (kind is None or r["kind"] == kind)]
        return {"jobs": rows[:limit], "malformed": 0}

    @app.post("/v1/receipts/search", tags=["receipts"], responses=ERRORS)
    async def receipts_search(body: ReceiptSearch, request: Request, who: Reader) -> dict[str, Any]:
        """A person's receipts, oldest first — of your requests' jobs (``audit``: every receipt).
        POST: the id never sits in a URL or an access log."""
        hmac = user_hmac(settings.hash_key_bytes, body.user_id)
        async with request.app.state.connect() as conn:
            found = await receipts.find(conn, hmac)
            if who.owner is not None:
                mine = set(await ledger_sql.jobs_of_token(conn, who.owner, 10_000))
                found = [r for r in found if r["job_id"] in mine]
        return {"user_hmac": hmac, "receipts": found}

    @app.get("/v1/requests", tags=["requests"], responses=ERRORS)
    async def requests(
        request: Request,
        who: Reader,
        open: bool = False,
        overdue: bool = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """The deadline ledger — your requests (``audit``: all of them): open ones first, soonest
        due first. A dry run is never an open request."""
        async with request.app.state.connect() as conn:
            rows = await ledger_sql.list_requests(
                conn, open_only=open, overdue_only=overdue, token_name=who.owner, limit=limit
            )
        return {"requests": [_request_out(r) for r in rows]}

    @app.get("/v1/requests/{request_id}", tags=["requests"], responses={**ERRORS, 404: {"description": "unknown"}})
    async def one_request(request_id: str, request: Request, who: Reader) -> dict[str, Any]:
        """One request: its due dates and every extension, its jobs, whether it completed (late or
        not, complete or not)."""
        async with request.app.state.connect() as conn:
            row = await _owned(conn, request_id, who)
        return _request_out(row)

    due_errors: Responses = {
        **ERRORS,
        404: {"description": "unknown request"},
        422: {"description": "not allowed (art. 12(3))"},
    }

    @app.post("/v1/requests/{request_id}/extend", tags=["requests"], responses=due_errors)
    async def extend(request_id: str, body: DueDateChange, request: Request, who: Eraser) -> dict[str, Any]:
        """Extend an open request that is not yet due, to at most two months past its first due
        date, with the reason (GDPR art. 12(3); informing the data subject is yours to do)."""
        return await _move_due(request, request_id, body, who, ledger.extension)

    @app.post("/v1/requests/{request_id}/correct", tags=["requests"], responses=due_errors)
    async def correct(request_id: str, body: DueDateChange, request: Request, who: Eraser) -> dict[str, Any]:
        """Correct a mistaken extension: move the due date earlier (never before the first due date),
        with the reason; the extension stays listed, and the correction after it."""
        return await _move_due(request, request_id, body, who, ledger.correction)

    async def _move_due(
        request: Request, request_id: str, body: DueDateChange, who: Caller, rule: Any
    ) -> dict[str, Any]:
        async with request.app.state.connect() as conn, conn.transaction():
            row = await _owned(conn, request_id, who, lock=True)
            try:
                entry = rule(row, body.until, body.reason, who.name, datetime.now(UTC))
            except InvalidRequest as exc:
                raise HTTPException(422, str(exc)) from None
            moved = await ledger_sql.move_due(conn, request_id, body.until, entry)
        if moved is None:
            raise HTTPException(422, "only an open request's due date can change")
        log.info("dsr.due_moved", request_id=request_id, kind=entry["kind"], by=who.name)
        return _request_out(moved)

    from sessionctl.api import console

    app.include_router(console.router(settings))
    return app


async def _owned(conn: asyncpg.Connection, request_id: str, who: Caller, *, lock: bool = False) -> Any:
    """The request, if this caller may see it (its own, or any with ``audit``); else 404."""
    row = await (ledger_sql.lock_request(conn, request_id) if lock else ledger_sql.get_request(conn, request_id))
    if row is None or (who.owner is not None and row["token_name"] != who.owner):
        raise HTTPException(404, "no request of yours with this id")
    return row


def _errors(app: FastAPI) -> None:
    """Every error a JSON line a caller can act on — never a server path, a traceback or the input."""

    @app.exception_handler(SessionctlError)
    async def _refused(request: Request, exc: SessionctlError) -> JSONResponse:
        code = 422 if isinstance(exc, ValueError | LookupError | NotImplementedError) else 503
        message = str(exc)
        if isinstance(exc, AgentNotFound | NotAgnoStorage):  # where it looked is the operator's business
            named = re.match(r"agent (\S+?):? ", message)
            message = f"agent {named.group(1) if named else ''} has no Agno session storage here: check the agent id"
        return JSONResponse({"detail": public(message), "error_type": type(exc).__name__}, status_code=code)

    @app.exception_handler(asyncpg.DataError)
    async def _unstorable(request: Request, exc: asyncpg.DataError) -> JSONResponse:
        detail = "a value in the request cannot be stored in Postgres (a NUL character, a number or date out of range)"
        return JSONResponse({"detail": detail, "error_type": "InvalidRequest"}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the default answer echoes the input (a user id): only where and what is wrong
        errors = [
            {"loc": [_safe(x) for x in e.get("loc", ())], "msg": _safe(e.get("msg", "")), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)


def _safe(value: Any) -> Any:
    """A part of an error that came from the input (a field name): text any JSON encoder writes."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")[:200]
    return value


def _spec(app: FastAPI, settings: Settings) -> None:
    """The OpenAPI spec (bearer scheme, 401/403, webhooks, the package's version), as
    ``SESSIONCTL_OPENAPI`` says: off, for any valid token, or public with /docs and /redoc."""
    if settings.openapi == "off":
        return

    def spec() -> dict[str, Any]:
        return app.openapi()

    if settings.openapi == "token":

        @app.get("/openapi.json", include_in_schema=False)
        async def openapi_token(_: Anyone) -> JSONResponse:
            return JSONResponse(spec())

        return

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_public() -> JSONResponse:
        return JSONResponse(spec())

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="sessionctl")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="sessionctl")


def _webhooks(app: FastAPI) -> None:
    """The completion webhooks, declared in the spec (OpenAPI ``webhooks``)."""
    for event in ("erasure.completed", "erasure.dry_run", "erasure.failed", "export.completed", "export.failed"):

        async def hook(body: WebhookBody) -> None:
            """Sent to a request's callback_url when its job ends, signed with ``X-Sessionctl-Signature:
            t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``; at least once (deduplicate on
            ``(job_id, request_id)``)."""

        app.webhooks.post(event, summary=f"{event}: a request's job ended")(hook)


def _request_out(row: Any) -> dict[str, Any]:
    d = dict(row)
    d.pop("callback_url", None)  # where the callback goes is the operator's, not every reader's
    d.pop("subject", None)
    now = datetime.now(UTC)
    d["overdue"] = d["status"] == "open" and row["due_at"] < now
    for k in ("received_at", "first_due_at", "due_at", "completed_at", "created_at", "job_added_at"):
        if d.get(k) is not None:
            d[k] = d[k].isoformat()
    for k in ("options", "extensions", "remains"):
        if isinstance(d.get(k), str):
            d[k] = json.loads(d[k])
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
