"""Benchmark: export N sessions to JSON Lines, sessionctl vs Postgres' own COPY, side by side.

    python bench/export.py [--sizes 20000,200000] [--repeat 3]

Data: one agent schema, sessions cloned in SQL from an Agno-written one, 2 runs of ~2 KB each,
plus other users' sessions. Per size:

- copy: ``COPY (SELECT row_to_json(s) || runs aggregated …) TO STDOUT`` streamed into a file — the
  database's limit for "every session with its runs as one JSON line";
- sessionctl plain / zstd: an export enqueued (Producer API) to a running ``sessionctl worker``
  (a child process, ready before the clock starts), timed to its verified result; the worker's
  peak RSS is its VmHWM.

Prints sessions/s (median of --repeat interleaved runs), the ratio to COPY and the worker's peak
RSS per size (the largest of its runs; memory must stay flat).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import running_worker
from sessionctl.config import Settings
from sessionctl.producer import Producer
from tests.agno_seed import agno_db, clone_sessions, seed_sessions

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "sessionctl_bench_export"
URL = f"postgresql://postgres@127.0.0.1:5432/{DB}"
AGENT = "bench-export"
SCHEMA = "ag_bench_export"
USER = "bench-user"


async def prepare(n: int) -> None:
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {DB}")
    await admin.close()
    db = agno_db(URL, SCHEMA)
    await seed_sessions(db, AGENT, USER, 1)
    await seed_sessions(db, AGENT, "other", 1)
    await db.close()
    c = await asyncpg.connect(URL)
    await c.execute(
        f"UPDATE {SCHEMA}.agno_runs SET run_data = jsonb_set(run_data, '{{content}}', to_jsonb($1::text))", "x" * 2000
    )
    await clone_sessions(c, SCHEMA, f"{AGENT}-{USER}-s0", USER, n - 1, "c")
    await clone_sessions(c, SCHEMA, f"{AGENT}-other-s0", "other", 5000, "o")
    await c.execute(f"ANALYZE {SCHEMA}.agno_sessions; ANALYZE {SCHEMA}.agno_runs")
    await c.close()


async def copy_rate(n: int, out: Path) -> float:
    c = await asyncpg.connect(URL)
    sql = (  # asyncpg wraps it: COPY (…) TO STDOUT
        f"SELECT (to_jsonb(s) || jsonb_build_object('runs', coalesce((SELECT jsonb_agg(r.run_data ORDER BY"
        f" r.run_index) FROM {SCHEMA}.agno_runs r WHERE r.session_id = s.session_id), '[]')))::text"
        f" FROM {SCHEMA}.agno_sessions s WHERE s.user_id = '{USER}' ORDER BY created_at, session_id"
    )
    t = time.perf_counter()
    with out.open("wb") as fh:
        await c.copy_from_query(sql, output=fh)
    dt = time.perf_counter() - t
    await c.close()
    return n / dt


async def sessionctl_rate(n: int, exports: Path, name: str, compress: str) -> tuple[float, int]:
    """Export through Redis and a running ``sessionctl worker`` (a child process, started and
    ready before the clock starts, as in production); the rate and the worker's peak RSS (KiB)."""
    flush = await asyncio.create_subprocess_exec("redis-cli", "-n", "14", "flushdb", stdout=asyncio.subprocess.DEVNULL)
    assert await flush.wait() == 0
    settings = Settings(
        database_url=URL,
        redis_url="redis://127.0.0.1:6379/14",
        hash_key="bench",
        queue_name="bench:export",
        export_dir=str(exports),
    )
    async with running_worker(settings, SESSIONCTL_EXPORT_DIR=str(exports)) as worker, Producer(settings) as producer:
        t = time.perf_counter()
        enq = await producer.export_sessions(agent_id=AGENT, user_id=USER, out=name, compress=compress)
        state = await producer.wait(enq.job_id, poll=0.02)
        dt = time.perf_counter() - t
        assert state.status == "succeeded" and state.result and state.result["sessions"] == n, state
        status = Path(f"/proc/{worker.pid}/status").read_text()
        peak_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    assert (exports / name).exists()
    return n / dt, peak_kib


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="20000,200000")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    rows = []
    for n in [int(x) for x in a.sizes.split(",")]:
        asyncio.run(prepare(n))
        rates: dict[str, list[float]] = {"copy": [], "plain": [], "zst": []}
        peaks = {"plain": 0, "zst": 0}
        for rep in range(a.repeat):  # interleaved, so noise hits every method alike
            with tempfile.TemporaryDirectory() as tmp:
                exports = Path(tmp) / "exports"
                rates["copy"].append(asyncio.run(copy_rate(n, Path(tmp) / "copy.jsonl")))
                for kind, name, compress in (
                    ("plain", f"plain-{n}.jsonl", "none"),
                    ("zst", f"zst-{n}.jsonl.zst", "zst"),
                ):
                    rate, peak = asyncio.run(sessionctl_rate(n, exports, name, compress))
                    rates[kind].append(rate)
                    peaks[kind] = max(peaks[kind], peak)
                size_plain = (exports / f"plain-{n}.jsonl").stat().st_size
                size_zst = (exports / f"zst-{n}.jsonl.zst").stat().st_size
            print(
                f"  {n:>7} sessions, run {rep + 1}: COPY {rates['copy'][-1]:,.0f}/s, "
                f"sessionctl {rates['plain'][-1]:,.0f}/s plain, {rates['zst'][-1]:,.0f}/s zstd",
                flush=True,
            )
        copy, plain, zst = (statistics.median(rates[k]) for k in ("copy", "plain", "zst"))
        rows.append((n, copy, plain, zst, peaks["plain"], peaks["zst"], size_plain, size_zst))
    print(
        "\n| sessions | COPY /s | sessionctl plain /s (÷ COPY) | zstd /s (÷ COPY) | worker peak RSS plain / zstd | file plain / zstd |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for n, copy, plain, zst, rp, rz, sp, sz in rows:
        print(
            f"| {n:,} | {copy:,.0f} | {plain:,.0f} ({plain / copy:.2f}×) | {zst:,.0f} ({zst / copy:.2f}×) "
            f"| {rp / 1024:.0f} MiB / {rz / 1024:.0f} MiB | {sp / 2**20:.0f} MiB / {sz / 2**20:.1f} MiB |"
        )
    asyncio.run(_drop())


async def _drop() -> None:
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await admin.close()


if __name__ == "__main__":
    main()
