"""Benchmark: intake of erasure requests over HTTP (`sessionctl serve`) against a hand-written
endpoint, and the Producer directly, side by side in one run.

    python bench/intake.py [--seconds 5] [--concurrency 16] [--repeat 3] [--requests 1000]

- http:     ``POST /v1/erasures`` with a bearer token to ``sessionctl serve`` in its own process
  (uvicorn, one process): the token checked, the request validated, recorded in the deadline
  ledger (one INSERT), its job enqueued and indexed (one Redis round trip);
- floor:    the same call to a hand-written FastAPI endpoint in its own process
  (``bench/floor_intake.py``: a pydantic body, one INSERT with an asyncpg pool, one arq
  ``enqueue_job``; no token, no ledger rules, no job index) — what intake cannot cost less than;
- producer: ``Producer.purge_user_sessions`` in this process, ``--requests`` of them (validation,
  the agent checked once and cached, the job enqueued and indexed).

The HTTP load comes from ``wrk`` (``apt-get install wrk``): ``--concurrency`` keep-alive
connections for ``--seconds``, each request a new user at one agent (``bench/intake_post.lua``) — a
client in C, so that the servers, not a Python client, take the two cores; nothing runs the jobs
(intake alone). Each server is warmed up for 2 s first; the methods take turns, ``--repeat`` times.
Prints p50/p99 latency and requests/s per method (medians) and the ratio http ÷ floor. Needs
Postgres and Redis on 127.0.0.1 (creates and drops database ``sessionctl_bench_intake``; Redis db 14).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg

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


def wrk(base: str, seconds: int, concurrency: int, prefix: str, token: str = "") -> tuple[float, float, float]:
    """(p50 ms, p99 ms, requests/s) of ``wrk`` posting erasures to ``base``; every answer a 202."""
    env = {**os.environ, "BENCH_PREFIX": prefix, "BENCH_TOKEN": token, "BENCH_AGENT": AGENT}
    script = str(Path(__file__).with_name("intake_post.lua"))
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "-s", script, base]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    assert r["not_202"] == 0 and r["socket_errors"] == 0, r
    return r["p50_ms"], r["p99_ms"], r["requests"] / r["seconds"]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5, help="each HTTP run's length, whole seconds (as wrk takes it)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--requests", type=int, default=1000, help="the producer's requests per run")
    a = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/intake.py needs wrk, an HTTP load generator in C: apt-get install wrk")
    await fresh_database(DB)
    settings = bench_settings(DB, "sessionctl:bench:intake")
    await seed(URL, settings.schema_for(AGENT), AGENT, "someone", 1)
    conn = await asyncpg.connect(URL)
    token = await make_token(conn, "bench", ["read", "erase"])
    await conn.close()
    with serve_process(settings, "bench") as base, floor_process() as floor_base:  # started before any timing
        results: dict[str, list[tuple[float, float, float]]] = {"http": [], "floor": [], "producer": []}
        wrk(base, 2, a.concurrency, "warm-http", token)
        wrk(floor_base, 2, a.concurrency, "warm-floor")
        async with Producer(settings) as producer:
            await producer.purge_user_sessions(user_id="warm-up", agent_id=AGENT)  # the agent cached
            for rep in range(a.repeat):
                for method in results:
                    if method == "producer":

                        async def via_producer(i: int, rep: int = rep) -> None:
                            await producer.purge_user_sessions(user_id=f"p{rep}-{i}", agent_id=AGENT)

                        lat, wall = await timed(a.requests, a.concurrency, via_producer)
                        got = (pct(lat, 0.5), pct(lat, 0.99), a.requests / wall)
                    elif method == "http":
                        got = wrk(base, a.seconds, a.concurrency, f"h{rep}", token)
                    else:
                        got = wrk(floor_base, a.seconds, a.concurrency, f"f{rep}")
                    results[method].append(got)
                    print(
                        f"  run {rep + 1} {method:<9} p50 {got[0]:6.1f} ms  p99 {got[1]:6.1f} ms  {got[2]:7.0f} req/s",
                        flush=True,
                    )
    med = {m: tuple(statistics.median(r[k] for r in rs) for k in range(3)) for m, rs in results.items()}
    print(
        f"\nintake of erasure requests, {a.concurrency} at a time ({a.seconds:g} s a run over HTTP); median of"
        f" {a.repeat}\n| method | p50 | p99 | requests/s |\n|---|---:|---:|---:|"
    )
    for m, (p50, p99, rate) in med.items():
        print(f"| {m} | {p50:.1f} ms | {p99:.1f} ms | {rate:,.0f} |")
    print(f"http ÷ floor (requests/s) = {med['http'][2] / med['floor'][2]:.2f}x (target ≥ 0.9x, p99 ≤ 100 ms)")
    await drop_database(DB)


if __name__ == "__main__":
    asyncio.run(main())
