"""The producer API: validate a request, enqueue it, follow its job.

Example::

    from sessionctl.producer import Producer

    async with Producer() as producer:            # settings from the environment
        enq = await producer.purge_user_sessions(agent_id="3f2c-…", user_id="u-123")
        print(enq.job_id, "joined a running job" if enq.collapsed else "queued")
        state = await producer.wait(enq.job_id, timeout=600)
        assert state.status == "succeeded" and state.result["remaining"] == 0

Each request is validated with its job kind's model (:mod:`sessionctl.jobs.kinds`) and, where it
names an agent, checked to have session storage — before anything is enqueued. Enqueueing and job
identity live below, in :mod:`sessionctl.worker.enqueue`: deterministic job ids per request (as a
keyed digest, never the raw user id) plus a generation, so a request asked again while its job is
active joins it (``collapsed=True``), and no job id is ever used twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel

from sessionctl.agents import AgentHandle
from sessionctl.config import Settings, load_settings
from sessionctl.databases import Databases
from sessionctl.errors import InvalidRequest
from sessionctl.identifiers import Ambiguous, clean_ids
from sessionctl.jobs.fields import parse_request
from sessionctl.jobs.kinds import KINDS, kind_of
from sessionctl.jobs.models import (
    EXPORT_SESSIONS,
    PURGE_EXPIRED_SESSIONS,
    PURGE_USER_SESSIONS,
    PURGE_USERS,
    RESWEEP,
)
from sessionctl.jobstate import Enqueued, JobState
from sessionctl.privacy import user_hmac
from sessionctl.resolvers import ResolverChain, build_chain
from sessionctl.worker.enqueue import Enqueuer
from sessionctl.worker.jobindex import UNFINISHED, JobIndex, Listing, record_end
from sessionctl.worker.queue import Queue

AGENT_CHECK_S = 30.0  # an agent found to have session storage is not looked up again for this long
FIRST_POLL = 0.01  # wait() asks for a job's state this soon first, then less and less often
LOST = (
    "the job is gone from the queue without a result (Redis lost it, or its result expired before it was read):"
    " ask again"
)


class Producer:
    """Enqueue and follow sessionctl jobs. Use as ``async with Producer() as p``."""

    def __init__(self, settings: Settings | None = None, *, redis: Any = None) -> None:
        self.settings = settings or load_settings()
        self._queue = None if redis is None else Queue(redis, self.settings.queue_name)
        self._own_queue = redis is None
        self._databases: Databases | None = None
        self._chain: ResolverChain | None = None
        self._agents_seen: dict[str, float] = {}  # agent id -> until when its storage counts as checked

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
        return await self._submit(PURGE_USER_SESSIONS, payload, check_agent=check_agent)

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
        return await self._submit(PURGE_USERS, payload, check_agent=check_agent)

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
        payload = {"agent_id": agent_id, "dry_run": dry_run, "as_of": as_of, "tick": tick, "requested_by": requested_by}
        return await self._submit(PURGE_EXPIRED_SESSIONS, payload, check_agent=False)

    async def resweep(
        self, *, erase: bool = False, tick: str | None = None, requested_by: str | None = None
    ) -> Enqueued:
        """Enqueue a re-sweep: find users erased before who have data again; with ``erase``, erase
        each again (a new job per user, marked ``origin: resweep``)."""
        payload = {"erase": erase, "tick": tick, "requested_by": requested_by}
        return await self._submit(RESWEEP, payload, check_agent=False)

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
        return await self._submit(EXPORT_SESSIONS, payload, check_agent=check_agent)

    async def _submit(self, kind: str, payload: dict[str, Any], *, check_agent: bool) -> Enqueued:
        """Validate → check the agent → enqueue."""
        request = self.parse(kind, payload)
        if check_agent:
            await self.require_agent(getattr(request, "agent_id", None))
        return await (await self._enqueuer()).put(kind, request)

    def parse(self, kind: str, payload: dict[str, Any]) -> BaseModel:
        """The request of a job of this kind as the worker will read it, or
        :class:`~sessionctl.errors.InvalidRequest` — before anything is recorded or enqueued."""
        return parse_request(kind_of(kind).request, payload)

    async def enqueue_parsed(self, kind: str, request: BaseModel, job_id: str) -> Enqueued:
        """:meth:`enqueue_as` of a request :meth:`parse` already validated (intake validates before
        it records: not twice per request)."""
        return await (await self._enqueuer()).put_as(kind, request, job_id)

    async def enqueue_as(self, kind: str, payload: dict[str, Any], job_id: str) -> Enqueued:
        """Enqueue a job under an id chosen by its caller — the job of a data-subject request, which
        the ledger records before it is enqueued (:mod:`sessionctl.ledger`). The payload is
        validated as any request; ``collapsed`` when arq already holds that id."""
        return await (await self._enqueuer()).put_as(kind, self.parse(kind, payload), job_id)

    async def require_agent(self, agent_id: str | None) -> None:
        """An agent without session storage is refused before anything is enqueued. An agent found
        is not looked up again for ``AGENT_CHECK_S`` (intake under load asks about the same agents
        over and over; the job checks its agents again when it runs)."""
        if agent_id is None or self._agents_seen.get(agent_id, 0.0) > time.monotonic():
            return
        if self._chain is None:
            self._chain = build_chain(self.settings)
        handle = await AgentHandle.resolve(agent_id, settings=self.settings, databases=self._db(), chain=self._chain)
        await handle.layout()
        if len(self._agents_seen) > 10_000:
            self._agents_seen.clear()
        self._agents_seen[agent_id] = time.monotonic() + AGENT_CHECK_S

    def _db(self) -> Databases:
        if self._databases is None:
            self._databases = Databases(pool_size=1, client_cache_size=8)
        return self._databases

    async def _enqueuer(self) -> Enqueuer:
        return Enqueuer(await self.queue(), self.settings)

    # -- the job index ------------------------------------------------------------------------------

    def index(self) -> JobIndex:
        if self._queue is None:
            raise RuntimeError("Producer is not open: use `async with Producer() as p`")
        return JobIndex.of(self._queue.redis, self.settings)

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
        rows = await self.index().get_many(job_ids)
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
        if request.get("bulk"):
            raise InvalidRequest("a bulk erasure keeps no user ids: ask again with the same --users-file")
        kind = KINDS.get(meta["kind"])
        if kind is None or not kind.retry:
            raise InvalidRequest(f"job {job_id} is of a kind `retry` does not ask again for: {meta['kind']}")
        if request.pop("has_user", False):
            if user_id is None:
                raise InvalidRequest("this job was for one user: pass --user ID (it is checked against the job's HMAC)")
            if user_hmac(self.settings.hash_key_bytes, user_id) != meta.get("user_hmac"):
                raise InvalidRequest("--user does not match the user of this job")
            request["user_id"] = user_id
        request.pop("bulk", None)
        if request.get("request_id"):  # a data-subject request's job: the ledger names its next one
            enq = await self._retry_request(job_id, str(request["request_id"]), request)
        else:
            enq = await self._submit(meta["kind"], request, check_agent=True)
        await self.index().mark_retried(job_id, enq.job_id)
        return enq

    async def _retry_request(self, job_id: str, request_id: str, request: dict[str, Any]) -> Enqueued:
        """Retry the failed job of a data-subject request: its next job is recorded in the ledger
        first, so the retry settles the request (closed, its webhook sent) when it succeeds."""
        from sessionctl import ledger
        from sessionctl.store import dsr_requests

        async with self._db().connect(self.settings.dsn) as conn, conn.transaction():
            row = await dsr_requests.lock_pending(conn, request_id)
            if row is None:
                raise InvalidRequest(f"request {request_id} is closed, or being served right now: nothing to retry")
            if row["job_ids"][-1] != job_id:
                raise InvalidRequest(f"request {request_id} has a newer job, {row['job_ids'][-1]}: retry that one")
            kind, new_id, payload = ledger.next_job(self.settings, row, str(request["user_id"]))
            await dsr_requests.add_job(conn, request_id, new_id)
        return await self.enqueue_as(kind, payload, new_id)

    async def check_worker(self, *, exports: bool = False) -> str | None:
        """One line if no worker serves this queue, or if one that does is configured for another
        deployment; ``None`` when the workers serving it are like this producer
        (:meth:`Queue.check_served`)."""
        return await (await self.queue()).check_served(self.settings, exports=exports)

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
        """Poll until the job is final (or ``timeout`` seconds pass: returns the last state): soon
        at first (10 ms, then half as long again each time, up to ``poll``), so a small job's
        answer does not wait a whole ``poll`` — what a DSR platform waits for is mostly small jobs."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = min(poll, FIRST_POLL)
        while True:
            state = await self.status(job_id)
            if on_change is not None:
                on_change(state)
            if state.done or (deadline is not None and time.monotonic() >= deadline):
                return state
            await asyncio.sleep(pause)
            pause = min(poll, pause * 1.5)
