"""Benchmark: queue overhead — N no-op jobs through sessionctl's worker settings vs arq's defaults,
side by side in one run (median of --repeat).

    python bench/queue_overhead.py [--jobs 1000] [--repeat 3]

Both use a real Redis (127.0.0.1:6379, database 15, flushed) and a real arq worker in burst mode;
the timer runs from the first enqueue to the last result.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker, func

from sessionctl.config import Settings
from worker import serializer
from worker.settings import build_worker_settings

REDIS = RedisSettings(host="127.0.0.1", port=6379, database=15)


async def noop(ctx: dict[str, Any], n: int) -> int:
    return n


async def run(kind: str, jobs: int) -> float:
    if kind == "sessionctl":
        s = Settings(redis_url="redis://127.0.0.1:6379/15", hash_key="bench", queue_name="bench:q", metrics_port=0)
        ours = build_worker_settings(s)
        kw: dict[str, Any] = {
            "poll_delay": ours.poll_delay,
            "queue_read_limit": ours.queue_read_limit,
            "max_jobs": ours.max_jobs,
            "job_serializer": serializer.serialize,
            "job_deserializer": serializer.deserialize,
        }
    else:
        kw = {}  # arq's defaults: poll_delay 0.5 s, max_jobs 10, read limit = max_jobs, pickle
    pool = await create_pool(
        REDIS, job_serializer=kw.get("job_serializer"), job_deserializer=kw.get("job_deserializer")
    )
    await pool.flushdb()
    t = time.perf_counter()
    for i in range(jobs):
        await pool.enqueue_job("noop", i, _queue_name="bench:q")
    w = Worker(
        functions=[func(noop, name="noop")],
        redis_settings=REDIS,
        queue_name="bench:q",
        burst=True,
        handle_signals=False,
        **kw,
    )
    await w.main()
    dt = time.perf_counter() - t
    assert w.jobs_complete == jobs, (w.jobs_complete, jobs)
    await w.close()
    await pool.aclose()
    return jobs / dt


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    rates: dict[str, list[float]] = {"arq defaults": [], "sessionctl": []}
    for _ in range(a.repeat):
        for kind in rates:
            rates[kind].append(await run(kind, a.jobs))
            print(f"  {kind:<13} {rates[kind][-1]:8.0f} jobs/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n{a.jobs} no-op jobs, enqueue to last result, median of {a.repeat}")
    print("| worker settings | jobs/s |\n|---|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:,.0f} |")
    print(f"ratio sessionctl / arq defaults: {med['sessionctl'] / med['arq defaults']:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
