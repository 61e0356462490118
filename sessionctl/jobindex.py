"""Our own bounded index of jobs in Redis, so listing never needs ``KEYS`` (arq's
``all_job_results`` scans every key, which blocks Redis).

Keys (no personal data in any of them — users appear as HMACs only):

- ``sessionctl:jobs``: sorted set of job ids in enqueue order (scored by ``sessionctl:jobs:seq``, a
  counter: no two jobs tie), trimmed to the newest ``SESSIONCTL_JOB_INDEX_SIZE``;
- ``sessionctl:failed``: sorted set of failed job ids by finish time, kept ``SESSIONCTL_FAILED_TTL``;
- ``sessionctl:job:<id>``: a hash — ``kind, target, user_hmac, requested_by, state, attempt,
  enqueued_at, started_at, finished_at, error_type, error, summary`` (JSON) and, for a failed job,
  ``request`` (the request *without* its user id: ``sessionctl retry`` asks for the user again and
  checks it against the HMAC). It expires with arq's result (``SESSIONCTL_KEEP_RESULT``) or, for a
  failed job, after ``SESSIONCTL_FAILED_TTL``.

States: ``queued`` → ``running`` → (``retrying`` → ``running`` …) → ``succeeded`` | ``dry_run`` |
``failed``. The producer writes ``queued``; the worker writes the rest.
"""

from __future__ import annotations

import json
import time
from typing import Any

INDEX = "sessionctl:jobs"
SEQ = "sessionctl:jobs:seq"
FAILED = "sessionctl:failed"
META_PREFIX = "sessionctl:job:"

# What `--status` filters on, in the words of the CLI.
STATUS_GROUPS: dict[str, frozenset[str]] = {
    "queued": frozenset({"queued", "retrying"}),
    "running": frozenset({"running"}),
    "complete": frozenset({"succeeded", "dry_run", "partial"}),
    "failed": frozenset({"failed"}),
}


def meta_key(job_id: str) -> str:
    return META_PREFIX + job_id


def _ms() -> int:
    return int(time.time() * 1000)


class JobIndex:
    def __init__(self, redis: Any, *, size: int = 10_000, keep_s: int = 7 * 86400, failed_ttl_s: int = 30 * 86400):
        self.redis = redis
        self.size = size
        self.keep_s = keep_s
        self.failed_ttl_s = failed_ttl_s

    async def queued(
        self, job_id: str, *, kind: str, target: str, user_hmac: str | None, requested_by: str | None
    ) -> None:
        now = _ms()
        seq = await self.redis.incr(SEQ)
        fields = {
            "kind": kind,
            "target": target,
            "user_hmac": user_hmac or "",
            "requested_by": requested_by or "",
            "state": "queued",
            "enqueued_at": now,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(meta_key(job_id), mapping=fields)
            pipe.expire(meta_key(job_id), max(self.keep_s, self.failed_ttl_s))
            pipe.zadd(INDEX, {job_id: seq})
            pipe.zremrangebyrank(INDEX, 0, -(self.size + 1))
            await pipe.execute()

    async def running(self, job_id: str, *, attempt: int) -> None:
        await self.redis.hset(meta_key(job_id), mapping={"state": "running", "attempt": attempt, "started_at": _ms()})

    async def retrying(self, job_id: str, *, attempt: int, error_type: str, error: str) -> None:
        await self.redis.hset(
            meta_key(job_id),
            mapping={"state": "retrying", "attempt": attempt, "error_type": error_type, "error": error},
        )

    async def finished(self, job_id: str, *, state: str, summary: dict[str, Any]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                meta_key(job_id),
                mapping={
                    "state": state,
                    "finished_at": _ms(),
                    "summary": json.dumps(summary),
                    "error_type": "",
                    "error": "",
                },
            )
            pipe.expire(meta_key(job_id), self.keep_s)
            pipe.zrem(FAILED, job_id)
            await pipe.execute()

    async def failed(self, job_id: str, *, error_type: str, error: str, request: dict[str, Any] | None) -> None:
        now = _ms()
        fields: dict[str, Any] = {"state": "failed", "finished_at": now, "error_type": error_type, "error": error}
        if request is not None:
            fields["request"] = json.dumps(request)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(meta_key(job_id), mapping=fields)
            pipe.expire(meta_key(job_id), self.failed_ttl_s)
            pipe.zadd(FAILED, {job_id: now})
            pipe.zremrangebyscore(FAILED, 0, now - self.failed_ttl_s * 1000)
            await pipe.execute()

    async def mark_retried(self, job_id: str, new_job_id: str) -> None:
        await self.redis.hset(meta_key(job_id), mapping={"retried_as": new_job_id})

    async def get(self, job_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(meta_key(job_id))
        return _decode(job_id, raw) if raw else None

    async def list(
        self, *, status: str | None = None, kind: str | None = None, limit: int = 50, failed_only: bool = False
    ) -> list[dict[str, Any]]:
        """Newest first, filtered; reads the index in chunks until ``limit`` rows match."""
        wanted = STATUS_GROUPS.get(status) if status else None
        key = FAILED if failed_only else INDEX
        out: list[dict[str, Any]] = []
        start, chunk = 0, max(limit * 2, 200)
        while len(out) < limit:
            ids = await self.redis.zrevrange(key, start, start + chunk - 1)
            if not ids:
                break
            start += chunk
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(meta_key(_s(job_id)))
                metas = await pipe.execute()
            for job_id, raw in zip(ids, metas, strict=True):
                if not raw:
                    continue  # expired meta: the index entry is trimmed below
                row = _decode(_s(job_id), raw)
                if wanted is not None and row["state"] not in wanted:
                    continue
                if kind is not None and row["kind"] != kind:
                    continue
                out.append(row)
                if len(out) >= limit:
                    break
        return out


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
    return row
