"""Taking requests in — ``POST /v1/erasures``, ``POST /v1/exports`` — and handing an export's file
to the token that asked for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response

from sessionctl.api import intake
from sessionctl.api.auth import ERRORS, Eraser, Exporter
from sessionctl.api.intake_route import IntakeRoute
from sessionctl.api.models import Accepted, ErasureIn, ExportIn
from sessionctl.store import dsr_requests
from sessionctl.store import export_registry as exports_sql

INTAKE_ERRORS = {**ERRORS, 409: {"description": "request_ref names another request"}, 422: {"description": "bad input"}}


def install(app: FastAPI) -> None:
    """The intake routes on the app's own router, ahead of every other: a backlog replayed asks
    these most, and a route of an included router costs every request a second pass of matching.
    The two that take requests in are served by :class:`IntakeRoute`."""
    for path, endpoint in (("/v1/erasures", erasure), ("/v1/exports", export)):
        app.router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            status_code=202,
            response_model=Accepted,
            responses=INTAKE_ERRORS,
            tags=["intake"],
            route_class_override=IntakeRoute,
        )
    gone: dict[int | str, dict[str, Any]] = {
        404: {"description": "no export of yours"},
        410: {"description": "expired or erased"},
    }
    app.get("/v1/exports/{job_id}/file", responses={**ERRORS, **gone}, tags=["intake"])(export_file)


def _answer(accepted: Accepted) -> Response:
    """The 202, encoded once by the model itself (a returned model would be validated again
    against ``response_model`` first: intake answers many of these)."""
    return Response(accepted.model_dump_json(), status_code=202, media_type="application/json")


async def erasure(body: ErasureIn, request: Request, who: Eraser) -> Response:
    """Erase a person: by default everything sessionctl knows of them at every agent (``scope:
    sessions`` or an ``agent_id`` narrows it). A worker does it; the webhook and the request say
    whether it was ``complete``."""
    state = request.app.state
    return _answer(
        await intake.take(state.settings, state.connect, state.producer, "erasure", body, body.options(), who)
    )


async def export(body: ExportIn, request: Request, who: Exporter) -> Response:
    """Export what sessionctl holds of a person (by default everything, at every agent); the token
    that asked downloads it from ``/v1/exports/{job_id}/file`` until it expires."""
    state = request.app.state
    return _answer(
        await intake.take(state.settings, state.connect, state.producer, "export", body, body.options(), who)
    )


async def export_file(job_id: str, request: Request, who: Exporter) -> FileResponse:
    """The file an export of yours wrote: only to the token that asked for it, only while it is kept."""
    async with request.app.state.connect() as conn:
        served = [r for r in await dsr_requests.requests_of_job(conn, job_id) if r["kind"] == "export"]
        made = await exports_sql.get(conn, job_id)
    if not served or served[0]["token_name"] != who.name or made is None:
        raise HTTPException(404, "no export of yours with this job id")
    if made["deleted_at"] is not None:
        why = "expired (SESSIONCTL_EXPORT_TTL)" if made["deleted_by"] == "expired" else "deleted: its person was erased"
        raise HTTPException(410, f"this export was {why}")
    base = Path(request.app.state.settings.export_dir).resolve()
    path = Path(str(made["path"])).resolve()
    if base not in path.parents or not path.is_file():
        raise HTTPException(404, "the export file is no longer in EXPORT_DIR")
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)
