"""A short, renewed lease on a running job, so a killed worker's job is picked up again quickly.

arq marks a job in progress with a key that lives for the *largest* timeout of all its functions
plus 10 s, and runs the job again only once that key expires: a worker killed mid-purge would hold
the purge hostage to the export timeout (hours). Our worker sets that key's first length to
``SESSIONCTL_LEASE_TTL`` (``SessionctlWorker``), and while a job runs this lease renews it every
third of that: a killed worker's job is run again within one lease, whatever the timeouts, and
wherever the kill lands. arq deletes the key when the job ends, as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from arq.constants import in_progress_key_prefix


@contextlib.asynccontextmanager
async def lease(redis: Any, job_id: str, ttl_s: int) -> AsyncIterator[None]:
    key = in_progress_key_prefix + job_id
    ttl_ms = ttl_s * 1000

    async def renew() -> None:
        while True:
            # pexpire does nothing once arq has deleted the key (job finished)
            with contextlib.suppress(Exception):
                await redis.pexpire(key, ttl_ms)
            await asyncio.sleep(ttl_s / 3)

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
