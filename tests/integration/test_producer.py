"""Deterministic job ids: duplicates collapse while a job is queued or running; a finished job
(succeeded or failed) runs again when asked again."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from sessionctl.config import Settings
from sessionctl.errors import AgentNotFound
from sessionctl.producer import Producer
from sessionctl.worker.queue import wake_key
from sessionctl.worker.settings import create
from tests.agno_seed import seed
from tests.conftest import run_worker
from tests.service_helpers import _stop

USER = "dave-91c2@example.com"


async def test_concurrent_duplicates_collapse_into_one_execution(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 5)
    producers = [Producer(settings) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *[producers[i % 4].purge_user_sessions(agent_id=agent_id, user_id=USER) for i in range(100)]
        )
        assert len({r.job_id for r in results}) == 1
        assert sum(not r.collapsed for r in results) == 1
        worker = await run_worker(settings)
        assert worker.jobs_complete == 1  # exactly one execution
        state = await producers[0].status(results[0].job_id)
        assert state.status == "succeeded" and state.result is not None
        assert state.result["sessions_deleted"] == 5

        # finished: asking again runs again (new sessions may have arrived)
        await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 2, prefix="late")
        again = await producers[1].purge_user_sessions(agent_id=agent_id, user_id=USER)
        assert not again.collapsed and again.job_id != results[0].job_id
        await run_worker(settings)
        state = await producers[1].status(again.job_id)
        assert state.status == "succeeded" and state.result is not None
        assert state.result["sessions_deleted"] == 2
    finally:
        for p in producers:
            await p.close()


async def test_a_failed_erasure_is_retried_by_asking_again(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    async with Producer(settings) as producer:
        first = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, check_agent=False)
        await run_worker(settings)
        assert (await producer.status(first.job_id)).status == "failed"  # no storage yet
        await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 3)
        second = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        assert not second.collapsed and second.job_id != first.job_id
        await run_worker(settings)
        state = await producer.status(second.job_id)
    assert state.status == "succeeded" and state.result is not None and state.result["sessions_deleted"] == 3


async def test_unknown_agent_is_refused_by_the_producer(settings: Settings) -> None:
    async with Producer(settings) as producer:
        with pytest.raises(AgentNotFound) as info:
            await producer.purge_user_sessions(agent_id="nobody-here", user_id=USER)
        assert isinstance(info.value, LookupError)
        redis = await producer.redis()
        assert await redis.zcard(settings.queue_name) == 0


async def test_a_job_and_its_index_line_are_written_at_once_and_never_twice(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    """Enqueueing is one script in Redis: arq's job (with arq's own expiry, scored in the queue by
    its enqueue time) and sessionctl's index line together; an id arq still holds writes neither."""
    from arq.constants import job_key_prefix

    from sessionctl.privacy import user_hmac

    await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 1)
    async with Producer(settings) as producer:
        redis = await producer.redis()
        payload = {"user_id": USER, "agent_id": agent_id, "requested_by": "ops"}
        first = await producer.enqueue_as("purge_user_sessions", payload, f"{settings.queue_name}:by-hand:1")
        again = await producer.enqueue_as("purge_user_sessions", payload, f"{settings.queue_name}:by-hand:1")
        assert not first.collapsed and again.collapsed
        ttl_ms = await redis.pttl(job_key_prefix + first.job_id)
        assert 0 < ttl_ms <= redis.expires_extra_ms
        assert await redis.zscore(settings.queue_name, first.job_id) is not None
        listed = await producer.index().list(limit=10)
        assert [j["job_id"] for j in listed] == [first.job_id]  # one line, not two
        line = listed[0]
        assert (line["kind"], line["target"], line["state"], line["requested_by"]) == (
            "purge_user_sessions",
            agent_id,
            "queued",
            "ops",
        )
        assert line["user_hmac"] == user_hmac(settings.hash_key_bytes, USER)
        raw = await redis.hgetall(producer.index().meta_key(first.job_id))
        assert USER not in str(raw)
        assert int(raw[b"enqueued_at"]) > 0 and json.loads(raw[b"request"])["agent_id"] == agent_id  # as written
        wake = wake_key(settings.queue_name)  # one wake-up token, however many jobs: a worker polls once for all
        assert await redis.llen(wake) == 1 and 0 < await redis.pttl(wake) <= 60_000
        await run_worker(settings)
        state = await producer.status(first.job_id)
    assert state.status == "succeeded" and state.result is not None and state.result["sessions_deleted"] == 1


async def _as_acl_user(settings: Settings, private_redis: str, user: str, denied: str) -> Settings:
    """Settings that reach this test's own Redis as ``user``, whose ACL allows everything but ``denied``."""
    import redis.asyncio as aioredis

    admin = aioredis.from_url(private_redis)
    await admin.execute_command("ACL", "SETUSER", user, "on", "nopass", "~*", "&*", "+@all", denied)
    await admin.aclose()
    host_port = private_redis.removeprefix("redis://").split("/")[0]
    return settings.model_copy(update={"redis_url": f"redis://{user}@{host_port}/0"})


async def test_a_redis_whose_acl_refuses_scripts_still_gets_the_job_and_its_index_line(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, private_redis: str
) -> None:
    """A real Redis whose ACL denies scripting (``-@scripting``): enqueueing falls back to arq's own
    enqueue and the index's pipeline; the job runs and is listed once."""
    s = await _as_acl_user(settings, private_redis, "noscripts", "-@scripting")
    await seed(s.database_url, s.schema_for(agent_id), agent_id, USER, 2)
    async with Producer(s) as producer:
        first = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        again = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
        assert not first.collapsed and again.collapsed and again.job_id == first.job_id
        assert [j["job_id"] for j in await producer.index().list(limit=10)] == [first.job_id]
        await run_worker(s)
        state = await producer.status(first.job_id)
    assert state.status == "succeeded" and state.result is not None and state.result["sessions_deleted"] == 2


async def test_an_index_line_the_script_cannot_read_writes_no_job(settings: Settings) -> None:
    """The enqueue script reads the index line before it writes anything: Redis does not roll back
    a script that fails half way, and a job without its line would be queued unseen."""
    from arq.constants import job_key_prefix
    from redis.exceptions import ResponseError

    async with Producer(settings) as producer:
        queue = await producer.queue()
        job_id = f"{settings.queue_name}:by-hand:unreadable"
        own = f"{queue.name}:unreadable"  # keys of this test's queue only
        keys = [job_key_prefix + job_id, f"{own}:result", queue.name, f"{own}:seq", f"{own}:meta", f"{own}:index"]
        keys.append(f"{own}:wake")
        with pytest.raises(ResponseError):
            await queue._enqueue_script(keys=keys, args=[b"{}", 1000, 1, job_id, 60, 10, "{not json"])
        assert await queue.redis.exists(job_key_prefix + job_id, queue.name, f"{own}:seq") == 0


async def _picked_up_in(s: Settings, agent_id: str, poll_delay: float) -> tuple[float, bool]:
    """Seconds from enqueue to the job's end with a running worker that polls every ``poll_delay``
    (it is waiting between two polls when the job comes), and whether it waited on the wake-up list."""
    w = create(s, poll_delay=poll_delay, handle_signals=False)
    task = asyncio.create_task(w.main())
    try:
        await asyncio.sleep(0.5)  # started, polled once, now waiting for the next poll
        async with Producer(s) as producer:
            loop = asyncio.get_running_loop()
            t = loop.time()
            enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER)
            state = await producer.wait(enq.job_id, poll=0.02, timeout=2 * poll_delay)
            took = loop.time() - t
        assert state.status == "succeeded", state
        return took, w._wake is not None and w._wake.blocking
    finally:
        await _stop(w)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_waiting_worker_takes_a_job_when_it_is_enqueued_not_at_its_next_poll(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    """Between two polls a worker blocks on the queue's wake-up list, which the enqueue script
    pushes to: a job is picked up at once, not up to a poll delay later (here 5 s)."""
    await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 1)
    took, blocking = await _picked_up_in(settings, agent_id, poll_delay=5.0)
    assert blocking and took < 2.0, took


async def test_a_redis_that_refuses_blpop_leaves_the_worker_polling(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, private_redis: str
) -> None:
    """An ACL without BLPOP: the worker sleeps its poll delay between polls, as arq does, and still
    runs every job."""
    s = await _as_acl_user(settings, private_redis, "noblock", "-blpop")
    await seed(s.database_url, s.schema_for(agent_id), agent_id, USER, 1)
    took, blocking = await _picked_up_in(s, agent_id, poll_delay=1.0)
    assert not blocking and took < 2.0, took


async def test_polling_a_job_reads_its_request_once(settings: Settings, pg: asyncpg.Connection, agent_id: str) -> None:
    """A caller waiting for a job asks its state again and again: the job's stored request (a bulk
    erasure's 10,000 user ids) is read for its enqueue time once, not at every poll."""
    from arq.constants import job_key_prefix

    await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 1)
    async with Producer(settings) as producer:
        enq = await producer.purge_users(user_ids=[f"u-{i}" for i in range(2000)], agent_id=agent_id)
        first = await producer.status(enq.job_id)
        redis = await producer.redis()
        ttl = await redis.pttl(job_key_prefix + enq.job_id)
        await redis.set(job_key_prefix + enq.job_id, b"not a job any more", px=ttl)  # were it read again: unreadable
        again = await producer.status(enq.job_id)
    assert first.status == again.status == "queued" and first.enqueued_at is not None
    assert again.enqueued_at == first.enqueued_at
