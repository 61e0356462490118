"""Benchmark: one worker touching 2,000 agent schemas — how many Postgres connections it opens.

    python bench/connections.py [--agents 2000] [--pool-size 4] [--max-jobs 4] [--sdk 300]

Data: ``--agents`` agent schemas as Agno 3.x creates them (one made by Agno, the others cloned
from its DDL in SQL: same tables, indexes and foreign keys), each holding one session (2 runs)
of the same user. One worker (``SESSIONCTL_POOL_SIZE``, ``SESSIONCTL_MAX_JOBS`` as given), with
the open connections to the database sampled every 10 ms from ``pg_stat_activity``, runs:

1. one ``purge_user_sessions`` job per agent (``--agents`` jobs through Redis);
2. the same user re-seeded, then one ``--all-agents`` purge that walks every schema;
3. on ``--sdk`` agents, 16 at a time: the SDK-contract helper ``aget_user_sessions`` (our pool),
   then ``aget_db()`` and Agno's own ``get_sessions`` — cached Agno clients (each reflects its
   tables once; an LRU of ``SESSIONCTL_CLIENT_CACHE_SIZE``) sharing one SQLAlchemy engine.

Prints, per phase, the peak of open connections against the bound sessionctl promises
(``SESSIONCTL_POOL_SIZE`` per database for our pool, the same again for Agno's engine), and the
rate. Needs Postgres and Redis on 127.0.0.1 (creates and drops database
``sessionctl_bench_conns``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_settings, burst_worker, drop_database, fresh_database, url
from sessionctl.agents import AgentHandle
from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.producer import Producer
from tests.agno_seed import seed

DB = "sessionctl_bench_conns"
URL = url(DB)
USER = "many-agents-user"


async def prepare(settings: Settings, agents: list[str]) -> None:
    template = settings.schema_for(agents[0])
    await seed(URL, template, agents[0], USER, 1)
    conn = await asyncpg.connect(URL)
    for agent in agents[1:]:
        schema = settings.schema_for(agent)
        await conn.execute(
            f'CREATE SCHEMA "{schema}";'
            f' CREATE TABLE "{schema}".agno_sessions (LIKE "{template}".agno_sessions INCLUDING ALL);'
            f' CREATE TABLE "{schema}".agno_runs (LIKE "{template}".agno_runs INCLUDING ALL);'
            f' ALTER TABLE "{schema}".agno_runs ADD FOREIGN KEY (session_id)'
            f'  REFERENCES "{schema}".agno_sessions (session_id) ON DELETE CASCADE;'
            f' CREATE TABLE "{schema}".agno_schema_versions (LIKE "{template}".agno_schema_versions INCLUDING ALL);'
            f' INSERT INTO "{schema}".agno_schema_versions SELECT * FROM "{template}".agno_schema_versions'
        )
    await conn.execute(  # the user's Agno-written session and runs, kept aside for re-seeding
        f'CREATE TABLE public.seed_sessions AS SELECT * FROM "{template}".agno_sessions;'
        f' CREATE TABLE public.seed_runs AS SELECT * FROM "{template}".agno_runs'
    )
    await conn.close()
    await reseed(settings, agents)


async def reseed(settings: Settings, agents: list[str]) -> None:
    """The user's one session (and its 2 runs) in every schema, copied from the Agno-written one."""
    conn = await asyncpg.connect(URL)
    for agent in agents:
        schema = settings.schema_for(agent)
        await conn.execute(
            f'INSERT INTO "{schema}".agno_sessions SELECT * FROM public.seed_sessions ON CONFLICT DO NOTHING;'
            f' INSERT INTO "{schema}".agno_runs SELECT * FROM public.seed_runs ON CONFLICT DO NOTHING'
        )
    await conn.close()


async def sampled(run: Callable[[], Awaitable[None]]) -> tuple[float, int]:
    """Run ``run()`` while sampling this database's other connections; (seconds, peak)."""
    probe = await asyncpg.connect(URL)
    peak = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            n = await probe.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'",  # not a query's parallel workers
                DB,
            )
            peak = max(peak, int(n))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    t = time.perf_counter()
    try:
        await run()
    finally:
        dt = time.perf_counter() - t
        done.set()
        await sampler
        await probe.close()
    return dt, peak


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=2000)
    ap.add_argument("--pool-size", type=int, default=4)
    ap.add_argument("--max-jobs", type=int, default=4)
    ap.add_argument("--sdk", type=int, default=300, help="agents read through the SDK-contract helpers")
    a = ap.parse_args()
    await fresh_database(DB)
    settings = bench_settings(DB, "sessionctl:bench-conns", pool_size=a.pool_size, max_jobs=a.max_jobs)
    agents = [f"agent-{i:04d}" for i in range(a.agents)]
    t = time.perf_counter()
    await prepare(settings, agents)
    print(f"  {a.agents} agent schemas prepared in {time.perf_counter() - t:.1f}s", flush=True)
    rows = []

    async def per_agent_jobs() -> None:
        async with Producer(settings) as p:
            jobs = [await p.purge_user_sessions(agent_id=x, user_id=USER, check_agent=False) for x in agents]
            await burst_worker(settings)
            states = [await p.status(j.job_id) for j in jobs]
        ok = sum(1 for s in states if s.status == "succeeded" and s.result and s.result["sessions_deleted"] == 1)
        assert ok == len(agents), f"{len(agents) - ok} of {len(agents)} jobs did not delete the one session"

    dt, peak = await sampled(per_agent_jobs)
    rows.append((f"{a.agents} purge jobs, one per agent", dt, peak, a.pool_size, a.agents / dt, "jobs/s"))

    await reseed(settings, agents)

    async def all_agents() -> None:
        async with Producer(settings) as p:
            job = await p.purge_user_sessions(all_agents=True, user_id=USER)
            await burst_worker(settings)
            state = await p.status(job.job_id)
        deleted = (state.result or {}).get("sessions_deleted")
        assert state.status == "succeeded" and deleted == a.agents, (state.status, deleted, state.error)

    dt, peak = await sampled(all_agents)
    rows.append((f"one --all-agents purge over {a.agents} schemas", dt, peak, a.pool_size, a.agents / dt, "schemas/s"))

    await reseed(settings, agents)
    databases = Databases(pool_size=a.pool_size, client_cache_size=settings.client_cache_size)

    gate = asyncio.Semaphore(16)  # 16 callers at once: more than either pool holds

    async def one(x: str) -> None:
        async with gate:
            schema = settings.schema_for(x)
            handle = AgentHandle(x, settings=settings, databases=databases, dsn=settings.dsn, schema=schema)
            assert len(await handle.aget_user_sessions(USER)) == 1  # our pool
            db = await handle.aget_db()  # the cached Agno client, on the shared engine
            _, total = await db.get_sessions(user_id=USER, deserialize=False)
            assert total == 1, total

    async def sdk() -> None:
        await asyncio.gather(*(one(x) for x in agents[: a.sdk]))

    dt, peak = await sampled(sdk)
    await databases.close()
    rows.append(
        (f"SDK helpers + Agno clients on {a.sdk} agents, 16 at once", dt, peak, 2 * a.pool_size, a.sdk / dt, "agents/s")
    )

    print(
        f"\none worker, SESSIONCTL_POOL_SIZE={a.pool_size}, SESSIONCTL_MAX_JOBS={a.max_jobs}, {a.agents} agent schemas"
    )
    print("| workload | seconds | peak open connections | bound | rate |\n|---|---:|---:|---:|---:|")
    for name, secs, pk, bound, rate, unit in rows:
        print(f"| {name} | {secs:.1f} | {pk} | {bound} | {rate:,.0f} {unit} |")
    await drop_database(DB)


if __name__ == "__main__":
    asyncio.run(main())
