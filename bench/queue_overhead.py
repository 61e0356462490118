"""Benchmark: queue overhead — N no-op jobs through sessionctl's worker settings vs arq's defaults,
side by side in one run (median of --repeat).

    python bench/queue_overhead.py [--jobs 1000] [--repeat 3]

Real Redis (127.0.0.1:6379, database 15, flushed), a real arq worker, two measures per settings:

- end to end: a producer in its own process (as apps and the CLI are) enqueues the N jobs as fast
  as it can while the worker runs; timed from the producer's first enqueue to the worker's last
  result. This is what #7's bar (1,000 jobs/s) is read against.
- drain: the N jobs already queued; a burst worker timed from its start to the last result — the
  worker's own cost per job, with no producer competing for the CPU.
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
from sessionctl.worker import serializer
from sessionctl.worker.settings import build_worker_settings

REDIS = RedisSettings(host="127.0.0.1", port=6379, database=15)
QUEUE = "bench:q"
KINDS = ("arq defaults", "sessionctl")


async def noop(ctx: dict[str, Any], n: int) -> int:
    return n


def worker_options(kind: str) -> dict[str, Any]:
    if kind == "arq defaults":
        return {}  # poll_delay 0.5 s, max_jobs 10, read limit = max_jobs, pickle
    s = Settings(redis_url="redis://127.0.0.1:6379/15", hash_key="bench", queue_name=QUEUE, metrics_port=0)
    ours = build_worker_settings(s)
    return {
        "poll_delay": ours.poll_delay,
        "queue_read_limit": ours.queue_read_limit,
        "max_jobs": ours.max_jobs,
        "job_serializer": serializer.serialize,
        "job_deserializer": serializer.deserialize,
    }


def make_worker(kind: str, burst: bool, **hooks: Any) -> Worker:
    return Worker(
        functions=[func(noop, name="noop")],
        redis_settings=REDIS,
        queue_name=QUEUE,
        burst=burst,
        handle_signals=False,
        **hooks,
        **worker_options(kind),
    )


async def enqueue(kind: str, jobs: int, pool: Any) -> None:
    for i in range(jobs):
        await pool.enqueue_job("noop", i, _queue_name=QUEUE)


async def producer(kind: str, jobs: int) -> None:
    """The producer process: connect, say ready, wait for go, enqueue."""
    kw = worker_options(kind)
    pool = await create_pool(
        REDIS, job_serializer=kw.get("job_serializer"), job_deserializer=kw.get("job_deserializer")
    )
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    await enqueue(kind, jobs, pool)
    await pool.aclose()


async def end_to_end(kind: str, jobs: int) -> float:
    pool = await create_pool(REDIS)
    await pool.flushdb()
    await pool.aclose()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--produce",
        kind,
        "--jobs",
        str(jobs),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"ready"
    finished = asyncio.Event()
    done = 0

    async def after_job_end(ctx: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        if done == jobs:
            finished.set()

    w = make_worker(kind, burst=False, after_job_end=after_job_end)
    running = asyncio.create_task(w.main())
    await asyncio.sleep(0.3)  # the worker is up and polling
    t = time.perf_counter()
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    await finished.wait()
    dt = time.perf_counter() - t
    assert await proc.wait() == 0
    w.burst = True  # the queue is empty: the worker returns at its next poll
    await running
    await w.close()
    assert w.jobs_complete == jobs and w.jobs_failed == 0, (w.jobs_complete, w.jobs_failed)
    return jobs / dt


async def drain(kind: str, jobs: int) -> float:
    kw = worker_options(kind)
    pool = await create_pool(
        REDIS, job_serializer=kw.get("job_serializer"), job_deserializer=kw.get("job_deserializer")
    )
    await pool.flushdb()
    await enqueue(kind, jobs, pool)
    await pool.aclose()
    w = make_worker(kind, burst=True)
    t = time.perf_counter()
    await w.main()
    dt = time.perf_counter() - t
    await w.close()
    assert w.jobs_complete == jobs and w.jobs_failed == 0, (w.jobs_complete, w.jobs_failed)
    return jobs / dt


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--produce", choices=KINDS, help=argparse.SUPPRESS)  # the producer process
    a = ap.parse_args()
    if a.produce:
        await producer(a.produce, a.jobs)
        return
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(a.repeat):
        for kind in KINDS:  # interleaved, so noise hits both alike
            for measure, how in (("end to end", end_to_end), ("drain", drain)):
                rates.setdefault((kind, measure), []).append(await how(kind, a.jobs))
                print(f"  {kind:<13} {measure:<11} {rates[kind, measure][-1]:8.0f} jobs/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n{a.jobs} no-op jobs, median of {a.repeat}")
    print("| worker settings | end to end, producer in its own process, jobs/s | drain of a full queue, jobs/s |")
    print("|---|---:|---:|")
    for kind in KINDS:
        print(f"| {kind} | {med[kind, 'end to end']:,.0f} | {med[kind, 'drain']:,.0f} |")
    ratio = med["sessionctl", "end to end"] / med["arq defaults", "end to end"]
    print(f"ratio sessionctl / arq defaults, end to end: {ratio:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
