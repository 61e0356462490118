"""Benchmark: erase one user from every agent of a large fleet (``purge --all-agents``), side by
side with the floor — one PL/pgSQL block that runs ``DELETE FROM <schema>.agno_sessions WHERE
user_id = …`` in every schema (runs by Agno's cascade).

    python bench/fleet.py [--agents 2000] [--bystanders 20] [--holding 20] [--each 50] [--repeat 3]
                          [--bulk-users 10000]

Data: ``--agents`` agent schemas as Agno 3.x creates them (one made by Agno, the others cloned from
its DDL: same tables, indexes, foreign keys), each with ``--bystanders`` sessions of other users;
the user holds ``--each`` sessions in ``--holding`` of them (2 runs per session, Agno-written and
cloned in SQL). sessionctl is timed end to end, as a DSR platform waits for it (a producer
opened, enqueue → Redis → a running worker → verified result, receipt written, the result read);
the floor on a fresh connection (as a worker that has just started meets the fleet) and on a warm
one (every table already opened by that connection). Prints the medians, schemas/s and
sessionctl's ratio to each, and an erasure of nobody at one agent (the fixed cost within). With ``--bulk-users N``, also one
bulk request for N users at every agent (the user above and N - 1 who hold nothing), end to end,
with the worker's peak memory (its ``VmHWM``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_settings, checkpoint, drop_database, fresh_database, running_worker, url
from sessionctl.config import Settings
from sessionctl.producer import Producer
from tests.agno_seed import seed

DB = "sessionctl_bench_fleet"
URL = url(DB)
USER = "fleet-user"


def schema_of(i: int) -> str:
    return f"ag_fleet_{i:05d}"


async def clone_agent_schemas(url: str, schemas: list[str]) -> None:
    """``schemas[0]`` made by Agno (one session, 2 runs, kept in ``public.seed_sessions`` and
    ``public.seed_runs`` as the template of :func:`insert`, then emptied), the others cloned from
    its DDL: the same tables, indexes and foreign keys."""
    template = schemas[0]
    await seed(url, template, "template-agent", "template", 1, runs=2)
    conn = await asyncpg.connect(url)
    await conn.execute(
        f'CREATE TABLE public.seed_sessions AS SELECT * FROM "{template}".agno_sessions;'
        f' CREATE TABLE public.seed_runs AS SELECT * FROM "{template}".agno_runs;'
        f' DELETE FROM "{template}".agno_sessions'
    )
    for s in schemas[1:]:
        await conn.execute(
            f'CREATE SCHEMA "{s}";'
            f' CREATE TABLE "{s}".agno_sessions (LIKE "{template}".agno_sessions INCLUDING ALL);'
            f' CREATE TABLE "{s}".agno_runs (LIKE "{template}".agno_runs INCLUDING ALL);'
            f' ALTER TABLE "{s}".agno_runs ADD FOREIGN KEY (session_id)'
            f'  REFERENCES "{s}".agno_sessions (session_id) ON DELETE CASCADE;'
            f' CREATE TABLE "{s}".agno_schema_versions (LIKE "{template}".agno_schema_versions INCLUDING ALL);'
            f' INSERT INTO "{s}".agno_schema_versions SELECT * FROM "{template}".agno_schema_versions'
        )
    await conn.close()


async def prepare(n: int, bystanders: int) -> None:
    await clone_agent_schemas(URL, [schema_of(i) for i in range(n)])
    conn = await asyncpg.connect(URL)
    for i in range(n):
        await insert(conn, schema_of(i), "bystander", bystanders, per_schema_users=True)
    await conn.execute("ANALYZE")
    await conn.close()


async def insert(conn: asyncpg.Connection, schema: str, who: str, count: int, per_schema_users: bool = False) -> None:
    """``count`` sessions (2 runs each) cloned from the Agno-written one."""
    user = f"'{who}-' || g" if per_schema_users else f"'{who}'"
    cols = [
        r["attname"]
        for r in await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped"
            " ORDER BY attnum",
            f'"{schema}".agno_sessions',
        )
    ]
    pick = ", ".join(
        f"{'s.session_id || ' + repr('-' + who + '-') + ' || g' if c == 'session_id' else (user if c == 'user_id' else 's.' + c)}"
        for c in cols
    )
    await conn.execute(
        f'INSERT INTO "{schema}".agno_sessions ({", ".join(cols)})'
        f" SELECT {pick} FROM public.seed_sessions s, generate_series(1, {count}) g"
    )
    rcols = [
        r["attname"]
        for r in await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped"
            " ORDER BY attnum",
            f'"{schema}".agno_runs',
        )
    ]
    rpick = ", ".join(
        "r.run_id || " + repr("-" + who + "-") + " || g"
        if c == "run_id"
        else (
            "r.session_id || " + repr("-" + who + "-") + " || g"
            if c == "session_id"
            else (user if c == "user_id" else "r." + c)
        )
        for c in rcols
    )
    await conn.execute(
        f'INSERT INTO "{schema}".agno_runs ({", ".join(rcols)})'
        f" SELECT {rpick} FROM public.seed_runs r, generate_series(1, {count}) g"
    )


async def seed_user(holding: int, each: int, agents: int) -> None:
    conn = await asyncpg.connect(URL)
    step = max(1, agents // holding)
    for i in range(0, step * holding, step):
        await conn.execute(f'DELETE FROM "{schema_of(i)}".agno_sessions WHERE user_id = $1', USER)  # a --reuse
        await insert(conn, schema_of(i), USER, each)
    await conn.close()


async def left(agents: int) -> int:
    """The user's sessions left in every schema (500 schemas a statement: one UNION ALL of 10,000
    exceeds Postgres's stack depth)."""
    conn = await asyncpg.connect(URL)
    total = 0
    for start in range(0, agents, 500):
        total += await conn.fetchval(
            "SELECT coalesce(sum(n), 0) FROM ("
            + " UNION ALL ".join(
                f'SELECT count(*) AS n FROM "{schema_of(i)}".agno_sessions WHERE user_id = $1'
                for i in range(start, min(agents, start + 500))
            )
            + ") x",
            USER,
        )
    await conn.close()
    return int(total)


async def m_raw(conn: asyncpg.Connection | None = None) -> None:
    """The floor: one PL/pgSQL block deleting the user's sessions in every schema (runs by the
    cascade), on ``conn`` (a warm connection: it has run the block before) or on a fresh one (as a
    worker that has just started meets the fleet: every table opened for the first time). A commit
    every 500 schemas: one transaction over 10,000 schemas runs out of Postgres's lock table at its
    default size (``max_locks_per_transaction`` 64: "out of shared memory")."""
    own = conn is None
    conn = conn or await asyncpg.connect(URL)
    await conn.execute(
        f"""DO $$ DECLARE s text; n int := 0; BEGIN
              FOR s IN SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ag\\_fleet\\_%' LOOP
                EXECUTE format('DELETE FROM %I.agno_sessions WHERE user_id = %L', s, '{USER}');
                n := n + 1;
                IF n % 500 = 0 THEN COMMIT; END IF;
              END LOOP; END $$"""
    )
    if own:
        await conn.close()


async def m_sessionctl(settings: Settings, **kw: object) -> dict[str, object]:
    """As ``sessionctl purge … --wait`` does it: a producer opened, the job enqueued, its state
    polled (``Producer.wait``'s own pace) until a running worker has written the result."""
    async with Producer(settings) as p:
        enq = await p.purge_user_sessions(**kw)  # type: ignore[arg-type]
        state = await p.wait(enq.job_id)
    assert state.status == "succeeded" and state.result and state.result["remaining"] == 0, state
    return state.result


METHODS = ("raw, fresh connection", "raw, warm connection", "sessionctl")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=2000)
    ap.add_argument("--bystanders", type=int, default=20)
    ap.add_argument("--holding", type=int, default=20)
    ap.add_argument("--each", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bulk-users", type=int, default=0, help="also time one bulk request for this many users")
    ap.add_argument("--keep", action="store_true", help="keep the database (and --reuse it next time)")
    ap.add_argument("--reuse", action="store_true", help="the database a --keep run left")
    a = ap.parse_args()
    if not a.reuse:
        await fresh_database(DB)
        t0 = time.perf_counter()
        await prepare(a.agents, a.bystanders)
        print(f"prepared {a.agents} schemas in {time.perf_counter() - t0:.1f}s", flush=True)
    settings = bench_settings(DB, "sessionctl:bench:fleet")
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    fixed: list[float] = []
    warm = await asyncpg.connect(URL)
    await m_raw(warm)  # nothing of the user yet: it only opens every table on this connection
    async with running_worker(settings) as worker:
        t = time.perf_counter()
        await m_sessionctl(settings, all_agents=True, user_id="nobody-first")
        print(f"  the worker's first erasure (its connections cold): {time.perf_counter() - t:.3f}s", flush=True)
        for rep in range(a.repeat):
            for method in METHODS:
                await seed_user(a.holding, a.each, a.agents)
                await checkpoint(DB)
                t = time.perf_counter()
                if method == "sessionctl":
                    result = await m_sessionctl(settings, all_agents=True, user_id=USER)
                    dt = time.perf_counter() - t
                    held = [k for k, v in result["agents"].items() if v["sessions_deleted"]]  # type: ignore[union-attr]
                    assert len(held) == a.holding, held
                    t1 = time.perf_counter()
                    await m_sessionctl(settings, agent_id="fleet-00001", user_id=f"nobody-{rep}")
                    fixed.append(time.perf_counter() - t1)
                else:
                    await m_raw(warm if "warm" in method else None)
                    dt = time.perf_counter() - t
                times[method].append(dt)
                assert await left(a.agents) == 0
                print(f"  run {rep + 1} {method:<22} {dt:7.3f}s", flush=True)
        bulk = None
        if a.bulk_users:
            await seed_user(a.holding, a.each, a.agents)
            users = [USER] + [f"absent-{i}" for i in range(a.bulk_users - 1)]
            t = time.perf_counter()
            async with Producer(settings) as p:
                enq = await p.purge_users(user_ids=users, all_agents=True)
                state = await p.wait(enq.job_id, poll=0.05)
            bulk = time.perf_counter() - t
            assert state.status == "succeeded" and state.result and state.result["remaining"] == 0, state
            assert await left(a.agents) == 0
            peak = Path(f"/proc/{worker.pid}/status").read_text().split("VmHWM:")[1].split("\n")[0].strip()
    await warm.close()
    med = {m: statistics.median(v) for m, v in times.items()}
    ours = med["sessionctl"]
    print(
        f"\nerase one user from {a.agents:,} agent schemas ({a.bystanders} bystander sessions each; the user in"
        f" {a.holding} of them, {a.each} sessions each); median of {a.repeat}, interleaved"
    )
    print("| method | time | schemas/s | sessionctl ÷ method |\n|---|---:|---:|---:|")
    for m, v in med.items():
        print(f"| {m} | {v:.2f} s | {a.agents / v:,.0f} | {v / ours:.2f}× |")
    print(
        f"sessionctl end to end (enqueue → a running worker → result read); an erasure of nobody at one agent"
        f" takes {statistics.median(fixed):.2f} s of it (the fixed cost: queue, preflight, the person recounted"
        " everywhere, receipt)"
    )
    if bulk is not None:
        pairs = a.bulk_users * a.agents
        print(
            f"bulk: {a.bulk_users:,} users at every one of {a.agents:,} agents in one request: {bulk:.2f} s"
            f" ({pairs / bulk:,.0f} (user, agent) pairs/s); worker peak memory {peak}"
        )
    if not a.keep:
        await drop_database(DB)


if __name__ == "__main__":
    asyncio.run(main())
