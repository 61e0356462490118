"""Job progress in Redis (a small JSON document per job, throttled)."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from redis.exceptions import RedisError

PROGRESS_PREFIX = "sessionctl:progress:"


def progress_key(job_id: str) -> str:
    return PROGRESS_PREFIX + job_id


class RedisProgress:
    """Publishes at most every ``interval_s`` (or when forced): processed, total, agent, rate."""

    def __init__(self, redis: Any, job_id: str, ttl_s: int, interval_s: float = 0.5) -> None:
        self.redis = redis
        self.job_id = job_id
        self.ttl_s = ttl_s
        self.interval_s = interval_s
        self.started = time.monotonic()
        self._last = 0.0

    async def update(self, *, processed: int, total: int | None, agent: str | None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        doc = {
            "processed": processed,
            "total": total,
            "agent": agent,
            "rate": round(processed / elapsed, 1),
            "updated_at": time.time(),
        }
        # progress is advisory: a Redis hiccup must not fail an erasure that is going well
        with contextlib.suppress(RedisError):
            await self.redis.set(progress_key(self.job_id), json.dumps(doc), ex=self.ttl_s)
