"""The ledger for audits over HTTP, on real Postgres, Redis and a real worker: the CSV's fixed
columns (an `audit` token sees every request, another token its own), the certificate of a
completed erasure (and none for anything else), and every console page rendering a real request,
its job and the workers without a raw user id."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from sessionctl.api.audit import CSV_COLUMNS
from sessionctl.config import Settings
from tests.agno_seed import seed
from tests.service_helpers import auth, dsr_service, running_worker, until

USER, OTHER = "Audit.Person@example.com", "another-person"


@pytest.fixture
async def service(own_database: tuple[Settings, asyncpg.Connection], agent_id: str) -> AsyncIterator[dict[str, Any]]:
    async with dsr_service(*own_database) as svc:
        s, client, tokens = svc["settings"], svc["client"], svc["tokens"]
        await seed(s.database_url, s.schema_for(agent_id), agent_id, USER, 3)
        done = await client.post(
            "/v1/erasures", headers=auth(tokens["all"]), json={"user_id": USER, "request_ref": "AUDIT-1"}
        )
        other = await client.post("/v1/erasures", headers=auth(tokens["other"]), json={"user_id": OTHER})
        waiting = await client.post(
            "/v1/exports", headers=auth(tokens["all"]), json={"user_id": USER, "request_ref": "AUDIT-2"}
        )
        async with running_worker(s):
            await until(lambda: _completed(svc["conn"], done.json()["request_id"]), timeout=60)
        yield {**svc, "done": done.json(), "other": other.json(), "waiting": waiting.json()}


async def _completed(conn: asyncpg.Connection, request_id: str) -> bool:
    status = await conn.fetchval("SELECT status FROM sessionctl.dsr_requests WHERE request_id = $1", request_id)
    return bool(status == "completed")


async def test_the_csv_has_fixed_columns_and_each_token_sees_what_it_may(service: dict[str, Any]) -> None:
    client, tokens = service["client"], service["tokens"]
    audit = await client.get("/v1/requests.csv", headers=auth(tokens["audit"]))
    assert audit.status_code == 200 and audit.headers["content-type"].startswith("text/csv")
    assert "attachment" in audit.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(audit.text)))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 4  # three requests, every token's
    done = next(r for r in rows if r[0] == service["done"]["request_id"])
    as_dict = dict(zip(CSV_COLUMNS, done, strict=True))
    assert as_dict["ref"] == "AUDIT-1" and as_dict["outcome"] == "completed" and as_dict["complete"] == "true"
    assert as_dict["received_at"].endswith("Z") and "." not in as_dict["received_at"]  # UTC, to the second
    assert USER not in audit.text and OTHER not in audit.text
    own = list(csv.reader(io.StringIO((await client.get("/v1/requests.csv", headers=auth(tokens["all"]))).text)))
    assert {r[0] for r in own[1:]} == {service["done"]["request_id"], service["waiting"]["request_id"]}


async def test_a_certificate_only_for_a_completed_erasure_and_only_for_its_caller(service: dict[str, Any]) -> None:
    client, tokens = service["client"], service["tokens"]
    rid = service["done"]["request_id"]
    cert = await client.get(f"/v1/requests/{rid}/certificate", headers=auth(tokens["all"]))
    assert cert.status_code == 200, cert.text
    body = cert.json()
    assert body["request_id"] == rid and body["ref"] == "AUDIT-1" and body["complete"] is True
    assert body["stores"]["sessions"] == 3 and body["receipt_ids"] and "sessionctl verify" in body["reverify"]
    assert (await client.get(f"/v1/requests/{rid}/certificate", headers=auth(tokens["other"]))).status_code == 404
    export = service["waiting"]["request_id"]
    assert (await client.get(f"/v1/requests/{export}/certificate", headers=auth(tokens["all"]))).status_code == 409


async def test_every_console_page_renders_a_real_request_without_a_raw_user_id(service: dict[str, Any]) -> None:
    client, tokens = service["client"], service["tokens"]
    officer = httpx.AsyncClient(base_url=str(client.base_url), timeout=30)
    async with officer:
        signed = await officer.post("/console/login", data={"token": tokens["audit"]})
        assert signed.status_code == 303
        rid, job = service["done"]["request_id"], service["done"]["job_id"]
        pages = [
            "/console",
            "/console/requests",
            "/console/requests?q=AUDIT-1",
            f"/console/requests?q={job}",
            f"/console/requests/{rid}",
            f"/console/requests/{rid}/certificate",
            f"/console/jobs/{job}",
            "/console/workers",
            "/console/requests.csv",
        ]
        for path in pages:
            resp = await officer.get(path)
            assert resp.status_code == 200, (path, resp.text[:300])
            assert USER not in resp.text and tokens["audit"] not in resp.text, path
        csrf = re.search(r'name="csrf" value="([^"]+)"', (await officer.get("/console")).text)
        assert csrf is not None
        typed = await officer.post("/console/requests", data={"q": USER, "csrf": csrf.group(1)})  # hashed, a POST
        assert typed.status_code == 303 and USER not in typed.headers["location"]
        assert "person=" in typed.headers["location"]
        found = await officer.get(typed.headers["location"])
        assert found.status_code == 200 and rid in found.text and USER not in found.text
        assert "page 1 of 1 · 2 requests" in found.text
        stale = await officer.post("/console/requests", data={"q": USER})  # no CSRF token: refused
        assert stale.status_code == 403
        by_ref = await officer.post("/console/requests", data={"q": "AUDIT-1", "csrf": csrf.group(1)})
        assert "AUDIT-1" not in by_ref.headers["location"] and rid in by_ref.headers["location"]  # a ref may be an id
        assert rid in (await officer.get(by_ref.headers["location"])).text
        garbage = await officer.get("/console/requests", params={"person": "not-an-hmac"})
        assert "page 1 of 1 · 0 requests" in garbage.text  # malformed selects nothing, not everything
        named = await officer.get("/console/requests", params={"q": rid})
        assert "page 1 of 1 · 1 request" in named.text and rid in named.text
        detail = (await officer.get(f"/console/requests/{rid}")).text
        for event in ("received", "due", "job", "completed"):
            assert f'data-event="{event}"' in detail, event
        assert job in detail and 'id="certificate"' in detail
        assert (
            await officer.get(f"/console/requests/{service['waiting']['request_id']}/certificate")
        ).status_code == 404
