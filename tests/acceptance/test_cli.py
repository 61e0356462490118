"""The real `sessionctl` command in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from sessionctl.config import Settings
from tests.agno_seed import agno_db, seed, seed_sessions, table_rows

USER = "erin-4411@example.com"
SESSIONCTL = [sys.executable, "-m", "sessionctl.cli"]


def run(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SESSIONCTL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


async def test_purge_then_worker_then_status(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, worker_env: dict[str, str]
) -> None:
    schema = settings.schema_for(agent_id)
    db = agno_db(settings.database_url, schema)
    await seed_sessions(db, agent_id, USER, 70)
    await seed_sessions(db, agent_id, "frank", 2)
    await db.close()

    listed = run(worker_env, "sessions", "--agent", agent_id, "--user", USER, "--json")
    assert listed.returncode == 0, listed.stderr
    lines = [json.loads(x) for x in listed.stdout.splitlines()]
    assert len(lines) == 70  # all of them, not 50
    assert [x["created_at"] for x in lines] == sorted((x["created_at"] for x in lines), reverse=True)

    enq = run(worker_env, "purge", "--agent", agent_id, "--user", USER, "--json")
    assert enq.returncode == 0, enq.stderr
    job_id = json.loads(enq.stdout)["job_id"]
    dup = run(worker_env, "purge", "--agent", agent_id, "--user", USER)
    assert dup.returncode == 0 and job_id in dup.stdout and "already queued or running" in dup.stdout

    w = run(worker_env, "worker", "--burst")
    assert w.returncode == 0, w.stderr
    assert USER not in w.stderr and USER not in w.stdout  # the worker's whole log: no raw user id
    assert "purge.done" in w.stderr

    st = run(worker_env, "status", job_id, "--json")
    assert st.returncode == 0, st.stderr
    state = json.loads(st.stdout)
    assert state["status"] == "succeeded"
    assert state["result"]["sessions_deleted"] == 70 and state["result"]["remaining"] == 0
    assert USER not in st.stdout
    human = run(worker_env, "status", job_id)
    assert human.returncode == 0 and "succeeded" in human.stdout and "remaining 0" in human.stdout
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id=$1', USER) == 0
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id=$1', "frank") == 2


async def test_purge_wait_with_a_running_worker(
    settings: Settings, agent_id: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 12)
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([*SESSIONCTL, "worker"], env=worker_env, stdout=log, stderr=log)
    try:
        res = run(worker_env, "purge", "--agent", agent_id, "--user", USER, "--wait", "--json", "--timeout", "60")
        assert res.returncode == 0, res.stderr
        state = json.loads(res.stdout)
        assert state["status"] == "succeeded" and state["result"]["sessions_deleted"] == 12
        human = run(worker_env, "purge", "--agent", agent_id, "--user", USER, "--wait", "--dry-run")
        assert human.returncode == 0 and "would delete" in human.stdout and "sessions=0" in human.stdout
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
    assert worker.returncode == 0  # SIGTERM: a clean stop
    assert USER not in (tmp_path / "worker.log").read_text()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--agent", "{agent}", "--user", ""], "user id is empty"),
        (["--agent", 'x"; drop schema y; --', "--user", "u"], "not a valid agent id"),
        (["--agent", "../..", "--user", "u"], "not a valid agent id"),
        (["--agent", "a" * 200, "--user", "u"], "not a valid agent id"),
        (["--agent", "no-such-agent-anywhere", "--user", "u"], "has no session storage"),
        (["--user", "u"], "exactly one target"),
        (["--agent", "{agent}", "--all-agents", "--user", "u"], "exactly one target"),
    ],
)
async def test_bad_input_exits_2_with_one_line_and_touches_nothing(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, worker_env: dict[str, str], args: list[str], needle: str
) -> None:
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, "u", 3)
    before = await table_rows(pg, schema)
    res = run(worker_env, "purge", *[a.replace("{agent}", agent_id) for a in args])
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert needle in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    r = aioredis.from_url(settings.redis_url)
    assert await r.zcard(settings.queue_name) == 0  # nothing enqueued
    await r.aclose()
    assert await table_rows(pg, schema) == before


def test_unreachable_redis_says_so_and_exits_3(worker_env: dict[str, str]) -> None:
    env = {**worker_env, "REDIS_URL": "redis://127.0.0.1:1/0"}
    start = time.monotonic()
    res = run(env, "status", "some-job")
    assert res.returncode == 3
    assert "cannot connect to Redis" in res.stderr and "REDIS_URL" in res.stderr
    assert "Traceback" not in res.stderr
    assert time.monotonic() - start < 30


def test_invalid_database_url_is_bad_input(worker_env: dict[str, str]) -> None:
    res = run({**worker_env, "DATABASE_URL": "mysql://root@localhost/x"}, "sessions", "--agent", "a", "--user", "u")
    assert res.returncode == 2 and "scheme 'mysql' is not supported" in res.stderr
