"""Bulk erasure: one request for many users, set-based, per-user results as HMACs, one receipt each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.errors import InvalidRequest
from sessionctl.privacy import user_hmac
from sessionctl.producer import Producer
from tests.agno_seed import seed
from tests.conftest import HASH_KEY, run_worker

SESSIONCTL = [sys.executable, "-m", "sessionctl.cli"]


async def _seed_users(pg: asyncpg.Connection, settings: Settings, agent_id: str, users: list[str], each: int) -> str:
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, "template-user", 1)
    # clone the Agno-written session (and its runs) for every user, in SQL, for volume
    await pg.execute(
        f"""INSERT INTO "{schema}".agno_sessions (session_id, session_type, agent_id, user_id, session_data,
                   metadata, created_at, updated_at)
            SELECT u || '-s' || g, s.session_type, s.agent_id, u, s.session_data, s.metadata, s.created_at + g,
                   s.updated_at + g
              FROM "{schema}".agno_sessions s, unnest($1::text[]) u, generate_series(1, $2) g
             WHERE s.user_id = 'template-user'""",
        users,
        each,
    )
    await pg.execute(
        f"""INSERT INTO "{schema}".agno_runs (run_id, session_id, run_type, agent_id, user_id, status, run_index,
                   run_data, created_at, updated_at)
            SELECT r.run_id || x.session_id, x.session_id, r.run_type, r.agent_id, x.user_id, r.status, r.run_index,
                   r.run_data, r.created_at, r.updated_at
              FROM "{schema}".agno_runs r, "{schema}".agno_sessions x
             WHERE r.user_id = 'template-user' AND x.user_id = ANY($1::text[])""",
        users,
    )
    return schema


@pytest.mark.slow
async def test_bulk_erasure_of_1000_users_deletes_exactly_theirs(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, tmp_path: Path, worker_env: dict[str, str]
) -> None:
    users = [f"bulk-{i:04d}@example.com" for i in range(1100)]
    schema = await _seed_users(pg, settings, agent_id, users, 3)
    chosen, kept = users[:1000], users[1000:]
    listing = tmp_path / "users.txt"
    listing.write_text("\n".join(chosen + chosen[:50] + ["", ""]) + "\n")  # repeats and empty lines

    res = subprocess.run(
        [*SESSIONCTL, "purge", "--agent", agent_id, "--users-file", str(listing), "--json"],
        env=worker_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "50 repeated user id(s) ignored" in res.stderr
    job_id = json.loads(res.stdout)["job_id"]
    await run_worker(settings)
    async with Producer(settings) as producer:
        state = await producer.status(job_id)
    assert state.status == "succeeded", state
    r = state.result
    assert r["users_count"] == 1000 and r["sessions_deleted"] == 3000 and r["remaining"] == 0
    assert r["runs_deleted"] == 3000 * 2
    key = HASH_KEY.encode()
    assert set(r["users"]) == {user_hmac(key, u) for u in chosen}
    assert all(v == {"sessions_deleted": 3, "remaining": 0} for v in r["users"].values())
    assert not any(u in json.dumps(r) for u in chosen[:10])  # HMACs only
    left = await pg.fetch(f'SELECT user_id, count(*) AS n FROM "{schema}".agno_sessions GROUP BY 1')
    assert {x["user_id"]: x["n"] for x in left} == {"template-user": 1, **{u: 3 for u in kept}}
    assert await pg.fetchval("SELECT count(*) FROM sessionctl.receipts WHERE job_id = $1", job_id) == 1000
    one = await pg.fetchrow(
        "SELECT counts, remaining, agents, stores, scope FROM sessionctl.receipts WHERE job_id = $1 AND user_hmac = $2",
        job_id,
        user_hmac(key, chosen[7]),
    )
    assert one is not None and one["remaining"] == 0
    assert json.loads(one["counts"]) == {"sessions": 3, "schemas_checked": 1}
    assert json.loads(one["agents"]) == {agent_id: schema}  # objects, not JSON strings in jsonb
    assert json.loads(one["stores"]) == {} and one["scope"] == "sessions"


async def test_bulk_erasure_without_the_index_takes_ids_exactly_as_written(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    """On Agno's own schema (no index: tuple ids read in one scan, sent back in batches as Postgres
    array literals) ids that array syntax quotes or escapes are erased exactly, and only they."""
    erased = ['quote"d', "back\\slash", "com,ma", "{braces}", "NULL", "null", "sp ace", "ünï", "a'b", "x" * 300]
    kept = ["NULL ", "Null", "{braces", "back\\\\slash", "quote", "comma"]
    schema = await _seed_users(pg, settings, agent_id, erased + kept, 3)
    async with Producer(settings) as producer:
        enq = await producer.purge_users(user_ids=erased, agent_id=agent_id, ambiguous_ids="keep")
        # batches of several users each, and more than one
        await run_worker(settings.model_copy(update={"batch_size": 4}))
        state = await producer.status(enq.job_id)
    assert state.status == "succeeded", state
    assert state.result["sessions_deleted"] == 30 and state.result["remaining"] == 0
    left = await pg.fetch(f'SELECT user_id, count(*) AS n FROM "{schema}".agno_sessions GROUP BY 1')
    assert {r["user_id"]: r["n"] for r in left} == {"template-user": 1, **dict.fromkeys(kept, 3)}


async def test_bulk_request_limits(settings: Settings) -> None:
    async with Producer(settings) as producer:
        with pytest.raises(InvalidRequest, match="at most 10000"):
            await producer.purge_users(user_ids=[f"u{i}" for i in range(10_001)], all_agents=True)
        with pytest.raises(InvalidRequest, match="user_ids"):
            await producer.purge_users(user_ids=[], all_agents=True)
        with pytest.raises(InvalidRequest, match="empty"):
            await producer.purge_users(user_ids=["ok", ""], all_agents=True)
        a = await producer.purge_users(user_ids=["b", "a", "a"], all_agents=True)
        b = await producer.purge_users(user_ids=["a", "b"], all_agents=True)
        assert a.job_id == b.job_id and b.collapsed  # the same set of users is the same request


async def test_bulk_dry_run_counts_all_users(settings: Settings, pg: asyncpg.Connection, agent_id: str) -> None:
    users = [f"dry-{i}" for i in range(20)]
    schema = await _seed_users(pg, settings, agent_id, users, 2)
    async with Producer(settings) as producer:
        enq = await producer.purge_users(user_ids=users, agent_id=agent_id, dry_run=True)
        await run_worker(settings)
        state = await producer.status(enq.job_id)
    assert state.status == "dry_run"
    assert state.result["would_delete"]["sessions"] == 40 and state.result["would_delete"]["runs"] == 80
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = ANY($1)', users) == 40


async def test_bulk_erasure_with_the_user_index_groups_small_users_and_walks_big_ones(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    small = [f"small-{i:02d}" for i in range(30)]
    schema = await _seed_users(pg, settings, agent_id, [*small, "kept-1", "kept-2"], 2)
    await _seed_users(pg, settings, agent_id, ["big-1", "big-2"], 25)
    await store.create_index(pg, schema, store.NEEDED_INDEXES[0])
    users = [*small, "big-1", "big-2", "absent"]
    settings = settings.model_copy(update={"batch_size": 10, "purge_walkers": 2})
    async with Producer(settings) as producer:
        enq = await producer.purge_users(user_ids=users, agent_id=agent_id)
        await run_worker(settings)
        state = await producer.status(enq.job_id)
    assert state.status == "succeeded", state
    r = state.result
    assert (r["sessions_deleted"], r["runs_deleted"], r["remaining"]) == (110, 220, 0)
    key = HASH_KEY.encode()
    per_user = {u: r["users"][user_hmac(key, u)]["sessions_deleted"] for u in users}
    assert per_user == {**dict.fromkeys(small, 2), "big-1": 25, "big-2": 25, "absent": 0}
    # 30 small users x 2 sessions go 5 to a batch (6 batches); each big user is walked in two
    # slices at once (12 and 13 sessions), each slice in 2 ranges of 10 or fewer
    assert r["agents"][agent_id]["batches"] == 6 + 4 + 4
    left = await pg.fetch(f'SELECT user_id, count(*) AS n FROM "{schema}".agno_sessions GROUP BY 1 ORDER BY 1')
    assert [(x["user_id"], x["n"]) for x in left] == [("kept-1", 2), ("kept-2", 2), ("template-user", 1)]
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_runs WHERE user_id <> ALL($1)', users) == 10
