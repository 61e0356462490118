"""The console for privacy officers: server-rendered pages under ``/console``.

Sign in with an API token with the ``audit`` scope (the console shows every request; acting —
extending a request, retrying a job — needs the scope the API needs for it). The session and the
forms' CSRF tokens: :mod:`.console_session`. Pages show HMACs, never raw user ids: a user id typed
in (to search, to retry) is hashed or handed to the job, and never shown back. Here: signing in and
out, the overview, receipts; the requests and their certificates: :mod:`.console_requests`; jobs and
workers: :mod:`.console_jobs`."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from sessionctl.api import console_jobs, console_requests
from sessionctl.api.audit import request_view
from sessionctl.api.console_session import COOKIE, SESSION_S, Console
from sessionctl.config import Settings
from sessionctl.privacy import user_hmac
from sessionctl.store import dsr_requests, ledger_views, receipts
from sessionctl.tokens import token_hash


def router(settings: Settings) -> APIRouter:
    console = Console(settings)
    r = APIRouter(prefix="/console", include_in_schema=False)

    @r.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> HTMLResponse:
        return console.page(request, "login.html", None, error=None)

    @r.post("/login", response_model=None)
    async def login(request: Request, token: str = Form(...)) -> Response:
        who = await request.app.state.tokens.caller(token.strip())
        if who is None or "audit" not in who.scopes:
            error = "That token is not valid here (it needs the audit scope)."
            return console.page(request, "login.html", None, status=401, error=error)
        resp = RedirectResponse("/console", status_code=303)
        resp.set_cookie(
            COOKIE,
            console.cookie_for(token_hash(token.strip())),
            max_age=SESSION_S,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/console",
        )
        return resp

    @r.post("/logout", response_model=None)
    async def logout(request: Request, csrf: str = Form("")) -> Response:
        officer = await console.officer(request)
        if officer is not None and not console.form_ok(officer, csrf):
            return console.stale()
        resp = console.to_login()
        resp.delete_cookie(COOKIE, path="/console")
        return resp

    @r.get("", response_class=HTMLResponse, response_model=None)
    async def overview(request: Request) -> Response:
        officer = await console.officer(request)
        if officer is None:
            return console.to_login()
        producer = request.app.state.producer
        async with request.app.state.connect() as conn:
            open_requests = await dsr_requests.list_requests(conn, open_only=True, limit=50)
            closed = await ledger_views.recently_closed(conn, 20)
        now = datetime.now(UTC)
        listing = await producer.jobs(limit=30)
        failed = await producer.jobs(failed_only=True, limit=20)
        jobs = []
        for row in listing:
            progress = None
            if row.get("state") in ("running", "queued", "retrying"):
                progress = (await producer.status(row["job_id"])).progress
            jobs.append({**row, "progress": progress})
        return console.page(
            request,
            "index.html",
            officer,
            open_requests=[request_view(r, now) for r in open_requests],
            closed_requests=[request_view(r, now) for r in closed],
            jobs=jobs,
            failed=list(failed),
            health=await console_jobs.health(request),
        )

    @r.get("/receipts", response_class=HTMLResponse, response_model=None)
    async def receipts_form(request: Request) -> Response:
        officer = await console.officer(request)
        if officer is None:
            return console.to_login()
        return console.page(request, "receipts.html", officer, found=None, hmac=None)

    @r.post("/receipts", response_class=HTMLResponse, response_model=None)
    async def receipts_search(request: Request, user_id: str = Form(...), csrf: str = Form("")) -> Response:
        officer = await console.acting(request, csrf)
        if isinstance(officer, Response):
            return officer
        digest = user_hmac(settings.hash_key_bytes, user_id)
        async with request.app.state.connect() as conn:
            found = await receipts.find(conn, digest)
        return console.page(request, "receipts.html", officer, found=found, hmac=digest)

    console_requests.add_pages(r, console)
    console_jobs.add_pages(r, console)
    return r
