"""Benchmark: erasing a person's chunks from a declared vector store, sessionctl end to end vs the
backend's own delete-by-filter called directly, side by side.

    python bench/declared_stores.py [--lance-rows 1000000] [--lance-person 10000]
                                    [--qdrant-points 20000] [--qdrant-person 1000] [--repeat 3]

Data, made once and copied for every timed run (a delete is destructive): a LanceDB table in
Agno's layout (``vector``, ``id``, ``payload``, ``user_id``; 8-dimensional vectors, ~150-byte
payloads) of ``--lance-rows`` rows, ``--lance-person`` of them the person's, written as one
ingestion among the others; a Qdrant collection in local mode (Agno's payload, ``user_id`` at its
top) of ``--qdrant-points`` points, ``--qdrant-person`` the person's (local mode warns above
20,000 points and ignores payload indexes).

- raw:          the backend's delete by filter (``table.delete("user_id = …")``; Qdrant's
                ``delete(FilterSelector)``), nothing else;
- raw+rewrite:  LanceDB only: the same delete, then the rewrite sessionctl does so the rows leave
                the files (compaction materializing deletions, old versions dropped) — the floor
                of an erasure that removes the data, not only hides it;
- sessionctl:   end to end — ``purge_user_sessions --all-agents --scope all`` enqueued through
                Redis to a running ``sessionctl worker`` (its own process, ready before the clock)
                with the store declared in ``SESSIONCTL_CONFIG``: the store opened and checked,
                counted, erased (and rewritten), recounted, the person's recount for ``complete``,
                the receipt written.

Prints items/s per method (median of --repeat runs, interleaved) and sessionctl's ratio to each.
Needs Postgres and Redis on 127.0.0.1 (creates and drops database ``sessionctl_bench_stores``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_settings, drop_database, fresh_database, running_worker
from sessionctl.producer import Producer

DB = "sessionctl_bench_stores"
PERSON = "person-0001"
DIMS = 8


def payload(i: int, user: str | None) -> str:
    return json.dumps(
        {"name": f"doc-{i // 50}", "meta_data": {}, "content": f"chunk {i} of {user or 'everyone'} " + "x" * 60,
         "usage": None, "content_id": f"c-{i // 50}", "content_hash": f"h-{i // 50}"}
    )  # fmt: skip


def make_lance(folder: Path, rows: int, person: int) -> None:
    import lancedb
    import pyarrow as pa

    schema = pa.schema(
        [
            pa.field("vector", pa.list_(pa.float32(), DIMS)),
            pa.field("id", pa.string()),
            pa.field("payload", pa.string()),
            pa.field("user_id", pa.string()),
        ]
    )

    def batch(start: int, n: int, user: str | None) -> pa.Table:
        ids = range(start, start + n)
        return pa.table(
            {
                "vector": pa.array([[float(i % 97)] * DIMS for i in ids], type=pa.list_(pa.float32(), DIMS)),
                "id": [f"id-{i}" for i in ids],
                "payload": [payload(i, user) for i in ids],
                "user_id": [user if user else f"user-{i % 5000}" for i in ids],
            },
            schema=schema,
        )

    db = lancedb.connect(str(folder))
    others, step = rows - person, 100_000
    table = None
    start = 0
    half = others // 2
    plan = [(half, None), (person, PERSON), (others - half, None)]
    for n, user in plan:
        done = 0
        while done < n:
            part = batch(start, min(step, n - done), user)
            if table is None:
                table = db.create_table("knowledge", data=part)
            else:
                table.add(part)
            start, done = start + part.num_rows, done + part.num_rows


def make_qdrant(folder: Path, points: int, person: int) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(folder))
    client.create_collection("knowledge", vectors_config=models.VectorParams(size=DIMS, distance=models.Distance.COSINE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(0, points, 1000):
            batch = []
            for i in range(start, min(points, start + 1000)):
                user = PERSON if i % (points // person) == 0 else f"user-{i % 500}"
                body = json.loads(payload(i, user))
                batch.append(models.PointStruct(id=i, vector=[float(i % 97) + 1.0] * DIMS, payload={**body, "user_id": user}))
            client.upsert("knowledge", batch, wait=True)
    client.close()


def raw_lance(folder: Path, rewrite: bool) -> int:
    import lancedb

    table = lancedb.connect(str(folder)).open_table("knowledge")
    n = table.count_rows(f"user_id = '{PERSON}'")
    table.delete(f"user_id = '{PERSON}'")
    if rewrite:
        table.to_lance().optimize.compact_files(materialize_deletions_threshold=0.0)
        table.checkout_latest()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)
    return int(n)


def raw_qdrant(folder: Path) -> int:
    from qdrant_client import QdrantClient, models

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = QdrantClient(path=str(folder))
    f = models.Filter(must=[models.FieldCondition(key="user_id", match=models.MatchValue(value=PERSON))])
    n = client.count("knowledge", count_filter=f, exact=True).count
    client.delete("knowledge", points_selector=models.FilterSelector(filter=f), wait=True)
    client.close()
    return int(n)


async def erase(producer: Producer) -> Any:
    enq = await producer.purge_user_sessions(user_id=PERSON, all_agents=True, scope="all")
    return await producer.wait(enq.job_id, timeout=600, poll=0.01)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lance-rows", type=int, default=1_000_000)
    ap.add_argument("--lance-person", type=int, default=10_000)
    ap.add_argument("--qdrant-points", type=int, default=20_000)
    ap.add_argument("--qdrant-person", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sessionctl-bench-stores-"))
    masters = {"lancedb": work / "lancedb-master", "qdrant": work / "qdrant-master"}
    t0 = time.monotonic()
    make_lance(masters["lancedb"], args.lance_rows, args.lance_person)
    make_qdrant(masters["qdrant"], args.qdrant_points, args.qdrant_person)
    print(f"prepared the data in {time.monotonic() - t0:.1f}s", flush=True)
    await fresh_database(DB)
    config = work / "deployment.toml"
    copy = {"lancedb": work / "lancedb", "qdrant": work / "qdrant"}
    declare = {
        "lancedb": f'[[stores]]\nkind = "lancedb"\nuri = "{copy["lancedb"]}"\ntable_name = "knowledge"\n',
        "qdrant": f'[[stores]]\nkind = "qdrant"\npath = "{copy["qdrant"]}"\ncollection = "knowledge"\n',
    }
    settings = bench_settings(DB, "bench:stores", config_file=str(config))
    rates: dict[str, dict[str, list[float]]] = {
        "lancedb": {"raw": [], "raw+rewrite": [], "sessionctl": []},
        "qdrant": {"raw": [], "sessionctl": []},
    }
    config.write_text(declare["lancedb"])
    try:
        async with running_worker(settings, SESSIONCTL_CONFIG=str(config)), Producer(settings) as producer:
            for kind in rates:  # untimed: the worker imports each store's client library on its first job
                shutil.rmtree(copy[kind], ignore_errors=True)
                shutil.copytree(masters[kind], copy[kind])
                config.write_text(declare[kind])
                assert (await erase(producer)).status == "succeeded"
            for rep in range(args.repeat):
                for kind, methods in rates.items():
                    for method in methods:
                        shutil.rmtree(copy[kind], ignore_errors=True)
                        shutil.copytree(masters[kind], copy[kind])
                        config.write_text(declare[kind])
                        t = time.monotonic()
                        if method == "sessionctl":
                            state = await erase(producer)
                            assert state.status == "succeeded" and state.result["complete"], state
                            n = state.result["stores"][f"{kind}:knowledge"]
                        elif kind == "lancedb":
                            n = await asyncio.to_thread(raw_lance, copy[kind], method == "raw+rewrite")
                        else:
                            n = await asyncio.to_thread(raw_qdrant, copy[kind])
                        dt = time.monotonic() - t
                        methods[method].append(n / dt)
                        print(f"  run {rep + 1} {kind:<8} {method:<12} {n:>6} items in {dt:7.3f}s = {n / dt:>9.0f}/s")
    finally:
        await drop_database(DB)
        shutil.rmtree(work, ignore_errors=True)
    for kind, methods in rates.items():
        med = {k: statistics.median(v) for k, v in methods.items()}
        print(f"\n{kind}: the person's chunks, median of {args.repeat}")
        print("| method | items/s | sessionctl ÷ method |\n|---|---:|---:|")
        for k, v in med.items():
            print(f"| {k} | {v:,.0f} | {med['sessionctl'] / v:.2f}× |")


if __name__ == "__main__":
    asyncio.run(main())
