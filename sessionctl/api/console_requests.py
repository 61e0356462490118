"""The console's requests: the ledger searched (a request id, a ticket ref, a job id, or a user id
typed in — hashed, never shown back), filtered and paged; a request's page (its timeline, jobs in
full, what was erased store by store, whether it was complete, its receipts) with the actions an
officer takes there (extend it under art. 12(3), retry a failed job with the person's id typed
again, resend a webhook); its certificate of erasure; the ledger as CSV for audits."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from sessionctl import ledger
from sessionctl.api import audit
from sessionctl.api.console_session import Console, Officer
from sessionctl.api.routes_requests import csv_response
from sessionctl.errors import InvalidRequest, SessionctlError
from sessionctl.identifiers import storable_text
from sessionctl.logs import get_logger
from sessionctl.privacy import user_hmac
from sessionctl.store import dsr_requests, ledger_views, webhook_deliveries

log = get_logger("sessionctl.console")
PAGE = 50
HMAC = re.compile(r"[0-9a-f]{32}")
REQUEST_ID = re.compile(r"dsr_[0-9a-z_]{1,40}")
BIGINT_MAX = 2**63 - 1


def add_pages(r: APIRouter, console: Console) -> None:
    @r.post("/requests", response_model=None)
    async def search(
        request: Request,
        q: str = Form(""),
        state: str = Form(""),
        kind: str = Form(""),
        overdue: str = Form(""),
        late: str = Form(""),
        person: str = Form(""),
        ids: str = Form(""),
        csrf: str = Form(""),
    ) -> Response:
        """What was typed, resolved here — a request id or job id goes into the list's URL; anything
        else only as the HMAC of it as a user id, with the ids of the requests whose ticket ref it is
        (a search is a POST: what was typed is in no URL, history or access log)."""
        officer = await console.acting(request, csrf)
        if isinstance(officer, Response):
            return officer
        query = {"state": state, "kind": kind, "overdue": overdue, "late": late, "person": person, "ids": ids}
        if q.strip():
            query.update(await _resolve(request, q))
        shown = urlencode({k: v for k, v in query.items() if v})
        return RedirectResponse(f"/console/requests{'?' + shown if shown else ''}", status_code=303)

    @r.get("/requests", response_class=HTMLResponse, response_model=None)
    async def requests_page(request: Request, listed: Listed, page: int = Query(1, ge=1, le=100_000)) -> Response:
        officer = await console.officer(request)
        if officer is None:
            return console.to_login()
        query = asdict(listed)
        async with request.app.state.connect() as conn:
            rows, total = await ledger_views.page(conn, _filters(query), limit=PAGE, offset=(page - 1) * PAGE)
        now = datetime.now(UTC)
        return console.page(
            request,
            "requests.html",
            officer,
            rows=[audit.request_view(x, now) for x in rows],
            total=total,
            page=page,
            pages=max(1, math.ceil(total / PAGE)),
            query=query,
            link=urlencode({k: v for k, v in query.items() if v}),
        )

    @r.get("/requests.csv", response_model=None)
    async def requests_csv(request: Request, listed: Listed) -> Response:
        officer = await console.officer(request)
        if officer is None:
            return console.to_login()
        async with request.app.state.connect() as conn:
            rows = await ledger_views.every(conn, _filters(asdict(listed)))
        return csv_response(rows)

    @r.get("/requests/{request_id}", response_class=HTMLResponse, response_model=None)
    async def request_page(request_id: str, request: Request) -> Response:
        officer = await console.officer(request)
        if officer is None:
            return console.to_login()
        return await _request_page(console, request, officer, request_id)

    @r.get("/requests/{request_id}/certificate", response_class=HTMLResponse, response_model=None)
    async def certificate_page(request_id: str, request: Request) -> Response:
        officer = await console.officer(request)
        if officer is None:
            return console.to_login()
        async with request.app.state.connect() as conn:
            row = await dsr_requests.get_request(conn, request_id)
            if row is None or row["kind"] != "erasure" or row["status"] != "completed":
                return console.page(request, "certificate.html", officer, status=404, cert=None, request_id=request_id)
            found = await ledger_views.receipts_of(conn, list(row["job_ids"]))
        cert = audit.certificate(row, found)
        now = datetime.now(UTC)
        return console.page(request, "certificate.html", officer, cert=cert, request_id=request_id, now=now)

    @r.post("/requests/{request_id}/extend", response_class=HTMLResponse, response_model=None)
    async def extend(
        request_id: str, request: Request, until: str = Form(""), reason: str = Form(""), csrf: str = Form("")
    ) -> Response:
        officer = await console.acting(request, csrf)
        if isinstance(officer, Response):
            return officer
        if "erase" not in officer.who.scopes:
            return await _request_page(console, request, officer, request_id, 403, "extending needs the erase scope")
        try:
            entry = await _extend(request, officer, request_id, until, reason)
        except InvalidRequest as exc:
            return await _request_page(console, request, officer, request_id, 422, str(exc))
        log.info("dsr.due_moved", request_id=request_id, kind=entry["kind"], by=officer.who.name, via="console")
        return RedirectResponse(f"/console/requests/{request_id}", status_code=303)

    @r.post("/jobs/{job_id}/retry", response_class=HTMLResponse, response_model=None)
    async def retry(job_id: str, request: Request, user_id: str = Form(""), csrf: str = Form("")) -> Response:
        officer = await console.acting(request, csrf)
        if isinstance(officer, Response):
            return officer
        async with request.app.state.connect() as conn:
            served = await dsr_requests.requests_of_job(conn, job_id)
        back = f"/console/requests/{served[0]['request_id']}" if served else f"/console/jobs/{job_id}"
        indexed = await request.app.state.producer.jobs_by_id([job_id])
        need = "export" if indexed and indexed[0]["kind"] == "export_sessions" else "erase"
        problem, status = None, 422
        if need not in officer.who.scopes:
            problem, status = f"retrying needs the {need} scope", 403
        else:
            try:
                enq = await request.app.state.producer.retry(job_id, user_id=user_id or None)
                log.info("job.retried", job_id=job_id, new_job_id=enq.job_id, by=officer.who.name, via="console")
            except SessionctlError as exc:
                problem = _console_words(str(exc))
        if problem is None:
            return RedirectResponse(back, status_code=303)
        if served:
            return await _request_page(console, request, officer, served[0]["request_id"], status, problem)
        return console.page(request, "job.html", officer, status=status, job=None, job_id=job_id, error=problem)

    @r.post("/deliveries/{delivery_id}/resend", response_class=HTMLResponse, response_model=None)
    async def resend(
        delivery_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)], request: Request, csrf: str = Form("")
    ) -> Response:
        officer = await console.acting(request, csrf)
        if isinstance(officer, Response):
            return officer
        async with request.app.state.connect() as conn:
            found = await ledger_views.delivery(conn, delivery_id)
            again = None if found is None else await webhook_deliveries.resend(conn, delivery_id)
        if found is None or again is None:
            return HTMLResponse("No such delivery.", status_code=404)
        log.info("webhook.resend", delivery=delivery_id, event_id=again["event_id"], by=officer.who.name, via="console")
        back = f"/console/requests/{found['request_id']}" if found["request_id"] else "/console/requests"
        return RedirectResponse(back, status_code=303)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What a list of requests (and its CSV) is narrowed to, as its URL says it."""

    q: str = ""  # a request id, ticket ref or job id
    person: str = ""  # a user HMAC
    ids: str = ""  # with ``person``: the requests a typed ticket ref names, comma-separated
    state: str = ""
    kind: str = ""
    overdue: str = ""
    late: str = ""


Listed = Annotated[ListQuery, Depends()]


def _filters(query: dict[str, str]) -> ledger_views.Filters:
    """The list's filters from its URL: ``q`` a request id, ref or job id; ``person`` an HMAC (with
    ``ids``, requests named by a ticket ref). Anything malformed selects nothing."""
    q, person, ids = query["q"].strip(), query["person"], tuple(i for i in query["ids"].split(",") if i)
    malformed = (person and not HMAC.fullmatch(person)) or not all(REQUEST_ID.fullmatch(i) for i in ids)
    if malformed or (q and not _storable(q)):
        return ledger_views.Filters(q="\x01 nothing")
    return ledger_views.Filters(
        q=q or None,
        person=person or None,
        ids=ids if person else (),
        state=query["state"] or None,
        kind=query["kind"] or None,
        overdue=bool(query["overdue"]),
        late=bool(query["late"]),
    )


def _storable(text: str) -> bool:
    try:
        storable_text(text, "the search")
    except InvalidRequest:
        return False
    return True


async def _resolve(request: Request, typed: str) -> dict[str, str]:
    """What a search names, as the list's URL may carry it: a request id or job id itself; anything
    else as the HMAC of it taken as a user id (exactly as typed: ids are never normalised) plus the
    ids of the requests whose ticket ref it is — a ref may be a person's id, so it never goes in a URL."""
    if not _storable(typed):
        return {"q": "-"}  # nothing is named so
    async with request.app.state.connect() as conn:
        by_id, by_ref = await ledger_views.named(conn, typed.strip())
    if by_id:
        return {"q": typed.strip(), "person": "", "ids": ""}
    person = user_hmac(request.app.state.settings.hash_key_bytes, typed)
    return {"q": "", "person": person, "ids": ",".join(by_ref)}


def _console_words(message: str) -> str:
    """A job's refusal as the console says it (the CLI's flags named as the form's field)."""
    if "pass --user" in message:
        return "this job was for one person: type their id (it is checked against the job's HMAC, and kept nowhere)"
    return message.replace("--user", "the person's id")


async def _extend(request: Request, officer: Officer, request_id: str, until: str, reason: str) -> dict[str, Any]:
    """Extend the request to the day ``until`` (at the time of day it is due now), with the reason."""
    why = storable_text(reason.strip(), "the reason")[:200]
    if not why:
        raise InvalidRequest("a reason is required: say why the request needs more time (art. 12(3))")
    try:
        day = date.fromisoformat(until)
    except ValueError:
        raise InvalidRequest("give the new due date as a date (YYYY-MM-DD)") from None
    async with request.app.state.connect() as conn, conn.transaction():
        row = await dsr_requests.lock_request(conn, request_id)
        if row is None:
            raise InvalidRequest("no such request")
        due: datetime = row["due_at"]
        moved_to = datetime.combine(day, time(due.hour, due.minute, due.second), UTC)
        entry = ledger.extension(row, moved_to, why, officer.who.name, datetime.now(UTC))
        if await dsr_requests.move_due(conn, request_id, moved_to, entry) is None:
            raise InvalidRequest("only an open request's due date can change")
    return entry


async def _request_page(
    console: Console, request: Request, officer: Officer, request_id: str, status: int = 200, error: str | None = None
) -> Response:
    producer = request.app.state.producer
    async with request.app.state.connect() as conn:
        row = await dsr_requests.get_request(conn, request_id)
        if row is None:
            return console.page(request, "request.html", officer, status=404, r=None, request_id=request_id)
        found = await ledger_views.receipts_of(conn, list(row["job_ids"]))
        deliveries = await ledger_views.deliveries_of(conn, request_id)
    jobs = await producer.jobs_by_id(list(row["job_ids"]))
    known = {j["job_id"] for j in jobs}
    jobs += [{"job_id": j, "state": "not in the job index"} for j in row["job_ids"] if j not in known]
    return console.page(
        request,
        "request.html",
        officer,
        status=status,
        error=error,
        r=audit.request_view(row, datetime.now(UTC)),
        request_id=request_id,
        timeline=audit.timeline(row, jobs, deliveries),
        jobs=jobs,
        stores=audit.by_store(found),
        receipts=found,
        deliveries=[{**dict(d), "attempts": audit.decoded(d["attempts"]) or []} for d in deliveries],
        remains=audit.decoded(row["remains"]) or {},
    )
