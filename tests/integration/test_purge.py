"""purge_user_sessions end to end: real Postgres, real Redis, a real arq worker (burst mode)."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest
import redis.asyncio as aioredis

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.models import AgentPurgeResult
from sessionctl.jobs.targets import Target
from sessionctl.jobs.walk import Batches, walk_user
from sessionctl.logs import get_logger
from sessionctl.privacy import user_hmac
from sessionctl.producer import Producer
from tests.agno_seed import (
    agno_db,
    clone_sessions,
    seed,
    seed_indexed_user,
    seed_memory,
    seed_sessions,
    table_rows,
)
from tests.conftest import HASH_KEY, run_worker

USER = "alice-7f3e9c1d@example.com"
OTHER = "bob-2b8a@example.com"


async def _count(pg: asyncpg.Connection, schema: str, user: str) -> int:
    return int(await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = $1', user))


@pytest.mark.slow
async def test_purge_deletes_every_session_far_past_a_page_and_touches_nothing_else(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    other_agent = agent_id + "-other"
    other_schema = settings.schema_for(other_agent)
    db, odb = agno_db(settings.database_url, schema), agno_db(settings.database_url, other_schema)
    await seed_sessions(db, agent_id, USER, 5)
    await seed_sessions(db, agent_id, OTHER, 7)
    await seed_sessions(odb, other_agent, USER, 4)  # the same user at another agent: not this job's
    await db.close()
    await odb.close()
    await clone_sessions(pg, schema, f"{agent_id}-{USER}-s0", USER, 1200, "c")
    before_other_user = await table_rows(pg, schema)
    before_other_agent = await table_rows(pg, other_schema)
    assert await _count(pg, schema, USER) == 1205

    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        worker = await run_worker(settings)
        state = await producer.status(enq.job_id)

    assert worker.jobs_complete == 1 and worker.jobs_failed == 0
    assert state.status == "succeeded", state
    r = state.result
    assert r is not None
    assert r["sessions_deleted"] == 1205
    assert r["runs_deleted"] == 1205 * 2
    assert r["remaining"] == 0
    assert r["agents"][agent_id]["batches"] >= 3  # batch size 500: paged until none remained
    assert r["user_hmac"] == user_hmac(HASH_KEY.encode(), USER)
    assert await _count(pg, schema, USER) == 0
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_runs WHERE user_id = $1', USER) == 0

    # Other users of this agent, and the same user at another agent: untouched, row for row.
    after = await table_rows(pg, schema)
    for table, rows in before_other_user.items():
        kept = [row for row in rows if USER not in row]
        assert after[table] == kept, table
    assert await table_rows(pg, other_schema) == before_other_agent

    # The raw user id is nowhere in what Redis keeps about the job.
    r_ = aioredis.from_url(settings.redis_url)
    for key in await r_.keys("*"):
        value = await r_.dump(key)
        assert USER.encode() not in (value or b""), key
    await r_.aclose()


async def test_dry_run_counts_and_deletes_nothing(settings: Settings, pg: asyncpg.Connection, agent_id: str) -> None:
    schema = settings.schema_for(agent_id)
    db = agno_db(settings.database_url, schema)
    await seed_sessions(db, agent_id, USER, 6, runs=3, extras=True)
    await seed_memory(db, agent_id, USER, 2)
    await db.close()
    before = await table_rows(pg, schema)

    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, dry_run=True, memories=True)
        await run_worker(settings)
        state = await producer.status(enq.job_id)

    assert state.status == "dry_run"
    assert state.result is not None
    assert state.result["would_delete"] == {
        "sessions": 6,
        "runs": 18,
        "transcripts": 6,
        "tool_results": 6,
        "tool_result_payloads": 0,
        "memories": 2,
    }
    assert state.result["sessions_deleted"] == 0
    assert await table_rows(pg, schema) == before


async def test_memories_option_erases_the_users_memories_only(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    db = agno_db(settings.database_url, schema)
    await seed_sessions(db, agent_id, USER, 2)
    await seed_memory(db, agent_id, USER, 3)
    await seed_memory(db, agent_id, OTHER, 2)
    await db.close()

    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, memories=True)
        await run_worker(settings)
        state = await producer.status(enq.job_id)

    assert state.status == "succeeded"
    assert state.result is not None and state.result["memories_deleted"] == 3
    rows = await pg.fetch(f'SELECT user_id, count(*) AS n FROM "{schema}".agno_memories GROUP BY 1')
    assert {r["user_id"]: r["n"] for r in rows} == {OTHER: 2}


async def test_without_memories_option_memories_stay(settings: Settings, pg: asyncpg.Connection, agent_id: str) -> None:
    schema = settings.schema_for(agent_id)
    db = agno_db(settings.database_url, schema)
    await seed_sessions(db, agent_id, USER, 2)
    await seed_memory(db, agent_id, USER, 1)
    await db.close()
    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        await run_worker(settings)
        state = await producer.status(enq.job_id)
    assert state.status == "succeeded" and state.result is not None
    assert state.result["memories_deleted"] == 0
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_memories WHERE user_id = $1', USER) == 1


async def test_all_agents_purges_every_agent_schema(settings: Settings, pg: asyncpg.Connection, agent_id: str) -> None:
    USER = f"only-here-{agent_id}"
    agents = [f"{agent_id}-{i}" for i in range(3)]
    # a schema whose agno_sessions is not Agno's is skipped, not fatal
    await pg.execute(
        f'CREATE SCHEMA "{settings.schema_for(agent_id)}_fake"; '
        f'CREATE TABLE "{settings.schema_for(agent_id)}_fake".agno_sessions (id int)'
    )
    for a in agents:
        db = agno_db(settings.database_url, settings.schema_for(a))
        await seed_sessions(db, a, USER, 3)
        await seed_sessions(db, a, OTHER, 2)
        await db.close()

    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(all_agents=True, user_id=USER)
        await run_worker(settings)
        state = await producer.status(enq.job_id)

    assert state.status == "succeeded" and state.result is not None
    for a in agents:
        schema = settings.schema_for(a)
        assert state.result["agents"][schema]["sessions_deleted"] == 3
        assert await _count(pg, schema, USER) == 0
        assert await _count(pg, schema, OTHER) == 2
    assert state.result["sessions_deleted"] == 9
    assert settings.schema_for(agent_id) + "_fake" not in state.result["agents"]


async def test_unknown_agent_fails_permanently_without_retry(settings: Settings) -> None:
    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(agent_id="no-such-agent", user_id=USER, check_agent=False)
        worker = await run_worker(settings)
        state = await producer.status(enq.job_id)
    assert state.status == "failed"
    assert state.error is not None and state.error["type"] == "AgentNotFound"
    assert "no session storage" in state.error["message"]
    assert state.attempt == 1 and worker.jobs_retried == 0


async def test_all_agents_reaches_schemas_of_any_spelling(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    user = f"odd-{agent_id}"
    odd = [f"ag_{agent_id}-with-dash", f"Ägent_{agent_id[-6:]}", f"9{agent_id[-8:]}"]
    for i, schema in enumerate(odd):
        plain = f"{settings.schema_for(agent_id)}_{i}"
        await seed(settings.database_url, plain, "x", user, 3)
        await pg.execute(f'ALTER SCHEMA "{plain}" RENAME TO "{schema}"')  # Agno itself cannot write these names
    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(all_agents=True, user_id=user)
        await run_worker(settings)
        state = await producer.status(enq.job_id)
    assert state.status == "succeeded" and state.result is not None
    for schema in odd:
        assert state.result["agents"][schema]["sessions_deleted"] == 3
        assert await _count(pg, schema, user) == 0


async def test_an_unexpected_database_error_fails_without_quoting_the_user(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, capfd: pytest.CaptureFixture[str]
) -> None:
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, USER, 2)
    # a trigger whose error quotes the row it refuses, as Postgres messages can ("Key (user_id)=(…)")
    await pg.execute(
        f"""CREATE FUNCTION "{schema}".no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'refusing to delete the sessions of %', OLD.user_id; END $$;
            CREATE TRIGGER no_delete BEFORE DELETE ON "{schema}".agno_sessions
            FOR EACH ROW EXECUTE FUNCTION "{schema}".no_delete()"""
    )
    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        worker = await run_worker(settings)
        state = await producer.status(enq.job_id)
    assert state.status == "failed" and worker.jobs_retried == 0
    assert state.error is not None and state.error["type"] == "InternalError"
    assert "RaiseError" in state.error["message"] and "P0001" in state.error["message"]
    out, err = capfd.readouterr()
    assert USER not in out + err and USER not in state.error["message"]
    assert await _count(pg, schema, USER) == 2  # and nothing was half-deleted


async def test_a_table_that_is_not_agnos_is_refused_by_type(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    await pg.execute(
        f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".agno_sessions '
        "(session_id text primary key, session_type text, user_id int, created_at bigint)"
    )
    async with Producer(settings) as producer:
        with pytest.raises(NotImplementedError, match="user_id is integer"):
            await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)


async def _purge_logged(settings: Settings, agent_id: str, capfd: pytest.CaptureFixture[str]) -> tuple[dict, list]:
    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        await run_worker(settings)
        state = await producer.status(enq.job_id)
    assert state.status == "succeeded", state.error
    assert state.result is not None
    events = []
    for line in capfd.readouterr().err.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return state.result, events


@pytest.mark.parametrize("pool_size", [4, 1])
async def test_a_big_user_is_walked_by_two_connections_when_the_pool_has_one_free(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, capfd: pytest.CaptureFixture[str], pool_size: int
) -> None:
    """With the doctor's index, a user of many batches is walked in two slices at once (two
    Postgres backends share the cascade's CPU). The second connection is taken only if the pool
    has one free: with a pool of one, the walk goes alone instead of waiting."""
    schema = settings.schema_for(agent_id)
    db = agno_db(settings.database_url, schema)
    await seed_sessions(db, agent_id, USER, 3)
    await seed_sessions(db, agent_id, OTHER, 2)
    await db.close()
    await clone_sessions(pg, schema, f"{agent_id}-{USER}-s0", USER, 1200, "c")
    await store.create_index(pg, schema, store.NEEDED_INDEXES[0])
    before = await table_rows(pg, schema)
    small = settings.model_copy(
        update={"batch_size": 100, "purge_walkers": 2, "pool_size": pool_size, "log_format": "json"}
    )

    r, events = await _purge_logged(small, agent_id, capfd)

    walks = [e for e in events if e.get("event") == "purge.walk"]
    assert [(w["sessions"], w["walkers"]) for w in walks] == [(1203, 2 if pool_size > 1 else 1)]
    a = r["agents"][agent_id]
    assert (a["sessions_deleted"], a["runs_deleted"], r["remaining"]) == (1203, 1203 * 2, 0)
    # 1203 in slices of 601 and 602 take 7 batches of 100 each; alone, 13
    assert a["batches"] == (14 if pool_size > 1 else 13)
    assert await _count(pg, schema, USER) == 0
    after = await table_rows(pg, schema)
    for table, rows in before.items():
        assert after[table] == [row for row in rows if USER not in row], table


async def test_a_spare_connection_goes_back_to_a_job_waiting_for_one(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    """A big purge walks with two connections of a pool of two; a second job arriving meanwhile
    gets the spare after one batch and finishes while the big walk is still far from done (it
    does not wait for the walk: the spare goes back, and this job's own connection walks on)."""
    schema = settings.schema_for(agent_id)
    small_agent = agent_id + "-small"
    db, sdb = agno_db(settings.database_url, schema), agno_db(settings.database_url, settings.schema_for(small_agent))
    await seed_sessions(db, agent_id, USER, 1)
    await seed_sessions(sdb, small_agent, OTHER, 3)
    await db.close()
    await sdb.close()
    total = 12_000
    await clone_sessions(pg, schema, f"{agent_id}-{USER}-s0", USER, total - 1, "c")
    await store.create_index(pg, schema, store.NEEDED_INDEXES[0])
    s = settings.model_copy(update={"batch_size": 20, "purge_walkers": 2, "pool_size": 2, "max_jobs": 2})
    async with Producer(s) as producer:
        big = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        worker_task = asyncio.create_task(run_worker(s))
        deadline = time.monotonic() + 30
        while await _count(pg, schema, USER) > total - 200:  # the walk is under way, on both connections
            assert time.monotonic() < deadline, "the big purge did not start"
            await asyncio.sleep(0.01)
        small = await producer.purge_user_sessions(agent_id=small_agent, user_id=OTHER)
        while (state := await producer.status(small.job_id)).status != "succeeded":
            assert state.status in ("queued", "running"), state
            assert time.monotonic() < deadline, "the small purge did not finish"
            await asyncio.sleep(0.005)
        left_when_small_done = await _count(pg, schema, USER)
        await asyncio.wait_for(worker_task, 120)
        big_state = await producer.status(big.job_id)
    assert state.result is not None and state.result["sessions_deleted"] == 3
    assert big_state.status == "succeeded" and big_state.result is not None
    assert (big_state.result["sessions_deleted"], big_state.result["remaining"]) == (total, 0)
    # waiting for the whole walk would have left nothing (two equal slices end together)
    assert left_when_small_done > total // 4, left_when_small_done


async def test_a_walk_stops_a_batch_past_its_share_of_what_was_counted(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, databases: Databases
) -> None:
    """A writer racing the purge can keep adding sessions behind a walker: each slice stops a
    batch past its share of the count, and the rest is left to the recount and the next round
    (which bounds the rounds). Here 10 were counted and 100 are there."""
    schema = settings.schema_for(agent_id)
    await seed_indexed_user(settings.database_url, pg, schema, agent_id, USER, 100)
    await store.init_connection(pg)
    layout = await store.read_layout(pg, schema)
    assert layout is not None and layout.user_index
    s = settings.model_copy(update={"batch_size": 3, "purge_walkers": 2})
    ctx = JobContext(settings=s, databases=databases, hash_key=HASH_KEY.encode(), job_id="bound")
    res = AgentPurgeResult(agent_id=agent_id, schema_name=schema)
    log = get_logger("test")
    async with databases.connect(s.dsn) as conn:
        await walk_user(
            conn, ctx, Target(agent_id, s.dsn, layout), USER, 10, Batches(ctx, res, {}, log, "purge_user_sessions"), log
        )
    # slices cut at the 5th counted session, each bounded at 10 // 2 + 3: the first holds 5 and
    # is walked whole; the second stops after 3 batches of 3 (9 > 8)
    assert res.sessions_deleted == 5 + 9
    assert await _count(pg, schema, USER) == 100 - 14


async def test_a_job_arriving_while_a_spare_connection_opens_is_seen_waiting(
    settings: Settings, databases: Databases
) -> None:
    """asyncpg does not count a connection that is still opening in the pool's size: a job that
    arrives then must still be seen waiting (else the spare would be kept for a whole walk)."""
    dsn = settings.dsn
    assert databases.pool_size == 2
    spare_held = asyncio.Event()
    release = asyncio.Event()

    async def take_spare() -> bool:
        async with databases.spare(dsn) as spare:
            spare_held.set()
            await release.wait()
            return spare is not None

    async def second_job() -> None:
        async with databases.connect(dsn) as conn:
            assert await conn.fetchval("SELECT 1") == 1

    async with databases.connect(dsn):  # the purge's own connection
        spare = asyncio.create_task(take_spare())
        await asyncio.sleep(0)  # the spare is being opened now
        job = asyncio.create_task(second_job())
        await asyncio.sleep(0)
        assert databases.wanted(dsn)  # the job waits: the pool's two are the purge's
        await spare_held.wait()
        assert not job.done()
        release.set()  # the walker gives its spare back
        assert await spare
        await asyncio.wait_for(job, 5)
        assert not databases.wanted(dsn)
        async with databases.spare(dsn) as again:  # one held by the purge, one free again
            assert again is not None
