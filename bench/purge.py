"""Benchmark: purge one user's sessions, five ways, side by side in one run.

    python bench/purge.py [--sessions 20000] [--seed-loop-cap 3000] [--repeat 3] [--index] [--one-walker]
                          [--methods raw,raw+media,seed,agno,sessionctl]

Each method gets its own identical copy of the data (an agent schema with the user's sessions,
2 runs of ~2 KB each per session, Agno-written and cloned in SQL, plus other users' sessions):

- raw:       one ``DELETE FROM agno_sessions WHERE user_id = $1`` (runs go by FK cascade) — the limit;
- raw+media: the same ``DELETE``, reading in the same statement the media references of the runs it
             deletes, as an erasure must (without ``sessionctl_runs_media`` that decompresses every
             run) — the limit of an erasure that also finds the user's offloaded media;
- seed:      xpander's "wipe a user" loop: ``get_sessions(limit=50)`` then ``delete_session`` each
             (run on at most --seed-loop-cap sessions: it is slow; its rate is what counts);
- agno:      Agno's ``delete_sessions(ids, user_id=…)`` on pages of 1,000 ids;
- sessionctl: end to end — enqueue through Redis to a running ``sessionctl worker`` (its own
             process, started before the clock), verified result
             (``SESSIONCTL_PURGE_WALKERS`` at its default, 2; ``--one-walker`` adds
             ``sessionctl-1w``, the same with one walker, to show what the second one buys).

Prints sessions/s per method (median of --repeat runs) and sessionctl's ratio to each.
Needs Postgres and Redis on 127.0.0.1 (creates and drops database ``sessionctl_bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

DB = "sessionctl_bench"
URL = url(DB)
USER = "bench-user"


async def prepare(schema: str, agent: str, n: int, others: int) -> None:
    db = agno_db(URL, schema)
    await seed_sessions(db, agent, USER, 1)
    await seed_sessions(db, agent, "someone-else", 1)
    await db.close()
    conn = await asyncpg.connect(URL)
    big = "x" * 2000
    await conn.execute(
        f"UPDATE \"{schema}\".agno_runs SET run_data = jsonb_set(run_data, '{{content}}', to_jsonb($1::text))", big
    )
    await clone_sessions(conn, schema, f"{agent}-{USER}-s0", USER, n - 1, "c")
    await clone_sessions(conn, schema, f"{agent}-someone-else-s0", "someone-else", others, "o")
    await conn.execute(f'ANALYZE "{schema}".agno_sessions; ANALYZE "{schema}".agno_runs')
    await conn.close()


async def count(schema: str) -> int:
    conn = await asyncpg.connect(URL)
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id=$1', USER))
    finally:
        await conn.close()


async def m_raw(schema: str, agent: str) -> None:
    conn = await asyncpg.connect(URL)
    await conn.execute(f'DELETE FROM "{schema}".agno_sessions WHERE user_id = $1', USER)
    await conn.close()


async def m_raw_media(schema: str, agent: str) -> None:
    conn = await asyncpg.connect(URL)
    await conn.execute(raw_delete_reading_media(schema, "= $1"), USER)
    await conn.close()


async def m_seed(schema: str, agent: str, cap: int) -> int:
    db = agno_db(URL, schema)
    done = 0
    while done < cap:
        page = await db.get_sessions(user_id=USER, limit=50)
        if not page:
            break
        for s in page:
            await db.delete_session(s.session_id, user_id=USER)
            done += 1
    await db.close()
    return done


async def m_agno(schema: str, agent: str) -> None:
    db = agno_db(URL, schema)
    while True:
        page, _ = await db.get_sessions(user_id=USER, limit=1000, deserialize=False, include_runs=False)
        if not page:
            break
        await db.delete_sessions([s["session_id"] for s in page], user_id=USER)
    await db.close()


async def m_sessionctl(settings: Settings, agent: str) -> None:
    async with Producer(settings) as p:
        enq = await p.purge_user_sessions(agent_id=agent, user_id=USER)
        state = await p.wait(enq.job_id, poll=0.01)
    assert state.status == "succeeded" and state.result and state.result["remaining"] == 0, state


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=20_000)
    ap.add_argument("--others", type=int, default=20_000)
    ap.add_argument("--seed-loop-cap", type=int, default=3_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=5_000)
    ap.add_argument("--one-walker", action="store_true", help="also time sessionctl with SESSIONCTL_PURGE_WALKERS=1")
    ap.add_argument(
        "--index",
        action="store_true",
        help="create the indexes `sessionctl doctor` creates, on every copy, before timing",
    )
    ap.add_argument("--methods", default="raw,raw+media,seed,agno,sessionctl", help="a subset, comma-separated")
    a = ap.parse_args()
    await fresh_database(DB)
    settings = bench_settings(DB, "sessionctl:bench", batch_size=a.batch_size)
    rates: dict[str, list[float]] = {m: [] for m in a.methods.split(",")}
    # sessionctl's workers, each in its own process and ready before any timing, as in production
    workers = contextlib.AsyncExitStack()
    queues = {"sessionctl": settings}
    if a.one_walker:
        rates["sessionctl-1w"] = []
        queues["sessionctl-1w"] = settings.model_copy(update={"queue_name": "sessionctl:bench-1w", "purge_walkers": 1})
    for s in queues.values():
        await workers.enter_async_context(running_worker(s))
    for rep in range(a.repeat):
        for method in rates:  # interleaved, so noise hits every method alike
            agent = f"bench-{method.replace('+', '-')}-{rep}"
            schema = settings.schema_for(agent)
            await prepare(schema, agent, a.sessions, a.others)
            if a.index:
                c = await asyncpg.connect(URL)
                await doctors_indexes(c, schema)
                await c.close()
            await checkpoint(DB)  # every method starts from the same clean state (no pending WAL)
            t = time.perf_counter()
            if method == "raw":
                await m_raw(schema, agent)
                n = a.sessions
            elif method == "raw+media":
                await m_raw_media(schema, agent)
                n = a.sessions
            elif method == "seed":
                n = await m_seed(schema, agent, a.seed_loop_cap)
            elif method == "agno":
                await m_agno(schema, agent)
                n = a.sessions
            else:
                await m_sessionctl(queues[method], agent)
                n = a.sessions
            dt = time.perf_counter() - t
            left = await count(schema)
            assert method == "seed" or left == 0, (method, left)
            await end_run(DB, schema, rates, rep, method, n, dt)
    await workers.aclose()
    print_ratios(
        f"purge of one user with {a.sessions} sessions (2 runs of ~2 KB each), {a.others} other sessions; "
        f"median of {a.repeat}; batch size {a.batch_size}; {settings.purge_walkers} walkers; "
        f"{'with' if a.index else 'without'} the doctor's index",
        rates,
    )
    await drop_database(DB)


if __name__ == "__main__":
    asyncio.run(main())
