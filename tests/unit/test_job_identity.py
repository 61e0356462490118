"""Job identity on fakeredis (no services): deterministic ids that hide the user, duplicates that
collapse while a job is active, a new generation once it finished, never an id used twice."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
from arq.connections import ArqRedis
from arq.jobs import JobStatus

from sessionctl.config import Settings
from sessionctl.errors import InvalidRequest
from sessionctl.producer import Producer
from sessionctl.worker import serializer
from tests.conftest import HASH_KEY

USER = "dave-91c2@example.com"


def _unit_settings() -> Settings:
    return Settings(hash_key=HASH_KEY, queue_name="unit:queue")


@pytest.fixture
async def fake_producer():  # type: ignore[no-untyped-def]
    redis = ArqRedis(
        connection_pool=fakeredis.FakeAsyncRedis().connection_pool,
        job_serializer=serializer.serialize,
        job_deserializer=serializer.deserialize,
        default_queue_name="unit:queue",
    )
    p = Producer(_unit_settings(), redis=redis)
    yield p
    await redis.aclose()


async def test_job_id_is_deterministic_and_hides_the_user(fake_producer: Producer) -> None:
    a = await fake_producer.purge_user_sessions(agent_id="a-1", user_id=USER, check_agent=False)
    b = await fake_producer.purge_user_sessions(agent_id="a-1", user_id=USER, check_agent=False)
    assert a.job_id == b.job_id and not a.collapsed and b.collapsed
    assert USER not in a.job_id and "dave" not in a.job_id
    # the deployment's queue name leads every job id (so arq's own keys differ between deployments)
    assert a.job_id.startswith("unit:queue:purge_user_sessions:") and len(a.job_id.split(":")) == 5


async def test_options_that_change_the_work_make_a_different_job(fake_producer: Producer) -> None:
    base = await fake_producer.purge_user_sessions(agent_id="a-1", user_id=USER, check_agent=False)
    others = [
        await fake_producer.purge_user_sessions(agent_id="a-1", user_id=USER, dry_run=True, check_agent=False),
        await fake_producer.purge_user_sessions(agent_id="a-1", user_id=USER, memories=True, check_agent=False),
        await fake_producer.purge_user_sessions(agent_id="a-2", user_id=USER, check_agent=False),
        await fake_producer.purge_user_sessions(all_agents=True, user_id=USER, check_agent=False),
        await fake_producer.purge_user_sessions(agent_id="a-1", user_id=USER + "x", check_agent=False),
    ]
    ids = {base.job_id, *(o.job_id for o in others)}
    assert len(ids) == 6 and not any(o.collapsed for o in others)
    # a label for who asked is not part of the identity: it joins the same job
    same = await fake_producer.purge_user_sessions(
        agent_id="a-1", user_id=USER, requested_by="ticket-9", check_agent=False
    )
    assert same.job_id == base.job_id and same.collapsed


async def test_a_finished_job_is_run_again_under_a_new_generation(fake_producer: Producer) -> None:
    redis = await fake_producer.redis()
    first = await fake_producer.purge_user_sessions(agent_id="a-1", user_id=USER, check_agent=False)
    # what arq does when the job finishes: the job key goes, a result key stays for keep_result
    await redis.delete(f"arq:job:{first.job_id}")
    await redis.zrem("unit:queue", first.job_id)
    await redis.set(f"arq:result:{first.job_id}", b"{}")
    again = await asyncio.gather(
        *[fake_producer.purge_user_sessions(agent_id="a-1", user_id=USER, check_agent=False) for _ in range(10)]
    )
    assert len({e.job_id for e in again}) == 1 and first.job_id not in {e.job_id for e in again}
    assert {e.job_id.rsplit(":", 1)[0] for e in again} == {first.job_id.rsplit(":", 1)[0]}  # same request digest
    assert sum(not e.collapsed for e in again) == 1


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"agent_id": "a-1", "user_id": ""}, "user id is empty"),
        ({"agent_id": "a-1", "user_id": "   "}, "user id is empty"),
        ({"agent_id": "a-1", "user_id": "x\x00y"}, "NUL"),
        ({"agent_id": "a-1", "user_id": "u" * 5000}, "longer than"),
        ({"agent_id": 'x"; drop schema y; --', "user_id": "u"}, "not a valid agent id"),
        ({"agent_id": "../..", "user_id": "u"}, "not a valid agent id"),
        ({"agent_id": "a" * 64, "user_id": "u"}, "not a valid agent id"),
        ({"agent_id": "", "user_id": "u"}, "agent id is empty"),
        ({"user_id": "u"}, "exactly one target"),
        ({"agent_id": "a-1", "all_agents": True, "user_id": "u"}, "exactly one target"),
    ],
)
async def test_bad_input_is_refused_before_anything_is_enqueued(
    fake_producer: Producer, kwargs: dict, needle: str
) -> None:
    with pytest.raises(InvalidRequest, match=needle) as info:
        await fake_producer.purge_user_sessions(check_agent=False, **kwargs)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)
    redis = await fake_producer.redis()
    assert await redis.zcard("unit:queue") == 0


async def test_a_used_job_id_is_never_reused_even_after_its_result_expired(fake_producer: Producer) -> None:
    redis = await fake_producer.redis()
    first = await fake_producer.purge_user_sessions(agent_id="a-1", user_id=USER, check_agent=False)
    # the job ran and its result has since expired: no job key, no result, nothing in the queue
    await redis.delete(f"arq:job:{first.job_id}")
    await redis.zrem("unit:queue", first.job_id)
    again = await fake_producer.purge_user_sessions(agent_id="a-1", user_id=USER, check_agent=False)
    assert not again.collapsed and again.job_id != first.job_id


async def test_deployments_sharing_a_redis_never_share_a_job() -> None:
    redis = ArqRedis(
        connection_pool=fakeredis.FakeAsyncRedis().connection_pool,
        job_serializer=serializer.serialize,
        job_deserializer=serializer.deserialize,
    )
    one = Producer(Settings(hash_key=HASH_KEY, queue_name="tenant-1"), redis=redis)
    two = Producer(Settings(hash_key=HASH_KEY, queue_name="tenant-2"), redis=redis)
    other_db = Producer(
        Settings(hash_key=HASH_KEY, queue_name="tenant-1", database_url="postgresql://postgres@db2:5432/x"), redis=redis
    )
    ids = [(await p.purge_user_sessions(agent_id="a-1", user_id=USER, check_agent=False)) for p in (one, two, other_db)]
    assert len({e.job_id for e in ids}) == 3 and not any(e.collapsed for e in ids)
    # two agent ids that name one schema are one target: one job
    same_schema = await one.purge_user_sessions(agent_id="a_1", user_id=USER, check_agent=False)
    assert same_schema.job_id == ids[0].job_id and same_schema.collapsed
    await redis.aclose()


async def test_status_of_a_result_that_expires_mid_read_is_not_found(
    fake_producer: Producer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from arq.jobs import Job

    async def complete(self: Job) -> JobStatus:
        return JobStatus.complete

    async def gone(self: Job) -> None:
        return None

    monkeypatch.setattr(Job, "status", complete)
    monkeypatch.setattr(Job, "result_info", gone)
    state = await fake_producer.status("unit:queue:purge_user_sessions:x:19ad2c8f1a0b1c2d3e")
    assert state.status == "not_found"
