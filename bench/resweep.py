"""Benchmark: a re-sweep over a table of N sessions (Agno's layout), side by side with the floor —
one raw ``SELECT user_id, count(*), min(created_at) … GROUP BY user_id`` fetched whole, the scan
any sweep must make.

    python bench/resweep.py [--sessions 1000000] [--users 100000] [--erased 1000] [--back 100] [--repeat 3]

Data: N sessions over U users (cloned in SQL from an Agno-written session); ``--erased`` of those
users hold an all-agents erasure receipt, ``--back`` of them still have sessions (they "came back").
Reports the median seconds of each and their ratio, and checks the sweep found exactly ``--back``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_settings, drop_database, fresh_database, url
from sessionctl import store
from sessionctl.databases import Databases
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.models import ResweepRequest
from sessionctl.jobs.resweep import resweep
from sessionctl.logs import configure_logging
from sessionctl.privacy import user_hmac
from sessionctl.store import migrations
from tests.agno_seed import seed

DB = "sessionctl_bench_resweep"
SCHEMA = "ag_bench_resweep"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--erased", type=int, default=1_000)
    ap.add_argument("--back", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    configure_logging("json", "ERROR")  # one log line per match is the product's; not the bench's output
    await fresh_database(DB)
    try:
        await seed(url(DB), SCHEMA, "bench", "template", 1, runs=0)
        c = await asyncpg.connect(url(DB))
        await c.execute(
            f"""INSERT INTO {SCHEMA}.agno_sessions (session_id, session_type, agent_id, user_id, session_data,
                       created_at, updated_at)
                SELECT 's' || g, 'agent', 'bench', 'user-' || (g % {a.users}), s.session_data, 1700000000 + g, NULL
                  FROM {SCHEMA}.agno_sessions s, generate_series(1, $1) g WHERE s.user_id = 'template'""",
            a.sessions,
        )
        await c.execute(f"DELETE FROM {SCHEMA}.agno_sessions WHERE user_id = 'template'")
        await c.execute(f"VACUUM ANALYZE {SCHEMA}.agno_sessions")
        await migrations.migrate(c)
        settings = bench_settings(DB, "sessionctl:bench:resweep")
        key = settings.hash_key_bytes
        # erased users: the first --back of them still have sessions (users user-0 …); the rest do not exist
        erased = [f"user-{i}" for i in range(a.back)] + [f"gone-{i}" for i in range(a.erased - a.back)]
        now = datetime.now(UTC)
        await c.executemany(
            "INSERT INTO sessionctl.receipts (job_id, kind, user_hmac, target, agents, counts, remaining,"
            " started_at, finished_at) VALUES ($1, 'purge_user_sessions', $2, '*', '{}', '{}', 0, $3, $3)",
            [(f"bench-{i}", user_hmac(key, u), now) for i, u in enumerate(erased)],
        )
        await c.execute("ANALYZE sessionctl.receipts")

        async def raw() -> float:
            t = time.perf_counter()
            rows = await c.fetch(
                f"SELECT user_id, count(*), min(created_at) FROM {SCHEMA}.agno_sessions"
                " WHERE user_id IS NOT NULL GROUP BY 1"
            )
            assert len(rows) == a.users
            return time.perf_counter() - t

        dbs = Databases(pool_size=4)

        async def swept() -> float:
            ctx = JobContext(settings=settings, databases=dbs, hash_key=key, job_id="bench-resweep")
            t = time.perf_counter()
            result = await resweep(ctx, ResweepRequest())
            took = time.perf_counter() - t
            assert result.users_matched == a.back, result.users_matched
            assert result.keys_seen >= a.users
            return took

        raws, sweeps = [], []
        for _ in range(a.repeat):  # interleaved: both see the same cache and load
            raws.append(await raw())
            sweeps.append(await swept())
        await dbs.close()
        await c.close()
        r, s = statistics.median(raws), statistics.median(sweeps)
        print(
            f"re-sweep of {a.sessions:,} sessions / {a.users:,} users, {a.erased:,} erased, {a.back:,} back"
            f" (median of {a.repeat}):"
        )
        print(f"  raw GROUP BY user_id, fetched whole   {r:7.2f} s")
        print(f"  sessionctl re-sweep (job function)    {s:7.2f} s   found {a.back} users back")
        print(f"  raw / sweep = {r / s:.2f}x   ({a.sessions / s:,.0f} sessions/s)")
    finally:
        await drop_database(DB)


if __name__ == "__main__":
    _ = store  # the bench uses the same store the job does
    asyncio.run(main())
