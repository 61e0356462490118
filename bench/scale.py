"""Benchmark: scale-out — many users' erasures with 1, 2, 4 and 8 worker processes on one Redis
and one Postgres, side by side in one run.

    python bench/scale.py [--users 500] [--sessions 200] [--agents 50] [--workers 1,2,4,8] [--repeat 1]

Data: ``--agents`` agent schemas in Agno's 3.x layout (one made by Agno, the others cloned from its
DDL); ``--users`` users with ``--sessions`` sessions each, spread evenly over the agents (2 runs per
session, Agno-written and cloned in SQL), and a tenth as many sessions of bystanders, which stay. Each run enqueues one
``purge --all-agents`` per user (through the Producer, before the clock) and times ``N`` worker
processes (``sessionctl worker --burst``, started together) until the queue is drained; every
user's sessions are then counted (0) and the bystanders' (unchanged). Prints jobs/s and
sessions/s per worker count, the speed-up over one worker, and the CPU seconds Postgres and the
workers used (from /proc). Needs Postgres and Redis on 127.0.0.1 (creates and drops database
``sessionctl_bench_scale``; Redis db 14).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_settings, checkpoint, drop_database, fresh_database, url
from bench.fleet import clone_agent_schemas, insert
from sessionctl.producer import Producer

DB = "sessionctl_bench_scale"
URL = url(DB)
TICKS = os.sysconf("SC_CLK_TCK")


def schema_of(i: int) -> str:
    return f"ag_scale_{i:03d}"


async def fill(agents: int, users: list[str], per_agent: int, bystanders: int = 0) -> None:
    conn = await asyncpg.connect(URL)
    for i in range(agents):
        for u in users:
            await insert(conn, schema_of(i), u, per_agent)
        if bystanders:
            await insert(conn, schema_of(i), "bystander", bystanders, per_schema_users=True)
    await conn.execute("ANALYZE")
    await conn.close()


async def count(agents: int, who: str) -> int:
    conn = await asyncpg.connect(URL)
    cond = "user_id LIKE 'bystander-%'" if who == "bystanders" else "user_id LIKE 'scale-user-%'"
    n = await conn.fetchval(
        "SELECT sum(n) FROM ("
        + " UNION ALL ".join(
            f'SELECT count(*) AS n FROM "{schema_of(i)}".agno_sessions WHERE {cond}' for i in range(agents)
        )
        + ") x"
    )
    await conn.close()
    return int(n or 0)


def cpu_seconds(name: str) -> float:
    """CPU seconds used so far by the processes whose command name is ``name`` and their reaped
    children (from /proc)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if comm == name or (name == "python" and comm.startswith("python")):
            fields = stat[stat.rindex(")") + 2 :].split()
            # utime, stime, and those of its reaped children: a backend that exited is counted in
            # the postmaster's, so a connection closed during the run still counts
            total += sum(int(f) for f in fields[11:15])
    return total / TICKS


async def drain(settings: object, workers: int) -> tuple[float, float, float]:
    """Start ``workers`` burst workers together; the wall time until all exit, and the CPU
    seconds of Postgres and of the workers meanwhile."""
    env = {
        **os.environ,
        "DATABASE_URL": URL,
        "REDIS_URL": settings.redis_url,  # type: ignore[attr-defined]
        "SESSIONCTL_QUEUE": settings.queue_name,  # type: ignore[attr-defined]
        "SESSIONCTL_HASH_KEY": "bench",
        "SESSIONCTL_LOG_LEVEL": "WARNING",
        "SESSIONCTL_METRICS_PORT": "0",
    }
    pg0 = cpu_seconds("postgres")
    t = time.perf_counter()
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sessionctl.cli", "worker", "--burst", env=env, stderr=asyncio.subprocess.DEVNULL
        )
        for _ in range(workers)
    ]
    for p in procs:
        rc = await p.wait()
        assert rc == 0, rc
    wall = time.perf_counter() - t
    return wall, cpu_seconds("postgres") - pg0, os.times().children_user + os.times().children_system


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--sessions", type=int, default=200, help="per user, spread over the agents")
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    per_agent = max(1, a.sessions // a.agents)
    users = [f"scale-user-{i:05d}" for i in range(a.users)]
    await fresh_database(DB)
    await clone_agent_schemas(URL, [schema_of(i) for i in range(a.agents)])
    await fill(a.agents, [], 0, bystanders=a.users * per_agent // 10 or 1)  # other users' sessions, kept
    settings = bench_settings(DB, "sessionctl:bench:scale")
    counts = [int(w) for w in a.workers.split(",")]
    rows: dict[int, list[tuple[float, float, float]]] = {n: [] for n in counts}
    for rep in range(a.repeat):
        for n in counts:
            await fill(a.agents, users, per_agent)
            bystanders = await count(a.agents, "bystanders")
            async with Producer(settings) as p:
                for u in users:
                    await p.purge_user_sessions(user_id=u, all_agents=True, requested_by="bench")
            await checkpoint(DB)
            children0 = os.times().children_user + os.times().children_system
            wall, pg_cpu, children = await drain(settings, n)
            assert await count(a.agents, "users") == 0 and await count(a.agents, "bystanders") == bystanders
            rows[n].append((wall, pg_cpu, children - children0))
            print(f"  run {rep + 1} workers={n}: {wall:6.2f} s, Postgres CPU {pg_cpu:5.1f} s", flush=True)
    sessions = a.users * per_agent * a.agents
    print(
        f"\n{a.users} users x {per_agent * a.agents} sessions across {a.agents} agents ({sessions:,} sessions,"
        f" one --all-agents purge per user), {os.cpu_count()} CPUs\n"
        "| workers | time | jobs/s | sessions/s | speed-up | Postgres CPU s | workers' CPU s |\n"
        "|---:|---:|---:|---:|---:|---:|---:|"
    )
    base = min(r[0] for r in rows[counts[0]])
    for n in counts:
        wall, pg_cpu, w_cpu = min(rows[n])
        print(
            f"| {n} | {wall:.2f} s | {a.users / wall:,.0f} | {sessions / wall:,.0f} | {base / wall:.2f}× |"
            f" {pg_cpu:.1f} | {w_cpu:.1f} |"
        )
    await drop_database(DB)


if __name__ == "__main__":
    asyncio.run(main())
