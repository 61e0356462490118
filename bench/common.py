"""What the benchmarks share: their throw-away database, their settings, a worker (running, or
burst), a checkpoint."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arq.worker import create_worker

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.worker.settings import build_worker_settings

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def url(db: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{db}"


async def fresh_database(db: str) -> None:
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {db}")
    await admin.close()


async def drop_database(db: str) -> None:
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    await admin.close()


def bench_settings(db: str, queue: str, **overrides: Any) -> Settings:
    """Settings of a benchmark's worker: its database, Redis db 14, quiet JSON logs (BENCH_LOG=INFO to see them)."""
    return Settings(
        database_url=url(db),
        redis_url="redis://127.0.0.1:6379/14",
        hash_key="bench",
        queue_name=queue,
        log_level=os.environ.get("BENCH_LOG", "WARNING"),
        log_format="json",
        **overrides,
    )


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, **env: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A ``sessionctl worker`` child process with these settings, started and ready (it logged
    ``worker.start``) before the caller times anything, as in production: its own process, its
    own poll delay. Its queue in Redis is emptied first."""
    child_env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SESSIONCTL_HASH_KEY": "bench",
        "SESSIONCTL_QUEUE": settings.queue_name,
        "SESSIONCTL_BATCH_SIZE": str(settings.batch_size),
        "SESSIONCTL_PURGE_WALKERS": str(settings.purge_walkers),
        "SESSIONCTL_EXPORT_READERS": str(settings.export_readers),
        "SESSIONCTL_LOG_LEVEL": "INFO",
        "SESSIONCTL_LOG_FORMAT": "json",
        "SESSIONCTL_METRICS_PORT": "0",
        **env,
    }
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sessionctl.cli", "worker", env=child_env, stderr=asyncio.subprocess.PIPE
    )
    ready = asyncio.Event()

    async def drain() -> None:
        assert worker.stderr is not None
        async for line in worker.stderr:
            if b'"worker.start"' in line:
                ready.set()

    drainer = asyncio.create_task(drain())
    try:
        await asyncio.wait_for(ready.wait(), 60)
        yield worker
    finally:
        if worker.returncode is None:
            worker.terminate()
        await worker.wait()
        drainer.cancel()


async def burst_worker(settings: Settings) -> None:
    """A real arq worker with sessionctl's settings, until the queue is empty (it polls without
    pause: fine for counting connections, not for timing — see :func:`running_worker`)."""
    w = create_worker(build_worker_settings(settings), burst=True, poll_delay=0)
    await w.main()
    await w.close()


async def checkpoint(db: str) -> None:
    """Flush the loads' dirty pages before a method is timed: a checkpoint falling inside one
    method's timing (the copies write ~0.5 GB each) makes that method pay for it, and for the
    full-page writes after it."""
    conn = await asyncpg.connect(url(db))
    await conn.execute("CHECKPOINT")
    await conn.close()


async def end_run(
    db: str, schema: str, rates: dict[str, list[float]], rep: int, method: str, n: int, dt: float
) -> None:
    """Record and print one timed run of a method, then drop its copy of the data."""
    rates[method].append(n / dt)
    print(f"  run {rep + 1} {method:<10} {n:>7} sessions in {dt:7.3f}s = {n / dt:>9.0f}/s", flush=True)
    conn = await asyncpg.connect(url(db))
    await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await conn.close()


async def doctors_indexes(conn: asyncpg.Connection, schema: str) -> None:
    """Every index ``sessionctl doctor --create-indexes`` creates in this agent schema, analyzed."""
    for spec in store.NEEDED_INDEXES:
        if await store.index_applies(conn, schema, spec):
            await store.create_index(conn, schema, spec)
    await conn.execute(f'ANALYZE "{schema}".agno_sessions')
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f'"{schema}".agno_runs'):
        await conn.execute(f'ANALYZE "{schema}".agno_runs')


def raw_delete_reading_media(schema: str, users_param: str) -> str:
    """One raw ``DELETE`` of the users' sessions that also reads the media references of the runs
    it deletes, as every erasure must (store/media_refs.py) — the floor for an erasure that finds the
    user's offloaded media, beside the plain ``DELETE`` that does not. ``users_param``: the
    condition on ``user_id``, e.g. ``= $1``."""
    from sessionctl.store import media_refs

    runs = f'"{schema}".agno_runs'
    refs = media_refs.refs_of_runs_table(runs, "IN (SELECT session_id FROM gone)")
    return (
        f'WITH gone AS (DELETE FROM "{schema}".agno_sessions WHERE user_id {users_param} RETURNING session_id, user_id),'
        f" refs AS ({refs}) SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM refs)"
    )


def print_ratios(title: str, rates: dict[str, list[float]]) -> None:
    """The medians of each method and sessionctl's ratio to each, as a README table."""
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n{title}")
    print("| method | sessions/s | sessionctl ÷ method |\n|---|---:|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:,.0f} | {med['sessionctl'] / v:.2f}× |")
