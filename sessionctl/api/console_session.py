"""The console's sign-in: an HttpOnly, SameSite=Strict cookie holding the token's hash and an
expiry, signed with a key derived from ``SESSIONCTL_HASH_KEY`` — so neither a copy of the cookie
jar's hash nor of the database signs anyone in, and a revoked token ends its sessions — and the
CSRF token every form carries, bound to the session. The pages render through one Jinja
environment whose filters show times to the second in UTC and counts by their names."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from sessionctl.api import audit
from sessionctl.api.auth import Caller
from sessionctl.config import Settings
from sessionctl.store import api_tokens

COOKIE = "sessionctl_console"
SESSION_S = 8 * 3600
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
templates.env.filters["when"] = audit.when
templates.env.filters["label"] = audit.label
templates.env.filters["shown"] = audit.shown
templates.env.filters["nowrap_times"] = audit.nowrap_times


@dataclass(frozen=True, slots=True)
class Officer:
    """Who is signed in, and the CSRF token of their session."""

    who: Caller
    csrf: str


class Console:
    """Signing in and out, checking a session and its forms, rendering a page."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.key = hmac.new(settings.hash_key_bytes, b"sessionctl console session", hashlib.sha256).digest()

    def sign(self, value: str) -> str:
        return hmac.new(self.key, value.encode(), hashlib.sha256).hexdigest()

    def csrf_for(self, cookie: str) -> str:
        return self.sign("csrf." + cookie)[:40]

    def cookie_for(self, digest: str) -> str:
        expiry = str(int(time.time()) + SESSION_S)
        return f"{digest}.{expiry}.{self.sign(f'{digest}.{expiry}')}"

    async def officer(self, request: Request) -> Officer | None:
        """The signed-in officer (a live token with the ``audit`` scope), or ``None``."""
        cookie = request.cookies.get(COOKIE, "")
        digest, _, rest = cookie.partition(".")
        expiry, _, mac = rest.partition(".")
        if not (digest and expiry.isdigit() and mac) or int(expiry) < time.time():
            return None
        if not hmac.compare_digest(self.sign(f"{digest}.{expiry}"), mac):
            return None
        async with request.app.state.connect() as conn:
            row = await api_tokens.find_token(conn, digest)  # revoked since: signed out
        if row is None or "audit" not in row["scopes"]:
            return None
        return Officer(Caller(str(row["name"]), tuple(row["scopes"])), self.csrf_for(cookie))

    def form_ok(self, officer: Officer, csrf: str) -> bool:
        return hmac.compare_digest(officer.csrf.encode(), csrf.encode())

    async def acting(self, request: Request, csrf: str) -> Officer | Response:
        """The officer behind a form sent from the console, or what to answer instead: to sign in
        (no live session), 403 (a stale or forged form: its CSRF token is not this session's)."""
        officer = await self.officer(request)
        if officer is None:
            return self.to_login()
        if not self.form_ok(officer, csrf):
            return self.stale()
        return officer

    @staticmethod
    def page(request: Request, name: str, officer: Officer | None, status: int = 200, **ctx: Any) -> HTMLResponse:
        who, csrf = (None, None) if officer is None else (officer.who, officer.csrf)
        return templates.TemplateResponse(request, name, {"who": who, "csrf": csrf, **ctx}, status_code=status)

    @staticmethod
    def to_login() -> RedirectResponse:
        return RedirectResponse("/console/login", status_code=303)

    @staticmethod
    def stale() -> HTMLResponse:
        return HTMLResponse("Forbidden: the form is stale; reload the page.", status_code=403)
