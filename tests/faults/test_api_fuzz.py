"""The DSR API's OpenAPI spec, fuzzed with schemathesis against `sessionctl serve` (its own
process, real Postgres and Redis): over 1,000 generated requests — valid ones and ones that break
the schema — with a valid token. No 5xx; no request changes a row unless it was accepted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from sessionctl.config import Settings
from tests.conftest import HASH_KEY
from tests.service_helpers import make_token, serve_process

EXAMPLES = 100  # per operation and mode (fewer where the schema allows fewer): ~10 operations x 2 modes


@pytest.fixture
def api(own_database: tuple[Settings, asyncpg.Connection], tmp_path: Any) -> Iterator[tuple[str, str, Settings]]:
    s, _ = own_database
    loop = asyncio.get_event_loop_policy().new_event_loop()
    try:
        token = loop.run_until_complete(_token(s))
    finally:
        loop.close()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log, serve_process(
        s,
        HASH_KEY,
        log,
        SESSIONCTL_EXPORT_DIR=str(tmp_path / "exports"),
        SESSIONCTL_WEBHOOK_SECRET="fuzz",
        SESSIONCTL_WEBHOOK_ALLOWED_HOSTS="hooks.example.com",
    ) as url:
        yield url, token, s
    assert "Traceback" not in log_path.read_text()


async def _token(s: Settings) -> str:
    conn = await asyncpg.connect(s.database_url)
    try:
        return await make_token(conn, "fuzzer", ["read", "erase", "export"])
    finally:
        await conn.close()


def test_the_openapi_spec_fuzzed_gives_no_5xx_and_changes_rows_only_for_accepted_requests(
    api: tuple[str, str, Settings],
) -> None:
    url, token, s = api
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"}
    sent: list[tuple[str, int]] = []
    accepted: set[str] = set()
    extended: set[str] = set()
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]

    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                label = case.operation.label
                resp = case.call(base_url=url, session=session, headers=headers)
                sent.append((label, resp.status_code))
                assert resp.status_code < 500, (label, resp.status_code, resp.text[:300])
                if resp.status_code == 202:
                    accepted.add(resp.json()["request_id"])
                if label.endswith("/extend") and resp.status_code == 200:
                    extended.add(resp.json()["request_id"])

            try:
                run()
            except Unsatisfiable:  # nothing to break: an operation without parameters or body
                assert mode == GenerationMode.NEGATIVE, op.label

    assert len(sent) >= 1000, len(sent)
    codes = sorted({c for _, c in sent})
    print(f"{len(sent)} requests; status codes {codes}; {len(accepted)} accepted")  # seen with -s
    assert accepted and not {401, 403} & set(codes)  # some valid intake; the token is valid and has every scope
    rows = asyncio.run(_rows(s))
    assert rows  # the accepted ones were recorded
    assert {r["request_id"] for r in rows} <= accepted  # every row was a 202
    assert {r["request_id"] for r in rows if r["extension_reason"]} <= extended  # and every extension a 200
    assert not any(code >= 500 for _, code in sent)


async def _rows(s: Settings) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(s.database_url)
    try:
        return list(await conn.fetch("SELECT request_id, extension_reason FROM sessionctl.dsr_requests"))
    finally:
        await conn.close()
