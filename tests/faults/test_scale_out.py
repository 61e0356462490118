"""Four worker processes on one queue, killed with SIGKILL at random and restarted: no job is lost,
none runs on two workers at once, each user is purged (every session of theirs gone, bystanders
untouched), and each erasure has exactly one receipt. (A receipt counts what its last try
deleted: sessions a killed try deleted before it died are not in its counts.)"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import asyncpg

from sessionctl.config import Settings
from sessionctl.producer import Producer
from tests.agno_seed import seed

AGENTS = 3
USERS = [f"chaos-user-{i:02d}" for i in range(20)]
EACH = 6  # sessions per user per agent


def _intervals(logs: list[tuple[Path, float | None]]) -> dict[str, list[tuple[float, float, int]]]:
    """Per job id: (start, end, worker) of every try, from each worker's JSON log; a try cut by a
    SIGKILL ends when the worker was killed."""
    out: dict[str, list[tuple[float, float, int]]] = {}
    for worker, (path, killed_at) in enumerate(logs):
        started: dict[str, float] = {}
        for line in path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            job = event.get("job_id")
            if not job or event.get("event") not in ("purge.start", "purge.done"):
                continue
            at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
            if event["event"] == "purge.start":
                started[job] = at
            elif job in started:
                out.setdefault(job, []).append((started.pop(job), at, worker))
        for job, at in started.items():  # never finished: killed mid-job
            assert killed_at is not None, f"worker {worker} left job {job} unfinished without being killed"
            out.setdefault(job, []).append((at, killed_at, worker))
    return out


async def test_four_workers_killed_at_random_lose_no_job_and_never_run_one_twice_at_once(
    own_database: tuple[Settings, asyncpg.Connection], worker_env: dict[str, str], tmp_path: Path
) -> None:
    s, conn = own_database
    for a in range(AGENTS):
        agent = f"chaos-{a}"
        for u in USERS:
            await seed(s.database_url, s.schema_for(agent), agent, u, EACH)
        await seed(s.database_url, s.schema_for(agent), agent, "bystander", 4)
    env = {
        **worker_env,
        "DATABASE_URL": s.database_url,
        "SESSIONCTL_LEASE_TTL": "3",  # a killed worker's job runs again within 3 s
        "SESSIONCTL_BATCH_SIZE": "1",  # many small batches: kills land mid-job
        "SESSIONCTL_MAX_TRIES": "30",
        "SESSIONCTL_RETRY_BASE_DELAY": "0.1",
        "SESSIONCTL_LOG_FORMAT": "json",
    }
    async with Producer(s) as p:
        jobs = set()
        for u in USERS:  # each asked twice, by two producers at once: one job
            a, b = await asyncio.gather(
                p.purge_user_sessions(user_id=u, all_agents=True), p.purge_user_sessions(user_id=u, all_agents=True)
            )
            assert a.job_id == b.job_id and (a.collapsed or b.collapsed)
            jobs.add(a.job_id)

    rng = random.Random(7)
    logs: list[tuple[Path, float | None]] = []
    procs: list[tuple[subprocess.Popen[bytes], int]] = []

    def start() -> None:
        path = tmp_path / f"worker-{len(logs)}.log"
        with path.open("w") as log:
            procs.append(
                (subprocess.Popen([sys.executable, "-m", "sessionctl.cli", "worker"], env=env, stderr=log), len(logs))
            )
        logs.append((path, None))

    for _ in range(4):
        start()
    kills = 0
    try:
        async with Producer(s) as p:
            deadline = time.monotonic() + 180
            while True:
                states = [await p.status(j) for j in jobs]
                if all(st.done for st in states):
                    break
                assert time.monotonic() < deadline, [st.status for st in states]
                if kills < 8 and any(st.status == "running" for st in states):  # a kill may land mid-job
                    await asyncio.sleep(rng.uniform(0.05, 0.3))
                    i = rng.randrange(len(procs))
                    proc, n = procs.pop(i)
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    logs[n] = (logs[n][0], time.time())
                    kills += 1
                    start()
                else:
                    await asyncio.sleep(0.1)
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            proc.wait(30)
    assert kills >= 4, kills
    assert all(st.status == "succeeded" for st in states), [(st.status, st.error) for st in states]  # none lost
    tries = _intervals(logs)
    cut = sum(1 for runs in tries.values() for (_, end, w) in runs if logs[w][1] == end)
    for job, runs in tries.items():  # never two workers on one job at once
        runs.sort()
        for (_, e1, w1), (s2, _, w2) in itertools.pairwise(runs):
            assert s2 >= e1 - 0.05 or w1 == w2, f"{job}: worker {w2} started while worker {w1} ran it"
    assert set(tries) == jobs
    print(f"\n{len(jobs)} jobs, {kills} SIGKILLs, {cut} tries cut mid-job; every job done once at a time")
    assert cut >= 1  # the kills did land mid-job
    left = 0
    for a in range(AGENTS):
        schema = s.schema_for(f"chaos-{a}")
        left += await conn.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = ANY($1)', USERS)
        assert (
            await conn.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = $1', "bystander") == 4
        )
    assert left == 0
    per_job = await conn.fetch("SELECT job_id, count(*) AS n FROM sessionctl.receipts GROUP BY 1")
    assert {r["job_id"]: r["n"] for r in per_job} == dict.fromkeys(jobs, 1)  # one receipt each, none twice


async def test_a_job_whose_worker_died_right_after_picking_it_up_runs_again_within_a_lease(
    settings: Settings, agent_id: str
) -> None:
    """arq marks a picked-up job as in progress before any of our code runs; a worker killed right
    then must not hold the job for arq's longest timeout (two hours), only for one lease."""
    from arq.constants import in_progress_key_prefix

    from sessionctl.worker.settings import create
    from tests.conftest import run_worker

    s = settings.model_copy(update={"lease_ttl": 3})
    await seed(s.database_url, s.schema_for(agent_id), agent_id, USERS[0], 2)
    async with Producer(s) as p:
        enq = await p.purge_user_sessions(user_id=USERS[0], agent_id=agent_id)
        dead = create(s, burst=True)  # the mark a worker sets as it picks the job up, then dies
        assert dead.in_progress_timeout_s == 3
        redis = await p.redis()
        await redis.psetex(in_progress_key_prefix + enq.job_id, int(dead.in_progress_timeout_s * 1000), b"1")
        await dead.close()
        started = time.monotonic()
        while await redis.exists(in_progress_key_prefix + enq.job_id):
            assert time.monotonic() - started < 10, "the dead worker's mark outlived its lease"
            await asyncio.sleep(0.2)
        await run_worker(s)
        state = await p.status(enq.job_id)
    assert state.status == "succeeded" and state.result and state.result["sessions_deleted"] == 2
