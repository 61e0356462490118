"""An erasure that can be trusted on deployments set up the way real ones are: a worker role that is
not a superuser (least privilege, row-level security), Redis that loses its data, workers killed
in a loop, edited exports, a full disk, a read-only replica — against real Postgres, Redis and a
real worker. Each test fails on a sessionctl that reports "done" (or says the wrong thing) there.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from sessionctl import doctor, export_files
from sessionctl.agents import AgentHandle
from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.errors import ExportMismatch, InvalidRequest
from sessionctl.privacy import user_hmac
from sessionctl.producer import Producer
from sessionctl.restore import import_export
from sessionctl.store import migrations
from sessionctl.worker.jobindex import JobIndex
from tests.agno_seed import agno_db, seed, seed_sessions
from tests.conftest import HASH_KEY, PG_ADMIN_URL, run_worker
from tests.embedded_services import free_port, redis_server, redis_server_binary


def _index(settings: Settings) -> JobIndex:
    """The job index of the test's deployment (its keys are led by the queue name)."""
    return JobIndex(None, settings.queue_name)


USER = "trust-tess-5521@example.com"
OTHER = "other-otto-8810@example.com"
SESSIONCTL = [sys.executable, "-m", "sessionctl.cli"]

MakeRole = Callable[..., Awaitable[str]]


# -- a database of our own, roles made with the documented grants ------------------------------------


async def _admin(sql: str, url: str = PG_ADMIN_URL) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def trust_db(settings: Settings) -> AsyncIterator[tuple[str, MakeRole]]:
    """A fresh database (no receipts schema yet; PUBLIC may not connect), and a maker of login
    roles that are not superusers, given exactly what `sessionctl grants` prints."""
    name = f"sessionctl_trust_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    await _admin("REVOKE ALL ON DATABASE " + f'"{name}" FROM PUBLIC; REVOKE CREATE ON SCHEMA public FROM PUBLIC', url)
    roles: list[str] = []

    async def make(*, grants: bool = True, agent_id: str | None = None, scope: str = "all") -> str:
        role = f"sctl_w_{uuid.uuid4().hex[:10]}"
        roles.append(role)
        await _admin(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS')
        if grants:
            admin_settings = settings.model_copy(update={"database_url": url})
            lines = await doctor.grants(admin_settings, role, agent_id=agent_id, scope=scope)
            await _admin("\n".join(line for line in lines if not line.startswith("--")), url)
        return role

    yield url, make
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for role in roles:
        await _admin(f'DROP ROLE IF EXISTS "{role}"')


def as_role(settings: Settings, url: str, role: str) -> Settings:
    return settings.model_copy(update={"database_url": url.replace("postgres@", f"{role}@", 1)})


async def _seed(url: str, agent_id: str, schema: str, users: dict[str, int]) -> None:
    db = agno_db(url, schema)
    for user, n in users.items():
        await seed_sessions(db, agent_id, user, n)
    await db.close()


async def _count(url: str, schema: str, user: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = $1', user))
    finally:
        await conn.close()


async def _receipts(url: str, user: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT to_regclass('sessionctl.receipts')") is None:
            return []
        return await conn.fetch(
            "SELECT job_id, counts FROM sessionctl.receipts WHERE user_hmac = $1 ORDER BY id",
            user_hmac(HASH_KEY.encode(), user),
        )
    finally:
        await conn.close()


async def _purge(settings: Settings, **kwargs: Any) -> Any:
    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(**kwargs)
        await run_worker(settings)
        return await producer.status(enq.job_id)


# -- 1. rows the role cannot see ------------------------------------------------------------------------


async def test_rows_hidden_by_row_level_security_fail_the_erasure_and_nothing_is_deleted(
    settings: Settings, trust_db: tuple[str, MakeRole], agent_id: str
) -> None:
    url, make_role = trust_db
    schema = settings.schema_for(agent_id)
    await _seed(url, agent_id, schema, {USER: 4, OTHER: 2})
    await doctor.migrate(settings.model_copy(update={"database_url": url}))
    role = await make_role()
    worker = as_role(settings, url, role)
    # a tenant policy of the kind real deployments add: the worker role sees no row of USER
    await _admin(
        f'ALTER TABLE "{schema}".agno_sessions ENABLE ROW LEVEL SECURITY;'
        f""" CREATE POLICY tenant ON "{schema}".agno_sessions USING (user_id <> '{USER}')""",
        url,
    )
    state = await _purge(worker, agent_id=agent_id, user_id=USER)
    assert state.status == "failed" and state.error["type"] == "InsufficientPrivilege", state
    message = state.error["message"]
    assert f"{schema}.agno_sessions" in message and "row-level security" in message and "BYPASSRLS" in message
    assert "Nothing was deleted" in message and USER not in message
    assert await _count(url, schema, USER) == 4 and await _receipts(url, USER) == []

    report = await doctor.diagnose(worker, agent_id=agent_id)
    assert not report["ok"] and any("row-level security" in p for p in report["schemas"][schema]["access"])

    # a policy that filters DELETE but not SELECT: the count would see rows the delete skips
    await _admin(
        f'DROP POLICY tenant ON "{schema}".agno_sessions;'
        f' CREATE POLICY see ON "{schema}".agno_sessions FOR SELECT USING (true);'
        f' CREATE POLICY keep ON "{schema}".agno_sessions FOR DELETE USING (false)',
        url,
    )
    state = await _purge(worker, agent_id=agent_id, user_id=USER)
    assert state.status == "failed" and state.error["type"] == "InsufficientPrivilege", state
    assert await _count(url, schema, USER) == 4

    # a dry run under RLS would count what the role sees: it fails too
    state = await _purge(worker, agent_id=agent_id, user_id=USER, dry_run=True)
    assert state.status == "failed" and "row-level security" in state.error["message"], state

    # what the message says to do, done: the same erasure succeeds and proves it
    await _admin(f'ALTER ROLE "{role}" BYPASSRLS')
    state = await _purge(worker, agent_id=agent_id, user_id=USER)
    assert state.status == "succeeded" and state.result["sessions_deleted"] == 4, state
    assert await _count(url, schema, USER) == 0 and await _count(url, schema, OTHER) == 2
    assert len(await _receipts(url, USER)) == 1


async def test_a_missing_grant_in_one_agent_fails_an_all_agents_erasure_before_any_delete(
    settings: Settings, trust_db: tuple[str, MakeRole]
) -> None:
    url, make_role = trust_db
    agents = [f"agent-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    schemas = [settings.schema_for(a) for a in agents]
    for a, s in zip(agents, schemas, strict=True):
        await _seed(url, a, s, {USER: 3})
    await doctor.migrate(settings.model_copy(update={"database_url": url}))
    role = await make_role()
    await _admin(f'REVOKE DELETE ON "{schemas[1]}".agno_runs FROM "{role}"', url)
    worker = as_role(settings, url, role)
    state = await _purge(worker, all_agents=True, user_id=USER)
    assert state.status == "failed" and state.error["type"] == "InsufficientPrivilege", state
    assert f"{schemas[1]}.agno_runs: no DELETE" in state.error["message"]
    assert f"sessionctl grants --role {role}" in state.error["message"]
    assert [await _count(url, s, USER) for s in schemas] == [3, 3]  # neither agent was touched

    # `verify` cannot count rows it may not read either: it says so instead of reporting 0
    await _admin(f'REVOKE SELECT ON "{schemas[0]}".agno_runs FROM "{role}"', url)
    from sessionctl.jobs.person import verify_user

    with pytest.raises(PermissionError, match=rf"{schemas[0]}\.agno_runs: no SELECT"):
        await verify_user(worker, USER)


# -- 10. least privilege is a supported deployment -----------------------------------------------------------


async def test_a_worker_with_exactly_the_documented_grants_erases_exports_and_proves(
    settings: Settings, trust_db: tuple[str, MakeRole], agent_id: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    url, make_role = trust_db
    schema = settings.schema_for(agent_id)
    await _seed(url, agent_id, schema, {USER: 3, OTHER: 2, "third-user": 2, "bulk-a": 1, "bulk-b": 1})
    role = await make_role()  # before the receipts schema exists: its grants cannot be given yet
    worker = as_role(settings, url, role).model_copy(update={"export_dir": str(tmp_path / "exports")})
    conn = await asyncpg.connect(url)
    try:
        assert not await conn.fetchval("SELECT has_database_privilege($1, current_database(), 'CREATE')", role)
    finally:
        await conn.close()

    # no receipts schema, and no CREATE to make it: refused before anything is deleted
    state = await _purge(worker, agent_id=agent_id, user_id=USER)
    assert state.status == "failed" and state.error["type"] == "InsufficientPrivilege", state
    assert "sessionctl migrate" in state.error["message"] and "nothing was deleted" in state.error["message"]
    assert await _count(url, schema, USER) == 3

    # the administrator's two commands, as the README gives them
    admin_env = {**worker_env, "DATABASE_URL": url}
    done = subprocess.run([*SESSIONCTL, "migrate"], env=admin_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and f"version {migrations.LATEST}" in done.stdout, done.stderr
    printed = subprocess.run(
        [*SESSIONCTL, "grants", "--role", role], env=admin_env, capture_output=True, text=True, timeout=60
    )
    assert printed.returncode == 0 and f'TO "{role}"' in printed.stdout, printed.stderr
    await _admin(printed.stdout, url)

    state = await _purge(worker, agent_id=agent_id, user_id=USER, memories=True)
    assert state.status == "succeeded" and state.result["remaining"] == 0, state
    state = await _purge(worker, agent_id=agent_id, user_id="third-user", scope="all")
    assert state.status == "succeeded" and state.result["remaining"] == 0, state
    async with Producer(worker) as producer:
        enq = await producer.export_sessions(agent_id=agent_id, user_id=OTHER, out="dsr.jsonl", then_purge=True)
        bulk = await producer.purge_users(agent_id=agent_id, user_ids=["bulk-a", "bulk-b"])
        await run_worker(worker)
        exported, bulked = await producer.status(enq.job_id), await producer.status(bulk.job_id)
    assert exported.status == "succeeded" and exported.result["purge"]["sessions_deleted"] == 2, exported
    assert bulked.status == "succeeded" and bulked.result["sessions_deleted"] == 2, bulked
    for user in (USER, "third-user", OTHER, "bulk-a"):
        assert await _count(url, schema, user) == 0 and len(await _receipts(url, user)) == 1, user
    report = await doctor.diagnose(worker, agent_id=agent_id)
    assert report["receipts"]["ok"] and report["schemas"][schema]["access"] == [], report


async def test_a_read_only_database_is_a_permanent_configuration_error(
    settings: Settings, trust_db: tuple[str, MakeRole], agent_id: str
) -> None:
    url, make_role = trust_db
    schema = settings.schema_for(agent_id)
    await _seed(url, agent_id, schema, {USER: 2})
    await doctor.migrate(settings.model_copy(update={"database_url": url}))
    role = await make_role()
    await _admin(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')  # what a hot standby does to writes
    worker = as_role(settings, url, role)
    state = await _purge(worker, agent_id=agent_id, user_id=USER)
    assert state.status == "failed" and state.error["type"] == "DatabaseReadOnly", state
    assert "primary" in state.error["message"] and state.attempt == 1  # permanent: not retried
    assert await _count(url, schema, USER) == 2


# -- 2. a users file is read exactly as written ---------------------------------------------------------------


async def test_a_users_file_is_read_exactly_as_written(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    schema = settings.schema_for(agent_id)
    await _seed(settings.database_url, agent_id, schema, {"alice": 2, "alice ": 3, "carol": 1, "dave": 1})
    env = {**worker_env}
    cmd = [*SESSIONCTL, "purge", "--agent", agent_id, "--users-file"]
    redis = aioredis.from_url(settings.redis_url)

    ambiguous = tmp_path / "ambiguous.txt"
    ambiguous.write_bytes(b"bob\nalice \n\xe2\x80\x8bzed\nok\n\xff\n")
    done = subprocess.run([*cmd, str(ambiguous)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert "line 5: not valid UTF-8" in done.stderr and "nothing was enqueued" in done.stderr
    ambiguous.write_bytes(b"bob\nalice \n\xe2\x80\x8bzed\nx\xe2\x80\xa8y\n")  # zero-width space, line separator
    done = subprocess.run([*cmd, str(ambiguous)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert "line 2: leading or trailing whitespace" in done.stderr
    assert "lines 3, 4: control or format characters" in done.stderr
    assert "alice" not in done.stderr and await redis.zcard(settings.queue_name) == 0

    # said how to read them: "alice " is erased, alice (another person) is not touched
    only_spaces = tmp_path / "spaces.txt"
    only_spaces.write_bytes(b"alice \r\ncarol\r\ndave\r\n")  # CRLF: one line ending, not part of the id
    done = subprocess.run(
        [*cmd, str(only_spaces), "--ambiguous-ids", "keep", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    await run_worker(settings)
    async with Producer(settings) as producer:
        state = await producer.status(json.loads(done.stdout)["job_id"])
    assert state.status == "succeeded" and state.result["sessions_deleted"] == 5, state
    left = {
        r["user_id"]: r["n"]
        for r in await pg.fetch(f'SELECT user_id, count(*) n FROM "{schema}".agno_sessions GROUP BY 1')
    }
    assert left == {"alice": 2}

    # the producer API follows the same rule
    async with Producer(settings) as producer:
        with pytest.raises(InvalidRequest, match="line 1: leading or trailing whitespace"):
            await producer.purge_users(agent_id=agent_id, user_ids=["alice ", "bob"])
        stripped = await producer.purge_users(agent_id=agent_id, user_ids=[" alice "], ambiguous_ids="strip")
        await run_worker(settings)
        state = await producer.status(stripped.job_id)
    assert state.status == "succeeded" and state.result["sessions_deleted"] == 2, state
    await redis.aclose()


# -- 3. job identity and proof survive Redis losing its state ----------------------------------------------


@pytest.mark.skipif(redis_server_binary() is None and not os.environ.get("CI"), reason="needs a redis-server")
async def test_redis_flushed_and_restarted_never_reuses_a_job_id_nor_drops_a_receipt(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, tmp_path: Path
) -> None:
    port = free_port()
    proc = redis_server(port, tmp_path, "--appendonly", "no")
    own = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    schema = settings.schema_for(agent_id)
    jobs: list[str] = []
    try:
        for round_, n in enumerate((2, 3, 4)):
            await _seed(settings.database_url, agent_id, schema, {})
            await seed(settings.database_url, schema, agent_id, USER, n, prefix=f"round{round_}")
            state = await _purge(own, agent_id=agent_id, user_id=USER)
            assert state.status == "succeeded" and state.result["sessions_deleted"] == n, state
            jobs.append(state.job_id)
            if round_ == 0:  # Redis loses everything...
                r = aioredis.from_url(own.redis_url)
                await r.flushall()
                await r.aclose()
            elif round_ == 1:  # ...and then restarts empty (no persistence)
                proc.kill()
                proc.wait()
                proc = redis_server(port, tmp_path, "--appendonly", "no")
    finally:
        proc.kill()
        proc.wait()
    assert len(set(jobs)) == 3, jobs
    rows = await _receipts(settings.database_url, USER)
    assert [r["job_id"] for r in rows] == jobs
    assert [
        json.loads(r["counts"])["sessions"] if isinstance(r["counts"], str) else r["counts"]["sessions"] for r in rows
    ] == [2, 3, 4]


async def test_a_receipt_of_another_erasure_under_the_same_job_id_fails_the_job(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    await _seed(settings.database_url, agent_id, schema, {USER: 2})
    await doctor.migrate(settings)
    job_id = f"{settings.queue_name}:purge_user_sessions:{uuid.uuid4().hex[:24]}:0"  # an id a pre-1.0 producer could hand out twice
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    await pg.execute(
        "INSERT INTO sessionctl.receipts (job_id, kind, user_hmac, target, agents, counts, remaining, started_at,"
        " finished_at) VALUES ($1, 'purge_user_sessions', $2, $3, '{}', '{\"sessions\": 9}', 0, $4, $4)",
        job_id,
        user_hmac(HASH_KEY.encode(), USER),
        agent_id,
        long_ago,
    )
    async with Producer(settings) as producer:
        redis = await producer.redis()
        await redis.enqueue_job(
            "purge_user_sessions",
            {"user_id": USER, "agent_id": agent_id},
            _job_id=job_id,
            _queue_name=settings.queue_name,
        )
        await run_worker(settings)
        state = await producer.status(job_id)
    assert state.status == "failed" and state.error["type"] == "ReceiptConflict", state
    assert "not reported done" in state.error["message"]


# -- 4. every way a job ends reaches the job index -----------------------------------------------------------


async def _wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_job_killed_until_arq_gives_up_is_failed_in_the_index_and_can_be_retried(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, worker_env: dict[str, str]
) -> None:
    schema = settings.schema_for(agent_id)
    await _seed(settings.database_url, agent_id, schema, {USER: 3})
    env = {**worker_env, "SESSIONCTL_MAX_TRIES": "2", "SESSIONCTL_LEASE_TTL": "3", "SESSIONCTL_POLL_DELAY": "0.05"}
    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
    redis = aioredis.from_url(settings.redis_url)
    blocker = await asyncpg.connect(settings.database_url)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute(f'LOCK TABLE "{schema}".agno_sessions IN ACCESS EXCLUSIVE MODE')  # the purge hangs
    try:
        for attempt in (1, 2):  # an OOM-kill loop: the worker dies mid-purge on every try
            w = subprocess.Popen([*SESSIONCTL, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            async def running(n: int = attempt) -> bool:
                meta = await redis.hgetall(_index(settings).meta_key(enq.job_id))
                return meta.get(b"state") == b"running" and meta.get(b"attempt") == str(n).encode()

            await _wait_for(running, 30, f"try {attempt} to start")
            await asyncio.sleep(0.3)
            w.send_signal(signal.SIGKILL)
            w.wait()
        # the next worker finds the try limit exceeded: arq fails the job without running our code
        w = subprocess.Popen(
            [*SESSIONCTL, "worker", "--burst"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        await asyncio.to_thread(w.wait, 60)
    finally:
        await tx.rollback()
        await blocker.close()
    meta = await redis.hgetall(_index(settings).meta_key(enq.job_id))
    assert meta[b"state"] == b"failed" and meta[b"error_type"] == b"JobExecutionFailed", meta
    assert b"never finished" in meta[b"error"]
    listed = subprocess.run(
        [*SESSIONCTL, "jobs", "--failed", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert enq.job_id in {r["job_id"] for r in json.loads(listed.stdout)}, listed
    status = subprocess.run([*SESSIONCTL, "status", enq.job_id], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 1 and "failed" in status.stdout and "never finished" in status.stdout, status

    retried = subprocess.run(
        [*SESSIONCTL, "retry", enq.job_id, "--user", "-", "--json"],
        env=env,
        input=USER + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert retried.returncode == 0, retried.stderr
    await run_worker(settings)
    async with Producer(settings) as producer:
        state = await producer.status(json.loads(retried.stdout)["job_id"])
    assert state.status == "succeeded" and state.result["sessions_deleted"] == 3, state
    await redis.aclose()


async def test_a_job_past_its_timeout_is_failed_in_the_index_saying_so(settings: Settings, agent_id: str) -> None:
    schema = settings.schema_for(agent_id)
    await _seed(settings.database_url, agent_id, schema, {USER: 2})
    short = settings.model_copy(update={"purge_timeout": 5})
    async with Producer(short) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        blocker = await asyncpg.connect(settings.database_url)
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(f'LOCK TABLE "{schema}".agno_sessions IN ACCESS EXCLUSIVE MODE')
        try:
            await run_worker(short)  # arq cancels the job at its timeout, around our code
        finally:
            await tx.rollback()
            await blocker.close()
        state = await producer.status(enq.job_id)
        meta = await (await producer.redis()).hgetall(_index(settings).meta_key(enq.job_id))
    assert state.status == "failed" and "past its timeout" in state.error["message"], state
    assert meta[b"state"] == b"failed" and b"past its timeout" in meta[b"error"], meta
    assert await _count(settings.database_url, schema, USER) == 2


async def test_jobs_settles_what_the_index_missed_and_skips_unreadable_entries(
    settings: Settings, agent_id: str, worker_env: dict[str, str]
) -> None:
    async with Producer(settings) as producer:
        lost = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, check_agent=False)
        redis = await producer.redis()
        # arq's queue entry is gone without a result (Redis lost it, or the result expired)
        await redis.delete(f"arq:job:{lost.job_id}")
        await redis.zrem(settings.queue_name, lost.job_id)
        # two entries of our own index that cannot be read
        await redis.zadd(_index(settings).index_key, {"broken:1": 10**9, "broken:2": 10**9 + 1})
        await redis.set(_index(settings).meta_key("broken:1"), "not a hash")
        await redis.hset(
            _index(settings).meta_key("broken:2"), mapping={"kind": "x", "state": "running", "attempt": "many"}
        )
    done = subprocess.run([*SESSIONCTL, "jobs"], env=worker_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "2 unreadable index entries skipped" in done.stderr, done
    assert "failed" in done.stdout and lost.job_id in done.stdout and "JobLost" in done.stdout, done.stdout
    failed = subprocess.run(
        [*SESSIONCTL, "jobs", "--failed"], env=worker_env, capture_output=True, text=True, timeout=60
    )
    assert failed.returncode == 0 and lost.job_id in failed.stdout, failed


# -- 5. restore never writes over someone else ----------------------------------------------------------------


async def test_an_edited_export_is_refused_and_never_overwrites_another_users_run(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, tmp_path: Path, databases: Databases
) -> None:
    xs = settings.model_copy(update={"export_dir": str(tmp_path)})
    schema = settings.schema_for(agent_id)
    await _seed(settings.database_url, agent_id, schema, {USER: 2, OTHER: 1})
    async with Producer(xs) as producer:
        enq = await producer.export_sessions(agent_id=agent_id, user_id=USER, out="mine.jsonl")
        await run_worker(xs)
        state = await producer.status(enq.job_id)
    assert state.status == "succeeded", state
    path = Path(state.result["path"])
    victim_run = f"{agent_id}-{OTHER}-s0-r0"
    before = await pg.fetchval(f'SELECT run_data::text FROM "{schema}".agno_runs WHERE run_id = $1', victim_run)

    # the attack: a run of the file renamed to another user's run id, checksum recomputed
    lines = path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[0])
    record["session"]["runs"][0]["run_id"] = victim_run
    record["session"]["runs"][0]["content"] = "overwritten"
    lines[0] = json.dumps(record).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    manifest_path = path.with_name(path.name + export_files.MANIFEST_SUFFIX)
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"], manifest["bytes"] = export_files.file_sha256(path)
    manifest_path.write_text(json.dumps(manifest))

    handle = AgentHandle(agent_id, settings=xs, databases=databases)
    await pg.execute(f'DELETE FROM "{schema}".agno_sessions WHERE user_id = $1', USER)
    with pytest.raises(ExportMismatch, match="does not authenticate"):
        await import_export(path, handle, key=xs.hash_key_bytes)
    # even with the manifest check skipped, the rows of others stay untouched, and nothing is written
    with pytest.raises(InvalidRequest, match="line 1 would overwrite"):
        await import_export(path, handle, verify=False, key=xs.hash_key_bytes)
    assert await pg.fetchval(f'SELECT run_data::text FROM "{schema}".agno_runs WHERE run_id = $1', victim_run) == before
    assert await _count(settings.database_url, schema, USER) == 0

    # a session id of another user is refused the same way
    record = json.loads(lines[1])
    record["session"]["session_id"] = f"{agent_id}-{OTHER}-s0"
    path.write_bytes(json.dumps(record).encode() + b"\n")
    with pytest.raises(InvalidRequest, match="line 1 would overwrite"):
        await import_export(path, handle, verify=False, key=xs.hash_key_bytes)
    assert await _count(settings.database_url, schema, OTHER) == 1


async def test_export_then_erase_refuses_a_published_file_whose_manifest_was_forged(
    settings: Settings, agent_id: str, tmp_path: Path
) -> None:
    xs = settings.model_copy(update={"export_dir": str(tmp_path)})
    schema = settings.schema_for(agent_id)
    await _seed(settings.database_url, agent_id, schema, {USER: 2})
    async with Producer(xs) as producer:
        enq = await producer.export_sessions(agent_id=agent_id, user_id=USER, out="dsr.jsonl", then_purge=True)
        # as if this job had published the file before a crash, but the file was since replaced
        (tmp_path / "dsr.jsonl").write_bytes(b"{}\n")
        sha, size = export_files.file_sha256(tmp_path / "dsr.jsonl")
        forged = {"job_id": enq.job_id, "sha256": sha, "bytes": size, "sessions": 0, "counts": {}, "mac": "0" * 64}
        (tmp_path / "dsr.jsonl.manifest.json").write_text(json.dumps(forged))
        await run_worker(xs)
        state = await producer.status(enq.job_id)
    assert state.status == "failed" and state.error["type"] == "ExportMismatch", state
    assert await _count(settings.database_url, schema, USER) == 2  # nothing erased


# -- 6. clear errors that leak nothing ------------------------------------------------------------------------


async def test_import_with_a_bad_run_prints_one_line_without_the_user_or_content(
    settings: Settings, agent_id: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    schema = settings.schema_for(agent_id)
    await _seed(settings.database_url, agent_id, schema, {OTHER: 1})
    secret = "the-confidential-answer-42"
    session = {
        "session_id": f"{agent_id}-bad",
        "session_type": "agent",
        "agent_id": agent_id,
        "user_id": USER,
        "session_data": {"session_name": secret},
        "created_at": 1_700_000_000,
        "updated_at": 1_700_000_000,
        "runs": [
            {
                "run_id": "bad-run",
                "agent_id": agent_id,
                "content": secret,
                "created_at": "not-a-time" * 3,
                "status": "COMPLETED",
            }
        ],
    }
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"v": 1, "agent": agent_id, "schema": schema, "session": session}) + "\n")
    done = subprocess.run(
        [*SESSIONCTL, "import", str(path), "--agent", agent_id, "--no-verify"],
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (1, 2) and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ") and USER not in done.stderr and secret not in done.stderr, done.stderr


async def test_a_full_export_disk_says_so_and_where_and_leaves_no_partial_file(
    settings: Settings, agent_id: str, tmp_path: Path
) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to mount a small tmpfs: {mounted.stderr!r}")
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        xs = settings.model_copy(update={"export_dir": str(mount / "exports"), "max_tries": 2})
        schema = settings.schema_for(agent_id)
        await seed(settings.database_url, schema, agent_id, USER, 120, runs=4)
        async with Producer(xs) as producer:
            enq = await producer.export_sessions(agent_id=agent_id, user_id=USER, out="big.jsonl")
            await run_worker(xs)
            state = await producer.status(enq.job_id)
        assert state.status == "failed" and state.error["type"] == "StorageFull", state
        message = state.error["message"]
        assert "no space left on device" in message and str(mount / "exports") in message, message
        assert "will retry" not in message and "gave up after 2 tries" in message, message
        assert list((mount / "exports").iterdir()) == []  # no .partial left behind
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# -- 7. ids out of argv -------------------------------------------------------------------------------------


async def test_user_from_stdin_never_appears_in_the_process_list(
    settings: Settings, agent_id: str, worker_env: dict[str, str]
) -> None:
    schema = settings.schema_for(agent_id)
    await _seed(settings.database_url, agent_id, schema, {USER: 2})
    proc = subprocess.Popen(
        [*SESSIONCTL, "purge", "--agent", agent_id, "--user", "-", "--wait", "--timeout", "60", "--json"],
        env=worker_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(USER.encode() + b"\n")
    proc.stdin.close()
    redis = aioredis.from_url(settings.redis_url)
    try:  # the job enqueued (however slowly the process started): it now waits for it
        deadline = time.monotonic() + 30
        while not await redis.zcard(settings.queue_name):
            assert proc.poll() is None and time.monotonic() < deadline, "the CLI did not enqueue its job"
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()
    listing = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    assert "--user -" in listing and USER not in listing
    await run_worker(settings)
    assert proc.stdout is not None and proc.stderr is not None
    out = await asyncio.to_thread(proc.stdout.read)
    proc.wait(60)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == 0 and json.loads(out)["result"]["sessions_deleted"] == 2
