"""The privacy officer's audit trail in a real browser: Playwright driving Debian's Chromium against
`sessionctl serve`'s app on real Postgres and Redis, with real workers. A finished erasure (made
over the API, with its webhook delivered) is reached from the overview by clicking: its timeline,
its certificate; a ticket ref and a user id searched; 250 more requests paged through and
downloaded as CSV; an extension refused with the rule named, then granted with its reason; a job
that failed on a misdeclared store retried with the person's id typed again (a wrong id refused)
and run to completion; a job's page. No page shows a raw user id or a token, every time reads
`YYYY-MM-DD HH:MM:SS UTC`, and at 800 px no page scrolls sideways. Screenshots of the overview, a
request, a certificate and a job, at 1280 and 800 px, land in docs/images when
SESSIONCTL_SCREENSHOTS=1.

The API side: `GET /v1/requests.csv` (an ``audit`` token: every request; another: its own) and
`GET /v1/requests/{id}/certificate` (JSON; 404 for another token's request)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import asyncpg
import httpx
import pytest
from playwright.async_api import Page, Response, async_playwright

from sessionctl import ledger
from sessionctl.config import Settings
from sessionctl.privacy import user_hmac
from sessionctl.store import dsr_requests
from tests.agno_seed import seed
from tests.conftest import run_worker
from tests.service_helpers import auth, dsr_service, make_token, running_worker, until

PERSON = "ada.lovelace-4711@example.com"  # TICKET-42: erased at once
FAILED = "grace.hopper-0815@example.com"  # TICKET-43: its first job fails, a retry serves it
WRONG = "grace.hopper-0816@example.com"  # typed by mistake at the retry: refused, shown nowhere
BULK, PER_PAGE = 250, 50
CSV_COLUMNS = [
    "request_id",
    "ref",
    "kind",
    "person_hmac",
    "received_at",
    "first_due_at",
    "due_at",
    "extensions",
    "completed_at",
    "late",
    "outcome",
    "complete",
]
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
SHOWN_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "images"


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    return path


class Looker:
    """Looks at every page the officer is on: a raw user id or a token in its HTML fails the test at
    once; what an officer cannot read — a time not written `YYYY-MM-DD HH:MM:SS UTC` (ISO `T`,
    `+00:00`, fractions of a second), a Python dict or list printed — is noted, page by page, and
    the test fails at its end with every note (``unreadable``)."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets
        self.notes: list[str] = []

    async def __call__(self, page: Page) -> str:
        html = await page.content()
        leaked = [i for i, s in enumerate(self.secrets) if s in html]
        assert not leaked, f"{page.url} shows secret(s) #{leaked} (a raw user id or a token)"
        text = await page.inner_text("body")
        for what, pattern in (
            ("a time with fractions of a second", r"\d\d:\d\d:\d\d\.\d+"),
            ("an ISO time, not `… UTC`", r"\d{4}-\d\d-\d\dT\d\d:\d\d\S*"),
            ("a time with +00:00", r"\S*\+00:00"),
            ("a Python dict or list printed", r"[{\[]'[^\n]{0,40}"),
        ):
            if found := re.search(pattern, text):
                self.notes.append(f"{page.url}: {what}: {found.group(0)!r}")
        return html

    def unreadable(self) -> None:
        assert not self.notes, "unreadable for an officer:\n" + "\n".join(dict.fromkeys(self.notes))


async def _submit(page: Page, selector: str) -> Response:
    """Click what submits a form (or follows a link); the response the page ended on."""
    async with page.expect_navigation() as nav:
        await page.click(selector)
    response = await nav.value
    assert response is not None
    return response


async def _link_to(page: Page, selector: str, path: str) -> int:
    """The index, among ``selector``, of the link whose (decoded) href ends with ``path``."""
    hrefs = await page.locator(selector).evaluate_all("links => links.map(a => a.getAttribute('href'))")
    found = [i for i, h in enumerate(hrefs) if h and unquote(h).endswith(path)]
    assert found, f"no {selector} to {path} on {page.url} (among {len(hrefs)})"
    return found[0]


async def _events(page: Page) -> list[str]:
    return [
        str(e)
        for e in await page.locator("ol#timeline li[data-event]").evaluate_all(
            "items => items.map(li => li.dataset.event)"
        )
    ]


async def _delivered(client: httpx.AsyncClient, token: str, job_id: str) -> bool:
    job = (await client.get(f"/v1/jobs/{job_id}", headers=auth(token))).json()
    return bool(job.get("webhooks")) and bool(job["webhooks"][0].get("delivered_at"))


async def _settled(client: httpx.AsyncClient, token: str, request_id: str) -> bool:
    return bool((await client.get(f"/v1/requests/{request_id}", headers=auth(token))).json()["completed_at"])


async def _bulk(conn: asyncpg.Connection, agent_id: str) -> dict[str, Any]:
    """250 requests straight into the ledger (most completed, some dry runs, some open, one overdue)
    and one open request not yet due (EXT-1, to extend)."""
    now = datetime.now(UTC)
    base = {
        "target": agent_id,
        "options": {},
        "callback_url": None,
        "requested_by": None,
        "token_name": "officer",
        "subject": None,
        "job_ids": [],
    }
    for i in range(BULK):
        received = now - (timedelta(days=40) if i == 0 else timedelta(days=1 + i % 20, minutes=i))
        await dsr_requests.insert_request(
            conn,
            {
                **base,
                "request_id": f"dsr_bulk{i:016d}",
                "kind": "export" if i % 5 == 4 else "erasure",
                "request_ref": f"BULK-{i:03d}",
                "user_hmac": f"{i:032x}",
                "received_at": received,
                "due_at": ledger.due_date(received, None),
                "dry_run": i % 10 == 1,
            },
        )
    closed = await conn.execute(
        "UPDATE sessionctl.dsr_requests SET status = 'completed', completed_at = received_at + interval '3 days',"
        " late = false, last_job_status = 'succeeded'"
        " WHERE request_ref LIKE 'BULK-%' AND status = 'open' AND right(request_ref, 1) <> '0'"
    )
    assert closed == "UPDATE 200"
    received = now - timedelta(days=2)
    ext = await dsr_requests.insert_request(
        conn,
        {
            **base,
            "request_id": "dsr_extend00000000001",
            "kind": "erasure",
            "request_ref": "EXT-1",
            "user_hmac": "e" * 32,
            "received_at": received,
            "due_at": ledger.due_date(received, None),
            "dry_run": False,
        },
    )
    assert ext is not None
    recorded = await dsr_requests.get_request(conn, ext["request_id"])  # the whole row
    assert recorded is not None
    return dict(recorded)


async def test_a_privacy_officer_audits_requests_certificates_extensions_and_retries_in_the_browser(
    own_database: tuple[Settings, asyncpg.Connection], agent_id: str, tmp_path: Path
) -> None:
    async with dsr_service(*own_database) as service:
        s, conn, client, receiver = service["settings"], service["conn"], service["client"], service["receiver"]
        tokens: dict[str, str] = service["tokens"]
        officer = tokens["all"]  # named "officer": read, erase, export
        # the console's officer audits, and acts (extends, retries): the erase scope, as in the API
        console_token = await make_token(conn, "privacy-officer", ["read", "audit", "erase"])
        look = Looker([PERSON, FAILED, WRONG, console_token, *tokens.values()])
        url = str(client.base_url).rstrip("/")
        schema = s.schema_for(agent_id)
        await seed(s.database_url, schema, agent_id, PERSON, 3)
        await seed(s.database_url, schema, agent_id, FAILED, 2)
        await seed(s.database_url, schema, agent_id, "a-bystander", 1)

        # TICKET-42: an erasure over the API, a real worker, its webhook delivered
        resp = await client.post(
            "/v1/erasures",
            headers=auth(officer),
            json={"user_id": PERSON, "agent_id": agent_id, "request_ref": "TICKET-42", "callback_url": service["hook"]},
        )
        assert resp.status_code == 202, resp.text
        done_id, done_job = resp.json()["request_id"], resp.json()["job_id"]
        async with running_worker(s):
            await until(lambda: receiver.got, timeout=30)
            await until(lambda: _delivered(client, officer, done_job), timeout=30)
        done = (await client.get(f"/v1/requests/{done_id}", headers=auth(officer))).json()
        assert done["status"] == "completed" and done["receipt_id"], done
        (receipt,) = (await client.post("/v1/receipts/search", headers=auth(officer), json={"user_id": PERSON})).json()[
            "receipts"
        ]
        assert receipt["id"] == done["receipt_id"]

        # TICKET-43: at every agent, with a worker whose deployment file declares a LanceDB store
        # that is not there: the job fails at once (StoreMisdeclared), the request stays open
        resp = await client.post(
            "/v1/erasures", headers=auth(officer), json={"user_id": FAILED, "request_ref": "TICKET-43"}
        )
        assert resp.status_code == 202, resp.text
        failed_id, failed_job = resp.json()["request_id"], resp.json()["job_id"]
        deployment = tmp_path / "deployment.toml"
        deployment.write_text(
            f'[[stores]]\nkind = "lancedb"\nuri = "{tmp_path / "no-such-lancedb"}"\ntable_name = "knowledge"\n'
        )
        await run_worker(s.model_copy(update={"config_file": str(deployment)}))
        job = (await client.get(f"/v1/jobs/{failed_job}", headers=auth(officer))).json()
        assert job["status"] == "failed" and job["error"]["type"] == "StoreMisdeclared", job
        failing = (await client.get(f"/v1/requests/{failed_id}", headers=auth(officer))).json()
        assert failing["status"] == "open" and failing["last_job_status"] == "failed"

        ext = await _bulk(conn, agent_id)
        total = BULK + 3  # the bulk, TICKET-42, TICKET-43, EXT-1
        pages = -(-total // PER_PAGE)
        hmac = user_hmac(s.hash_key_bytes, PERSON)

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
            try:
                context = await browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
                page = await context.new_page()
                await page.goto(f"{url}/console/login")
                await page.fill("#token", console_token)
                await _submit(page, "#sign-in")
                assert page.url == f"{url}/console"
                await look(page)
                header = page.locator("header")
                assert "signed in as privacy-officer" in await header.inner_text()
                for nav, path in [
                    ("overview", ""),
                    ("requests", "/requests"),
                    ("receipts", "/receipts"),
                    ("workers", "/workers"),
                ]:
                    assert await header.locator(f"a#nav-{nav}").get_attribute("href") == f"/console{path}"

                # the overview: the open requests (the failed one with its full job id), the jobs
                failing_row = page.locator(f'#open-requests tr[data-request="{failed_id}"]')
                assert await failing_row.locator("a.job-link").inner_text() == failed_job
                assert "overdue" in (
                    await page.locator('#open-requests tr[data-request="dsr_bulk0000000000000000"]').get_attribute(
                        "class"
                    )
                    or ""
                )
                row = page.locator(f'table#jobs tr[data-job="{done_job}"]')
                assert await row.locator(".status").inner_text() == "succeeded"
                assert "sessions deleted" in await row.locator(".counts").inner_text()
                assert await page.locator("a#all-requests").get_attribute("href") == "/console/requests"

                # … to TICKET-42's request by clicking
                links = page.locator("a.request-link")
                await links.nth(await _link_to(page, "a.request-link", f"/console/requests/{done_id}")).click()
                await page.wait_for_url(f"{url}/console/requests/{done_id}")
                await look(page)
                assert done_id in await page.inner_text("h1")
                summary = await page.inner_text("#summary")
                assert "TICKET-42" in summary and hmac in summary and "completed" in summary, summary
                assert SHOWN_TIME.search(summary), summary
                events = await _events(page)
                assert events[0] == "received" and {"job", "completed", "delivery"} <= set(events), events
                assert events.index("job") < events.index("completed"), events
                assert [await c.inner_text() for c in await page.locator("#jobs code.job-id").all()] == [done_job]
                assert await page.locator("#jobs .status").first.inner_text() == "succeeded"
                assert await page.locator("form.resend[data-delivery] .resend-go").count() == 1
                assert await page.locator("table#stores tr").count() >= 1
                assert (await page.inner_text("#complete")).strip().startswith("complete")

                # its certificate
                await _submit(page, "a#certificate")
                assert page.url == f"{url}/console/requests/{done_id}/certificate"
                await look(page)
                cert = page.locator("#certificate")
                text = await cert.inner_text()
                assert done_id in text and "TICKET-42" in text and hmac in text, text
                assert len(SHOWN_TIME.findall(text)) >= 3, text  # received, due, completed
                # store → count, as the API's certificate states them
                facts = (await client.get(f"/v1/requests/{done_id}/certificate", headers=auth(officer))).json()
                assert facts["stores"], facts
                counts = await cert.locator("table#cert-stores tr:has(td)").evaluate_all(
                    "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))"
                )
                want = [[f["store"], f["what"].replace("_", " "), str(f["rows"])] for f in facts["by_store"]]
                assert counts == want, (counts, facts["by_store"])
                receipt_ids = [re.sub(r"\D", "", await r.inner_text()) for r in await cert.locator(".receipt-id").all()]
                assert receipt_ids == [str(receipt["id"])], receipt_ids
                assert (await cert.locator("#cert-complete").inner_text()).strip().startswith("complete: yes")
                assert "sessionctl verify" in await cert.locator("code#reverify").inner_text()
                await page.emulate_media(media="print")  # printed: no header, no buttons
                assert await page.locator("header").is_hidden() and await page.locator("button#print").is_hidden()
                assert await cert.is_visible()
                await page.emulate_media(media="screen")

                # an open request has no certificate
                assert (await page.goto(f"{url}/console/requests/{failed_id}/certificate")).status == 404
                await page.goto(f"{url}/console/requests/{failed_id}")
                assert await page.locator("a#certificate").count() == 0

                # search by ticket ref: lands on that request, or lists it alone
                await page.fill("form#search #q", "TICKET-42")
                await _submit(page, "form#search #search-go")
                await look(page)
                if page.url != f"{url}/console/requests/{done_id}":
                    assert await page.locator("table#requests tr[data-request]").evaluate_all(
                        "rows => rows.map(r => r.dataset.request)"
                    ) == [done_id]

                # search by a user id: found by its HMAC, the id never shown back (the field emptied)
                await page.fill("form#search #q", PERSON)
                await _submit(page, "form#search #search-go")
                assert PERSON not in unquote(page.url)  # a search is a POST: the id is in no URL or log
                await look(page)
                assert "searched by a user id (hmac" in (await page.inner_text("main")).lower()
                assert all(
                    v == "" for v in await page.locator("input[name=q]").evaluate_all("qs => qs.map(q => q.value)")
                )
                assert await page.locator(f'table#requests tr[data-request="{done_id}"]').count() == 1

                # the filters: open ones (the bulk's 25, EXT-1, TICKET-43), overdue ones; the CSV link keeps them
                await _submit(page, "a#nav-requests")
                await page.select_option("select#state", "open")
                await _submit(page, "#apply")
                await look(page)
                assert (await page.inner_text("#page-info")).strip().endswith("· 27 requests")
                assert "state=open" in (await page.get_attribute("a#csv", "href") or "")
                await page.check("#overdue")
                await _submit(page, "#apply")
                overdue = await page.locator("table#requests tr[data-request]").evaluate_all(
                    "rows => rows.map(r => r.dataset.request)"
                )
                assert overdue == ["dsr_bulk0000000000000000"], overdue

                # every request, 50 a page
                await _submit(page, "a#nav-requests")
                seen: list[str] = []
                for n in range(1, pages + 1):
                    await look(page)
                    info = re.fullmatch(
                        r"page (\d+) of (\d+) · (\d+) requests", (await page.inner_text("#page-info")).strip()
                    )
                    assert info and info.groups() == (str(n), str(pages), str(total)), await page.inner_text(
                        "#page-info"
                    )
                    rows = await page.locator("table#requests tr[data-request]").evaluate_all(
                        "rows => rows.map(r => r.dataset.request)"
                    )
                    assert len(rows) == min(PER_PAGE, total - len(seen)), (n, len(rows))
                    seen += rows
                    assert await page.locator("a#prev-page").count() == (0 if n == 1 else 1)
                    assert await page.locator("a#next-page").count() == (0 if n == pages else 1)
                    if n < pages:
                        await _submit(page, "a#next-page")
                assert len(set(seen)) == total and {done_id, failed_id, ext["request_id"]} <= set(seen)

                # … and as CSV
                await _submit(page, "a#nav-requests")
                async with page.expect_download() as got:
                    await page.click("a#csv")
                download = await got.value
                assert download.suggested_filename.endswith(".csv")
                body = Path(await download.path()).read_text()
                assert not [i for i, x in enumerate(look.secrets) if x in body]
                table = list(csv.reader(io.StringIO(body)))
                assert table[0] == CSV_COLUMNS, table[0]
                assert len(table) == total + 1
                by_id = {r[0]: dict(zip(CSV_COLUMNS, r, strict=True)) for r in table[1:]}
                row42 = by_id[done_id]
                assert (row42["ref"], row42["kind"], row42["person_hmac"]) == ("TICKET-42", "erasure", hmac)
                assert (row42["outcome"], row42["complete"], row42["late"], row42["extensions"]) == (
                    "completed",
                    "true",
                    "false",
                    "0",
                ), row42
                assert all(ISO_Z.fullmatch(row42[k]) for k in ("received_at", "first_due_at", "due_at", "completed_at"))
                assert by_id[failed_id]["outcome"] == "failed" and by_id[failed_id]["completed_at"] == ""
                assert by_id["dsr_bulk0000000000000001"]["outcome"] == "dry_run"
                assert by_id[ext["request_id"]]["outcome"] == "open"

                # extend EXT-1: beyond two months past its first due date, refused with the rule named;
                # then to a date allowed, with the reason
                await page.goto(f"{url}/console/requests/{ext['request_id']}")
                first_due = ext["first_due_at"]
                await page.fill("#until", ledger.add_months(first_due, 3).date().isoformat())
                await page.fill("#reason", "complex request: three systems to search")
                refused = await _submit(page, "#extend-go")
                assert refused.status == 422
                await look(page)
                alert = await page.inner_text(".error[role=alert]")
                assert "at most two months past the first due date" in alert, alert
                assert "extension" not in await _events(page)
                until_day = (first_due + timedelta(days=20)).date().isoformat()
                await page.fill("#until", until_day)
                await page.fill("#reason", "complex request: three systems to search")
                granted = await _submit(page, "#extend-go")
                assert granted.status == 200 and page.url == f"{url}/console/requests/{ext['request_id']}"
                await look(page)
                extension = await page.inner_text("ol#timeline li[data-event=extension]")
                assert "complex request: three systems to search" in extension and "privacy-officer" in extension
                assert until_day in await page.inner_text("#summary")

                # retry TICKET-43's failed job: a wrong id refused, the right one makes a new job
                await page.goto(f"{url}/console/requests/{failed_id}")
                assert await page.locator("#jobs .status").first.inner_text() == "failed"
                form = page.locator(f'form.retry[data-job="{failed_job}"]')
                assert await form.locator("input[name=user_id]").get_attribute("type") == "password"
                await form.locator("input[name=user_id]").fill(WRONG)
                wrong = await _submit(page, f'form.retry[data-job="{failed_job}"] .retry-go')
                assert wrong.status == 422
                await look(page)
                assert "does not match" in await page.inner_text(".error[role=alert]")
                await page.locator(f'form.retry[data-job="{failed_job}"] input[name=user_id]').fill(FAILED)
                retried = await _submit(page, f'form.retry[data-job="{failed_job}"] .retry-go')
                assert retried.status == 200 and page.url == f"{url}/console/requests/{failed_id}"
                await look(page)
                jobs = [await c.inner_text() for c in await page.locator("#jobs code.job-id").all()]
                assert len(jobs) == 2 and failed_job in jobs, jobs
                (new_job,) = [j for j in jobs if j != failed_job]
                async with running_worker(s):  # without the misdeclared store: the retry succeeds
                    await until(lambda: _settled(client, officer, failed_id), timeout=30)
                    # meanwhile, the workers page lists the worker with its heartbeat and queue
                    await _submit(page, "a#nav-workers")
                    await look(page)
                    for _ in range(50):
                        if await page.locator("table#workers tr[data-worker]").count():
                            break
                        await page.wait_for_timeout(200)
                        await page.reload()
                    worker = await page.inner_text("table#workers tr[data-worker]")
                    assert SHOWN_TIME.search(worker) and s.queue_name in worker, worker
                await page.goto(f"{url}/console/requests/{failed_id}")
                await look(page)
                assert "completed" in await page.inner_text("#summary")
                assert "completed" in await _events(page)
                assert await page.locator("a#certificate").count() == 1
                assert await page.locator(f'form.retry[data-job="{failed_job}"]').count() == 0  # served now

                # the failed job's page, and back to its request
                links = page.locator("#jobs a.job-link")
                await links.nth(await _link_to(page, "#jobs a.job-link", f"/console/jobs/{failed_job}")).click()
                await page.wait_for_load_state()
                assert unquote(page.url) == f"{url}/console/jobs/{failed_job}"
                await look(page)
                assert await page.inner_text("#job code.job-id") == failed_job
                assert await page.inner_text("#job .status") == "failed"
                assert "StoreMisdeclared" in await page.inner_text("#error")
                await _submit(page, "a.request-link")
                assert page.url == f"{url}/console/requests/{failed_id}"
                await page.goto(f"{url}/console/jobs/{new_job}")
                await look(page)
                assert await page.inner_text("#job .status") == "succeeded"
                await page.goto(f"{url}/console/jobs/{done_job}")
                await look(page)
                assert "3" in await page.inner_text("#result")

                await _submit(page, "a#nav-receipts")
                await look(page)

                # the four pages at 1280 and 800 px: never wider than the window; screenshots
                shown = {
                    "overview": "/console",
                    "request": f"/console/requests/{done_id}",
                    "certificate": f"/console/requests/{done_id}/certificate",
                    "job": f"/console/jobs/{done_job}",
                }
                overflow = {}
                for width in (1280, 800):
                    await page.set_viewport_size({"width": width, "height": 900})
                    for name, path in shown.items():
                        await page.goto(url + path)
                        await look(page)
                        wide = await page.evaluate("document.documentElement.scrollWidth")
                        if wide > width:
                            overflow[f"{name}@{width}"] = wide
                        if os.environ.get("SESSIONCTL_SCREENSHOTS"):
                            SHOTS.mkdir(parents=True, exist_ok=True)
                            await page.screenshot(path=str(SHOTS / f"console-{name}-{width}.png"), full_page=True)
                assert not overflow, f"pages wider than the window (scrollWidth): {overflow}"
                look.unreadable()
            finally:
                await browser.close()


async def test_the_ledger_as_csv_and_a_certificate_over_the_api_show_a_token_its_own_and_audit_everything(
    own_database: tuple[Settings, asyncpg.Connection], agent_id: str
) -> None:
    async with dsr_service(*own_database) as service:
        s, client, tokens = service["settings"], service["client"], service["tokens"]
        await seed(s.database_url, s.schema_for(agent_id), agent_id, PERSON, 2)
        await seed(s.database_url, s.schema_for(agent_id), agent_id, FAILED, 1)
        made = {}
        for who, user, ref in (("all", PERSON, "API-1"), ("other", FAILED, "API-2")):
            resp = await client.post(
                "/v1/erasures",
                headers=auth(tokens[who]),
                json={"user_id": user, "agent_id": agent_id, "request_ref": ref},
            )
            assert resp.status_code == 202, resp.text
            made[who] = resp.json()["request_id"]
        await run_worker(s)

        def ids(resp: httpx.Response) -> set[str]:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv"), resp.text
            assert PERSON not in resp.text and FAILED not in resp.text
            rows = list(csv.reader(io.StringIO(resp.text)))
            assert rows[0] == CSV_COLUMNS
            return {r[0] for r in rows[1:]}

        assert ids(await client.get("/v1/requests.csv", headers=auth(tokens["audit"]))) == set(made.values())
        assert ids(await client.get("/v1/requests.csv", headers=auth(tokens["all"]))) == {made["all"]}
        assert ids(await client.get("/v1/requests.csv", headers=auth(tokens["other"]))) == {made["other"]}

        mine = await client.get(f"/v1/requests/{made['all']}/certificate", headers=auth(tokens["all"]))
        assert mine.status_code == 200 and mine.headers["content-type"].startswith("application/json"), mine.text
        facts = json.dumps(mine.json())
        assert made["all"] in facts and "API-1" in facts and user_hmac(s.hash_key_bytes, PERSON) in facts
        assert PERSON not in facts
        assert (
            await client.get(f"/v1/requests/{made['all']}/certificate", headers=auth(tokens["audit"]))
        ).status_code == 200
        assert (
            await client.get(f"/v1/requests/{made['all']}/certificate", headers=auth(tokens["other"]))
        ).status_code == 404
        assert (
            await client.get("/v1/requests/dsr_nosuchrequest00000/certificate", headers=auth(tokens["audit"]))
        ).status_code == 404
