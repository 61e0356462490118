"""Putting a validated request into the queue, under the job id its identity gives — what the
producer, the crons and the re-sweep all do, below all of them (the queue seam).

Job ids are ``<queue>:<kind>:<digest>:<generation>``: the deployment's queue name, the kind, a keyed
digest of the request's identity (:meth:`identity` of each request model — never the raw user id)
and a generation. While a job of that generation is queued, running or waiting to retry, the same
request joins it (``collapsed``); once it is no longer active, the next request starts a new
generation, atomically, once per finished job. A generation is the time and random bits, never a
counter: no job id is ever used twice, even after Redis lost every key. A data-subject request's job
gets the id its ledger chose instead (:meth:`Enqueuer.put_as`).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from redis.exceptions import RedisError, WatchError

from sessionctl import tracing
from sessionctl.config import Settings
from sessionctl.errors import RedisUnavailable
from sessionctl.jobstate import Enqueued
from sessionctl.privacy import request_digest, user_hmac
from sessionctl.worker.jobindex import Entry, JobIndex, request_without_user, target_of
from sessionctl.worker.queue import Queue


def new_generation() -> str:
    """A generation that no job id ever had, whatever Redis remembers: the time in milliseconds
    and 32 random bits, in hex."""
    return f"{time.time_ns() // 1_000_000:x}{secrets.token_hex(4)}"


async def _advance(redis: Any, gen_key: str, seen: str | None, ttl_s: int) -> None:
    """Move the generation past ``seen`` to a new one, unless another producer already has
    (WATCH/MULTI compare-and-set)."""
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(gen_key)
        current = await pipe.get(gen_key)
        if (current.decode() if current is not None else None) != seen:
            return
        pipe.multi()
        pipe.set(gen_key, new_generation(), ex=ttl_s)
        with contextlib.suppress(WatchError):
            await pipe.execute()


@dataclass(frozen=True, slots=True)
class Enqueuer:
    """Enqueues requests on one deployment's queue, and notes each new job in its index."""

    queue: Queue
    settings: Settings

    @property
    def index(self) -> JobIndex:
        return JobIndex.of(self.queue.redis, self.settings)

    async def put(self, kind: str, request: Any) -> Enqueued:
        """Enqueue a validated request (a ``jobs.models`` request) under its identity's job id."""
        payload = request.model_dump(mode="json")
        with tracing.span("sessionctl.enqueue", kind=kind) as current:
            try:
                enq = await self._enqueue_job(kind, payload, request.identity(self.settings))
            except RedisError as exc:
                raise RedisUnavailable(f"Redis failed while enqueueing ({type(exc).__name__})") from exc
            tracing.set_attributes(current, job_id=enq.job_id, collapsed=enq.collapsed)
            if not enq.collapsed and (headers := tracing.carrier()):  # the worker's job span: a child of this one
                await self.queue.redis.set(
                    tracing.KEY.format(enq.job_id), json.dumps(headers), ex=self.settings.keep_result
                )
        return enq

    async def put_as(self, kind: str, request: BaseModel, job_id: str) -> Enqueued:
        """Enqueue a validated request under the id its caller chose (a data-subject request's job:
        the ledger named it first); ``collapsed`` when arq holds that id already."""
        payload = request.model_dump(mode="json")
        try:
            created = await self.queue.enqueue(kind, payload, job_id, self._entry(kind, payload, job_id))
        except RedisError as exc:
            raise RedisUnavailable(f"Redis failed while enqueueing ({type(exc).__name__})") from exc
        return Enqueued(job_id, collapsed=not created)

    def _entry(self, kind: str, payload: dict[str, Any], job_id: str) -> Entry:
        """The job's line in the index, written with the job (no user id: its HMAC)."""
        user = payload.get("user_id")
        return self.index.entry(
            job_id,
            kind=kind,
            target=target_of(payload),
            user_hmac=None if user is None else user_hmac(self.settings.hash_key_bytes, user),
            requested_by=payload.get("requested_by"),
            request=request_without_user(payload),
        )

    async def _enqueue_job(self, kind: str, payload: dict[str, Any], identity: tuple[str, ...]) -> Enqueued:
        """Enqueue under ``<queue>:kind:digest:generation``; join the job of that generation while it
        is active; move to a new generation once it was used and is no longer active (finished,
        failed, or its result expired), so a job id is never run twice."""
        queue, redis = self.queue, self.queue.redis
        digest = request_digest(self.settings.hash_key_bytes, kind, *identity)
        gen_key = f"{queue.name}:gen:{kind}:{digest}"
        used_key = gen_key + ":used"
        # Forgetting a generation is harmless: keep the keys as long as a job's records.
        ttl = max(self.settings.keep_result, self.settings.failed_ttl)
        for _ in range(10):
            raw_gen, raw_used = await redis.mget(gen_key, used_key)
            if raw_gen is None:
                await _advance(redis, gen_key, None, ttl)
                continue
            gen = raw_gen.decode()
            job_id = f"{queue.name}:{kind}:{digest}:{gen}"  # the deployment's own: arq's keys differ too
            if raw_used is not None and raw_used.decode() == gen:
                if await queue.active(job_id):
                    return Enqueued(job_id, collapsed=True)  # queued, running or waiting to retry
                await _advance(redis, gen_key, gen, ttl)  # used and no longer active: a new generation
                continue
            if await queue.enqueue(kind, payload, job_id, self._entry(kind, payload, job_id)):
                await redis.set(used_key, gen, ex=ttl)
                return Enqueued(job_id, collapsed=False)
            if not await queue.has_result(job_id):
                return Enqueued(job_id, collapsed=True)  # queued, running or waiting to retry
            await _advance(redis, gen_key, gen, ttl)  # finished: a new generation
        raise RedisUnavailable("could not enqueue: the job id kept changing under contention; try again")
