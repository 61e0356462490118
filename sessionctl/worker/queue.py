"""arq behind one interface: what a producer asks of the queue — enqueue a job under an id, is a
job still active, did it leave a result, what state is it in — and nothing else of arq leaks out.

``sessionctl.producer`` keeps validation and job identity; ``jobs`` never sees arq; a queue other
than arq would replace this module (and ``sessionctl/worker/settings.py``), not the producer.
"""

from __future__ import annotations

import json
import time
from typing import Any

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.jobs import Job, JobStatus, serialize_job
from redis.exceptions import NoPermissionError, RedisError, ResponseError

from sessionctl.errors import RedisUnavailable
from sessionctl.jobstate import JobState, State
from sessionctl.worker import redisconf, serializer
from sessionctl.worker.jobindex import Entry, JobIndex
from sessionctl.worker.progress import progress_key

ENQUEUED_KEPT = 4096  # jobs whose enqueue time a Queue remembers (Queue.state), at most
BEAT_TTL_S = 30  # a worker that has not reported for this long is not counted as serving the queue

# What arq's ``enqueue_job`` does (no job or result under that id: the job stored with its expiry,
# scored in the queue by its enqueue time) and the job's line in sessionctl's index, at once, in
# Redis: one round trip instead of six, atomic like arq's WATCH/MULTI; then the queue's wake-up
# token (:func:`wake_key`; dropped after a minute if no worker took it), which a waiting worker
# takes at once instead of sleeping out its poll delay. KEYS: the job, its result, the queue, the
# index's counter, the job's hash, the index, the wake-up list. ARGV: the serialized job, its
# expiry (ms), its score (ms), its id, the hash's expiry (s), the index's size, then the hash's
# fields as one JSON object of strings (one argument, not two per field: each argument costs the
# client), decoded before anything is written (a script's writes are not rolled back when it fails).
ENQUEUE = """
local flat = {}
for name, value in pairs(cjson.decode(ARGV[7])) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[5], unpack(flat))
redis.call('EXPIRE', KEYS[5], ARGV[5])
redis.call('ZADD', KEYS[6], seq, ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -(tonumber(ARGV[6]) + 1))
redis.call('LPUSH', KEYS[7], 1)
redis.call('LTRIM', KEYS[7], 0, 0)
redis.call('PEXPIRE', KEYS[7], 60000)
return 1
"""


def refused(exc: ResponseError) -> bool:
    """Redis refused the script itself (not the data): no permission (an ACL without scripting),
    or scripting renamed away."""
    return isinstance(exc, NoPermissionError) or "unknown command" in str(exc).lower()


def wake_key(queue_name: str) -> str:
    """The queue's wake-up list: one token at most, pushed with every job the enqueue script writes;
    an idle worker blocks on it between two polls (:class:`sessionctl.worker.wake.Wake`)."""
    return f"{queue_name}:wake"


def workers_key(queue_name: str) -> str:
    """The queue's live workers: a sorted set of worker ids scored by their last report (seconds)."""
    return f"{queue_name}:workers"


def worker_key(queue_name: str, worker_id: str) -> str:
    """What one worker serves (:func:`deployment`) and when it last said so; expires with its beat."""
    return f"{queue_name}:worker:{worker_id}"


async def beat(redis: Any, queue_name: str, worker_id: str, about: dict[str, Any]) -> None:
    """A worker's report, every few seconds: it is alive, and what it serves."""
    now = time.time()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(
            worker_key(queue_name, worker_id), json.dumps({**about, "worker": worker_id, "at": now}), ex=BEAT_TTL_S
        )
        pipe.zadd(workers_key(queue_name), {worker_id: now})
        pipe.zremrangebyscore(workers_key(queue_name), 0, now - BEAT_TTL_S)
        pipe.expire(workers_key(queue_name), BEAT_TTL_S * 2)
        await pipe.execute()


async def forget(redis: Any, queue_name: str, worker_id: str) -> None:
    """A worker stopping gracefully takes its report back at once: it no longer serves the queue."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(worker_key(queue_name, worker_id))
        pipe.zrem(workers_key(queue_name), worker_id)
        await pipe.execute()


def deployment(settings: Any) -> dict[str, Any]:
    """What a worker serves, as it publishes it and as a producer compares it (nothing secret: the
    hash key only as a keyed fingerprint, the DSN without user or password)."""
    from pathlib import Path

    from sessionctl import __version__
    from sessionctl.privacy import request_digest

    return {
        "database": settings.dsn.where,
        "schema_template": settings.schema_template,
        "hash_key": request_digest(settings.hash_key_bytes, "fingerprint")[:12],
        "export_dir": str(Path(settings.export_dir).resolve()),
        "version": __version__,
    }


class Queue:
    """One queue (``SESSIONCTL_QUEUE``) on one Redis. ``redis`` is the plain client, for the keys
    of sessionctl's own (job index, request generations)."""

    def __init__(self, redis: ArqRedis, queue_name: str) -> None:
        self.redis = redis
        self.name = queue_name
        self._enqueue_script = redis.register_script(ENQUEUE)
        self._scripts = True  # until Redis refuses them
        # When each job asked about was enqueued: read once from the job itself (which holds the whole
        # request: a bulk erasure's 10,000 user ids), not at every poll of a caller waiting for it.
        # A job id is never reused, and arq keeps a job's enqueue time through its retries.
        self._enqueued: dict[str, str] = {}

    @classmethod
    async def connect(cls, settings: Any) -> Queue:
        try:
            redis = await redisconf.connect(settings)
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(
                f"cannot connect to Redis ({type(exc).__name__}): check REDIS_URL and that Redis is up"
            ) from exc
        return cls(redis, settings.queue_name)

    async def close(self) -> None:
        await self.redis.aclose()

    async def workers(self) -> list[dict[str, Any]]:
        """What each worker of this queue said it serves, within the last ``BEAT_TTL_S`` seconds
        (a worker stopped gracefully is gone at once), most recent report first."""
        ids = await self.redis.zrangebyscore(workers_key(self.name), time.time() - BEAT_TTL_S, "+inf")
        if not ids:
            return []
        raws = await self.redis.mget([worker_key(self.name, i.decode()) for i in ids])
        found = []
        for raw in raws:
            try:
                about = json.loads(raw) if raw else None
            except ValueError:
                continue
            if isinstance(about, dict):
                found.append(about)
        return sorted(found, key=lambda a: -float(a.get("at", 0)))

    async def served_by(self) -> dict[str, Any] | None:
        """What the most recent live worker of this queue serves (``None``: no worker has reported)."""
        found = await self.workers()
        return found[0] if found else None

    async def check_served(self, settings: Any, *, exports: bool = False) -> str | None:
        """One line if no worker serves this queue, or if one that does is configured for another
        deployment than ``settings`` (then its jobs act elsewhere than the caller checked); ``None``
        when the workers serving it are alike. ``exports``: the export directory matters too (a
        relative one resolves against each process's working directory)."""
        found = await self.workers()
        if not found:
            return (
                f"no worker has reported for queue {self.name} in the last 30 s: the job waits until one runs —"
                " start one with `sessionctl worker` (same DATABASE_URL, REDIS_URL, SESSIONCTL_QUEUE)"
            )
        mine = deployment(settings)
        names = {
            "database": "DATABASE_URL",
            "schema_template": "SESSIONCTL_SCHEMA_TEMPLATE",
            "hash_key": "SESSIONCTL_HASH_KEY",
            **({"export_dir": "SESSIONCTL_EXPORT_DIR"} if exports else {}),
        }
        for about in found:  # every live worker of the queue may take the job
            # the key only as "differs": its fingerprint means nothing to a reader
            differ = [
                f"{var} ({'keys differ' if k == 'hash_key' else f'{about.get(k)} there, {mine[k]} here'})"
                for k, var in names.items()
                if about.get(k) != mine[k]
            ]
            if differ:
                return (
                    f"a worker serving queue {self.name} ({about.get('worker')}) is configured differently:"
                    f" {'; '.join(differ)} — its jobs act on its own settings; give both the same"
                )
        return None

    async def enqueue(self, kind: str, payload: dict[str, Any], job_id: str, entry: Entry) -> bool:
        """Put the job in the queue under ``job_id`` and note it in the job index (``entry``), in one
        round trip; ``False`` (and nothing written) if arq still holds that id (queued, running, or
        finished with a result it keeps)."""
        redis = self.redis
        now = int(time.time() * 1000)
        job = serialize_job(kind, (payload,), {}, None, now, serializer=redis.job_serializer)
        keys = [job_key_prefix + job_id, result_key_prefix + job_id, self.name]
        keys += [entry.seq_key, entry.meta_key, entry.index_key, wake_key(self.name)]
        if self._scripts:
            try:
                fields = json.dumps({k: str(v) for k, v in entry.fields.items()})
                args: list[bytes | str | int] = [job, redis.expires_extra_ms, now, job_id, entry.ttl_s, entry.size]
                args.append(fields)
                return bool(await self._enqueue_script(keys=keys, args=args, client=redis))
            except ResponseError as exc:
                if not refused(exc):
                    raise
                self._scripts = False  # a Redis that refuses scripts (an ACL, renamed commands)
        queued = await redis.enqueue_job(kind, payload, _job_id=job_id, _queue_name=self.name)
        if queued is None:
            return False
        await JobIndex(redis, self.name).write(entry)
        return True

    async def active(self, job_id: str) -> bool:
        """Queued, running or waiting to retry (not finished)."""
        alive = await self.redis.exists(job_key_prefix + job_id, in_progress_key_prefix + job_id)
        return bool(alive) and not await self.has_result(job_id)

    async def has_result(self, job_id: str) -> bool:
        return bool(await self.redis.exists(result_key_prefix + job_id))

    async def ends(self, job_ids: list[str]) -> list[tuple[bool, bytes | None]]:
        """For each job: is arq still holding it (queued or running), and its stored result if any."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for jid in job_ids:
                pipe.exists(job_key_prefix + jid, in_progress_key_prefix + jid)
                pipe.get(result_key_prefix + jid)
            answers = await pipe.execute()
        return [(bool(answers[2 * i]), answers[2 * i + 1]) for i in range(len(job_ids))]

    async def state(self, job_id: str) -> JobState:
        """The job's state, attempt, progress, and result or error, as arq and the worker left them."""
        job = Job(job_id, self.redis, _queue_name=self.name, _deserializer=serializer.deserialize)
        info, jdef = None, None
        try:
            st = await job.status()
            attempt_raw = await self.redis.get(retry_key_prefix + job_id)
            progress_raw = await self.redis.get(progress_key(job_id))
            if st == JobStatus.complete:
                info = await job.result_info()
                if info is None:  # the result expired between the two reads
                    st = JobStatus.not_found
            elif job_id not in self._enqueued:
                jdef = await job.info()
        except RedisError as exc:
            raise RedisUnavailable(f"Redis failed while reading job state ({type(exc).__name__})") from exc
        attempt = int(attempt_raw) if attempt_raw else None
        progress = json.loads(progress_raw) if progress_raw else None
        if info is not None:
            state = JobState(
                job_id=job_id,
                status="failed",
                attempt=info.job_try,
                enqueued_at=info.enqueue_time.isoformat(),
                started_at=info.start_time.isoformat(),
                finished_at=info.finish_time.isoformat(),
                progress=progress,
            )
            if info.success and isinstance(info.result, dict):
                state.result = info.result
                st_ = info.result.get("status")
                state.status = st_ if st_ in ("dry_run", "partial") else "succeeded"
            elif isinstance(info.result, serializer.JobError):
                state.error = {"type": info.result.error_type, "message": str(info.result)}
            else:
                state.error = {"type": "JobError", "message": str(info.result)}
            return state
        if st == JobStatus.not_found:
            return JobState(job_id=job_id, status="not_found")
        status: State = {JobStatus.in_progress: "running", JobStatus.deferred: "deferred"}.get(st, "queued")  # type: ignore[assignment]
        if jdef is not None:
            if len(self._enqueued) >= ENQUEUED_KEPT:
                self._enqueued.clear()
            self._enqueued[job_id] = jdef.enqueue_time.isoformat()
        return JobState(
            job_id=job_id, status=status, attempt=attempt, enqueued_at=self._enqueued.get(job_id), progress=progress
        )
