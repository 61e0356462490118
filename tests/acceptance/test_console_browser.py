"""The console in a real browser: Playwright driving Debian's Chromium against `sessionctl serve`'s
app on real Postgres and Redis, with a real worker having run the erasure. Sign in, a finished
erasure with its counts, an overdue request highlighted, receipts of a user id typed in, sign out;
without the cookie, the console sends the browser to sign in. (The audit flow and the docs'
screenshots: tests/acceptance/test_console_audit.py.)"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from playwright.async_api import async_playwright

from sessionctl.api.app import create_app
from sessionctl.config import Settings
from sessionctl.producer import Producer
from sessionctl.store import api_tokens, dsr_requests
from tests.agno_seed import seed
from tests.conftest import run_worker
from tests.service_helpers import make_token, serving

USER = "console-user@example.com"


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    return path


async def test_a_privacy_officer_signs_in_sees_a_finished_erasure_and_an_overdue_request_and_signs_out(
    own_database: tuple[Settings, asyncpg.Connection], agent_id: str
) -> None:
    s, conn = own_database
    token = await make_token(conn, "officer", ["read", "audit"])
    reader = await make_token(conn, "reader", ["read", "erase"])
    await seed(s.database_url, s.schema_for(agent_id), agent_id, USER, 4)
    async with Producer(s) as p:  # an erasure that ran: its job and its counts
        enq = await p.purge_user_sessions(user_id=USER, agent_id=agent_id, requested_by="TICKET-7")
    await run_worker(s)
    received = datetime.now(UTC) - timedelta(days=40)  # an overdue request in the ledger
    await dsr_requests.insert_request(
        conn,
        {
            "request_id": "dsr_overdue000000000001",
            "kind": "erasure",
            "request_ref": "LATE-1",
            "user_hmac": "f" * 32,
            "target": agent_id,
            "options": {},
            "received_at": received,
            "due_at": received + timedelta(days=30),
            "callback_url": None,
            "requested_by": None,
            "token_name": "platform",
            "dry_run": False,
            "subject": None,
            "job_ids": [],
        },
    )
    async with serving(create_app(s)) as url, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(f"{url}/console")
            assert page.url == f"{url}/console/login"  # no cookie: sent to sign in

            for wrong in ("sct_wrong", reader):  # a token that is not one, or without the audit scope
                await page.fill("#token", wrong)
                await page.click("#sign-in")
                assert "not valid" in (await page.inner_text("[role=alert]"))

            await page.fill("#token", token)
            await page.click("#sign-in")
            await page.wait_for_url(f"{url}/console")
            assert "signed in as officer" in await page.inner_text("header")

            row = page.locator(f'#jobs tr[data-job="{enq.job_id}"]')
            assert await row.locator(".status").inner_text() == "succeeded"
            counts = await row.locator(".counts").inner_text()
            assert "sessions deleted" in counts and "4" in counts and "{" not in counts  # a table, not a dict

            late = page.locator('#open-requests tr[data-request="dsr_overdue000000000001"]')
            assert await late.get_attribute("class") == "overdue"
            assert "overdue by" in await late.inner_text()
            color = await late.locator("td").first.evaluate("e => getComputedStyle(e).backgroundColor")
            assert color == "rgb(253, 226, 225)"  # highlighted, not just labelled
            body = await page.content()
            assert USER not in body  # HMACs only

            await page.click("text=Receipts")
            await page.fill("#user-id", USER)
            await page.click("#find-receipts")
            assert "1 receipt(s)" in await page.inner_text("main")
            assert USER not in await page.content()

            await page.click("#sign-out")
            await page.wait_for_url(f"{url}/console/login")
            await page.goto(f"{url}/console")
            assert page.url == f"{url}/console/login"  # the cookie is gone
        finally:
            await browser.close()


async def test_a_forged_or_revoked_session_and_a_form_without_its_csrf_token_are_refused(
    own_database: tuple[Settings, asyncpg.Connection],
) -> None:
    import httpx

    s, conn = own_database
    token = await make_token(conn, "clerk", ["read", "audit"])
    async with serving(create_app(s)) as url, httpx.AsyncClient(base_url=url) as client:
        resp = await client.post("/console/login", data={"token": token})
        assert resp.status_code == 303 and "sessionctl_console" in resp.cookies
        cookie = resp.cookies["sessionctl_console"]
        set_cookie = resp.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie
        assert (await client.get("/console")).status_code == 200
        # a form posted without the page's CSRF token (as another site would): refused
        resp = await client.post("/console/receipts", data={"user_id": USER})
        assert resp.status_code == 403
        # a forged cookie: the token's hash with another expiry, unsigned
        forged = cookie.rsplit(".", 2)[0] + ".9999999999.00"
        client.cookies.set("sessionctl_console", forged, path="/console")
        assert (await client.get("/console")).headers.get("location") == "/console/login"
        client.cookies.set("sessionctl_console", cookie, path="/console")
        assert await api_tokens.revoke_token(conn, "clerk")
        resp = await client.get("/console")
        assert resp.status_code == 303 and resp.headers["location"] == "/console/login"  # revoked: signed out
