"""export_sessions end to end: streaming, atomic, verifiable exports; export-then-erase; restore."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sessionctl import export_files, store
from sessionctl.agents import AgentHandle
from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.errors import ExportMismatch
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.export_erase import verify as _verify
from sessionctl.jobs.targets import resolve_targets
from sessionctl.producer import Producer
from sessionctl.restore import import_export
from tests.agno_seed import agno_db, clone_sessions, load_2x_fixture, seed, seed_sessions
from tests.conftest import HASH_KEY, run_worker

USER = "jules-3e@example.com"
SESSIONCTL = [sys.executable, "-m", "sessionctl.cli"]


@pytest.fixture
def xsettings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"export_dir": str(tmp_path / "exports"), "export_page_size": 300})


def _lines(path: Path) -> list[dict[str, Any]]:
    with export_files.open_records(path) as records:
        return list(records)


def _norm(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


async def _export(settings: Settings, **kwargs: Any) -> Any:
    async with Producer(settings) as producer:
        enq = await producer.export_sessions(**kwargs)
        await run_worker(settings)
        return await producer.status(enq.job_id)


@pytest.mark.slow
async def test_export_of_5000_sessions_matches_what_agno_returns_line_by_line(
    xsettings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    schema = xsettings.schema_for(agent_id)
    db = agno_db(xsettings.database_url, schema)
    await seed_sessions(db, agent_id, USER, 3, extras=True)
    await seed_sessions(db, agent_id, "somebody-else", 4)
    await clone_sessions(pg, schema, f"{agent_id}-{USER}-s0", USER, 5100, "c")
    state = await _export(xsettings, agent_id=agent_id, user_id=USER, out="jules.jsonl")
    assert state.status == "succeeded", state
    r = state.result
    assert r["sessions"] == 5103 and r["agents"] == {agent_id: 5103}
    path = Path(r["path"])
    assert path == Path(xsettings.export_dir).resolve() / "jules.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(r["manifest_path"]).stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".partial")]

    lines = _lines(path)
    agno_rows, total = await db.get_sessions(user_id=USER, deserialize=False)
    await db.close()
    assert total == 5103 and len(lines) == 5103
    theirs = {row["session_id"]: _norm(row) for row in agno_rows}
    keys = [(ln["session"]["created_at"], ln["session"]["session_id"]) for ln in lines]
    assert keys == sorted(keys)  # oldest first, ties by id
    for line in lines:
        assert line["v"] == 1 and line["agent"] == agent_id and line["schema"] == schema
        assert line["session"] == theirs[line["session"]["session_id"]]
    assert sum(len(ln["session"]["runs"]) for ln in lines) == 5103 * 2

    manifest = json.loads(Path(r["manifest_path"]).read_text())
    assert manifest["sha256"] == export_files.file_sha256(path)[0] == r["sha256"]
    assert manifest["counts"] == {agent_id: 5103} and manifest["format"] == "sessionctl-export/1"
    assert USER not in Path(r["manifest_path"]).read_text() and manifest["user_hmac"] == r["user_hmac"]
    async with Producer(xsettings) as producer:
        assert (await producer.status(state.job_id)).progress["processed"] == 5103


async def test_2x_layout_and_every_user_export_with_compression_readable_by_standard_tools(
    xsettings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    schema = xsettings.schema_for(agent_id)
    await load_2x_fixture(pg, schema)
    db = agno_db(xsettings.database_url, schema)
    theirs = {row["session_id"]: _norm(row) for row in (await db.get_sessions(deserialize=False))[0]}
    await db.close()
    for compress, tool in (("gz", ["gzip", "-dc"]), ("zst", ["zstd", "-dcq"])):
        state = await _export(xsettings, agent_id=agent_id, out=f"legacy.{compress}", compress=compress)
        assert state.status == "succeeded", state
        path = Path(state.result["path"])
        assert path.name == f"legacy.{compress}"  # exactly the name asked for: no suffix added
        raw = subprocess.run([*tool, str(path)], capture_output=True, check=True).stdout
        lines = [json.loads(x) for x in raw.decode().splitlines()]
        assert len(lines) == 5 == state.result["sessions"]  # alice 3, bob 2
        for line in lines:
            assert line["session"] == theirs[line["session"]["session_id"]]
            assert len(line["session"]["runs"]) == 2  # the runs that live inside the 2.x row


async def test_time_window(xsettings: Settings, pg: asyncpg.Connection, agent_id: str) -> None:
    await seed(xsettings.database_url, xsettings.schema_for(agent_id), agent_id, USER, 10, base_ts=1_700_000_000)
    state = await _export(
        xsettings, agent_id=agent_id, user_id=USER, out="w.jsonl", since=1_700_000_003, until=1_700_000_007
    )
    assert state.status == "succeeded"
    got = [ln["session"]["created_at"] for ln in _lines(Path(state.result["path"]))]
    assert got == [1_700_000_003, 1_700_000_004, 1_700_000_005, 1_700_000_006]
    assert state.result["window"] == {"since": 1_700_000_003, "until": 1_700_000_007, "by": "created"}


async def test_export_then_erase_round_trip_through_import(
    xsettings: Settings, pg: asyncpg.Connection, agent_id: str, databases: Databases
) -> None:
    schema = xsettings.schema_for(agent_id)
    db = agno_db(xsettings.database_url, schema)
    ids = await seed_sessions(db, agent_id, USER, 12, runs=3)
    await seed_sessions(db, agent_id, "stays", 2)
    originals = {s: (await db.get_session(s)).to_dict() for s in ids}  # type: ignore[union-attr]

    state = await _export(xsettings, agent_id=agent_id, user_id=USER, out="dsr.jsonl", then_purge=True)
    assert state.status == "succeeded", state
    assert state.result["purge"]["sessions_deleted"] == 12 and state.result["purge"]["runs_deleted"] == 36
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id=$1', USER) == 0
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id=$1', "stays") == 2

    handle = AgentHandle(agent_id, settings=xsettings, databases=databases)
    res = await import_export(Path(state.result["path"]), handle, key=xsettings.hash_key_bytes)
    assert res.sessions == 12 and res.runs == 36 and res.verified
    for sid in ids:
        back = await db.get_session(sid)
        assert back is not None
        assert back.to_dict() == originals[sid]  # ids, user, runs, data — and the timestamps
    await db.close()


async def test_export_then_erase_erases_nothing_when_the_database_moved_on(
    xsettings: Settings, pg: asyncpg.Connection, agent_id: str, databases: Databases
) -> None:
    schema = xsettings.schema_for(agent_id)
    db = agno_db(xsettings.database_url, schema)
    await seed_sessions(db, agent_id, USER, 4)
    state = await _export(xsettings, agent_id=agent_id, user_id=USER, out="before.jsonl")
    assert state.status == "succeeded"
    await seed_sessions(db, agent_id, USER, 1, prefix="late")  # arrives after the export
    await db.close()
    ctx = JobContext(settings=xsettings, databases=databases, hash_key=HASH_KEY.encode(), job_id="t")
    targets = await resolve_targets(ctx, agent_id, False)
    manifest = export_files.read_manifest(Path(state.result["path"]))
    assert manifest is not None
    with pytest.raises(ExportMismatch, match="holds 5 matching sessions, the export 4"):
        await _verify(ctx, targets, store.Window(user_id=USER), Path(state.result["path"]), manifest)
    # a tampered file does not verify either
    path = Path(state.result["path"])
    path.write_bytes(path.read_bytes().replace(b"answer 0", b"answer X"))
    with pytest.raises(ExportMismatch, match="checksum"):
        await _verify(ctx, targets, store.Window(user_id=USER), path, manifest)
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id=$1', USER) == 5


@pytest.mark.parametrize("name", ["../escape.jsonl", "/etc/passwd", "a/b.jsonl", ".hidden", "x.manifest.json", ""])
async def test_bad_export_names_exit_2_and_write_nothing(
    xsettings: Settings, worker_env: dict[str, str], agent_id: str, name: str
) -> None:
    await seed(xsettings.database_url, xsettings.schema_for(agent_id), agent_id, USER, 1)
    env = {**worker_env, "SESSIONCTL_EXPORT_DIR": xsettings.export_dir}
    res = subprocess.run(
        [*SESSIONCTL, "export", "--agent", agent_id, "--out", name],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not Path(xsettings.export_dir).exists() or not any(Path(xsettings.export_dir).iterdir())


async def test_symlink_escape_and_existing_name_are_refused(xsettings: Settings, agent_id: str, tmp_path: Path) -> None:
    await seed(xsettings.database_url, xsettings.schema_for(agent_id), agent_id, USER, 2)
    exports = Path(xsettings.export_dir)
    exports.mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    (exports / "link.jsonl").symlink_to(outside)
    (exports / "taken.jsonl").write_text("keep me")
    for name, needle in (("link.jsonl", "symlink"), ("taken.jsonl", "already exists")):
        state = await _export(xsettings, agent_id=agent_id, user_id=USER, out=name)
        assert state.status == "failed"
        assert state.error["type"] == "InvalidRequest" and needle in state.error["message"]
    assert not outside.exists()
    assert (exports / "taken.jsonl").read_text() == "keep me"
    assert sorted(p.name for p in exports.iterdir()) == ["link.jsonl", "taken.jsonl"]


@pytest.mark.slow
def test_worker_killed_mid_export_leaves_no_partial_file_and_the_retry_writes_a_correct_one(
    xsettings: Settings, worker_env: dict[str, str], agent_id: str, pg_database: str, tmp_path: Path
) -> None:
    import asyncio

    async def seed_once() -> None:
        await seed(xsettings.database_url, xsettings.schema_for(agent_id), agent_id, USER, 1)
        conn = await asyncpg.connect(pg_database)
        await clone_sessions(conn, xsettings.schema_for(agent_id), f"{agent_id}-{USER}-s0", USER, 40_000, "k")
        await conn.close()

    asyncio.run(seed_once())
    env = {
        **worker_env,
        "SESSIONCTL_EXPORT_DIR": xsettings.export_dir,
        "SESSIONCTL_EXPORT_PAGE_SIZE": "50",
        "SESSIONCTL_LEASE_TTL": "3",  # a killed worker's job runs again once its lease (3 s) expires
    }
    enq = subprocess.run(
        [
            *SESSIONCTL,
            "export",
            "--agent",
            agent_id,
            "--user",
            USER,
            "--out",
            "big.jsonl.gz",
            "--compress",
            "gz",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = json.loads(enq.stdout)["job_id"]
    exports = Path(xsettings.export_dir)
    with (tmp_path / "w1.log").open("w") as log:
        w1 = subprocess.Popen([*SESSIONCTL, "worker"], env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".partial") for p in exports.glob(".*")):
            assert time.monotonic() < deadline, "the export never started"
            assert w1.poll() is None
            time.sleep(0.01)
        time.sleep(0.3)  # well into the export (it takes seconds), far from its end
        os.kill(w1.pid, signal.SIGKILL)
        w1.wait(10)
    assert not (exports / "big.jsonl.gz").exists()  # no partial file under the final name
    assert not (exports / "big.jsonl.gz.manifest.json").exists()

    start = time.monotonic()
    w2 = subprocess.run([*SESSIONCTL, "worker", "--burst"], env=env, capture_output=True, text=True, timeout=120)
    assert w2.returncode == 0, w2.stderr[-2000:]
    recovered_after = time.monotonic() - start
    st = subprocess.run([*SESSIONCTL, "status", job_id, "--json"], env=env, capture_output=True, text=True, check=True)
    state = json.loads(st.stdout)
    assert state["status"] == "succeeded", state
    assert state["attempt"] == 2
    path = exports / "big.jsonl.gz"
    ids = [ln["session"]["session_id"] for ln in _lines(path)]
    assert len(ids) == len(set(ids)) == 40_001 == state["result"]["sessions"]
    assert export_files.file_sha256(path)[0] == state["result"]["sha256"]
    assert sorted(p.name for p in exports.iterdir()) == ["big.jsonl.gz", "big.jsonl.gz.manifest.json"]
    assert recovered_after < 60


async def test_export_then_erase_leaves_a_session_changed_after_the_export(
    xsettings: Settings, pg: asyncpg.Connection, agent_id: str, databases: Databases
) -> None:
    from sessionctl.jobs.export_erase import erase_exported as _erase_exported
    from sessionctl.jobs.models import ExportRequest

    schema = xsettings.schema_for(agent_id)
    ids = await seed(xsettings.database_url, schema, agent_id, USER, 3)
    state = await _export(xsettings, agent_id=agent_id, user_id=USER, out="dsr.jsonl")
    path = Path(state.result["path"])
    # the user keeps chatting in one exported session before the erase runs
    await pg.execute(
        f'UPDATE "{schema}".agno_sessions SET updated_at = updated_at + 5,'
        ' session_data = \'{"session_name": "NEW message, never exported"}\' WHERE session_id = $1',
        ids[1],
    )
    ctx = JobContext(settings=xsettings, databases=databases, hash_key=HASH_KEY.encode(), job_id="t-erase")
    targets = await resolve_targets(ctx, agent_id, False)
    req = ExportRequest(out="dsr.jsonl", agent_id=agent_id, user_id=USER, then_purge=True)
    with pytest.raises(ExportMismatch, match="arrived or changed after the export"):
        await _erase_exported(
            ctx, req, targets, store.Window(user_id=USER), path, log_stub(), "2026-01-01T00:00:00+00:00"
        )
    left = [r["session_id"] for r in await pg.fetch(f'SELECT session_id FROM "{schema}".agno_sessions')]
    assert left == [ids[1]]  # the unchanged two were erased; the changed one was not


def log_stub() -> object:
    class _L:
        def info(self, *a: object, **k: object) -> None: ...

        def warning(self, *a: object, **k: object) -> None: ...

    return _L()


async def _half_migrated(settings: Settings, pg: asyncpg.Connection, agent_id: str, n: int, runs: int) -> list[str]:
    """Ann's ``n`` sessions, Agno-written, in a half-migrated schema: the 2.x runs column beside
    the 3.x runs table (empty until a test fills it)."""
    schema = settings.schema_for(agent_id)
    ids = await seed(settings.database_url, schema, agent_id, "ann", n, runs=runs, base_ts=1_700_000_000)
    await pg.execute(f'ALTER TABLE "{schema}".agno_sessions ADD COLUMN runs jsonb')
    return ids


async def _first_page(pg: asyncpg.Connection, schema: str, agent_id: str) -> tuple[Any, list[Any]]:
    """The layout's target and the first export page of Ann's sessions, rendered by Postgres."""
    from sessionctl.jobs.export_stores import envelope as _envelope

    await store.init_connection(pg)
    layout = await store.read_layout(pg, schema)
    assert layout is not None and layout.legacy_runs_column and layout.has(store.RUNS)
    target = type("T", (), {"label": agent_id, "layout": layout})()
    page = await store.export_lines(
        pg, layout, store.Window(user_id="ann"), envelope=_envelope(target), after=None, limit=100
    )
    return target, page


async def test_lines_rendered_by_postgres_equal_agnos_merge_for_every_layout_of_runs(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    """Postgres renders each export line (no JSON round trip in the worker); the runs in it must
    be what Agno's ``merge_runs_table_with_legacy_blob`` gives, whatever the 2.x blob holds."""
    from sessionctl.jobs.export import _lines, export_records

    schema = settings.schema_for(agent_id)
    ids = await _half_migrated(settings, pg, agent_id, 9, runs=2)
    run = {"run_id": "blob-r1", "content": "from the blob", "n": 1.5}
    blobs: dict[int, Any] = {
        1: [],  # empty blob: the table's runs
        2: "null",  # JSON null
        3: [run, {"content": "no run id"}, "not a dict", {"run_id": None}],  # only dicts with a run id stay
        4: {"not": "an array"},  # Agno iterates the keys: no runs
        5: json.dumps([run]),  # a blob stored as a JSON string: Agno parses it
        6: [{"run_id": f"{ids[6]}-r0", "content": "stale copy"}, run],  # split: table wins, blob order first
    }
    for i, blob in blobs.items():
        await pg.execute(
            f'UPDATE "{schema}".agno_sessions SET runs = $1::jsonb WHERE session_id = $2',
            json.dumps(blob) if not (isinstance(blob, str) and blob == "null") else "null",
            ids[i],
        )
    for i in (3, 4, 5):  # these live in the blob only, as 2.x wrote them
        await pg.execute(f'DELETE FROM "{schema}".agno_runs WHERE session_id = $1', ids[i])
    target, page = await _first_page(pg, schema, agent_id)
    layout = target.layout
    assert [r["session_id"] for r in page] == ids
    left_to_python = [r["session_id"] for r in page if r["line"] is None]
    assert left_to_python == [ids[4], ids[5], ids[6]]  # not an array, a string, runs in both places
    ours = [json.loads(line) for line in await _lines(pg, target, page)]  # type: ignore[arg-type]
    rows = await store.sessions_by_ids(pg, layout, ids)
    agnos = export_records(target, rows, await store.runs_for_sessions(pg, layout, ids))  # type: ignore[arg-type]
    assert ours == _norm(sorted(agnos, key=lambda r: ids.index(r["session"]["session_id"])))
    runs_of = {rec["session"]["session_id"]: [r.get("run_id") for r in rec["session"]["runs"]] for rec in ours}
    assert runs_of[ids[0]] == [f"{ids[0]}-r0", f"{ids[0]}-r1"]
    assert runs_of[ids[3]] == ["blob-r1"] and runs_of[ids[4]] == [] and runs_of[ids[5]] == ["blob-r1"]
    assert runs_of[ids[6]] == [f"{ids[6]}-r0", "blob-r1", f"{ids[6]}-r1"]


async def test_a_session_gone_between_a_page_and_agnos_merge_is_left_out_not_a_crash(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    from sessionctl.jobs.export import _lines

    schema = settings.schema_for(agent_id)
    ids = await _half_migrated(settings, pg, agent_id, 3, runs=1)
    await pg.execute(  # runs in both places: rendered by Agno's merge in the worker
        f'UPDATE "{schema}".agno_sessions SET runs = $1::jsonb', json.dumps([{"run_id": "blob", "content": "x"}])
    )
    target, page = await _first_page(pg, schema, agent_id)
    assert [r["line"] for r in page] == [None, None, None]
    await pg.execute(f'DELETE FROM "{schema}".agno_sessions WHERE session_id = $1', ids[1])
    lines = [json.loads(x) for x in await _lines(pg, target, page)]  # type: ignore[arg-type]
    assert [x["session"]["session_id"] for x in lines] == [ids[0], ids[2]]


async def test_export_then_erase_takes_a_session_without_any_timestamp(
    xsettings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    schema = xsettings.schema_for(agent_id)
    ids = await seed(xsettings.database_url, schema, agent_id, USER, 3)
    # a hand-altered table (Agno declares created_at NOT NULL): one session with neither time
    await pg.execute(f'ALTER TABLE "{schema}".agno_sessions ALTER COLUMN created_at DROP NOT NULL')
    await pg.execute(
        f'UPDATE "{schema}".agno_sessions SET created_at = NULL, updated_at = NULL WHERE session_id = $1', ids[0]
    )
    state = await _export(xsettings, agent_id=agent_id, user_id=USER, out="undated.jsonl", then_purge=True)
    assert state.status == "succeeded", state
    assert state.result["sessions"] == 3 and state.result["purge"]["sessions_deleted"] == 3
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = $1', USER) == 0
