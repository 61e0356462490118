"""Waiting for work between two polls of the queue: an idle worker blocks on the queue's wake-up
list (``BLPOP``, at most the poll delay), which the enqueue script pushes a token to with every job
(:data:`sessionctl.worker.queue.ENQUEUE`) — a job is picked up a Redis round trip after it is
enqueued, not up to a whole poll delay later (``SESSIONCTL_POLL_DELAY``). A Redis that refuses
``BLPOP`` (an ACL, a renamed command) leaves the worker sleeping the poll delay, as arq does; so
does a worker that could not start a job now (its slots busy, or draining)."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import RedisError, ResponseError

from sessionctl.logs import get_logger
from sessionctl.worker.queue import refused, wake_key

log = get_logger("sessionctl.worker")


class Wake:
    """The pause between two polls of ``queue_name``: until a job is enqueued, at most ``idle_s``."""

    def __init__(self, queue_name: str, idle_s: float) -> None:
        self.key = wake_key(queue_name)
        self.idle_s = idle_s
        self.blocking = True

    async def wait(self, redis: Any, *, can_take: bool = True) -> None:
        """``can_take``: the worker would start a job now. One that would not (all its slots busy,
        or draining) sleeps instead, leaving the token to a worker that can."""
        if can_take and self.blocking:
            try:
                await redis.blpop([self.key], timeout=self.idle_s)
                return
            except ResponseError as exc:
                if refused(exc):  # refused for good (an ACL, renamed): sleep from now on
                    self.blocking = False
                    log.warning("worker.wake_refused", error_type=type(exc).__name__)
            except RedisError:  # the next poll meets the failure as arq would; pause all the same
                pass
        await asyncio.sleep(self.idle_s)
