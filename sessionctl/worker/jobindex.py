"""Our own bounded index of jobs in Redis, so listing never needs ``KEYS`` (arq's
``all_job_results`` scans every key, which blocks Redis).

Keys, each led by the deployment's queue name (``SESSIONCTL_QUEUE``, so two deployments sharing a
Redis never see each other's jobs), and no personal data in any of them — users appear as HMACs only:

- ``<queue>:jobs``: sorted set of job ids in enqueue order (scored by ``<queue>:jobs:seq``, a
  counter: no two jobs tie), trimmed to the newest ``SESSIONCTL_JOB_INDEX_SIZE``;
- ``<queue>:failed``: sorted set of failed job ids by finish time, kept ``SESSIONCTL_FAILED_TTL``;
- ``<queue>:job:<id>``: a hash — ``kind, target, user_hmac, requested_by, state, attempt,
  enqueued_at, started_at, finished_at, error_type, error, summary`` (JSON) and, for a failed job,
  ``request`` (the request *without* its user id: ``sessionctl retry`` asks for the user again and
  checks it against the HMAC). It expires with arq's result (``SESSIONCTL_KEEP_RESULT``) or, for a
  failed job, after ``SESSIONCTL_FAILED_TTL``.

States (:data:`sessionctl.jobstate.JOB_STATES`): ``queued`` → ``running`` → (``retrying`` → ``running``
…) → ``succeeded`` | ``dry_run`` | ``partial`` | ``failed``. The producer writes ``queued``; the
worker writes the rest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sessionctl.jobstate import STATUS_FILTERS
from sessionctl.worker import serializer


def _ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Entry:
    """A job's line in the index, as enqueueing writes it: its hash (``fields``, expiring after
    ``ttl_s``), and its place in the index (scored by the next value of ``seq_key``, the index
    trimmed to ``size``)."""

    job_id: str
    meta_key: str
    index_key: str
    seq_key: str
    ttl_s: int
    size: int
    fields: dict[str, Any]


class JobIndex:
    def __init__(
        self,
        redis: Any,
        queue_name: str,
        *,
        size: int = 10_000,
        keep_s: int = 7 * 86400,
        failed_ttl_s: int = 30 * 86400,
    ):
        self.redis = redis
        self.size = size
        self.keep_s = keep_s
        self.failed_ttl_s = failed_ttl_s
        self.index_key = f"{queue_name}:jobs"
        self.seq_key = f"{queue_name}:jobs:seq"
        self.failed_key = f"{queue_name}:failed"
        self._meta_prefix = f"{queue_name}:job:"

    @classmethod
    def of(cls, redis: Any, settings: Any) -> JobIndex:
        """The index of the deployment these settings describe."""
        return cls(
            redis,
            settings.queue_name,
            size=settings.job_index_size,
            keep_s=settings.keep_result,
            failed_ttl_s=settings.failed_ttl,
        )

    def meta_key(self, job_id: str) -> str:
        return self._meta_prefix + job_id

    def entry(
        self,
        job_id: str,
        *,
        kind: str,
        target: str,
        user_hmac: str | None,
        requested_by: str | None,
        request: dict[str, Any] | None = None,
    ) -> Entry:
        """What the index notes of a job as it is enqueued (``queued``): written with the job
        itself, in one round trip (:meth:`sessionctl.worker.queue.Queue.enqueue`)."""
        fields: dict[str, Any] = {
            "kind": kind,
            "target": target,
            "user_hmac": user_hmac or "",
            "requested_by": requested_by or "",
            "state": "queued",
            "enqueued_at": _ms(),
        }
        if request is not None:  # kept from the start: however the job ends, `retry` can ask again
            fields["request"] = json.dumps(request)
        return Entry(
            job_id=job_id,
            meta_key=self.meta_key(job_id),
            index_key=self.index_key,
            seq_key=self.seq_key,
            ttl_s=max(self.keep_s, self.failed_ttl_s),
            size=self.size,
            fields=fields,
        )

    async def write(self, entry: Entry) -> None:
        """Note a job enqueued without the queue's script (a Redis that refuses scripts)."""
        seq = await self.redis.incr(entry.seq_key)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(entry.meta_key, mapping=entry.fields)
            pipe.expire(entry.meta_key, entry.ttl_s)
            pipe.zadd(entry.index_key, {entry.job_id: seq})
            pipe.zremrangebyrank(entry.index_key, 0, -(entry.size + 1))
            await pipe.execute()

    async def running(self, job_id: str, *, attempt: int) -> None:
        await self.redis.hset(
            self.meta_key(job_id), mapping={"state": "running", "attempt": attempt, "started_at": _ms()}
        )

    async def retrying(self, job_id: str, *, attempt: int, error_type: str, error: str) -> None:
        await self.redis.hset(
            self.meta_key(job_id),
            mapping={"state": "retrying", "attempt": attempt, "error_type": error_type, "error": error},
        )

    async def finished(self, job_id: str, *, state: str, summary: dict[str, Any]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.meta_key(job_id),
                mapping={
                    "state": state,
                    "finished_at": _ms(),
                    "summary": json.dumps(summary),
                    "error_type": "",
                    "error": "",
                },
            )
            pipe.expire(self.meta_key(job_id), self.keep_s)
            pipe.zrem(self.failed_key, job_id)
            await pipe.execute()

    async def failed(self, job_id: str, *, error_type: str, error: str, request: dict[str, Any] | None) -> None:
        now = _ms()
        fields: dict[str, Any] = {"state": "failed", "finished_at": now, "error_type": error_type, "error": error}
        if request is not None:
            fields["request"] = json.dumps(request)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.meta_key(job_id), mapping=fields)
            pipe.expire(self.meta_key(job_id), self.failed_ttl_s)
            pipe.zadd(self.failed_key, {job_id: now})
            pipe.zremrangebyscore(self.failed_key, 0, now - self.failed_ttl_s * 1000)
            await pipe.execute()

    async def mark_retried(self, job_id: str, new_job_id: str) -> None:
        await self.redis.hset(self.meta_key(job_id), mapping={"retried_as": new_job_id})

    async def get(self, job_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.meta_key(job_id))
        if not raw:
            return None
        try:
            return _decode(job_id, raw)
        except (ValueError, TypeError, UnicodeDecodeError):
            return None  # a malformed entry: as if there were none

    async def get_many(self, job_ids: list[str]) -> list[dict[str, Any]]:
        """The entries of these jobs, in their order, in one round trip (missing or unreadable
        ones left out)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.meta_key(job_id))
            raws = await pipe.execute(raise_on_error=False)
        rows = []
        for job_id, raw in zip(job_ids, raws, strict=True):
            if isinstance(raw, dict) and raw:
                try:
                    rows.append(_decode(job_id, raw))
                except (ValueError, TypeError, UnicodeDecodeError):
                    continue
        return rows

    async def list(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        limit: int = 50,
        failed_only: bool = False,
        settle: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None,
    ) -> Listing:
        """Newest first, filtered; reads the index in chunks until ``limit`` rows match. An entry
        that cannot be read (edited by hand, of the wrong type) is skipped and counted in
        ``.malformed``, never fatal. ``settle`` may correct the rows of unfinished jobs (from what
        the queue knows) before they are filtered."""
        wanted = STATUS_FILTERS[status] if status else None
        key = self.failed_key if failed_only else self.index_key
        out = Listing()
        start, chunk = 0, max(limit * 2, 200)
        while len(out) < limit:
            ids = await self.redis.zrevrange(key, start, start + chunk - 1)
            if not ids:
                break
            start += chunk
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(self.meta_key(_s(job_id)))
                metas = await pipe.execute(raise_on_error=False)
            rows = []
            for job_id, raw in zip(ids, metas, strict=True):
                if not raw:
                    continue  # expired meta: the index entry is trimmed below
                try:
                    if isinstance(raw, BaseException) or not isinstance(raw, dict):
                        raise TypeError("not a hash")
                    rows.append(_decode(_s(job_id), raw))
                except (ValueError, TypeError, UnicodeDecodeError):
                    out.malformed += 1
            if settle is not None:
                await settle([r for r in rows if r["state"] in UNFINISHED])
            for row in rows:
                if wanted is not None and row["state"] not in wanted:
                    continue
                if kind is not None and row["kind"] != kind:
                    continue
                out.append(row)
                if len(out) >= limit:
                    break
        return out


UNFINISHED = frozenset({"queued", "running", "retrying"})


class Listing(list[dict[str, Any]]):
    """Rows of the index, and how many entries could not be read."""

    malformed: int = 0


def target_of(payload: dict[str, Any]) -> str:
    """Where a job's request acts, as the index shows it: an agent id, or ``*`` (every agent)."""
    return "*" if payload.get("all_agents") or payload.get("agent_id") is None else str(payload["agent_id"])


def request_without_user(payload: Any) -> dict[str, Any] | None:
    """The request, kept for `sessionctl retry` — minus the raw user id (asked for again then)."""
    if not isinstance(payload, dict):
        return None
    kept = {k: v for k, v in payload.items() if k not in ("user_id", "user_ids")}
    return kept | {"has_user": payload.get("user_id") is not None, "bulk": "user_ids" in payload}


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _decode(job_id: str, raw: dict[Any, Any]) -> dict[str, Any]:
    d = {_s(k): _s(v) for k, v in raw.items()}
    row: dict[str, Any] = {
        "job_id": job_id,
        "kind": d.get("kind", ""),
        "state": d.get("state", ""),
        "target": d.get("target", ""),
        "user_hmac": d.get("user_hmac") or None,
        "requested_by": d.get("requested_by") or None,
        "attempt": int(d["attempt"]) if d.get("attempt") else None,
        "enqueued_at": int(d["enqueued_at"]) if d.get("enqueued_at") else None,
        "started_at": int(d["started_at"]) if d.get("started_at") else None,
        "finished_at": int(d["finished_at"]) if d.get("finished_at") else None,
        "error_type": d.get("error_type") or None,
        "error": d.get("error") or None,
        "summary": json.loads(d["summary"]) if d.get("summary") else None,
        "retried_as": d.get("retried_as") or None,
    }
    if d.get("request"):
        row["request"] = json.loads(d["request"])
    if row["summary"] is not None and not isinstance(row["summary"], dict):
        raise TypeError("summary is not an object")
    return row


async def record_end(
    index: JobIndex, job_id: str, raw_result: bytes, *, failures_only: bool = False
) -> dict[str, Any] | None:
    """Write what arq's stored result of a job says into the index, if the index does not say it
    yet: the changed fields, or ``None``. A failure ends up in the failed list whoever ended the
    job — our worker code, or arq itself (max tries exceeded, a timeout, an abort).
    ``failures_only``: a success is left alone (the worker's own code recorded it)."""
    try:
        data = serializer.deserialize(raw_result)
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or "s" not in data or (failures_only and data["s"]):
        return None
    current = await index.get(job_id)
    if current is None:
        return None
    if data["s"]:
        result = data.get("r")
        state = str(result.get("status", "succeeded")) if isinstance(result, dict) else "succeeded"
        if current["state"] == state:
            return None
        await index.finished(job_id, state=state, summary={})
        return {"state": state}
    if current["state"] == "failed":
        return None
    err = data.get("r")
    if isinstance(err, serializer.JobError):
        error_type, error = err.error_type, str(err)
    else:
        error_type, error = "JobError", "the job failed; see the worker log"
    await index.failed(job_id, error_type=error_type, error=error, request=None)
    return {"state": "failed", "error_type": error_type, "error": error}
