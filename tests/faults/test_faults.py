"""Postgres going away mid-purge: the job retries, and no success is reported while rows remain."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from asyncpg.transaction import Transaction

from sessionctl.config import Settings
from sessionctl.producer import Producer
from tests.agno_seed import clone_sessions, seed, seed_indexed_user
from tests.conftest import PG_ADMIN_URL, _host_port, run_worker
from tests.proxy import CuttableProxy

USER = "carol-5d1f@example.com"


@pytest.mark.slow
async def test_postgres_lost_mid_purge_is_retried_and_never_reported_as_success(
    settings: Settings, pg: asyncpg.Connection, pg_database: str, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, USER, 1)
    await clone_sessions(pg, schema, f"{agent_id}-{USER}-s0", USER, 4000, "c")
    total = 4001

    proxy = await CuttableProxy(*_host_port(PG_ADMIN_URL)).start()
    job_settings = settings.model_copy(
        update={
            "database_url": proxy.url(pg_database.rsplit("/", 1)[1]),
            "batch_size": 50,
            "max_tries": 30,
            "retry_base_delay": 0.2,
        }
    )
    async with Producer(job_settings) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        worker_task = asyncio.create_task(run_worker(job_settings))

        # cut Postgres off once the purge is under way
        deadline = time.monotonic() + 60
        while await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id=$1', USER) > total - 500:
            assert time.monotonic() < deadline, "the purge never started"
            await asyncio.sleep(0.005)
        proxy.cut()
        seen = set()
        cut_until = time.monotonic() + 2.0
        while time.monotonic() < cut_until:
            state = await producer.status(enq.job_id)
            seen.add(state.status)
            assert state.status not in ("succeeded", "dry_run", "failed"), state
            await asyncio.sleep(0.05)
        remaining_while_down = await pg.fetchval(
            f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id=$1', USER
        )
        assert remaining_while_down > 0
        assert seen & {"deferred", "queued", "running"}

        proxy.restore()
        worker = await asyncio.wait_for(worker_task, 120)
        state = await producer.status(enq.job_id)
    await proxy.close()

    assert worker.jobs_retried >= 1
    assert state.status == "succeeded", state
    assert state.attempt is not None and state.attempt >= 2
    assert state.result is not None and state.result["remaining"] == 0
    # the last try deleted exactly what the cut left: the batch in flight was rolled back, not half-done
    assert state.result["sessions_deleted"] == remaining_while_down
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id=$1', USER) == 0


async def test_postgres_down_for_good_fails_the_job_after_bounded_tries(
    settings: Settings, agent_id: str, pg: asyncpg.Connection
) -> None:
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, USER, 3)
    proxy = await CuttableProxy(*_host_port(PG_ADMIN_URL)).start()
    proxy.cut()
    down = settings.model_copy(
        update={
            "database_url": f"postgresql://postgres@127.0.0.1:{proxy.port}/x",
            "max_tries": 3,
            "retry_base_delay": 0.02,
        }
    )
    async with Producer(down) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, check_agent=False)
        worker = await run_worker(down)
        state = await producer.status(enq.job_id)
    await proxy.close()
    assert state.status == "failed"
    assert state.error is not None and state.error["type"] == "DatabaseUnavailable"
    assert worker.jobs_retried == 2 and state.attempt == 3
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id=$1', USER) == 3


# Two walkers on batches of 50, quick retries: the settings of the walker fault tests.
WALKING = {"batch_size": 50, "purge_walkers": 2, "max_tries": 5, "retry_base_delay": 0.2}


async def _lock_sessions(
    pg_database: str, schema: str, session_ids: list[str]
) -> tuple[asyncpg.Connection, Transaction]:
    """Hold row locks on these sessions (as a slow writer would) until the transaction ends."""
    locker = await asyncpg.connect(pg_database)
    lock = locker.transaction()
    await lock.start()
    await locker.execute(f'SELECT 1 FROM "{schema}".agno_sessions WHERE session_id = ANY($1) FOR UPDATE', session_ids)
    return locker, lock


async def test_two_walkers_run_at_once_and_one_lost_cancels_the_other_and_the_job_retries(
    settings: Settings, pg: asyncpg.Connection, pg_database: str, agent_id: str
) -> None:
    """A user walked in two slices: while a lock holds the first slice's walker, the second walks
    its whole slice (they run at once). Then the blocked walker's backend is killed: the job fails
    that try as a database outage (not an ExceptionGroup the retry policy would not know), is
    retried, and completes with nothing left."""
    schema = settings.schema_for(agent_id)
    total = 4001
    order = await seed_indexed_user(settings.database_url, pg, schema, agent_id, USER, total)
    await seed(settings.database_url, schema, agent_id, "dave", 2)
    job_settings = settings.model_copy(update=WALKING)
    locker, lock = await _lock_sessions(pg_database, schema, [order[10]])

    async def count() -> int:
        return int(await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id=$1', USER))

    async with Producer(job_settings) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        worker_task = asyncio.create_task(run_worker(job_settings))
        try:
            # the first slice's walker waits on the lock at its first batch; the second slice goes
            deadline = time.monotonic() + 30
            while await count() > total - total // 2:
                assert time.monotonic() < deadline, (
                    f"the second slice did not walk while the first waited: {await count()}"
                )
                await asyncio.sleep(0.02)
            blocked = await pg.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%pick AS MATERIALIZED%'"
            )
            assert blocked is not None
            assert await count() > total // 2 - 50  # the first slice's first batch has not gone
            await pg.execute("SELECT pg_terminate_backend($1)", blocked)
        finally:
            await lock.rollback()
            await locker.close()
        worker = await asyncio.wait_for(worker_task, 120)
        state = await producer.status(enq.job_id)

    assert worker.jobs_retried >= 1
    assert state.status == "succeeded", state
    assert state.attempt is not None and state.attempt >= 2
    assert state.result is not None and state.result["remaining"] == 0
    assert await count() == 0
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = $1', "dave") == 2


async def test_when_one_walker_is_lost_the_other_is_cancelled_at_once(
    settings: Settings, pg: asyncpg.Connection, pg_database: str, agent_id: str
) -> None:
    """Both slices' walkers wait on locks; one walker's backend is killed. The other is cancelled
    (its batch rolled back) and the try ends at once, though its lock is still held: it is not
    left running beside the retry, on a connection the pool believes free."""
    schema = settings.schema_for(agent_id)
    order = await seed_indexed_user(settings.database_url, pg, schema, agent_id, USER, 1000)
    # the retry waits 1.5 s at least: time to look at the survivor before the retry starts
    job_settings = settings.model_copy(update={**WALKING, "retry_base_delay": 3.0})
    # one session near the start of each slice (the slices are [0, 500) and [500, 1000))
    locker, lock = await _lock_sessions(pg_database, schema, [order[10], order[510]])
    waiting = (
        "SELECT array_agg(pid) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND query LIKE '%pick AS MATERIALIZED%'"
    )
    async with Producer(job_settings) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        worker_task = asyncio.create_task(run_worker(job_settings))
        try:
            deadline = time.monotonic() + 30
            while len(await pg.fetchval(waiting) or []) < 2:
                assert time.monotonic() < deadline, "the two walkers did not both reach their locks"
                await asyncio.sleep(0.02)
            first, second = sorted(await pg.fetchval(waiting))
            await pg.execute("SELECT pg_terminate_backend($1)", first)
            deadline = time.monotonic() + 10
            while (state := await producer.status(enq.job_id)).status != "deferred":
                assert time.monotonic() < deadline, f"the first try did not end: {state}"
                await asyncio.sleep(0.02)
            # the survivor's query was cancelled: that backend waits on no lock any more
            assert second not in (await pg.fetchval(waiting) or [])
        finally:
            await lock.rollback()
            await locker.close()
        await asyncio.wait_for(worker_task, 120)
        state = await producer.status(enq.job_id)
    assert state.status == "succeeded", state
    assert state.result is not None and state.result["remaining"] == 0
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = $1', USER) == 0
