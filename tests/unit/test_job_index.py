"""The job index on fakeredis: listing without KEYS, unreadable entries skipped and counted."""

from __future__ import annotations

import fakeredis

from sessionctl.worker.jobindex import JobIndex


async def test_listing_never_uses_keys() -> None:
    fake = fakeredis.FakeAsyncRedis()

    async def no_keys(*a: object, **k: object) -> None:
        raise AssertionError("KEYS must not be used")

    fake.keys = no_keys  # type: ignore[method-assign]
    index = JobIndex(fake, "q")
    for i in range(30):
        await index.write(
            index.entry(f"j{i}", kind="purge_user_sessions", target="t", user_hmac=None, requested_by=None)
        )
    assert [j["job_id"] for j in await index.list(limit=3)] == ["j29", "j28", "j27"]
    await fake.aclose()


async def test_unreadable_entries_are_skipped_and_counted() -> None:
    fake = fakeredis.FakeAsyncRedis()
    index = JobIndex(fake, "q")
    await index.write(index.entry("good", kind="purge_user_sessions", target="t", user_hmac=None, requested_by=None))
    await fake.zadd(index.index_key, {"bad-type": 10**9, "bad-field": 10**9 + 1, "bad-json": 10**9 + 2})
    await fake.set(index.meta_key("bad-type"), "a string, not a hash")
    await fake.hset(index.meta_key("bad-field"), mapping={"kind": "x", "state": "running", "attempt": "many"})
    await fake.hset(index.meta_key("bad-json"), mapping={"kind": "x", "state": "succeeded", "summary": "{not json"})
    rows = await index.list(limit=10)
    assert [r["job_id"] for r in rows] == ["good"] and rows.malformed == 3
    assert await index.get("bad-field") is None  # a malformed entry reads as none, never raises
    await fake.aclose()


async def test_a_redis_that_refuses_scripts_still_gets_the_job_and_its_index_line() -> None:
    """Enqueueing is one script (the job and its index line at once); a Redis whose ACL or renamed
    commands refuse scripts gets arq's own enqueue and the index's pipeline instead, and keeps them."""
    from arq.connections import ArqRedis
    from redis.exceptions import NoPermissionError

    from sessionctl.worker import serializer
    from sessionctl.worker.queue import Queue

    fake = ArqRedis(
        connection_pool=fakeredis.FakeAsyncRedis().connection_pool,
        job_serializer=serializer.serialize,
        job_deserializer=serializer.deserialize,
    )
    queue = Queue(fake, "q")
    calls: list[object] = []

    async def refused(**kw: object) -> None:
        calls.append(kw)
        raise NoPermissionError("this user has no permissions to run the 'evalsha' command")  # redis-py's words

    queue._enqueue_script = refused  # type: ignore[assignment]
    index = JobIndex(fake, "q")
    entry = index.entry("j1", kind="purge_user_sessions", target="t", user_hmac="h", requested_by=None)
    assert await queue.enqueue("purge_user_sessions", {"user_id": "u"}, "j1", entry) is True
    assert await queue.enqueue("purge_user_sessions", {"user_id": "u"}, "j1", entry) is False  # held already
    assert len(calls) == 1  # refused once: not asked again
    assert [j["job_id"] for j in await index.list(limit=5)] == ["j1"]
    assert (await index.get("j1") or {}).get("user_hmac") == "h"
    await fake.aclose()
