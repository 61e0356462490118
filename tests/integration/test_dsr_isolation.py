"""Only a request's owner sees it, exports die with their person, deployments sharing one Redis never
see each other — on real Postgres, Redis, ``create_app`` over HTTP, the CLI and a real worker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from sessionctl import export_lifetime
from sessionctl.config import Settings
from sessionctl.errors import ExportWithdrawn
from sessionctl.privacy import user_hmac
from sessionctl.producer import Producer
from tests.agno_seed import seed
from tests.conftest import HASH_KEY, run_worker, run_workers_for
from tests.service_helpers import auth, dsr_service, running_worker, until

USER, OTHER = "ida.isolated@example.com", "olaf.other@example.com"
AGENT = "agent-iso"


@pytest.fixture
async def service(own_database: tuple[Settings, asyncpg.Connection]) -> AsyncIterator[dict[str, Any]]:
    async with dsr_service(*own_database) as svc:
        yield svc


async def _export(svc: dict[str, Any], token: str, user: str) -> dict[str, Any]:
    resp = await svc["client"].post("/v1/exports", headers=auth(token), json={"user_id": user, "scope": "sessions"})
    assert resp.status_code == 202, resp.text
    return dict(resp.json())


async def test_a_token_sees_its_own_requests_jobs_and_exports_and_audit_sees_every_request(
    service: dict[str, Any],
) -> None:
    s, client, tokens = service["settings"], service["client"], service["tokens"]
    for who in (USER, OTHER):
        await seed(s.database_url, s.schema_for(AGENT), AGENT, who, 2)
    mine = await _export(service, tokens["all"], USER)
    theirs = await _export(service, tokens["other"], OTHER)
    async with Producer(s) as producer:  # the operator's all-users backup, from the CLI
        backup = await producer.export_sessions(out="backup.jsonl", all_agents=True)
        await run_worker(s)
        assert (await producer.status(backup.job_id)).status == "succeeded"
    await until(lambda: _all_completed(service["conn"]), timeout=30)

    me, them, audit = auth(tokens["all"]), auth(tokens["other"]), auth(tokens["audit"])
    assert (await client.get(f"/v1/exports/{mine['job_id']}/file", headers=me)).status_code == 200
    assert (await client.get(f"/v1/exports/{theirs['job_id']}/file", headers=them)).status_code == 200
    for job in (theirs["job_id"], backup.job_id):  # another caller's export, the CLI's backup: never
        assert (await client.get(f"/v1/exports/{job}/file", headers=me)).status_code == 404
        assert (await client.get(f"/v1/jobs/{job}", headers=me)).status_code == 404
    assert (await client.get(f"/v1/exports/{mine['job_id']}/file", headers=audit)).status_code == 403  # no content
    listed = (await client.get("/v1/requests", headers=me)).json()["requests"]
    assert [r["request_id"] for r in listed] == [mine["request_id"]]
    jobs = (await client.get("/v1/jobs", headers=me)).json()["jobs"]
    assert [j["job_id"] for j in jobs] == [mine["job_id"]]
    assert (await client.get(f"/v1/requests/{theirs['request_id']}", headers=me)).status_code == 404
    everyone = {r["request_id"] for r in (await client.get("/v1/requests", headers=audit)).json()["requests"]}
    assert everyone == {mine["request_id"], theirs["request_id"]}
    all_jobs = {j["job_id"] for j in (await client.get("/v1/jobs", headers=audit)).json()["jobs"]}
    assert {mine["job_id"], theirs["job_id"], backup.job_id} <= all_jobs


async def _all_completed(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT bool_and(status = 'completed') FROM sessionctl.dsr_requests"))


async def test_an_erasure_deletes_the_persons_exports_and_an_export_never_outlives_it(
    service: dict[str, Any], tmp_path: Path
) -> None:
    s, client, conn, tokens = service["settings"], service["client"], service["conn"], service["tokens"]
    await seed(s.database_url, s.schema_for(AGENT), AGENT, USER, 2)
    await seed(s.database_url, s.schema_for(AGENT), AGENT, OTHER, 2)
    mine = await _export(service, tokens["all"], USER)
    kept = await _export(service, tokens["all"], OTHER)
    async with running_worker(s):
        await until(lambda: _all_completed(conn), timeout=30)
        path = Path(await conn.fetchval("SELECT path FROM sessionctl.exports WHERE job_id = $1", mine["job_id"]))
        assert path.is_file()
        erased = (await client.post("/v1/erasures", headers=auth(tokens["all"]), json={"user_id": USER})).json()
        await until(lambda: _all_completed(conn), timeout=30)
    assert not path.exists() and not Path(str(path) + ".manifest.json").exists()
    gone = await client.get(f"/v1/exports/{mine['job_id']}/file", headers=auth(tokens["all"]))
    assert gone.status_code == 410 and "erased" in gone.json()["detail"]
    assert (await client.get(f"/v1/exports/{kept['job_id']}/file", headers=auth(tokens["all"]))).status_code == 200
    receipt = await conn.fetchrow(
        "SELECT stores, complete FROM sessionctl.receipts WHERE job_id = $1", erased["job_id"]
    )
    assert json.loads(receipt["stores"])["export files"] == 1 and receipt["complete"] is True

    # an export that started before that erasure's receipt publishes nothing (a job in flight)
    hmac = user_hmac(HASH_KEY.encode(), USER)
    published: list[str] = []
    with pytest.raises(ExportWithdrawn):
        await export_lifetime.publish(
            conn,
            lambda: published.append("published"),
            job_id="in-flight",
            path=tmp_path / "x.jsonl",
            user_hmac=hmac,
            request_id=None,
            started_at=datetime.now(UTC) - timedelta(minutes=5),
            ttl_s=None,
        )
    assert (
        published == []
        and await conn.fetchval("SELECT count(*) FROM sessionctl.exports WHERE job_id = 'in-flight'") == 0
    )


async def test_exports_expire(service: dict[str, Any]) -> None:
    s, client, conn, tokens = service["settings"], service["client"], service["conn"], service["tokens"]
    await seed(s.database_url, s.schema_for(AGENT), AGENT, USER, 1)
    mine = await _export(service, tokens["all"], USER)
    async with running_worker(s):
        await until(lambda: _all_completed(conn), timeout=30)
        row = await conn.fetchrow(
            "SELECT path, expires_at, published_at FROM sessionctl.exports WHERE job_id = $1", mine["job_id"]
        )
        assert row["expires_at"] - row["published_at"] == timedelta(seconds=s.export_ttl)  # 7 days by default
        await conn.execute("UPDATE sessionctl.exports SET expires_at = now() - interval '1 second'")
        await until(lambda: conn.fetchval("SELECT deleted_by = 'expired' FROM sessionctl.exports"), timeout=30)
    assert not Path(row["path"]).exists()
    resp = await client.get(f"/v1/exports/{mine['job_id']}/file", headers=auth(tokens["all"]))
    assert resp.status_code == 410 and "expired" in resp.json()["detail"]


async def test_deployments_sharing_one_redis_never_see_each_other(
    settings: Settings, worker_env: dict[str, str], tmp_path: Path
) -> None:
    a = settings.model_copy(update={"queue_name": f"deploy-a-{uuid.uuid4().hex[:6]}"})
    b = settings.model_copy(
        update={"queue_name": f"deploy-b-{uuid.uuid4().hex[:6]}", "hash_key": SecretStr("another-key-0123456789")}
    )
    await seed(a.database_url, a.schema_for(AGENT), AGENT, USER, 1)
    async with Producer(a) as producer:
        enq = await producer.purge_user_sessions(agent_id=AGENT, user_id=USER)
        await run_worker(a)
        assert (await producer.status(enq.job_id)).status == "succeeded"
    assert enq.job_id.startswith(a.queue_name + ":")  # arq's own keys differ too
    async with Producer(b) as producer:
        assert [j["job_id"] for j in await producer.jobs(limit=100)] == []
        assert (await producer.jobs(limit=100, failed_only=True)) == []
        assert (await producer.status(enq.job_id)).status == "not_found"  # A's result, not B's to read
    env = {**worker_env, "SESSIONCTL_QUEUE": b.queue_name, "SESSIONCTL_HASH_KEY": "another-key-0123456789"}
    listed = subprocess.run(
        [sys.executable, "-m", "sessionctl.cli", "jobs", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed
    status = subprocess.run(
        [sys.executable, "-m", "sessionctl.cli", "status", enq.job_id], env=env, capture_output=True, text=True
    )
    assert status.returncode == 1 and "no such job" in status.stdout, status

    # each deployment's retention cron runs its own tick (the first no longer takes the other's)
    policy = tmp_path / "retention.toml"
    policy.write_text("[default]\nmax_age_days = 3650\n")
    every = {"retention_file": str(policy), "retention_schedule": "*/2 * *"}  # second minute hour
    await asyncio.gather(
        run_workers_for(a.model_copy(update=every), 4.5, count=1),
        run_workers_for(b.model_copy(update=every), 4.5, count=1),
    )
    for deployment in (a, b):
        async with Producer(deployment) as producer:
            kinds = [j["kind"] for j in await producer.jobs(limit=100) if j["requested_by"] == "cron"]
        assert "purge_expired_sessions" in kinds, (deployment.queue_name, kinds)
