"""Monitoring and proof: progress, the job index, failed jobs and retry, receipts, verify,
metrics, health — against real Postgres, Redis and workers."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from sessionctl.config import Settings
from sessionctl.privacy import user_hmac
from sessionctl.producer import Producer
from sessionctl.worker.jobindex import JobIndex
from tests.agno_seed import agno_db, clone_sessions, seed, seed_memory, seed_sessions
from tests.conftest import HASH_KEY, run_worker

USER = "kim-91@example.com"
SESSIONCTL = [sys.executable, "-m", "sessionctl.cli"]


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SESSIONCTL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


async def test_progress_advances_during_a_large_purge(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, USER, 1)
    await clone_sessions(pg, schema, f"{agent_id}-{USER}-s0", USER, 15_000, "p")
    slow = settings.model_copy(update={"batch_size": 40, "progress_interval": 0.02})
    seen: list[dict] = []
    async with Producer(slow) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        worker = asyncio.create_task(run_worker(slow))
        while not worker.done():
            state = await producer.status(enq.job_id)
            if state.progress and state.status == "running":
                seen.append(state.progress)
            await asyncio.sleep(0.02)
        await worker
        final = await producer.status(enq.job_id)
    processed = [p["processed"] for p in seen]
    assert len(set(processed)) >= 3, processed  # it moved while we watched
    assert processed == sorted(processed)
    assert all(p["agent"] == agent_id and p["rate"] >= 0 for p in seen)
    assert final.status == "succeeded" and final.result["sessions_deleted"] == 15_001


async def test_jobs_index_lists_and_filters_with_1000_jobs_present(settings: Settings, agent_id: str) -> None:
    r = aioredis.from_url(settings.redis_url)
    index = JobIndex(r, settings.queue_name, size=5000)
    for i in range(1000):  # 1,000 jobs of every state, as workers would have left them
        kind = "purge_user_sessions" if i % 2 else "export_sessions"
        jid = f"{settings.queue_name}:{kind}:bulk{i:04d}:0"
        await index.write(index.entry(jid, kind=kind, target="a", user_hmac="h", requested_by=None))
        if i % 4 == 1:
            await index.running(jid, attempt=1)
            await index.finished(jid, state="succeeded", summary={"sessions_deleted": i})
        elif i % 4 == 3:
            await index.running(jid, attempt=2)
            await index.failed(jid, error_type="AgentNotFound", error="no storage", request={"agent_id": "a"})
        elif i % 4 == 2:  # running: arq holds its job and its in-progress key
            await index.running(jid, attempt=1)
            await r.set(f"arq:job:{jid}", b"{}")
            await r.set(f"arq:in-progress:{jid}", b"1")
        else:  # queued: arq holds its job
            await r.set(f"arq:job:{jid}", b"{}")
    # and some real jobs, whose states the worker writes
    await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 2)
    async with Producer(settings) as producer:
        ok = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        bad = await producer.purge_user_sessions(agent_id="no-such", user_id=USER, check_agent=False)
        queued = await producer.jobs(status="queued", limit=5)
        assert {j["job_id"] for j in queued} == {ok.job_id, bad.job_id} | {j["job_id"] for j in queued[2:]}
        await run_worker(settings)

        latest = await producer.jobs(limit=2)
        assert [j["job_id"] for j in latest] == [bad.job_id, ok.job_id]  # newest first
        assert latest[1]["state"] == "succeeded" and latest[1]["summary"]["sessions_deleted"] == 2
        assert latest[0]["state"] == "failed" and latest[0]["error_type"] == "AgentNotFound"
        assert latest[0]["user_hmac"] == user_hmac(HASH_KEY.encode(), USER)

        succeeded = await producer.jobs(status="succeeded", limit=1000)
        assert len(succeeded) == 251 and all(j["state"] == "succeeded" for j in succeeded)
        assert len(await producer.jobs(status="ended", limit=1000)) == 502  # every final state
        failed = await producer.jobs(status="failed", kind="purge_user_sessions", limit=1000)
        assert len(failed) == 251 and all(j["kind"] == "purge_user_sessions" for j in failed)
        assert len(await producer.jobs(status="running", limit=1000)) == 250
        assert len(await producer.jobs(limit=7)) == 7
        assert len(await producer.jobs(failed_only=True, limit=1000)) == 251
    raw = await r.get("arq:result:" + bad.job_id)
    assert raw is not None and USER.encode() not in raw
    for key in await r.keys("sessionctl:*"):  # the index holds no raw user id either
        assert USER.encode() not in (await r.dump(key) or b""), key
    await r.aclose()


async def test_failed_job_is_kept_and_retried_with_the_user_given_again(
    settings: Settings, agent_id: str, worker_env: dict[str, str]
) -> None:
    async with Producer(settings) as producer:
        first = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, memories=True, check_agent=False)
    await run_worker(settings)  # fails: the agent has no storage yet
    db = agno_db(settings.database_url, settings.schema_for(agent_id))
    await seed_sessions(db, agent_id, USER, 3)
    await seed_memory(db, agent_id, USER, 1)
    await db.close()

    listed = cli(worker_env, "jobs", "--failed", "--json")
    assert listed.returncode == 0
    rows = json.loads(listed.stdout)
    assert [r["job_id"] for r in rows] == [first.job_id] and rows[0]["error_type"] == "AgentNotFound"
    assert USER not in listed.stdout

    assert cli(worker_env, "retry", first.job_id).returncode == 2  # the user must be given again
    wrong = cli(worker_env, "retry", first.job_id, "--user", "someone-else")
    assert wrong.returncode == 2 and "does not match" in wrong.stderr
    again = cli(worker_env, "retry", first.job_id, "--user", USER, "--json")
    assert again.returncode == 0, again.stderr
    new_id = json.loads(again.stdout)["job_id"]
    assert new_id != first.job_id
    await run_worker(settings)
    async with Producer(settings) as producer:
        state = await producer.status(new_id)
        meta = await producer.index().get(first.job_id)
    assert state.status == "succeeded"
    assert state.result["sessions_deleted"] == 3 and state.result["memories_deleted"] == 1  # same request
    assert meta is not None and meta["retried_as"] == new_id


async def test_receipts_survive_flushall_are_append_only_and_verify_catches_a_planted_row(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, worker_env: dict[str, str], private_redis: str
) -> None:
    settings = settings.model_copy(update={"redis_url": private_redis})  # FLUSHALL empties a Redis of its own
    worker_env = {**worker_env, "REDIS_URL": private_redis}
    schema = settings.schema_for(agent_id)
    db = agno_db(settings.database_url, schema)
    await seed_sessions(db, agent_id, USER, 4, extras=True)
    await seed_memory(db, agent_id, USER, 2)
    await db.close()
    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, memories=True, requested_by="DSR-77")
    await run_worker(settings)
    r = aioredis.from_url(settings.redis_url)
    await r.flushall()
    await r.aclose()

    found = cli(worker_env, "receipts", "--user", USER, "--json")
    assert found.returncode == 0, found.stderr
    data = json.loads(found.stdout)
    assert data["user_hmac"] == user_hmac(HASH_KEY.encode(), USER) and USER not in found.stdout
    [receipt] = [x for x in data["receipts"] if x["job_id"] == enq.job_id]
    assert receipt["remaining"] == 0 and receipt["requested_by"] == "DSR-77"
    assert receipt["counts"]["sessions"] == 4 and receipt["counts"]["memories"] == 2
    assert receipt["agents"][agent_id]["schema"] == schema
    human = cli(worker_env, "receipts", "--user", USER)
    assert enq.job_id in human.stdout and "sessions=4" in human.stdout

    with pytest.raises(asyncpg.exceptions.RaiseError, match="append-only"):
        await pg.execute("UPDATE sessionctl.receipts SET remaining = 0")
    with pytest.raises(asyncpg.exceptions.RaiseError, match="append-only"):
        await pg.execute("DELETE FROM sessionctl.receipts")
    with pytest.raises(asyncpg.exceptions.RaiseError, match="append-only"):
        await pg.execute("TRUNCATE sessionctl.receipts")

    clean = cli(worker_env, "verify", "--user", USER, "--agent", agent_id, "--json")
    assert clean.returncode == 0, clean.stdout
    report = json.loads(clean.stdout)
    assert report["total"] == 0 and {"agno_sessions", "agno_runs", "agno_memories"} <= set(report["tables"][schema])

    await pg.execute(
        f"INSERT INTO \"{schema}\".agno_memories (memory_id, memory, user_id, created_at) VALUES ('m-late', '\"x\"', $1, 1)",
        USER,
    )
    planted = cli(worker_env, "verify", "--user", USER, "--agent", agent_id)
    assert planted.returncode == 1
    assert f"LEFT {schema}.agno_memories: 1" in planted.stdout
    assert USER not in planted.stdout


async def test_a_late_writer_is_caught_and_recorded_in_the_receipt(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, USER, 1)
    await clone_sessions(pg, schema, f"{agent_id}-{USER}-s0", USER, 20_000, "l")
    slow = settings.model_copy(update={"batch_size": 50, "progress_interval": 0.01})
    stop = asyncio.Event()

    async def writer() -> int:
        conn = await asyncpg.connect(settings.database_url)
        n = 0
        try:
            while not stop.is_set():
                await conn.execute(
                    f'INSERT INTO "{schema}".agno_sessions (session_id, session_type, user_id, created_at)'
                    " VALUES ($1, 'agent', $2, 1)",
                    f"late-{n}",
                    USER,
                )
                n += 1
                await asyncio.sleep(0.002)
        finally:
            await conn.close()
        return n

    async with Producer(slow) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        worker = asyncio.create_task(run_worker(slow))
        while (await producer.status(enq.job_id)).status != "running":  # the purge took its snapshot
            await asyncio.sleep(0.005)
        w = asyncio.create_task(writer())
        while ((await producer.status(enq.job_id)).progress or {}).get("processed", 0) < 10_000:
            await asyncio.sleep(0.005)  # write until half of the snapshot is gone: the purge is still going
        stop.set()
        written = await w
        await worker
        state = await producer.status(enq.job_id)
    assert written > 0
    assert state.status == "succeeded", state
    assert state.result["remaining"] == 0
    assert state.result["sessions_deleted"] == 20_001 + written  # every late session caught
    assert 0 < state.result["late_sessions"] <= written  # those after the first snapshot, counted
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = $1', USER) == 0
    late = await pg.fetchval("SELECT late_sessions FROM sessionctl.receipts WHERE job_id = $1", enq.job_id)
    assert late == state.result["late_sessions"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_endpoint_is_scraped_and_counts(settings: Settings, agent_id: str) -> None:
    port = _free_port()
    with_metrics = settings.model_copy(update={"metrics_port": port})
    await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 7)

    async with Producer(with_metrics) as producer:
        await producer.purge_user_sessions(agent_id="nope-agent", user_id=USER, check_agent=False)
        await run_worker(with_metrics)  # starts the endpoint
        url = f"http://127.0.0.1:{port}/metrics"
        before = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
        await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        await producer.purge_user_sessions(agent_id="nope-agent-2", user_id=USER, check_agent=False)
        await run_worker(with_metrics)
    after = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())

    kind = "purge_user_sessions"
    assert (
        _metric(after, "sessionctl_jobs_total", kind=kind, outcome="succeeded")
        - _metric(before, "sessionctl_jobs_total", kind=kind, outcome="succeeded")
        == 1
    )
    assert (
        _metric(after, "sessionctl_jobs_total", kind=kind, outcome="failed")
        - _metric(before, "sessionctl_jobs_total", kind=kind, outcome="failed")
        == 1
    )
    assert (
        _metric(after, "sessionctl_sessions_deleted_total", kind=kind)
        - _metric(before, "sessionctl_sessions_deleted_total", kind=kind)
        == 7
    )
    assert _metric(after, "sessionctl_batch_duration_seconds_count", kind=kind) > _metric(
        before, "sessionctl_batch_duration_seconds_count", kind=kind
    )
    assert "sessionctl_queue_depth" in after and "sessionctl_job_duration_seconds_bucket" in after


def test_health_reports_each_part(worker_env: dict[str, str], tmp_path: Path) -> None:
    no_worker = cli(worker_env, "health", "--json")
    assert no_worker.returncode == 1
    report = json.loads(no_worker.stdout)
    assert report["checks"]["redis"]["ok"] and report["checks"]["postgres"]["ok"]
    assert not report["checks"]["worker"]["ok"]

    with (tmp_path / "w.log").open("w") as log:
        w = subprocess.Popen([*SESSIONCTL, "worker"], env=worker_env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while True:
                up = cli(worker_env, "health")
                if up.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert up.returncode == 0, up.stdout
            assert "ok   worker" in up.stdout and "ok   postgres" in up.stdout
        finally:
            w.terminate()
            w.wait(30)

    down = cli({**worker_env, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}, "health")
    assert down.returncode == 1 and "FAIL postgres" in down.stdout and "Traceback" not in down.stderr
