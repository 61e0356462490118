"""Benchmark: list one user's sessions (newest first, a page of 50, the query ``sessionctl sessions``
and ``aiter_user_session_rows`` run) in a table of N sessions, without and with the index
``sessionctl doctor --create-indexes`` creates.

    python bench/listing.py [--rows 1000000] [--samples 200]

Data: N sessions spread over 10,000 users (cloned in SQL from an Agno-written session). Reports the
median and p95 latency of the page query for random users, before and after the index.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sessionctl import store
from tests.agno_seed import seed

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "sessionctl_bench_listing"
URL = f"postgresql://postgres@127.0.0.1:5432/{DB}"
SCHEMA = "ag_bench_listing"
USERS = 10_000


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=200)
    a = ap.parse_args()
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {DB}")
    await seed(URL, SCHEMA, "bench", "template", 1)
    c = await asyncpg.connect(URL)
    await store.init_connection(c)
    await c.execute(
        f"""INSERT INTO {SCHEMA}.agno_sessions (session_id, session_type, agent_id, user_id, session_data,
                   created_at, updated_at)
            SELECT 's' || g, 'agent', 'bench', 'user-' || (g % {USERS}), s.session_data, 1700000000 + g, NULL
              FROM {SCHEMA}.agno_sessions s, generate_series(1, $1) g WHERE s.user_id = 'template'""",
        a.rows,
    )
    await c.execute(f"VACUUM ANALYZE {SCHEMA}.agno_sessions")
    layout = await store.read_layout(c, SCHEMA)
    assert layout is not None

    async def sample() -> list[float]:
        out = []
        for _ in range(a.samples):
            user = f"user-{random.randrange(USERS)}"
            t = time.perf_counter()
            rows = await store.list_user_sessions_page(c, layout, user, after=None, limit=50)
            out.append((time.perf_counter() - t) * 1000)
            assert rows
        return out

    results = {"without the index (Agno's schema)": await sample()}
    t = time.perf_counter()
    await c.execute(
        f"CREATE INDEX CONCURRENTLY sessionctl_sessions_user ON {SCHEMA}.agno_sessions (user_id, created_at, session_id)"
    )
    build = time.perf_counter() - t
    await c.execute(f"ANALYZE {SCHEMA}.agno_sessions")
    results["with `sessionctl doctor --create-indexes`"] = await sample()
    await c.close()
    await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await admin.close()
    print(f"\nlisting a page of 50 sessions, newest first, {a.rows:,} rows, {USERS:,} users, {a.samples} samples")
    print("| | median ms | p95 ms |\n|---|---:|---:|")
    for k, v in results.items():
        v.sort()
        print(f"| {k} | {statistics.median(v):.2f} | {v[int(len(v) * 0.95) - 1]:.2f} |")
    print(f"(index build, concurrently: {build:.1f} s)")


if __name__ == "__main__":
    asyncio.run(main())
