"""Benchmark: intake of erasure requests over HTTP (`sessionctl serve`) vs the Producer directly,
side by side in one run.

    python bench/intake.py [--requests 1000] [--concurrency 16] [--repeat 3]

Each method enqueues ``--requests`` erasures of distinct users at one agent (nothing runs them:
intake alone), ``--concurrency`` at a time:

- producer: ``Producer.purge_user_sessions`` in this process (validation, the agent checked once
  and cached, the job enqueued in Redis and indexed);
- http:     ``POST /v1/erasures`` with a bearer token to ``sessionctl serve`` in its own process
  (uvicorn, one process), which does the same and records each request in the deadline ledger
  (one INSERT) — over keep-alive connections from an httpx client;
- floor:    the same call to a hand-written FastAPI endpoint in its own process
  (``bench/floor_intake.py``: a pydantic body, one INSERT with an asyncpg pool, one arq
  ``enqueue_job``; no token, no ledger rules, no job index) — what intake cannot cost less than.

Prints latency p50/p99 and requests/s per method (median of --repeat runs, interleaved) and the
ratios http ÷ floor and http ÷ producer. Needs Postgres and Redis on 127.0.0.1 (creates and drops database
``sessionctl_bench_intake``; Redis db 14).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_settings, drop_database, fresh_database, url
from sessionctl.producer import Producer
from tests.agno_seed import seed
from tests.embedded_services import answers, free_port
from tests.service_helpers import make_token, serve_process

DB = "sessionctl_bench_intake"
URL = url(DB)
AGENT = "intake-agent"


@contextlib.contextmanager
def floor_process() -> Iterator[str]:
    """The hand-written endpoint (bench/floor_intake.py) under uvicorn in its own process."""
    port = free_port()
    env = {**os.environ, "BENCH_DSN": URL, "BENCH_REDIS": "redis://127.0.0.1:6379/14"}
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.floor_intake:app", "--port", str(port), "--log-level", "warning"],
        env=env,
        cwd=root,
    )
    try:
        deadline = time.monotonic() + 30
        while not answers("127.0.0.1", port):
            assert proc.poll() is None and time.monotonic() < deadline, "the floor endpoint did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def timed(n: int, concurrency: int, one: object) -> tuple[list[float], float]:
    """Latencies of ``n`` calls of ``one(i)``, ``concurrency`` at a time, and the wall time."""
    lat: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def call(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            await one(i)  # type: ignore[operator]
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(call(i) for i in range(n)))
    return lat, time.perf_counter() - t0


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))] * 1000


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    await fresh_database(DB)
    settings = bench_settings(DB, "sessionctl:bench:intake")
    await seed(URL, settings.schema_for(AGENT), AGENT, "someone", 1)
    conn = await asyncpg.connect(URL)
    token = await make_token(conn, "bench", ["read", "erase"])
    await conn.close()
    with serve_process(settings, "bench") as base, floor_process() as floor_base:  # started before any timing
        results: dict[str, list[tuple[float, float, float]]] = {"producer": [], "http": [], "floor": []}
        limits = httpx.Limits(max_connections=a.concurrency, max_keepalive_connections=a.concurrency)
        async with (
            Producer(settings) as producer,
            httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, limits=limits) as client,
            httpx.AsyncClient(base_url=floor_base, limits=limits) as floor,
        ):
            await producer.purge_user_sessions(user_id="warm-up", agent_id=AGENT)  # the agent cached
            for c in (client, floor):
                assert (
                    await c.post("/v1/erasures", json={"user_id": "warm-up-h", "agent_id": AGENT})
                ).status_code == 202
            for rep in range(a.repeat):
                for method in results:

                    async def via_producer(i: int, rep: int = rep) -> None:
                        await producer.purge_user_sessions(user_id=f"p{rep}-{i}", agent_id=AGENT)

                    async def via_http(i: int, rep: int = rep) -> None:
                        resp = await client.post("/v1/erasures", json={"user_id": f"h{rep}-{i}", "agent_id": AGENT})
                        assert resp.status_code == 202, resp.text

                    async def via_floor(i: int, rep: int = rep) -> None:
                        resp = await floor.post("/v1/erasures", json={"user_id": f"f{rep}-{i}", "agent_id": AGENT})
                        assert resp.status_code == 202, resp.text

                    one = {"producer": via_producer, "http": via_http, "floor": via_floor}[method]
                    lat, wall = await timed(a.requests, a.concurrency, one)
                    results[method].append((pct(lat, 0.5), pct(lat, 0.99), a.requests / wall))
                    print(
                        f"  run {rep + 1} {method:<9} p50 {pct(lat, 0.5):6.1f} ms  p99 {pct(lat, 0.99):6.1f} ms"
                        f"  {a.requests / wall:7.0f} req/s",
                        flush=True,
                    )
    med = {m: tuple(statistics.median(r[k] for r in rs) for k in range(3)) for m, rs in results.items()}
    print(
        f"\nintake of {a.requests} erasure requests, {a.concurrency} at a time; median of {a.repeat}\n"
        "| method | p50 | p99 | requests/s |\n|---|---:|---:|---:|"
    )
    for m, (p50, p99, rate) in med.items():
        print(f"| {m} | {p50:.1f} ms | {p99:.1f} ms | {rate:,.0f} |")
    print(f"http ÷ floor (requests/s) = {med['http'][2] / med['floor'][2]:.2f}x (target ≥ 0.9x, p99 ≤ 100 ms)")
    print(f"http ÷ producer (requests/s) = {med['http'][2] / med['producer'][2]:.2f}x")
    await drop_database(DB)


if __name__ == "__main__":
    asyncio.run(main())
