"""Jobs and receipts: a job's state with the requests it served and each webhook attempt, recent
jobs, a person's receipts — a token's own (``audit``: everyone's)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from sessionctl.api.auth import ERRORS, Reader
from sessionctl.api.models import ReceiptSearch
from sessionctl.api.views import delivery_out, request_out
from sessionctl.jobs.fields import KindName
from sessionctl.jobstate import STATUS_FILTERS, StatusFilter
from sessionctl.privacy import user_hmac
from sessionctl.producer import Producer
from sessionctl.store import dsr_requests, receipts, webhook_deliveries

router = APIRouter()


@router.get("/v1/jobs/{job_id}", tags=["jobs"], responses={**ERRORS, 404: {"description": "unknown job"}})
async def job(job_id: str, request: Request, who: Reader) -> dict[str, Any]:
    """What ``sessionctl status --json`` prints, with the requests it served and each webhook attempt."""
    async with request.app.state.connect() as conn:
        served = [dict(r) for r in await dsr_requests.requests_of_job(conn, job_id)]
        hooks = [delivery_out(d) for d in await webhook_deliveries.deliveries_of_jobs(conn, [job_id])]
    if who.owner is not None and not any(r["token_name"] == who.owner for r in served):
        raise HTTPException(404, "no job of yours with this id")
    state = await request.app.state.producer.status(job_id)
    if state.status == "not_found" and not served:
        raise HTTPException(404, "no job with this id (or its record expired)")
    return {**state.as_dict(), "requests": [request_out(r) for r in served], "webhooks": hooks}


@router.get("/v1/jobs", tags=["jobs"], responses=ERRORS)
async def jobs(
    request: Request,
    who: Reader,
    # the one list of job states and the registry's kinds (tests/unit/test_kinds.py): 422 otherwise
    status: StatusFilter | None = None,
    kind: KindName | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """Recent jobs, newest first: yours (``audit``: everyone's). ``status`` is one of the job
    index's states, or ``ended`` (any final one)."""
    producer: Producer = request.app.state.producer
    if who.owner is None:
        listing = await producer.jobs(status=status, kind=kind, limit=limit)
        return {"jobs": list(listing), "malformed": listing.malformed}
    async with request.app.state.connect() as conn:
        ids = await dsr_requests.jobs_of_token(conn, who.owner, 1000)
    mine = await producer.jobs_by_id(ids)
    wanted = STATUS_FILTERS[status] if status else None
    rows = [r for r in mine if (wanted is None or r["state"] in wanted) and (kind is None or r["kind"] == kind)]
    return {"jobs": rows[:limit], "malformed": 0}


@router.post("/v1/receipts/search", tags=["receipts"], responses=ERRORS)
async def receipts_search(body: ReceiptSearch, request: Request, who: Reader) -> dict[str, Any]:
    """A person's receipts, oldest first — of your requests' jobs (``audit``: every receipt). POST:
    the id never sits in a URL or an access log."""
    hmac = user_hmac(request.app.state.settings.hash_key_bytes, body.user_id)
    async with request.app.state.connect() as conn:
        found = await receipts.find(conn, hmac)
        if who.owner is not None:
            mine = set(await dsr_requests.jobs_of_token(conn, who.owner, 10_000))
            found = [r for r in found if r["job_id"] in mine]
    return {"user_hmac": hmac, "receipts": found}
