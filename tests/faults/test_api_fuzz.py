"""The DSR API fuzzed against `sessionctl serve` (its own process, real Postgres and Redis), with a
valid token: its OpenAPI spec with schemathesis — over 1,000 generated requests, valid ones and ones
that break the schema — and raw JSON bodies of full Unicode (lone surrogates, NUL, every plane)
with hypothesis. No 5xx; no request changes a row unless it was accepted; nothing is enqueued for a
refused one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from sessionctl.config import Settings
from sessionctl.tokens import SCOPES
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
        SESSIONCTL_OPENAPI="token",
    ) as url:
        yield url, token, s
    assert "Traceback" not in log_path.read_text()


async def _token(s: Settings) -> str:
    conn = await asyncpg.connect(s.database_url)
    try:
        return await make_token(conn, "fuzzer", list(SCOPES))
    finally:
        await conn.close()


def test_the_openapi_spec_fuzzed_gives_no_5xx_and_changes_rows_only_for_accepted_requests(
    api: tuple[str, str, Settings],
) -> None:
    url, token, s = api
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{url}/openapi.json", timeout=10).status_code == 401  # the spec is behind a token
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=headers)
    session = requests.Session()
    sent: list[tuple[str, int]] = []
    positive: set[int] = set()  # status codes of the valid requests
    accepted: set[str] = set()
    extended: set[str] = set()
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]

    def fuzz(op: Any, mode: GenerationMode) -> None:
        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            label = case.operation.label
            resp = case.call(base_url=url, session=session, headers=headers)
            sent.append((label, resp.status_code))
            if mode == GenerationMode.POSITIVE:
                positive.add(resp.status_code)
            assert resp.status_code < 500, (label, resp.status_code, resp.text[:300])
            if resp.status_code == 202:
                accepted.add(resp.json()["request_id"])
            if label.endswith(("/extend", "/correct")) and resp.status_code == 200:
                extended.add(resp.json()["request_id"])

        try:
            run()
        except Unsatisfiable:  # nothing to break: an operation without parameters or body
            assert mode == GenerationMode.NEGATIVE, op.label

    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(op, mode)

    assert len(sent) >= 1000, len(sent)
    codes = sorted({c for _, c in sent})
    print(f"{len(sent)} requests; status codes {codes}; {len(accepted)} accepted")  # seen with -s
    # some valid intake; valid requests carry a token with every scope (negative ones may drop it: 401)
    assert accepted and not {401, 403} & positive
    rows = asyncio.run(_rows(s))
    assert rows  # the accepted ones were recorded
    assert {r["request_id"] for r in rows} <= accepted  # every row was a 202
    assert {r["request_id"] for r in rows if r["extended"]} <= extended  # and every extension a 200
    assert not any(code >= 500 for _, code in sent)


async def _rows(s: Settings) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(s.database_url)
    try:
        return list(
            await conn.fetch(
                "SELECT request_id, jsonb_array_length(extensions) > 0 AS extended FROM sessionctl.dsr_requests"
            )
        )
    finally:
        await conn.close()


# Any text, surrogates and NUL included: what a hostile client can put in a JSON string (escaped).
ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)
FIELDS = ["user_id", "agent_id", "request_ref", "requested_by", "callback_url", "received_at", "scope", "until", "reason"]
VALUES = st.one_of(ANY_TEXT, st.integers(), st.booleans(), st.none(), st.lists(ANY_TEXT, max_size=2))
BODIES = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(FIELDS), ANY_TEXT), VALUES, max_size=5),
    # nearly valid: a person's id and labels of any text, as a request would carry them
    st.fixed_dictionaries(
        {"user_id": ANY_TEXT.filter(str.strip)},
        optional={"request_ref": ANY_TEXT, "requested_by": ANY_TEXT, "dry_run": st.booleans()},
    ),
)
PATHS = ["/v1/erasures", "/v1/exports", "/v1/receipts/search", "/v1/requests/dsr_00000000000000000000/extend"]


def test_full_unicode_bodies_are_a_4xx_or_a_2xx_never_a_5xx(api: tuple[str, str, Settings]) -> None:
    url, token, s = api
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    codes: dict[int, int] = {}
    accepted: set[str] = set()

    @given(path=st.sampled_from(PATHS), body=BODIES, ascii_only=st.booleans())
    @settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(path: str, body: dict[str, Any], ascii_only: bool) -> None:
        # escaped (\ud800 travels as such) or raw UTF-8 with what UTF-8 can carry
        raw = json.dumps(body, ensure_ascii=ascii_only)
        data = raw.encode("utf-8", "surrogatepass" if not ascii_only else "strict")
        resp = session.post(url + path, data=data, headers=headers, timeout=30)
        codes[resp.status_code] = codes.get(resp.status_code, 0) + 1
        assert resp.status_code < 500, (path, body, resp.status_code, resp.text[:300])
        if resp.status_code == 202:
            accepted.add(resp.json()["request_id"])

    run()
    print(f"full Unicode: status codes {sorted(codes.items())}")  # seen with -s
    assert 422 in codes and 202 in codes  # the hostile ones refused, the valid ones of any script taken
    rows = asyncio.run(_rows(s))
    assert {r["request_id"] for r in rows} <= accepted  # every row was a 202
    assert asyncio.run(_queued(s)) == len(rows)  # and a refused request left no job behind


async def _queued(s: Settings) -> int:
    import redis.asyncio as aioredis

    r = aioredis.from_url(s.redis_url)
    try:
        return int(await r.zcard(s.queue_name))
    finally:
        await r.aclose()
