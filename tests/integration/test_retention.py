"""Retention: the policy deletes exactly the sessions past the cutoff (to the second), per session
type, exporting first when asked; the cron runs once per tick across workers; an interrupted run
resumes; a repeated run is harmless."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from sessionctl.config import Settings
from sessionctl.producer import Producer
from tests.agno_seed import agno_db, clone_sessions, seed, seed_sessions
from tests.conftest import run_worker, run_workers_for

DAY = 86_400
AS_OF = 1_760_000_000  # in the past: a future as_of is refused
SESSIONCTL = [sys.executable, "-m", "sessionctl.cli"]


def _policy(tmp_path: Path, text: str) -> str:
    p = tmp_path / "retention.toml"
    p.write_text(text)
    return str(p)


async def _session(
    pg: asyncpg.Connection, schema: str, sid: str, created: int, updated: int | None, kind: str = "agent"
) -> None:
    await pg.execute(
        f'INSERT INTO "{schema}".agno_sessions (session_id, session_type, user_id, created_at, updated_at)'
        " VALUES ($1, $2, 'u', $3, $4)",
        sid,
        kind,
        created,
        updated,
    )


async def test_policy_deletes_exactly_what_is_past_the_cutoff_to_the_second(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, tmp_path: Path
) -> None:
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, "seed", 1, base_ts=AS_OF)  # creates Agno's tables (3.x layout)
    cutoff = AS_OF - 30 * DAY
    team_cutoff = AS_OF - 7 * DAY
    cases = {
        "by-update-before": (cutoff - 5000, cutoff - 1, True),  # last update one second before: expired
        "by-update-at": (cutoff - 5000, cutoff, False),  # exactly at the cutoff: kept
        "by-update-after": (cutoff - 5000, cutoff + 1, False),
        "created-before": (cutoff - 1, None, True),  # never updated: falls back to creation
        "created-at": (cutoff, None, False),
        "old-but-updated": (cutoff - 99 * DAY, AS_OF - 5, False),
    }
    for sid, (created, updated, _) in cases.items():
        await _session(pg, schema, sid, created, updated)
    await _session(pg, schema, "team-before", team_cutoff - 1, None, "team")  # a shorter age for teams
    await _session(pg, schema, "team-at", team_cutoff, None, "team")
    await pg.execute(
        f"""INSERT INTO "{schema}".agno_runs (run_id, session_id, run_type, user_id, run_data, created_at)
            VALUES ('r1', 'by-update-before', 'agent', 'u', '{{}}', 1), ('r2', 'by-update-at', 'agent', 'u', '{{}}', 1)"""
    )
    s = settings.model_copy(
        update={
            "retention_file": _policy(tmp_path, "[default]\nmax_age_days = 30\n[default.session_types]\nteam = 7\n"),
            "export_dir": str(tmp_path / "exports"),
        }
    )
    async with Producer(s) as producer:
        # One after the other: queued together, one worker runs both at once, and the dry run may
        # count after the run deleted (seen once in CI: 2 would-deletes for 3).
        dry = await producer.run_retention(agent_id=agent_id, dry_run=True, as_of=AS_OF)
        await run_worker(s)
        enq = await producer.run_retention(agent_id=agent_id, as_of=AS_OF)
        await run_worker(s)
        dry_state, state = await producer.status(dry.job_id), await producer.status(enq.job_id)
        again = await producer.run_retention(agent_id=agent_id, as_of=AS_OF)
        await run_worker(s)
        again_state = await producer.status(again.job_id)

    expected_gone = {sid for sid, (_, _, gone) in cases.items() if gone} | {"team-before"}
    assert dry_state.status == "dry_run"
    assert sum(b["would_delete"] for b in dry_state.result["agents"][agent_id]["buckets"]) == len(expected_gone)
    assert state.status == "succeeded", state
    assert state.result["sessions_deleted"] == len(expected_gone) and state.result["remaining"] == 0
    left = {r["session_id"] for r in await pg.fetch(f'SELECT session_id FROM "{schema}".agno_sessions')}
    assert not left & expected_gone
    assert {"by-update-at", "by-update-after", "created-at", "old-but-updated", "team-at"} <= left
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_runs WHERE run_id = $1', "r1") == 0  # with its runs
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_runs WHERE run_id = $1', "r2") == 1
    assert again_state.status == "succeeded" and again_state.result["sessions_deleted"] == 0  # harmless repeat


async def test_export_before_delete_and_agent_overrides(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, tmp_path: Path
) -> None:
    keep, short = f"{agent_id}-keep", f"{agent_id}-short"
    for a in (keep, short):
        db = agno_db(settings.database_url, settings.schema_for(a))
        await seed_sessions(db, a, "u", 5, base_ts=AS_OF - 200 * DAY)  # all very old
        await db.close()
    policy = (
        "[default]\nmax_age_days = 365\n"
        f'[agents."{keep}"]\nkeep = true\n'
        f'[agents."{agent_id}-sh*"]\nmax_age_days = 100\nexport_before_delete = true\n'
    )
    s = settings.model_copy(update={"retention_file": _policy(tmp_path, policy), "export_dir": str(tmp_path / "ex")})
    async with Producer(s) as producer:
        enq = await producer.run_retention(as_of=AS_OF)
        await run_worker(s)
        state = await producer.status(enq.job_id)
    assert state.status == "succeeded", state
    agents = state.result["agents"]
    assert agents[settings.schema_for(keep)]["policy"] is None
    short_report = agents[settings.schema_for(short)]
    assert short_report["policy"] == f"agents.{agent_id}-sh*" and short_report["deleted"] == 5
    export = short_report["buckets"][0]["export"]
    assert export["sessions"] == 5 and Path(export["path"]).exists()
    assert (
        await asyncio.to_thread(subprocess.run, ["gzip", "-dc", export["path"]], capture_output=True, check=True)
    ).stdout.count(b"\n") == 5
    assert await pg.fetchval(f'SELECT count(*) FROM "{settings.schema_for(keep)}".agno_sessions') == 5
    assert await pg.fetchval(f'SELECT count(*) FROM "{settings.schema_for(short)}".agno_sessions') == 0


async def test_the_cron_runs_once_per_tick_across_two_workers(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, tmp_path: Path
) -> None:
    db = agno_db(settings.database_url, settings.schema_for(agent_id))
    await seed_sessions(db, agent_id, "u", 3, base_ts=1_000_000_000)  # ancient
    await db.close()
    s = settings.model_copy(
        update={
            "retention_file": _policy(tmp_path, "[default]\nmax_age_days = 30\n"),
            "retention_schedule": "*/2 * *",  # every two seconds (second minute hour)
        }
    )
    await run_workers_for(s, 5.5)
    async with Producer(s) as producer:
        jobs = await producer.jobs(kind="purge_expired_sessions", limit=100)
    ticks = [j["requested_by"] for j in jobs]
    assert len(jobs) >= 2, jobs  # ticks happened…
    assert all(t == "cron" for t in ticks)
    assert len({j["job_id"].rsplit(":", 1)[0] for j in jobs}) == len(jobs)  # …and each tick made one job
    assert sum(1 for j in jobs if j["state"] == "succeeded") >= 1
    assert await pg.fetchval(f'SELECT count(*) FROM "{settings.schema_for(agent_id)}".agno_sessions') == 0


@pytest.mark.slow
def test_an_interrupted_cleanup_resumes(
    settings: Settings, agent_id: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    schema = settings.schema_for(agent_id)

    async def seed() -> None:
        db = agno_db(settings.database_url, schema)
        await seed_sessions(db, agent_id, "u", 1, base_ts=1_000_000_000)
        await seed_sessions(db, agent_id, "fresh", 3)  # recent: never touched
        await db.close()
        c = await asyncpg.connect(settings.database_url)
        await clone_sessions(c, schema, f"{agent_id}-u-s0", "u", 20_000, "old")
        await c.close()

    asyncio.run(seed())
    env = {
        **worker_env,
        "SESSIONCTL_RETENTION_FILE": _policy(tmp_path, "[default]\nmax_age_days = 30\n"),
        "SESSIONCTL_BATCH_SIZE": "100",
        "SESSIONCTL_RETENTION_PAUSE_MS": "5",
        "SESSIONCTL_LEASE_TTL": "3",
        "SESSIONCTL_PROGRESS_INTERVAL": "0.05",
    }
    out = subprocess.run(
        [*SESSIONCTL, "retention", "run", "--agent", agent_id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = json.loads(out.stdout)["job_id"]
    with (tmp_path / "w1.log").open("w") as log:
        w1 = subprocess.Popen([*SESSIONCTL, "worker"], env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while True:
            st = json.loads(
                subprocess.run(
                    [*SESSIONCTL, "status", job_id, "--json"], env=env, capture_output=True, text=True
                ).stdout
            )
            if (st.get("progress") or {}).get("processed", 0) >= 2000:
                break
            assert time.monotonic() < deadline, st
            time.sleep(0.05)
        os.kill(w1.pid, signal.SIGKILL)
        w1.wait(10)
    w2 = subprocess.run([*SESSIONCTL, "worker", "--burst"], env=env, capture_output=True, text=True, timeout=180)
    assert w2.returncode == 0, w2.stderr[-2000:]
    st = json.loads(
        subprocess.run([*SESSIONCTL, "status", job_id, "--json"], env=env, capture_output=True, text=True).stdout
    )
    assert st["status"] == "succeeded" and st["attempt"] == 2 and st["result"]["remaining"] == 0

    async def left() -> dict[str, int]:
        c = await asyncpg.connect(settings.database_url)
        rows = await c.fetch(f'SELECT user_id, count(*) AS n FROM "{schema}".agno_sessions GROUP BY 1')
        await c.close()
        return {r["user_id"]: r["n"] for r in rows}

    assert asyncio.run(left()) == {"fresh": 3}


def test_retention_cli_show_and_bad_policy(worker_env: dict[str, str], tmp_path: Path, settings: Settings) -> None:
    missing = subprocess.run([*SESSIONCTL, "retention", "run"], env=worker_env, capture_output=True, text=True)
    assert missing.returncode == 2 and "SESSIONCTL_RETENTION_FILE" in missing.stderr
    bad = {**worker_env, "SESSIONCTL_RETENTION_FILE": _policy(tmp_path, "[default]\nmax_age_days = -3\n")}
    res = subprocess.run([*SESSIONCTL, "retention", "show"], env=bad, capture_output=True, text=True)
    assert res.returncode == 2 and "max_age_days" in res.stderr and "Traceback" not in res.stderr
    good = {**worker_env, "SESSIONCTL_RETENTION_FILE": _policy(tmp_path, "[default]\nmax_age_days = 30\n")}
    res = subprocess.run([*SESSIONCTL, "retention", "show", "--json"], env=good, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "agents" in json.loads(res.stdout)


async def test_items_beyond_sessions_go_by_their_own_time_traces_with_their_spans(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, tmp_path: Path
) -> None:
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, "u1", 1)
    old, new = int(time.time()) - 100 * 86_400, int(time.time()) - 86_400
    await pg.execute(
        f'CREATE TABLE "{schema}".agno_traces (trace_id text PRIMARY KEY, user_id text, created_at text NOT NULL);'
        f'CREATE TABLE "{schema}".agno_spans (span_id text PRIMARY KEY, trace_id text NOT NULL);'
        f'CREATE TABLE "{schema}".agno_eval_runs (run_id text PRIMARY KEY, user_id text, created_at bigint NOT NULL,'
        " updated_at bigint)"
    )
    for i, at in enumerate((old, new)):  # Agno's layouts: ISO text for traces, epoch seconds for evals
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        await pg.execute(f'INSERT INTO "{schema}".agno_traces VALUES ($1, $2, $3)', f"t{i}", "u1", iso)
        await pg.execute(f'INSERT INTO "{schema}".agno_spans VALUES ($1, $2), ($3, $2)', f"s{i}a", f"t{i}", f"s{i}b")
        await pg.execute(f'INSERT INTO "{schema}".agno_eval_runs VALUES ($1, $2, $3, NULL)', f"e{i}", "u1", at)
    policy = f'[agents."{agent_id}"]\nkeep = false\n[agents."{agent_id}".items]\ntraces = 30\nevals = 30\n'
    s = settings.model_copy(update={"retention_file": _policy(tmp_path, policy)})
    async with Producer(s) as producer:
        dry = await producer.run_retention(agent_id=agent_id, dry_run=True)
        await run_worker(s)
        enq = await producer.run_retention(agent_id=agent_id)
        await run_worker(s)
        dry_state, state = await producer.status(dry.job_id), await producer.status(enq.job_id)
    assert dry_state.result["agents"][agent_id]["items"] == {
        "evals": {"would_delete": 1, "remaining": 1}, "traces": {"would_delete": 1, "remaining": 1}
    }  # fmt: skip
    assert state.status == "succeeded", state
    assert state.result["agents"][agent_id]["items"] == {"evals": {"deleted": 1, "remaining": 0}, "traces": {"deleted": 1, "remaining": 0}}
    assert [r["trace_id"] for r in await pg.fetch(f'SELECT trace_id FROM "{schema}".agno_traces')] == ["t1"]
    assert {r["trace_id"] for r in await pg.fetch(f'SELECT trace_id FROM "{schema}".agno_spans')} == {"t1"}  # with its spans
    assert [r["run_id"] for r in await pg.fetch(f'SELECT run_id FROM "{schema}".agno_eval_runs')] == ["e1"]


async def test_a_person_under_legal_hold_keeps_every_row_through_retention(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, tmp_path: Path
) -> None:
    """Two people with expired sessions, memories, traces and evals at one agent, one under a legal
    hold: retention (exporting first) takes the free one's and keeps every row of the held one; a
    session of no user still expires; the result says one person was held."""
    from sessionctl.privacy import user_hmac
    from sessionctl.store import legal_holds, migrations
    from tests.agno_seed import seed_memory

    schema = settings.schema_for(agent_id)
    held, free = f"held-{agent_id}", f"free-{agent_id}"
    old = AS_OF - 200 * DAY
    db = agno_db(settings.database_url, schema)
    for user in (held, free):
        await seed_sessions(db, agent_id, user, 2, base_ts=old)
        await seed_memory(db, agent_id, user)
    await db.close()
    await _session(pg, schema, "nobody-old", old, None)
    await pg.execute(f'UPDATE "{schema}".agno_sessions SET user_id = NULL WHERE session_id = $1', "nobody-old")
    await pg.execute(f'UPDATE "{schema}".agno_memories SET created_at = $1, updated_at = $1', old)
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(old))
    await pg.execute(
        f'CREATE TABLE "{schema}".agno_traces (trace_id text PRIMARY KEY, user_id text, created_at text NOT NULL);'
        f'CREATE TABLE "{schema}".agno_spans (span_id text PRIMARY KEY, trace_id text NOT NULL);'
        f'CREATE TABLE "{schema}".agno_eval_runs (run_id text PRIMARY KEY, user_id text, created_at bigint NOT NULL,'
        " updated_at bigint)"
    )
    for user in (held, free):
        await pg.execute(f'INSERT INTO "{schema}".agno_traces VALUES ($1, $1, $2)', user, iso)
        await pg.execute(f'INSERT INTO "{schema}".agno_spans VALUES ($1, $1)', user)
        await pg.execute(f'INSERT INTO "{schema}".agno_eval_runs VALUES ($1, $1, $2, NULL)', user, old)

    async def rows_of(user: str) -> dict[str, int]:
        s = f'"{schema}".agno_sessions WHERE user_id = $1'
        return {
            "sessions": await pg.fetchval(f"SELECT count(*) FROM {s}", user),
            "runs": await pg.fetchval(
                f'SELECT count(*) FROM "{schema}".agno_runs WHERE session_id IN (SELECT session_id FROM {s})', user
            ),
            "memories": await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_memories WHERE user_id = $1', user),
            "traces": await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_traces WHERE user_id = $1', user),
            "spans": await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_spans WHERE trace_id = $1', user),
            "evals": await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_eval_runs WHERE user_id = $1', user),
        }

    before = await rows_of(held)
    assert before == await rows_of(free) and before["sessions"] == 2 and before["runs"] == 4
    await migrations.migrate(pg)
    person = user_hmac(settings.hash_key_bytes, held)
    sealed = legal_holds.seal(settings.hash_key_bytes, person, held)
    await legal_holds.place(pg, person, sealed, "matter 2026-114", "test")
    policy = (
        "[default]\nmax_age_days = 30\nexport_before_delete = true\n"
        "[default.items]\nmemories = 30\ntraces = 30\nevals = 30\n"
    )
    s = settings.model_copy(update={"retention_file": _policy(tmp_path, policy), "export_dir": str(tmp_path / "ex")})
    try:
        async with Producer(s) as producer:
            dry = await producer.run_retention(agent_id=agent_id, dry_run=True, as_of=AS_OF)
            await run_worker(s)
            enq = await producer.run_retention(agent_id=agent_id, as_of=AS_OF)
            await run_worker(s)
            dry_state, state = await producer.status(dry.job_id), await producer.status(enq.job_id)
    finally:
        await legal_holds.release(pg, person, "test")
    assert dry_state.result["held"] == 1
    assert dry_state.result["agents"][agent_id]["buckets"][0]["would_delete"] == 3  # the free one's two, nobody's
    assert state.status == "succeeded", state
    result = state.result
    assert result["held"] == 1 and result["sessions_deleted"] == 3 and result["remaining"] == 0
    assert result["agents"][agent_id]["items"] == {
        "evals": {"deleted": 1, "remaining": 0},
        "memories": {"deleted": 1, "remaining": 0},
        "traces": {"deleted": 1, "remaining": 0},
    }
    assert await rows_of(held) == before  # every row of the held person
    assert set((await rows_of(free)).values()) == {0}
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE session_id = $1', "nobody-old") == 0
    export = result["agents"][agent_id]["buckets"][0]["export"]
    unzipped = await asyncio.to_thread(subprocess.run, ["gzip", "-dc", export["path"]], capture_output=True, check=True)
    lines = unzipped.stdout
    assert export["sessions"] == 3 and held.encode() not in lines and free.encode() in lines  # nor in the export
    assert held not in json.dumps(result) and free not in json.dumps(result)  # HMACs at most
