"""An idle worker's pause between two polls (:class:`sessionctl.worker.wake.Wake`): on the queue's
wake-up list when it could start a job, asleep otherwise; a Redis that refuses the command for good
is not asked again, one that fails once is."""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, ResponseError

from sessionctl.worker.wake import Wake


class FakeRedis:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls: list[tuple[Any, ...]] = []

    async def blpop(self, keys: list[str], timeout: float) -> None:
        self.calls.append((tuple(keys), timeout))
        if self.errors:
            raise self.errors.pop(0)


async def test_a_worker_that_can_take_a_job_waits_on_the_wake_up_list() -> None:
    redis, wake = FakeRedis(), Wake("q", 0.01)
    await wake.wait(redis)
    assert redis.calls == [(("q:wake",), 0.01)]


async def test_a_full_or_draining_worker_leaves_the_token_to_another() -> None:
    redis, wake = FakeRedis(), Wake("q", 0.01)
    await wake.wait(redis, can_take=False)
    assert redis.calls == [] and wake.blocking


async def test_refused_for_good_stops_asking_failed_once_does_not() -> None:
    busy = ResponseError("BUSY Redis is busy running a script")
    redis, wake = FakeRedis(busy, RedisConnectionError("reset")), Wake("q", 0.01)
    await wake.wait(redis)
    await wake.wait(redis)
    assert len(redis.calls) == 2 and wake.blocking  # a passing error: asked again next time
    refusing, wake = (
        FakeRedis(NoPermissionError("this user has no permissions to run the 'blpop' command")),
        Wake("q", 0.01),
    )
    await wake.wait(refusing)
    await wake.wait(refusing)
    assert len(refusing.calls) == 1 and not wake.blocking
