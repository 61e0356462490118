"""The console for privacy officers: server-rendered pages under ``/console``.

Sign in with an API token with the ``audit`` scope (the console shows every request): the session is an HttpOnly,
SameSite=Strict cookie holding the token's hash and an expiry, signed with a key derived from
``SESSIONCTL_HASH_KEY`` — so neither a copy of the cookie jar's hash nor of the database signs
anyone in, and a revoked token ends its sessions. Every form carries a CSRF token bound to the
session. Pages show HMACs, never raw user ids (a user id typed into the receipts form is hashed
and not shown back)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from sessionctl.api.auth import Caller
from sessionctl.config import Settings
from sessionctl.privacy import user_hmac
from sessionctl.store import api_tokens, dsr_requests, receipts
from sessionctl.tokens import token_hash

COOKIE = "sessionctl_console"
SESSION_S = 8 * 3600
_templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


def router(settings: Settings) -> APIRouter:
    key = hmac.new(settings.hash_key_bytes, b"sessionctl console session", hashlib.sha256).digest()
    r = APIRouter(prefix="/console", include_in_schema=False)

    def sign(value: str) -> str:
        return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()

    def csrf_for(cookie: str) -> str:
        return sign("csrf." + cookie)[:40]

    async def signed_in(request: Request) -> tuple[Caller, str] | None:
        cookie = request.cookies.get(COOKIE, "")
        digest, _, rest = cookie.partition(".")
        expiry, _, mac = rest.partition(".")
        if not (digest and expiry.isdigit() and mac) or int(expiry) < time.time():
            return None
        if not hmac.compare_digest(sign(f"{digest}.{expiry}"), mac):
            return None
        async with request.app.state.connect() as conn:
            row = await api_tokens.find_token(conn, digest)  # revoked since: signed out
        if row is None or "audit" not in row["scopes"]:
            return None
        return Caller(str(row["name"]), tuple(row["scopes"])), cookie

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        return _templates.TemplateResponse(request, name, ctx, status_code=status)

    def to_login() -> RedirectResponse:
        return RedirectResponse("/console/login", status_code=303)

    @r.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> HTMLResponse:
        return page(request, "login.html", error=None)

    @r.post("/login", response_model=None)
    async def login(request: Request, token: str = Form(...)) -> Response:
        who = await request.app.state.tokens.caller(token.strip())
        if who is None or "audit" not in who.scopes:
            return page(
                request, "login.html", status=401, error="That token is not valid here (it needs the audit scope)."
            )
        digest = token_hash(token.strip())
        expiry = str(int(time.time()) + SESSION_S)
        value = f"{digest}.{expiry}.{sign(f'{digest}.{expiry}')}"
        resp = RedirectResponse("/console", status_code=303)
        resp.set_cookie(
            COOKIE,
            value,
            max_age=SESSION_S,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/console",
        )
        return resp

    @r.post("/logout", response_model=None)
    async def logout(request: Request, csrf: str = Form("")) -> Response:
        session = await signed_in(request)
        if session is not None and not hmac.compare_digest(csrf_for(session[1]), csrf):
            return HTMLResponse("Forbidden: the form is stale; reload the page.", status_code=403)
        resp = to_login()
        resp.delete_cookie(COOKIE, path="/console")
        return resp

    @r.get("", response_class=HTMLResponse, response_model=None)
    async def overview(request: Request) -> Response:
        session = await signed_in(request)
        if session is None:
            return to_login()
        who, cookie = session
        producer = request.app.state.producer
        async with request.app.state.connect() as conn:
            open_requests = await dsr_requests.list_requests(conn, open_only=True, limit=200)
            closed = [r for r in await dsr_requests.list_requests(conn, limit=50) if r["status"] != "open"][:20]
        now = datetime.now(UTC)
        listing = await producer.jobs(limit=30)
        failed = await producer.jobs(failed_only=True, limit=20)
        jobs = []
        for row in listing:
            progress = None
            if row.get("state") in ("running", "queued", "retrying"):
                progress = (await producer.status(row["job_id"])).progress
            jobs.append({**row, "progress": progress})
        return page(
            request,
            "index.html",
            who=who,
            csrf=csrf_for(cookie),
            open_requests=[_req(r, now) for r in open_requests],
            closed_requests=[_req(r, now) for r in closed],
            jobs=jobs,
            failed=list(failed),
            health=await _health(request),
        )

    @r.get("/receipts", response_class=HTMLResponse, response_model=None)
    async def receipts_form(request: Request) -> Response:
        session = await signed_in(request)
        if session is None:
            return to_login()
        return page(request, "receipts.html", who=session[0], csrf=csrf_for(session[1]), found=None, hmac=None)

    @r.post("/receipts", response_class=HTMLResponse, response_model=None)
    async def receipts_search(request: Request, user_id: str = Form(...), csrf: str = Form("")) -> Response:
        session = await signed_in(request)
        if session is None:
            return to_login()
        if not hmac.compare_digest(csrf_for(session[1]), csrf):
            return HTMLResponse("Forbidden: the form is stale; reload the page.", status_code=403)
        digest = user_hmac(settings.hash_key_bytes, user_id)
        async with request.app.state.connect() as conn:
            found = await receipts.find(conn, digest)
        return page(request, "receipts.html", who=session[0], csrf=csrf_for(session[1]), found=found, hmac=digest)

    return r


def _req(row: Any, now: datetime) -> dict[str, Any]:
    d = dict(row)
    d["days_left"] = (row["due_at"] - now).total_seconds() / 86400
    d["overdue"] = row["status"] == "open" and row["due_at"] < now
    extensions = row["extensions"]
    d["extensions"] = json.loads(extensions) if isinstance(extensions, str) else list(extensions or [])
    return d


async def _health(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        await (await request.app.state.producer.redis()).ping()
        out["Redis"] = "ok"
    except Exception as exc:
        out["Redis"] = f"unreachable ({type(exc).__name__})"
    try:
        async with request.app.state.connect() as conn:
            await conn.fetchval("SELECT 1")
        out["Postgres"] = "ok"
    except Exception as exc:
        out["Postgres"] = f"unreachable ({type(exc).__name__})"
    producer = request.app.state.producer
    live = await (await producer.queue()).workers()
    worker = await producer.check_worker()
    names = ", ".join(str(w.get("worker")) for w in live)
    out["Workers"] = (f"{len(live)} live: {names}" if live else "none") + ("" if worker is None else f" — {worker}")
    return out
