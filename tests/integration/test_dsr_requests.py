"""A data-subject request is the unit of truth, on real Postgres, Redis, ``create_app`` over HTTP
and a real worker:

- an erasure over HTTP erases the *person* by default (every agent, every store) and says
  ``complete``; a narrow one says what remains (webhook, job result, receipt, ledger row, CLI);
- intake is all or nothing: a 4xx leaves no job and no row; a lone surrogate is a 4xx, not a 500;
  a worker never runs a request's job the ledger does not name;
- a ``request_ref`` never swallows a different request (409 naming what differs); a dry run is
  never an open request and never closes one;
- an access export over HTTP holds everything of the person, its manifest lists the stores.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sessionctl import webhooks
from sessionctl.config import Settings
from sessionctl.producer import Producer
from tests.agno_seed import agno_db, seed, seed_memory
from tests.conftest import run_worker
from tests.service_helpers import SECRET, auth, dsr_service, running_worker, until

USER = "Jane.Doe+dsr@example.com"  # opaque: never normalised, never echoed


@pytest.fixture
async def service(own_database: tuple[Settings, asyncpg.Connection]) -> AsyncIterator[dict[str, Any]]:
    async with dsr_service(*own_database) as svc:
        yield svc


async def _seed_person(s: Settings, agents: list[str], *, memories: int = 1) -> None:
    for i, agent in enumerate(agents):
        await seed(s.database_url, s.schema_for(agent), agent, USER, 3 - i)
        await seed(s.database_url, s.schema_for(agent), agent, "someone-else", 2)
    db = agno_db(s.database_url, s.schema_for(agents[0]))
    await seed_memory(db, agents[0], USER, memories)
    await seed_memory(db, agents[0], "someone-else", 1)
    await db.close()


async def _rows_of(conn: asyncpg.Connection, s: Settings, agent: str, user: str) -> tuple[int, int]:
    schema = s.schema_for(agent)
    sessions = await conn.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = $1', user)
    memories = 0
    if await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".agno_memories') is not None:  # made on first use
        memories = await conn.fetchval(f'SELECT count(*) FROM "{schema}".agno_memories WHERE user_id = $1', user)
    return int(sessions), int(memories)


async def test_an_erasure_over_http_erases_the_person_everywhere_by_default_and_says_complete(
    service: dict[str, Any],
) -> None:
    s, client, conn, receiver = service["settings"], service["client"], service["conn"], service["receiver"]
    agents = ["agent-one", "agent-two"]
    await _seed_person(s, agents)
    resp = await client.post(
        "/v1/erasures",
        headers=auth(service["tokens"]["all"]),
        json={"user_id": USER, "request_ref": "T-1", "callback_url": service["hook"]},  # no target, no scope
    )
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    async with running_worker(s):
        await until(lambda: receiver.got, timeout=30)
    body = receiver.json_bodies()[0]
    assert webhooks.verify(SECRET.encode(), receiver.got[0]["headers"][webhooks.HEADER.lower()], receiver.got[0]["body"])
    assert body["event"] == "erasure.completed" and body["complete"] is True and body["remains"] == {}
    assert body["late"] is False and USER.encode() not in receiver.got[0]["body"]
    for agent in agents:  # sessions and memories, at every agent; the others' kept
        assert await _rows_of(conn, s, agent, USER) == (0, 0)
    assert await _rows_of(conn, s, agents[0], "someone-else") == (2, 1)
    row = (await client.get(f"/v1/requests/{accepted['request_id']}", headers=auth(service["tokens"]["all"]))).json()
    assert row["status"] == "completed" and row["complete"] is True and row["remains"] == {} and row["late"] is False
    receipt = await conn.fetchrow("SELECT scope, complete, remains FROM sessionctl.receipts WHERE id = $1", row["receipt_id"])
    assert receipt["scope"] == "all" and receipt["complete"] is True and json.loads(receipt["remains"]) == {}
    assert await conn.fetchval("SELECT subject FROM sessionctl.dsr_requests") is None  # the sealed id is destroyed


async def test_a_narrow_erasure_says_what_remains_everywhere_it_reports(
    service: dict[str, Any], worker_env: dict[str, str]
) -> None:
    s, client, conn, receiver = service["settings"], service["client"], service["conn"], service["receiver"]
    agent = "agent-narrow"
    await _seed_person(s, [agent], memories=2)
    schema = s.schema_for(agent)
    narrow = {"user_id": USER, "agent_id": agent, "scope": "sessions", "memories": False, "callback_url": service["hook"]}
    resp = await client.post("/v1/erasures", headers=auth(service["tokens"]["all"]), json=narrow)
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    async with running_worker(s):
        await until(lambda: receiver.got, timeout=30)
    left = {f"{schema}.agno_memories": 2}
    body = receiver.json_bodies()[0]
    assert body["event"] == "erasure.completed" and body["complete"] is False and body["remains"] == left
    job = (await client.get(f"/v1/jobs/{accepted['job_id']}", headers=auth(service["tokens"]["all"]))).json()
    assert job["result"]["complete"] is False and job["result"]["remains"] == left
    assert job["requests"][0]["complete"] is False and job["requests"][0]["remains"] == left
    receipt = await conn.fetchrow("SELECT complete, remains FROM sessionctl.receipts WHERE job_id = $1", accepted["job_id"])
    assert receipt["complete"] is False and json.loads(receipt["remains"]) == left

    # the CLI's purge (sessions by default) says the same in one line, with how to erase the rest
    env = {**worker_env, "DATABASE_URL": s.database_url, "SESSIONCTL_QUEUE": s.queue_name}
    await seed(s.database_url, schema, agent, USER, 2)
    worker = subprocess.Popen([sys.executable, "-m", "sessionctl.cli", "worker"], env=env)
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "sessionctl.cli", "purge", "--agent", agent, "--user", "-", "--wait"],
            env=env,
            input=USER + "\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        worker.terminate()
        worker.wait(30)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("complete"))
    assert f"no: left {schema}.agno_memories=2" in line and "--all-agents --scope all" in line, done.stdout
    assert USER not in done.stdout + done.stderr


async def test_intake_is_all_or_nothing_and_any_unicode_is_a_4xx(service: dict[str, Any]) -> None:
    s, client, conn = service["settings"], service["client"], service["conn"]
    token = auth(service["tokens"]["all"])
    await seed(s.database_url, s.schema_for("agent-x"), "agent-x", USER, 1)
    bad: list[Any] = [
        {"user_id": USER, "callback_url": service["hook"] + "\x00"},  # NUL Postgres cannot store
        {"user_id": USER, "received_at": "0001-01-01T00:30:00+01:00"},  # year 0 in UTC
        {"user_id": USER, "received_at": "2000-01-01T00:00:00Z"},  # more than ten years ago
        {"user_id": "ab\ud800cd"},  # a lone surrogate
        {"user_id": USER, "requested_by": "x\udfffy"},
        {"user_id": USER, "agent_id": "agent-x", "all_agents": True},
        {"user_id": USER, "\ud83d": 1},  # a field named with a lone surrogate
        {"user_id": USER, "agent_id": "no-such-agent"},
    ]
    for b in bad:
        raw = json.dumps(b).encode()  # ensure_ascii: a lone surrogate travels as \\udXXX, as a client sends it
        resp = await client.post("/v1/erasures", content=raw, headers={**token, "content-type": "application/json"})
        assert resp.status_code == 422, (b, resp.status_code, resp.text)
        assert USER not in resp.text and "/" not in resp.json()["detail"] if isinstance(resp.json()["detail"], str) else True
    assert await conn.fetchval("SELECT count(*) FROM sessionctl.dsr_requests") == 0
    redis = await (await _producer(s)).redis()
    assert await redis.zcard(s.queue_name) == 0  # nothing enqueued


async def _producer(s: Settings) -> Producer:
    return await Producer(s).__aenter__()


async def test_a_worker_never_runs_a_request_job_the_ledger_does_not_name(
    service: dict[str, Any],
) -> None:
    s, conn = service["settings"], service["conn"]
    schema = s.schema_for("agent-y")
    await seed(s.database_url, schema, "agent-y", USER, 2)
    forged = {"user_id": USER, "agent_id": "agent-y", "request_id": "dsr_" + "0" * 20}
    async with Producer(s) as producer:
        enq = await producer.enqueue_as("purge_user_sessions", forged, f"{s.queue_name}:purge_user_sessions:forged.1")
        await run_worker(s)
        state = await producer.status(enq.job_id)
    assert state.status == "failed" and state.error["type"] == "RequestNotRecorded", state
    assert await conn.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = $1', USER) == 2


async def test_a_request_ref_never_swallows_a_different_request(service: dict[str, Any]) -> None:
    s, client, conn = service["settings"], service["client"], service["conn"]
    token = auth(service["tokens"]["all"])
    agent = "agent-ref"
    await _seed_person(s, [agent])
    dry = {"user_id": USER, "request_ref": "T-7", "dry_run": True}
    first = await client.post("/v1/erasures", headers=token, json=dry)
    assert first.status_code == 202 and first.json()["dry_run"] is True
    same = await client.post("/v1/erasures", headers=token, json=dry)
    assert same.status_code == 202 and same.json()["request_id"] == first.json()["request_id"] and same.json()["collapsed"]
    real = await client.post("/v1/erasures", headers=token, json={"user_id": USER, "request_ref": "T-7"})
    assert real.status_code == 409 and "dry_run" in real.json()["detail"], real.text
    another = await client.post("/v1/erasures", headers=token, json={**dry, "user_id": "someone-else"})
    assert another.status_code == 409 and "user" in another.json()["detail"] and "someone" not in another.text
    theirs = await client.post("/v1/erasures", headers=auth(service["tokens"]["other"]), json=dry)
    assert theirs.status_code == 409 and first.json()["request_id"] not in theirs.text  # another caller's
    # a dry run is never an open request, and never closes one
    opened = (await client.get("/v1/requests?open=true", headers=token)).json()["requests"]
    assert opened == []
    narrow = {"user_id": USER, "agent_id": agent, "scope": "sessions", "request_ref": "T-8"}
    done = (await client.post("/v1/erasures", headers=token, json=narrow)).json()
    async with running_worker(s):
        await until(lambda: _closed(conn, done["request_id"]), timeout=30)
        await until(lambda: _closed(conn, first.json()["request_id"]), timeout=30)
    wider = await client.post("/v1/erasures", headers=token, json={"user_id": USER, "request_ref": "T-8"})
    assert wider.status_code == 409 and "target" in wider.json()["detail"] and "scope" in wider.json()["detail"]
    statuses = dict(await conn.fetch("SELECT request_id, status FROM sessionctl.dsr_requests"))
    assert statuses == {first.json()["request_id"]: "dry_run", done["request_id"]: "completed"}


async def _closed(conn: asyncpg.Connection, request_id: str) -> bool:
    return bool(
        await conn.fetchval("SELECT completed_at IS NOT NULL FROM sessionctl.dsr_requests WHERE request_id = $1", request_id)
    )


async def test_an_access_export_over_http_holds_everything_of_the_person(
    settings: Settings, vector_database: str, tmp_path: Path
) -> None:
    from agno.media.storage import LocalMediaStorage

    from tests.agno_seed import seed_authz, seed_media_session, seed_vectors

    conn = await asyncpg.connect(vector_database)
    base = settings.model_copy(update={"database_url": vector_database})
    try:
        async with dsr_service(base, conn) as svc:
            s, client, receiver = svc["settings"], svc["client"], svc["receiver"]
            agents = ["agent-ex1", "agent-ex2"]
            await _seed_person(s, agents)
            db = agno_db(s.database_url, s.schema_for(agents[1]))
            storage = LocalMediaStorage(base_path=str(tmp_path / "media"))
            keys = await seed_media_session(db, storage, agent_id=agents[1], user_id=USER, session_id="pics-1")
            await db.close()
            sa = "postgresql+psycopg://" + vector_database.split("://", 1)[1]
            await asyncio.to_thread(seed_vectors, sa, "ai", "kb", {USER: 2, "someone-else": 1, None: 1})
            await asyncio.to_thread(seed_authz, sa, "ai", [USER, "someone-else"])
            token = auth(svc["tokens"]["all"])
            ask = {"user_id": USER, "compress": "gz", "callback_url": svc["hook"]}  # no target, no scope: everything
            accepted = (await client.post("/v1/exports", headers=token, json=ask)).json()
            async with running_worker(s):
                await until(lambda: receiver.got, timeout=60)
            assert receiver.json_bodies()[0]["event"] == "export.completed", receiver.json_bodies()
            resp = await client.get(f"/v1/exports/{accepted['job_id']}/file", headers=token)
            assert resp.status_code == 200, resp.text
            job = (await client.get(f"/v1/jobs/{accepted['job_id']}", headers=token)).json()
    finally:
        await conn.close()
    records = [json.loads(x) for x in gzip.decompress(resp.content).splitlines() if x.strip()]
    sessions = [r["session"] for r in records if "session" in r]
    assert len(sessions) == 6 and {x["user_id"] for x in sessions} == {USER}
    media = [r["media"] for r in records if r.get("store") == "media"]
    assert sorted(m["storage_key"] for m in media) == sorted(keys)  # the list of their media objects
    by_store: dict[str, int] = {}
    for r in records:
        if "store" in r:
            by_store[r["store"]] = by_store.get(r["store"], 0) + 1
    memories = f"{s.schema_for(agents[0])}.agno_memories"
    assert by_store[memories] == 1 and by_store["ai.kb"] == 2 and by_store["ai.agno_authz_users"] == 1
    assert by_store["ai.agno_authz_grouping"] == 1 and by_store["ai.agno_authz_decisions"] == 1
    assert "someone-else" not in json.dumps(records)  # the person's rows only
    stores = job["result"]["stores"]  # the manifest lists the stores
    assert stores[memories] == 1 and stores["ai.kb"] == 2 and stores[f"{s.schema_for(agents[0])}.agno_sessions"] == 3
    assert job["result"]["scope"] == "all"
