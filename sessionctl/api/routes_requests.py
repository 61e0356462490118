"""The deadline ledger: requests, one request with its due dates and extensions, and the changes
of a due date GDPR art. 12(3) allows (:func:`sessionctl.ledger.extension`, :func:`~sessionctl.ledger.correction`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from sessionctl import ledger
from sessionctl.api import audit
from sessionctl.api.auth import ERRORS, Caller, Eraser, Reader
from sessionctl.api.models import DueDateChange
from sessionctl.api.views import request_out
from sessionctl.errors import InvalidRequest
from sessionctl.logs import get_logger
from sessionctl.store import dsr_requests, ledger_views

log = get_logger("sessionctl.api")
router = APIRouter(tags=["requests"])
DUE_ERRORS = {**ERRORS, 404: {"description": "unknown request"}, 422: {"description": "not allowed (art. 12(3))"}}


@router.get("/v1/requests", responses=ERRORS)
async def requests(
    request: Request,
    who: Reader,
    open: bool = False,
    overdue: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The deadline ledger — your requests (``audit``: all of them): open ones first, soonest due
    first. A dry run is never an open request."""
    async with request.app.state.connect() as conn:
        rows = await dsr_requests.list_requests(
            conn, open_only=open, overdue_only=overdue, token_name=who.owner, limit=limit
        )
    return {"requests": [request_out(r) for r in rows]}


@router.get("/v1/requests.csv", responses=ERRORS, response_class=Response)
async def requests_csv(request: Request, who: Reader) -> Response:
    """The ledger for audits, as CSV (``audit``: every request; another token: its own), with fixed
    columns: request_id, ref, kind, person_hmac, received_at, first_due_at, due_at, extensions,
    completed_at, late, outcome, complete — times UTC (ISO 8601), people as HMACs."""
    async with request.app.state.connect() as conn:
        rows = await ledger_views.every(conn, ledger_views.Filters(token_name=who.owner))
    return csv_response(rows)


def csv_response(rows: list[Any]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(audit.CSV_COLUMNS)
    writer.writerows(audit.csv_row(r) for r in rows)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="sessionctl-requests-{stamp}.csv"'},
    )


@router.get(
    "/v1/requests/{request_id}/certificate",
    responses={**ERRORS, 404: {"description": "unknown"}, 409: {"description": "not a completed erasure"}},
)
async def certificate(request_id: str, request: Request, who: Reader) -> dict[str, Any]:
    """The certificate of erasure of a completed erasure: the request, the person as HMAC, its dates,
    the stores and counts, the receipts, whether it was ``complete`` (and what remained), and how
    to verify it again."""
    async with request.app.state.connect() as conn:
        row = await _owned(conn, request_id, who)
        if row["kind"] != "erasure" or row["status"] != "completed":
            raise HTTPException(
                409, f"request {request_id} is not a completed erasure ({row['kind']}, {row['status']})"
            )
        found = await ledger_views.receipts_of(conn, list(row["job_ids"]))
    return audit.certificate(row, found)


@router.get("/v1/requests/{request_id}", responses={**ERRORS, 404: {"description": "unknown"}})
async def one_request(request_id: str, request: Request, who: Reader) -> dict[str, Any]:
    """One request: its due dates and every extension, its jobs, whether it completed (late or not,
    complete or not)."""
    async with request.app.state.connect() as conn:
        row = await _owned(conn, request_id, who)
    return request_out(row)


@router.post("/v1/requests/{request_id}/extend", responses=DUE_ERRORS)
async def extend(request_id: str, body: DueDateChange, request: Request, who: Eraser) -> dict[str, Any]:
    """Extend an open request that is not yet due, to at most two months past its first due date,
    with the reason (GDPR art. 12(3); informing the data subject is yours to do)."""
    return await _move_due(request, request_id, body, who, ledger.extension)


@router.post("/v1/requests/{request_id}/correct", responses=DUE_ERRORS)
async def correct(request_id: str, body: DueDateChange, request: Request, who: Eraser) -> dict[str, Any]:
    """Correct a mistaken extension: move the due date earlier (never before the first due date),
    with the reason; the extension stays listed, and the correction after it."""
    return await _move_due(request, request_id, body, who, ledger.correction)


Rule = Callable[[Any, datetime, str, str, datetime], dict[str, Any]]


async def _move_due(request: Request, request_id: str, body: DueDateChange, who: Caller, rule: Rule) -> dict[str, Any]:
    async with request.app.state.connect() as conn, conn.transaction():
        row = await _owned(conn, request_id, who, lock=True)
        try:
            entry = rule(row, body.until, body.reason, who.name, datetime.now(UTC))
        except InvalidRequest as exc:
            raise HTTPException(422, str(exc)) from None
        moved = await dsr_requests.move_due(conn, request_id, body.until, entry)
    if moved is None:
        raise HTTPException(422, "only an open request's due date can change")
    log.info("dsr.due_moved", request_id=request_id, kind=entry["kind"], by=who.name)
    return request_out(moved)


async def _owned(conn: asyncpg.Connection, request_id: str, who: Caller, *, lock: bool = False) -> Any:
    """The request, if this caller may see it (its own, or any with ``audit``); else 404."""
    row = await (dsr_requests.lock_request(conn, request_id) if lock else dsr_requests.get_request(conn, request_id))
    if row is None or (who.owner is not None and row["token_name"] != who.owner):
        raise HTTPException(404, "no request of yours with this id")
    return row
