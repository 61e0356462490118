"""The producer API: enqueue jobs, read their state, wait for them.

Example::

    from sessionctl.producer import Producer

    async with Producer() as producer:            # settings from the environment
        enq = await producer.purge_user_sessions(agent_id="3f2c-…", user_id="u-123")
        print(enq.job_id, "joined a running job" if enq.collapsed else "queued")
        state = await producer.wait(enq.job_id, timeout=600)
        assert state.status == "succeeded" and state.result["remaining"] == 0

Job ids are deterministic per (job kind, target, user, options) — as a keyed digest, never the raw
user id — plus a generation. While a job for the same request is queued, running or waiting to
retry, asking again returns that job (``collapsed=True``). Once it has finished, succeeded or
failed, asking again starts a new generation (atomically, once per finished job). A generation is
the time and random bits, never a counter: no job id is ever used twice, even after Redis lost
every key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from typing import Any

from redis.exceptions import RedisError, WatchError

from jobs.models import (
    EXPORT_SESSIONS,
    PURGE_EXPIRED_SESSIONS,
    PURGE_USER_SESSIONS,
    PURGE_USERS,
    RESWEEP,
    BulkPurgeRequest,
    ExportRequest,
    PurgeRequest,
    ResweepRequest,
    RetentionRequest,
    parse_request,
)
from sessionctl import tracing
from sessionctl.agents import AgentHandle
from sessionctl.config import Settings, load_settings
from sessionctl.databases import Databases
from sessionctl.errors import InvalidRequest, RedisUnavailable
from sessionctl.identifiers import Ambiguous, clean_ids
from sessionctl.jobstate import Enqueued, JobState
from sessionctl.privacy import request_digest, user_hmac
from sessionctl.resolvers import ResolverChain, build_chain
from worker.jobindex import UNFINISHED, JobIndex, Listing, record_end, request_without_user, target_of
from worker.queue import Queue, put

# The request model of each job kind a caller may enqueue under an id of its own.
REQUEST_MODELS: dict[str, type[PurgeRequest] | type[ExportRequest]] = {
    PURGE_USER_SESSIONS: PurgeRequest,
    EXPORT_SESSIONS: ExportRequest,
}

LOST = (
    "the job is gone from the queue without a result (Redis lost it, or its result expired before it was read):"
    " ask again"
)


def new_generation() -> str:
    """A generation that no job id ever had, whatever Redis remembers: the time in milliseconds
    and 32 random bits, in hex. Redis losing its keys (FLUSHALL, a restart without persistence,
    eviction) can only make the next request start a new generation, never reuse an old one."""
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


class Producer:
    """Enqueue and follow sessionctl jobs. Use as ``async with Producer() as p``."""

    def __init__(self, settings: Settings | None = None, *, redis: Any = None) -> None:
        self.settings = settings or load_settings()
        self._queue = None if redis is None else Queue(redis, self.settings.queue_name)
        self._own_queue = redis is None
        self._databases: Databases | None = None
        self._chain: ResolverChain | None = None

    async def __aenter__(self) -> Producer:
        await self.queue()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def queue(self) -> Queue:
        if self._queue is None:
            self._queue = await Queue.connect(self.settings)
        return self._queue

    async def redis(self) -> Any:
        """The Redis client under the queue (sessionctl's own keys: the job index, generations)."""
        return (await self.queue()).redis

    async def close(self) -> None:
        if self._databases is not None:
            await self._databases.close()
            self._databases = None
        if self._queue is not None and self._own_queue:
            await self._queue.close()
            self._queue = None

    # -- requests --------------------------------------------------------------------------------

    async def purge_user_sessions(
        self,
        *,
        user_id: str,
        agent_id: str | None = None,
        all_agents: bool = False,
        dry_run: bool = False,
        memories: bool = False,
        scope: str = "sessions",
        requested_by: str | None = None,
        check_agent: bool = True,
        origin: str = "request",
    ) -> Enqueued:
        """Enqueue the erasure of a user's sessions (``agent_id`` or ``all_agents=True``);
        ``scope="all"`` erases the user's rows in every user-keyed Agno table. ``origin="resweep"``
        marks an erasure a re-sweep asked for (in its result and receipt).

        Raises :class:`~sessionctl.errors.InvalidRequest` (a ``ValueError``) on bad input and,
        with ``check_agent``, :class:`~sessionctl.errors.AgentNotFound` (a ``LookupError``) for an
        agent without session storage — before anything is enqueued.
        """
        payload = {
            "user_id": user_id,
            "agent_id": agent_id,
            "all_agents": all_agents,
            "dry_run": dry_run,
            "memories": memories,
            "scope": scope,
            "requested_by": requested_by,
            "origin": origin,
        }
        request = parse_request(PurgeRequest, payload)
        if check_agent:
            await self.require_agent(request.agent_id)
        return await self._enqueue(
            PURGE_USER_SESSIONS,
            request.model_dump(mode="json"),
            identity=(
                self._target_identity(request.target),
                request.user_id,
                f"dry_run={request.dry_run}",
                f"memories={request.memories}",
                f"scope={request.scope}",
            ),
        )

    async def purge_users(
        self,
        *,
        user_ids: list[str],
        agent_id: str | None = None,
        all_agents: bool = False,
        dry_run: bool = False,
        memories: bool = False,
        scope: str = "sessions",
        requested_by: str | None = None,
        check_agent: bool = True,
        ambiguous_ids: Ambiguous = "refuse",
    ) -> Enqueued:
        """Enqueue one bulk erasure of up to 10,000 users (duplicates are dropped).

        Ids are taken exactly as given. One with surrounding whitespace or an invisible character
        (``"alice "``, a zero-width space) refuses the whole list with the positions named, unless
        ``ambiguous_ids`` is ``"keep"`` (exactly as given) or ``"strip"`` (surrounding whitespace
        removed, blank ids dropped)."""
        if ambiguous_ids == "strip" and isinstance(user_ids, list) and all(isinstance(u, str) for u in user_ids):
            user_ids = clean_ids(user_ids, "strip", "user_ids")
        payload = {
            "user_ids": list(dict.fromkeys(user_ids)) if isinstance(user_ids, list) else user_ids,
            "ambiguous_ids": "keep" if ambiguous_ids == "keep" else "refuse",
            "agent_id": agent_id,
            "all_agents": all_agents,
            "dry_run": dry_run,
            "memories": memories,
            "scope": scope,
            "requested_by": requested_by,
        }
        request = parse_request(BulkPurgeRequest, payload)
        if check_agent:
            await self.require_agent(request.agent_id)
        identity = (
            self._target_identity(request.target),
            "\x00".join(sorted(request.user_ids)),
            f"dry_run={request.dry_run}",
            f"memories={request.memories}",
            f"scope={request.scope}",
        )
        return await self._enqueue(PURGE_USERS, request.model_dump(mode="json"), identity=identity)

    async def run_retention(
        self,
        *,
        agent_id: str | None = None,
        dry_run: bool = False,
        as_of: int | None = None,
        tick: str | None = None,
        requested_by: str | None = None,
    ) -> Enqueued:
        """Enqueue a retention run (the policy in SESSIONCTL_RETENTION_FILE), for one agent or all."""
        payload = {
            "agent_id": agent_id,
            "dry_run": dry_run,
            "as_of": as_of,
            "tick": tick,
            "requested_by": requested_by,
        }
        request = parse_request(RetentionRequest, payload)
        identity = (
            self._target_identity(request.target),
            f"dry_run={request.dry_run}",
            f"as_of={request.as_of}",
            f"tick={request.tick}",
        )
        return await self._enqueue(PURGE_EXPIRED_SESSIONS, request.model_dump(mode="json"), identity=identity)

    async def resweep(
        self, *, erase: bool = False, tick: str | None = None, requested_by: str | None = None
    ) -> Enqueued:
        """Enqueue a re-sweep: find users erased before who have data again; with ``erase``, erase
        each again (a new job per user, marked ``origin: resweep``)."""
        request = parse_request(ResweepRequest, {"erase": erase, "tick": tick, "requested_by": requested_by})
        identity = (f"erase={request.erase}", f"tick={request.tick}")
        return await self._enqueue(RESWEEP, request.model_dump(mode="json"), identity=identity)

    async def export_sessions(
        self,
        *,
        out: str,
        agent_id: str | None = None,
        all_agents: bool = False,
        user_id: str | None = None,
        since: int | None = None,
        until: int | None = None,
        by: str = "created",
        compress: str = "none",
        then_purge: bool = False,
        requested_by: str | None = None,
        check_agent: bool = True,
        scope: str = "sessions",
    ) -> Enqueued:
        """Enqueue an export to ``EXPORT_DIR/out`` (one user's sessions, or every user's; with
        ``scope="all"``, one user's everything: their rows in every other store beside the sessions).

        ``since``/``until`` are epoch seconds (half-open window on ``created_at``, or on
        ``coalesce(updated_at, created_at)`` with ``by="updated"``). ``then_purge=True`` erases the
        exported sessions once the export verifies (export-then-erase; needs ``user_id``).
        """
        payload = {
            "out": out,
            "agent_id": agent_id,
            "all_agents": all_agents,
            "user_id": user_id,
            "since": since,
            "until": until,
            "by": by,
            "compress": compress,
            "then_purge": then_purge,
            "requested_by": requested_by,
            "scope": scope,
        }
        request = parse_request(ExportRequest, payload)
        if check_agent:
            await self.require_agent(request.agent_id)
        identity = (
            self._target_identity(request.target),
            "\x00all-users" if request.user_id is None else request.user_id,
            f"since={request.since}",
            f"until={request.until}",
            f"by={request.by}",
            f"out={request.out}",
            f"compress={request.compress}",
            f"then_purge={request.then_purge}",
            f"scope={request.scope}",
        )
        return await self._enqueue(EXPORT_SESSIONS, request.model_dump(mode="json"), identity=identity)

    async def require_agent(self, agent_id: str | None) -> None:
        """An agent without session storage is refused before anything is enqueued."""
        if agent_id is not None:
            await (await self._agent(agent_id)).layout()

    async def _agent(self, agent_id: str) -> AgentHandle:
        if self._chain is None:
            self._chain = build_chain(self.settings)
        return await AgentHandle.resolve(agent_id, settings=self.settings, databases=self._db(), chain=self._chain)

    def _target_identity(self, target: str) -> str:
        """Where the request acts — queue, database, schema — so two deployments sharing a Redis,
        or two agent ids naming one schema (``a-b``, ``a_b``), never share or split a job."""
        schema = "*" if target == "*" else self.settings.schema_for(target)
        return f"{self.settings.queue_name}|{self.settings.dsn.redacted}|{schema}"

    async def _enqueue(self, kind: str, payload: dict[str, Any], *, identity: tuple[str, ...]) -> Enqueued:
        with tracing.span("sessionctl.enqueue", kind=kind) as current:
            enq = await self._enqueue_job(kind, payload, identity=identity)
            tracing.set_attributes(current, job_id=enq.job_id, collapsed=enq.collapsed)
            if not enq.collapsed and (headers := tracing.carrier()):  # the worker's job span: a child of this one
                await (await self.redis()).set(
                    tracing.KEY.format(enq.job_id), json.dumps(headers), ex=self.settings.keep_result
                )
        if not enq.collapsed:
            user = payload.get("user_id")
            await self.index().queued(
                enq.job_id,
                kind=kind,
                target=target_of(payload),
                user_hmac=None if user is None else user_hmac(self.settings.hash_key_bytes, user),
                requested_by=payload.get("requested_by"),
                request=request_without_user(payload),
            )
        return enq

    def validate(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The payload of a job of this kind as the worker will read it, or
        :class:`~sessionctl.errors.InvalidRequest` — before anything is recorded or enqueued."""
        return parse_request(REQUEST_MODELS[kind], payload).model_dump(mode="json")

    async def enqueue_as(self, kind: str, payload: dict[str, Any], job_id: str) -> Enqueued:
        """Enqueue a job under an id chosen by its caller — the job of a data-subject request, which
        the ledger records before it is enqueued (:mod:`sessionctl.ledger`). The payload is
        validated as any request; ``collapsed`` when arq already holds that id."""
        data = self.validate(kind, payload)
        user = data.get("user_id")
        hmac = None if user is None else user_hmac(self.settings.hash_key_bytes, user)
        try:
            created = await put(await self.queue(), self.index(), kind, data, job_id, hmac)
        except RedisError as exc:
            raise RedisUnavailable(f"Redis failed while enqueueing ({type(exc).__name__})") from exc
        return Enqueued(job_id, collapsed=not created)

    def index(self) -> JobIndex:
        if self._queue is None:
            raise RuntimeError("Producer is not open: use `async with Producer() as p`")
        return JobIndex(
            self._queue.redis,
            self.settings.queue_name,
            size=self.settings.job_index_size,
            keep_s=self.settings.keep_result,
            failed_ttl_s=self.settings.failed_ttl,
        )

    async def jobs(
        self, *, status: str | None = None, kind: str | None = None, limit: int = 50, failed_only: bool = False
    ) -> Listing:
        """Recent jobs, newest first, from our own index (no KEYS scan). Jobs the index still
        calls unfinished are checked against the queue first (:meth:`settle`); ``.malformed`` of
        the list counts index entries that could not be read (skipped)."""
        await self.redis()
        index = self.index()
        if failed_only:  # jobs that ended unseen are in the main index only, until settled: one pass over it
            await index.list(limit=self.settings.job_index_size, settle=self.settle)
        return await index.list(status=status, kind=kind, limit=limit, failed_only=failed_only, settle=self.settle)

    async def jobs_by_id(self, job_ids: list[str]) -> list[dict[str, Any]]:
        """These jobs' index entries, in the order given (those the index no longer holds left out),
        unfinished ones checked against the queue first."""
        await self.redis()
        index = self.index()
        rows = await index.get_many(job_ids)
        await self.settle([r for r in rows if r["state"] in UNFINISHED])
        return rows

    async def settle(self, rows: list[dict[str, Any]]) -> None:
        """Make the index true for jobs it calls queued, running or retrying, from what arq holds:
        a result (the job ended — arq's own "max tries exceeded", a timeout or an abort included,
        which never reach the worker's bookkeeping when the worker is not ``sessionctl worker``), or
        nothing at all (the job is gone: Redis lost it, or its result expired). Rows are updated
        in place, and in the index."""
        if not rows:
            return
        ends = await (await self.queue()).ends([row["job_id"] for row in rows])
        index = self.index()
        for row, (alive, raw) in zip(rows, ends, strict=True):
            if raw is not None:
                ended = await record_end(index, row["job_id"], raw)
                if ended is not None:
                    row.update(ended)
            elif not alive:
                error = {"error_type": "JobLost", "error": LOST}
                await index.failed(row["job_id"], request=None, **error)
                row.update(state="failed", **error)

    async def retry(self, job_id: str, *, user_id: str | None = None) -> Enqueued:
        """Ask again for a failed job's request (the user id is given again and checked: it is not kept)."""
        await self.redis()
        meta = await self.index().get(job_id)
        if meta is None:
            raise InvalidRequest(f"no record of job {job_id}: it never existed, or its record expired")
        await self.settle([meta] if meta["state"] in UNFINISHED else [])
        if meta["state"] != "failed":
            raise InvalidRequest(f"job {job_id} is {meta['state']}, not failed: nothing to retry")
        request = meta.get("request")
        if not isinstance(request, dict):
            raise InvalidRequest(f"job {job_id} kept no request to retry (its payload was not a request)")
        request = dict(request)
        if request.get("request_id"):  # a data-subject request's job: the ledger names its next one
            enq = await self._retry_request(job_id, str(request["request_id"]), meta, user_id)
            await self.index().mark_retried(job_id, enq.job_id)
            return enq
        request.pop("request_id", None)
        if request.pop("bulk", False):
            raise InvalidRequest("a bulk erasure keeps no user ids: ask again with the same --users-file")
        if request.pop("has_user", False):
            if user_id is None:
                raise InvalidRequest("this job was for one user: pass --user ID (it is checked against the job's HMAC)")
            if user_hmac(self.settings.hash_key_bytes, user_id) != meta.get("user_hmac"):
                raise InvalidRequest("--user does not match the user of this job")
            request["user_id"] = user_id
        if meta["kind"] == PURGE_USER_SESSIONS:
            enq = await self.purge_user_sessions(**request)
        elif meta["kind"] == EXPORT_SESSIONS:
            enq = await self.export_sessions(**request)
        else:
            raise InvalidRequest(f"job {job_id} is of a kind this version cannot retry: {meta['kind']}")
        await self.index().mark_retried(job_id, enq.job_id)
        return enq

    async def _retry_request(self, job_id: str, request_id: str, meta: dict[str, Any], user_id: str | None) -> Enqueued:
        """Retry the failed job of a data-subject request: its next job is recorded in the ledger
        first, so the retry settles the request (closed, its webhook sent) when it succeeds."""
        from sessionctl import ledger
        from sessionctl.store import ledger as ledger_sql

        if user_id is None or user_hmac(self.settings.hash_key_bytes, user_id) != meta.get("user_hmac"):
            raise InvalidRequest("pass the job's user with --user (checked against the job's HMAC; it is not kept)")
        async with self._db().connect(self.settings.dsn) as conn, conn.transaction():
            row = await ledger_sql.lock_pending(conn, request_id)
            if row is None:
                raise InvalidRequest(f"request {request_id} is closed, or being served right now: nothing to retry")
            if row["job_ids"][-1] != job_id:
                raise InvalidRequest(f"request {request_id} has a newer job, {row['job_ids'][-1]}: retry that one")
            kind, new_id, payload = ledger.next_job(self.settings, row, user_id)
            await ledger_sql.add_job(conn, request_id, new_id)
        return await self.enqueue_as(kind, payload, new_id)

    def _db(self) -> Databases:
        if self._databases is None:
            self._databases = Databases(pool_size=1, client_cache_size=8)
        return self._databases

    async def _enqueue_job(self, kind: str, payload: dict[str, Any], *, identity: tuple[str, ...]) -> Enqueued:
        """Enqueue under ``kind:digest:generation``; join the job of that generation while it is
        active; move to a new generation once it was used and is no longer active (finished,
        failed, or its result expired), so a job id is never run twice. Generations are unique by
        construction (:func:`new_generation`), so neither is a job id after Redis lost its keys."""
        queue = await self.queue()
        redis = queue.redis
        digest = request_digest(self.settings.hash_key_bytes, kind, *identity)
        queue_name = self.settings.queue_name
        gen_key = f"{queue_name}:gen:{kind}:{digest}"
        used_key = gen_key + ":used"
        # Forgetting a generation is harmless now: keep the keys as long as a job's records.
        ttl = max(self.settings.keep_result, self.settings.failed_ttl)
        try:
            for _ in range(10):
                raw_gen, raw_used = await redis.mget(gen_key, used_key)
                if raw_gen is None:
                    await _advance(redis, gen_key, None, ttl)
                    continue
                gen = raw_gen.decode()
                job_id = f"{queue_name}:{kind}:{digest}:{gen}"  # the deployment's own: arq's keys differ too
                if raw_used is not None and raw_used.decode() == gen:
                    if await queue.active(job_id):
                        return Enqueued(job_id, collapsed=True)  # queued, running or waiting to retry
                    await _advance(redis, gen_key, gen, ttl)  # used and no longer active: a new generation
                    continue
                if await queue.enqueue(kind, payload, job_id):
                    await redis.set(used_key, gen, ex=ttl)
                    return Enqueued(job_id, collapsed=False)
                if not await queue.has_result(job_id):
                    return Enqueued(job_id, collapsed=True)  # queued, running or waiting to retry
                await _advance(redis, gen_key, gen, ttl)  # finished: a new generation
        except RedisError as exc:
            raise RedisUnavailable(f"Redis failed while enqueueing ({type(exc).__name__})") from exc
        raise RedisUnavailable("could not enqueue: the job id kept changing under contention; try again")

    async def check_worker(self, *, exports: bool = False) -> str | None:
        """One line if no worker serves this queue, or if the one that does is configured for
        another deployment (then its jobs act elsewhere than this producer checked); ``None``
        when a worker like this producer serves it. ``exports``: the export directory matters too
        (a relative one resolves against each process's working directory)."""
        from worker.queue import deployment

        queue = await self.queue()
        found = await queue.workers()
        if not found:
            return (
                f"no worker has reported for queue {self.settings.queue_name} in the last 30 s: the job waits until"
                " one runs — start one with `sessionctl worker` (same DATABASE_URL, REDIS_URL, SESSIONCTL_QUEUE)"
            )
        mine = deployment(self.settings)
        names = {
            "database": "DATABASE_URL",
            "schema_template": "SESSIONCTL_SCHEMA_TEMPLATE",
            "hash_key": "SESSIONCTL_HASH_KEY",
            **({"export_dir": "SESSIONCTL_EXPORT_DIR"} if exports else {}),
        }
        for about in found:  # every live worker of the queue may take the job
            differ = []
            for k, var in names.items():
                if about.get(k) == mine[k]:
                    continue
                # the key only as "differs": its fingerprint means nothing to a reader
                shown = "keys differ" if k == "hash_key" else f"{about.get(k)} there, {mine[k]} here"
                differ.append(f"{var} ({shown})")
            if differ:
                return (
                    f"a worker serving queue {self.settings.queue_name} ({about.get('worker')}) is configured"
                    f" differently: {'; '.join(differ)} — its jobs act on its own settings; give both the same"
                )
        return None

    # -- following jobs ----------------------------------------------------------------------------

    async def status(self, job_id: str) -> JobState:
        """The job's state; a job id of another deployment (another ``SESSIONCTL_QUEUE``) is not
        found here, even on a shared Redis."""
        if not job_id.startswith(self.settings.queue_name + ":"):
            return JobState(job_id=job_id, status="not_found")
        return await (await self.queue()).state(job_id)

    async def watch(self, job_id: str, *, poll: float = 0.5) -> Any:
        """Yield the job's state every ``poll`` seconds until it is final (the last one included)."""
        while True:
            state = await self.status(job_id)
            yield state
            if state.done:
                return
            await asyncio.sleep(poll)

    async def wait(
        self, job_id: str, *, timeout: float | None = None, poll: float = 0.2, on_change: Any = None
    ) -> JobState:
        """Poll until the job is final (or ``timeout`` seconds pass: returns the last state)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = await self.status(job_id)
            if on_change is not None:
                on_change(state)
            if state.done or (deadline is not None and time.monotonic() >= deadline):
                return state
            await asyncio.sleep(poll)
