"""Benchmark: bulk erasure of many users, sessionctl's bulk request vs one raw DELETE, side by side.

    python bench/bulk.py [--users 10000] [--each 10] [--others 20000] [--repeat 3] [--index]

Each method gets its own identical copy of the data (an agent schema, ``--users`` users with
``--each`` sessions each, 2 runs of ~2 KB per session, Agno-written and cloned in SQL, plus
``--others`` sessions of users who stay):

- raw:        one ``DELETE FROM agno_sessions WHERE user_id = ANY($1)`` (runs go by FK cascade) — the limit;
- raw+media:  the same ``DELETE``, reading the media references of the runs it deletes in the same
              statement, as an erasure must — the limit of an erasure that also finds offloaded media;
- sessionctl: end to end — ``purge_users`` enqueued through Redis to a running ``sessionctl
              worker`` (its own process, ready before the clock), per-user results and one
              receipt per user written, zero remaining proven.

Prints sessions/s per method (median of --repeat runs, interleaved) and sessionctl's ratio to raw.
Needs Postgres and Redis on 127.0.0.1 (creates and drops database ``sessionctl_bench_bulk``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    bench_settings,
    checkpoint,
    doctors_indexes,
    drop_database,
    end_run,
    fresh_database,
    print_ratios,
    raw_delete_reading_media,
    running_worker,
    url,
)
from sessionctl.config import Settings
from sessionctl.producer import Producer
from tests.agno_seed import agno_db, clone_sessions, seed_sessions

DB = "sessionctl_bench_bulk"
URL = url(DB)


async def prepare(schema: str, agent: str, users: list[str], each: int, others: int, index: bool) -> None:
    db = agno_db(URL, schema)
    await seed_sessions(db, agent, "template", 1)
    await seed_sessions(db, agent, "stays", 1)
    await db.close()
    conn = await asyncpg.connect(URL)
    await conn.execute(
        f"UPDATE \"{schema}\".agno_runs SET run_data = jsonb_set(run_data, '{{content}}', to_jsonb($1::text))",
        "x" * 2000,
    )
    await clone_sessions(conn, schema, f"{agent}-template-s0", users, each, "b")
    await clone_sessions(conn, schema, f"{agent}-stays-s0", "stays", others, "o")
    await conn.execute(f'DELETE FROM "{schema}".agno_sessions WHERE user_id = $1', "template")
    if index:
        await doctors_indexes(conn, schema)
    await conn.execute(f'ANALYZE "{schema}".agno_sessions; ANALYZE "{schema}".agno_runs')
    await conn.close()


async def left(schema: str, users: list[str]) -> tuple[int, int]:
    conn = await asyncpg.connect(URL)
    try:
        mine = await conn.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = ANY($1)', users)
        kept = await conn.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = $1', "stays")
        return int(mine), int(kept)
    finally:
        await conn.close()


async def m_raw(schema: str, users: list[str]) -> None:
    conn = await asyncpg.connect(URL)
    await conn.execute(f'DELETE FROM "{schema}".agno_sessions WHERE user_id = ANY($1::text[])', users)
    await conn.close()


async def m_raw_media(schema: str, users: list[str]) -> None:
    conn = await asyncpg.connect(URL)
    await conn.execute(raw_delete_reading_media(schema, "= ANY($1::text[])"), users)
    await conn.close()


async def m_sessionctl(settings: Settings, agent: str, users: list[str], expected: int) -> None:
    async with Producer(settings) as p:
        enq = await p.purge_users(user_ids=users, agent_id=agent)
        state = await p.wait(enq.job_id, poll=0.01)
    r = state.result
    assert state.status == "succeeded" and r and r["remaining"] == 0 and r["sessions_deleted"] == expected, state


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--each", type=int, default=10)
    ap.add_argument("--others", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--index", action="store_true", help="create the indexes `sessionctl doctor` creates, on every copy")
    a = ap.parse_args()
    await fresh_database(DB)
    settings = bench_settings(DB, "sessionctl:bench-bulk")
    users = [f"user-{i:05d}@example.com" for i in range(a.users)]
    n = a.users * a.each
    rates: dict[str, list[float]] = {"raw": [], "raw+media": [], "sessionctl": []}
    async with running_worker(settings):  # sessionctl's worker, in its own process, ready before any timing
        for rep in range(a.repeat):
            for method in rates:  # interleaved, so noise hits both alike
                agent = f"bulk-{method.replace('+', '-')}-{rep}"
                schema = settings.schema_for(agent)
                await prepare(schema, agent, users, a.each, a.others, a.index)
                await checkpoint(DB)  # every method starts from the same clean state (no pending WAL)
                t = time.perf_counter()
                if method == "raw":
                    await m_raw(schema, users)
                elif method == "raw+media":
                    await m_raw_media(schema, users)
                else:
                    await m_sessionctl(settings, agent, users, n)
                dt = time.perf_counter() - t
                assert await left(schema, users) == (0, a.others + 1), method
                await end_run(DB, schema, rates, rep, method, n, dt)
    print_ratios(
        f"bulk erasure of {a.users} users x {a.each} sessions (2 runs of ~2 KB each), {a.others} other sessions; "
        f"{'with' if a.index else 'without'} the doctor's index; median of {a.repeat}",
        rates,
    )
    await drop_database(DB)


if __name__ == "__main__":
    asyncio.run(main())
