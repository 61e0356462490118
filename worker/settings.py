"""arq worker settings and the job functions it runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import asyncpg
from arq.worker import Worker, func, get_kwargs
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

import jobs.bulk
import jobs.export
import jobs.purge
import jobs.resweep
import jobs.retention
from jobs.context import JobContext
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
from sessionctl import ledger, media, metrics, probes, tracing
from sessionctl.config import Settings, load_settings
from sessionctl.databases import Databases
from sessionctl.errors import (
    InternalError,
    InvalidRequest,
    PermanentError,
    QueueUnavailable,
    RequestNotRecorded,
    SessionctlError,
    TransientError,
    unexpected,
)
from sessionctl.jobstate import job_kind
from sessionctl.logs import configure_logging, get_logger
from sessionctl.privacy import user_hmac
from sessionctl.resolvers import ResolverChain, build_chain
from sessionctl.retention_policy import parse_schedule
from sessionctl.store import ledger as ledger_sql
from sessionctl.store import media as media_sql
from worker import serializer
from worker.jobindex import JobIndex, record_end, request_without_user
from worker.lease import lease
from worker.progress import RedisProgress
from worker.queue import Queue, beat, deployment, forget, put
from worker.redisconf import redis_settings
from worker.retry import to_arq

log = get_logger("sessionctl.worker")


def new_worker_id() -> str:
    """This worker's name in the queue's list of live workers: host, process, a few random bits."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


@dataclass(slots=True)
class WorkerState:
    """What startup puts in arq's ``ctx["state"]``."""

    settings: Settings
    databases: Databases
    hash_key: bytes
    index: JobIndex
    resolvers: ResolverChain
    storages: list[media.Storage] = field(default_factory=list)  # SESSIONCTL_MEDIA_STORAGES
    depth_task: asyncio.Task[None] | None = None
    deliveries: ledger.Deliveries | None = None  # webhooks of the DSR service
    deliveries_task: asyncio.Task[None] | None = None
    health: probes.Health = field(default_factory=probes.Health)  # /healthz, /readyz
    health_task: asyncio.Task[None] | None = None
    worker_id: str = field(default_factory=new_worker_id)  # its report in the queue's list of live workers


def job_index(redis: Any, settings: Settings) -> JobIndex:
    return JobIndex(
        redis,
        settings.queue_name,
        size=settings.job_index_size,
        keep_s=settings.keep_result,
        failed_ttl_s=settings.failed_ttl,
    )


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or load_settings()
    configure_logging(settings.log_format, settings.log_level)
    state = WorkerState(
        settings=settings,
        databases=Databases(
            pool_size=settings.pool_size,
            client_cache_size=settings.client_cache_size,
            max_databases=settings.max_databases,
            statement_cache_size=settings.statement_cache_size,
        ),
        hash_key=settings.hash_key_bytes,
        index=job_index(ctx["redis"], settings),
        resolvers=build_chain(settings),  # one per worker: its TTL cache spans jobs
        storages=media.parse_storages(settings.media_storages),
    )
    ctx["state"] = state
    serving = settings.metrics_port != 0 and probes.serve(settings.metrics_port, state.health)
    state.health_task = asyncio.create_task(_watch_health(ctx["redis"], state))
    state.depth_task = asyncio.create_task(_keep_alive(ctx["redis"], settings, state.worker_id))
    queue = Queue(ctx["redis"], settings.queue_name)

    async def requeue(kind: str, payload: dict[str, Any], job_id: str) -> None:
        """A request whose job vanished with Redis, enqueued again under its next job id."""
        await put(queue, state.index, kind, payload, job_id, user_hmac(state.hash_key, str(payload["user_id"])))

    state.deliveries = ledger.Deliveries(settings, lambda: state.databases.connect(settings.dsn), queue.state, requeue)
    state.deliveries_task = asyncio.create_task(state.deliveries.run())
    log.info(
        "worker.start",
        database=settings.dsn.redacted,
        queue=settings.queue_name,
        max_jobs=settings.max_jobs,
        metrics_port=settings.metrics_port if serving else None,
    )


async def _keep_alive(redis: Any, settings: Settings, worker_id: str) -> None:
    """Every few seconds: the queue's depth for the metrics, and this worker's report in the queue's
    list of live workers (``<queue>:workers``, ``<queue>:worker:<id>``: database, naming rule, a
    fingerprint of the hash key, export directory), so ``health`` counts the workers and a CLI
    configured differently can say so before its job fails."""
    about = deployment(settings)
    while True:
        with contextlib.suppress(Exception):
            metrics.QUEUE_DEPTH.labels(settings.queue_name).set(await redis.zcard(settings.queue_name))
            # arq scores each queued job with when it may run (ms): the oldest one due now
            now_ms = time.time() * 1000
            due = await redis.zrangebyscore(settings.queue_name, "-inf", now_ms, start=0, num=1, withscores=True)
            metrics.QUEUE_AGE.labels(settings.queue_name).set(max(0.0, (now_ms - due[0][1]) / 1000) if due else 0)
        with contextlib.suppress(Exception):
            await beat(redis, settings.queue_name, worker_id, about)
        await asyncio.sleep(5)


READY_CHECK_S = 10.0  # how often readiness is checked: Redis and every database the worker serves


async def _watch_health(redis: Any, state: WorkerState) -> None:
    """Tick the liveness beat every second (a blocked event loop stops it); every
    ``READY_CHECK_S``, check that Redis and the databases this worker serves answer — through its
    own pools, within their bound: a database whose every pooled connection is busy with jobs is
    answering, and is not asked again until one is free."""
    health, settings = state.health, state.settings
    last = 0.0
    while True:
        health.tick()
        if time.monotonic() - last >= READY_CHECK_S:
            last = time.monotonic()
            problems: list[str] = []
            try:
                await asyncio.wait_for(redis.ping(), 3)
            except Exception as exc:
                problems.append(f"Redis unreachable ({type(exc).__name__})")
            for dsn in dict.fromkeys([settings.dsn, *state.databases.known()]):
                try:
                    await asyncio.wait_for(_database_answers(state.databases, dsn), 5)
                except Exception as exc:
                    problems.append(f"database {dsn.redacted} unreachable ({type(exc).__name__})")
            health.ready, health.reason = not problems, "; ".join(problems) or "ok"
            health.checked_at = time.time()
            metrics.WORKER_READY.set(1 if health.readiness()[0] else 0)
            if problems:
                log.warning("worker.not_ready", reason=health.reason)
        await asyncio.sleep(1)


async def _database_answers(databases: Databases, dsn: Any) -> None:
    """``SELECT 1`` through the worker's pool for that database; nothing when every connection of
    the pool is busy (with jobs: it is answering them) or a job waits for one."""
    pool = await databases.pool(dsn)
    if databases.wanted(dsn) or (pool.get_size() >= pool.get_max_size() and pool.get_idle_size() == 0):
        return
    async with databases.connect(dsn) as conn:
        await conn.fetchval("SELECT 1")


async def shutdown(ctx: dict[str, Any]) -> None:
    state: WorkerState | None = ctx.get("state")
    if state is not None:
        for task in (state.depth_task, state.deliveries_task, state.health_task):
            if task is not None:
                task.cancel()
        with contextlib.suppress(Exception):  # stopped: no longer one of the queue's live workers
            await forget(ctx["redis"], state.settings.queue_name, state.worker_id)
        await state.databases.close()
    log.info("worker.stop")


def _job_context(ctx: dict[str, Any]) -> tuple[WorkerState, JobContext]:
    state: WorkerState = ctx["state"]
    job_id = str(ctx.get("job_id", ""))
    return state, JobContext(
        settings=state.settings,
        databases=state.databases,
        hash_key=state.hash_key,
        job_id=job_id,
        job_try=int(ctx.get("job_try", 1)),
        progress=RedisProgress(ctx["redis"], job_id, state.settings.keep_result, state.settings.progress_interval),
        resolvers=state.resolvers,
        enqueued_at=ctx.get("enqueue_time"),
        media=media.MediaSink(state.storages, state.hash_key, job_id),
        enqueue_erasure=lambda payload: _enqueue_erasure(ctx, payload),
    )


async def _enqueue_erasure(ctx: dict[str, Any], payload: dict[str, Any]) -> str:
    """What a re-sweep asks for: a regular erasure job, marked ``origin: resweep``."""
    from sessionctl.producer import Producer

    state: WorkerState = ctx["state"]
    enq = await Producer(state.settings, redis=ctx["redis"]).purge_user_sessions(
        **payload, origin="resweep", requested_by="resweep", check_agent=False
    )
    return enq.job_id


async def _trace_parent(redis: Any, job_id: str) -> dict[str, str] | None:
    """The producer's trace context for this job (sessionctl/tracing.py), if it left one."""
    if not tracing.ENABLED:
        return None
    try:
        raw = await redis.get(tracing.KEY.format(job_id))
        found = json.loads(raw) if raw else None
    except Exception:  # a trace is never worth failing a job over
        return None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else None


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    """What `sessionctl jobs` shows of a result: counts only (a dry run: what it would delete)."""
    if result.get("dry_run"):
        would = result.get("would_delete") or {}
        return {f"would_delete_{k}": v for k, v in would.items() if k in ("sessions", "runs", "memories")}
    keys = (
        "sessions_deleted",
        "runs_deleted",
        "remaining",
        "sessions",
        "bytes",
        "late_sessions",
        "users_count",
        "users_matched",
        "complete",
    )
    return {k: result[k] for k in keys if k in result}


async def _run(
    ctx: dict[str, Any],
    kind: str,
    model: type[BaseModel],
    procedure: Callable[[JobContext, Any], Awaitable[BaseModel]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    """Validate the payload again, run the procedure under a lease, keep the job index and the
    metrics up to date, and map errors onto arq (worker/retry.py)."""
    state, jctx = _job_context(ctx)
    t0 = time.monotonic()
    await state.index.running(jctx.job_id, attempt=jctx.job_try)
    try:
        if kwargs or len(args) != 1:
            raise InvalidRequest("job payload must be exactly one JSON object (the request)")
        request = parse_request(model, args[0])
        request_id = getattr(request, "request_id", None)  # the data-subject request the job serves
        if request_id is not None:
            await _check_recorded(state, jctx.job_id, str(request_id))
        token = media_sql.CURRENT.set(jctx.media)  # the store's deletes hand their media references over
        parent = await _trace_parent(ctx["redis"], jctx.job_id)
        try:
            with tracing.span("sessionctl.job", parent, job_id=jctx.job_id, kind=kind, job_try=jctx.job_try) as span:
                async with lease(ctx["redis"], jctx.job_id, state.settings.lease_ttl):
                    result = await procedure(jctx, request)
                done = result.model_dump(include={"status", "user_hmac", "sessions_deleted", "sessions"})
                tracing.set_attributes(span, **done)
        finally:
            media_sql.CURRENT.reset(token)
    except Exception as exc:
        if isinstance(exc, RedisConnectionError | RedisTimeoutError):
            err: SessionctlError = QueueUnavailable(f"lost Redis mid-job ({type(exc).__name__})")
        else:
            err = exc if isinstance(exc, SessionctlError) else _internal(exc, jctx.job_id, kind)
        outcome = to_arq(
            err,
            job_try=jctx.job_try,
            max_tries=state.settings.max_tries,
            base_delay=state.settings.retry_base_delay,
        )
        retrying = outcome is not err
        if not retrying and isinstance(err, TransientError):  # the last try: say so, not "will retry"
            err = outcome = type(err)(f"{err}; gave up after {jctx.job_try} tries (SESSIONCTL_MAX_TRIES)")
        label = "retried" if retrying else "failed"
        metrics.JOBS.labels(kind, label).inc()
        metrics.JOB_SECONDS.labels(kind, label).observe(time.monotonic() - t0)
        log.warning(
            "job.retry" if retrying else "job.failed",
            job_id=jctx.job_id,
            kind=kind,
            job_try=jctx.job_try,
            error_type=type(err).__name__,
            error=str(err),
            permanent=isinstance(err, PermanentError),
            transient=isinstance(err, TransientError),
            elapsed_ms=round((time.monotonic() - t0) * 1000, 1),
        )
        if retrying:
            metrics.RETRIES.labels(kind).inc()
            await state.index.retrying(jctx.job_id, attempt=jctx.job_try, error_type=type(err).__name__, error=str(err))
        else:
            payload = args[0] if len(args) == 1 else None
            await state.index.failed(
                jctx.job_id, error_type=type(err).__name__, error=str(err), request=request_without_user(payload)
            )
            failure = {"type": type(err).__name__, "message": str(err)}
            await _settle_requests(state, jctx.job_id, kind, "failed", None, failure)
        if isinstance(exc, SessionctlError):
            raise outcome from exc
        raise outcome from None  # a foreign error's text stays out (see _internal)
    data = result.model_dump(mode="json")
    status = str(data.get("status", "succeeded"))
    metrics.JOBS.labels(kind, status).inc()
    metrics.JOB_SECONDS.labels(kind, status).observe(time.monotonic() - t0)
    await state.index.finished(jctx.job_id, state=status, summary=_summary(data))
    await _settle_requests(state, jctx.job_id, kind, status, data, None)
    return data


async def _settle_requests(
    state: WorkerState, job_id: str, kind: str, status: str, result: dict[str, Any] | None, error: Any
) -> None:
    """The DSR requests this job served (sessionctl/ledger.py): closed, their webhooks noted and sent
    at once. A failure here leaves them to the deliveries' next round (it settles from the job's
    result in Redis): the job's own outcome stands."""
    if kind not in (PURGE_USER_SESSIONS, EXPORT_SESSIONS):
        return
    if state.deliveries is not None and not state.deliveries.may_have_requests():
        return  # no open request at the last look: a request recorded since is settled by the next round
    try:
        async with state.databases.connect(state.settings.dsn) as conn:
            noted = await ledger.settle_job(
                conn, state.settings, job_id=job_id, kind=kind, status=status, result=result, error=error
            )
    except asyncpg.UndefinedTableError:
        return  # the sessionctl schema predates the DSR service: no request can exist
    except Exception as exc:
        log.warning("dsr.settle_later", job_id=job_id, error_type=type(exc).__name__)
        return
    if noted and state.deliveries is not None:
        state.deliveries.wake.set()


async def _check_recorded(state: WorkerState, job_id: str, request_id: str) -> None:
    """A job serving a data-subject request runs only if the ledger records that request, lists
    this job, and still waits for it: intake records a request before it enqueues its job."""
    async with state.databases.connect(state.settings.dsn) as conn:
        found = await ledger_sql.job_of_request(conn, request_id, job_id)
    if found is None:
        raise RequestNotRecorded(
            f"request {request_id} is not in the ledger, or does not list job {job_id}: a request's job runs only"
            " once the ledger records it; nothing was done"
        )
    if found["completed_at"] is not None:
        raise RequestNotRecorded(f"request {request_id} is already closed ({found['status']}): nothing was done")


def _internal(exc: BaseException, job_id: str, kind: str) -> InternalError:
    """A bug or an unforeseen driver error. Its text may quote row values (a user id, content): it
    stays out of logs and results; the class and, for Postgres, the SQLSTATE say where to look."""
    sqlstate = getattr(exc, "sqlstate", None)
    log.error("job.unexpected", job_id=job_id, kind=kind, error_type=type(exc).__name__, sqlstate=sqlstate)
    return InternalError(unexpected(exc))


async def purge_user_sessions(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """arq entry point of ``jobs.purge.purge_user_sessions``."""
    return await _run(ctx, PURGE_USER_SESSIONS, PurgeRequest, jobs.purge.purge_user_sessions, args, kwargs)


async def purge_users(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """arq entry point of ``jobs.bulk.purge_users`` (bulk erasure)."""
    return await _run(ctx, PURGE_USERS, BulkPurgeRequest, jobs.bulk.purge_users, args, kwargs)


async def purge_expired_sessions(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """arq entry point of ``jobs.retention.purge_expired_sessions``."""
    return await _run(
        ctx, PURGE_EXPIRED_SESSIONS, RetentionRequest, jobs.retention.purge_expired_sessions, args, kwargs
    )


async def retention_tick(ctx: dict[str, Any]) -> str | None:
    """The cron: only *enqueues* a regular retention job, one per scheduled tick. arq runs crons
    once (max_tries=1) and never again after an interruption; the regular job has retries, the lease
    and the job index, and a repeated run is harmless. The tick is the *scheduled* time (from arq's
    cron job id ``retention:<ms>``), and each tick is claimed once (SET NX): several workers, clocks a
    little apart, make one job per tick."""
    from sessionctl.producer import Producer

    state: WorkerState = ctx["state"]
    tick = _tick(ctx)
    when = datetime.strptime(tick, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    if not await ctx["redis"].set(f"{state.settings.queue_name}:tick:retention:{tick}", "1", nx=True, ex=7 * 86400):
        log.info("retention.tick_taken", tick=tick)
        return None
    enq = await Producer(state.settings, redis=ctx["redis"]).run_retention(
        as_of=int(when.timestamp()), tick=tick, requested_by="cron"
    )
    log.info("retention.tick", tick=tick, job_id=enq.job_id, collapsed=enq.collapsed)
    return enq.job_id


async def resweep(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """arq entry point of ``jobs.resweep.resweep``."""
    return await _run(ctx, RESWEEP, ResweepRequest, jobs.resweep.resweep, args, kwargs)


async def resweep_tick(ctx: dict[str, Any]) -> str | None:
    """The re-sweep cron: enqueues a regular re-sweep job, once per scheduled tick (as retention's)."""
    from sessionctl.producer import Producer

    state: WorkerState = ctx["state"]
    tick = _tick(ctx)
    if not await ctx["redis"].set(f"{state.settings.queue_name}:tick:resweep:{tick}", "1", nx=True, ex=7 * 86400):
        log.info("resweep.tick_taken", tick=tick)
        return None
    enq = await Producer(state.settings, redis=ctx["redis"]).resweep(tick=tick, requested_by="cron")
    log.info("resweep.tick", tick=tick, job_id=enq.job_id, collapsed=enq.collapsed)
    return enq.job_id


def _tick(ctx: dict[str, Any]) -> str:
    """The scheduled time of a cron run (from arq's cron job id ``<name>:<ms>``), to the second."""
    scheduled = str(ctx.get("job_id", "")).rsplit(":", 1)[-1]
    ms = int(scheduled) if scheduled.isdigit() else int(time.time() * 1000)
    return datetime.fromtimestamp(ms / 1000, UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S")


async def export_sessions(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """arq entry point of ``jobs.export.export_sessions``."""
    return await _run(ctx, EXPORT_SESSIONS, ExportRequest, jobs.export.export_sessions, args, kwargs)


def _crons(s: Settings) -> list[Any]:
    """The retention cron, when a policy file is configured; the re-sweep cron, when scheduled."""
    from arq.cron import cron

    planned = []
    # arq's cron job ids are "<name>:<ms>": named after the queue, two deployments on one Redis
    # each run their own tick instead of the first taking the other's
    if s.retention_file:
        planned.append((retention_tick, f"{s.queue_name}:retention", s.retention_schedule))
    if s.resweep_schedule:
        planned.append((resweep_tick, f"{s.queue_name}:resweep_cron", s.resweep_schedule))  # not a job name
    out = []
    for tick, name, schedule in planned:
        when = parse_schedule(schedule)
        out.append(
            cron(
                tick,
                name=name,
                second=when["second"],
                minute=when["minute"],
                hour=when["hour"],
                unique=True,
                run_at_startup=False,
                max_tries=3,
                timeout=60,
            )
        )
    return out


def build_worker_settings(settings: Settings | None = None) -> type:
    """A WorkerSettings class for these settings (the module-level one reads the environment)."""
    s = settings or load_settings()

    class _Settings:
        functions: ClassVar[list[Any]] = [
            func(purge_user_sessions, name=PURGE_USER_SESSIONS, timeout=s.purge_timeout, max_tries=s.max_tries),
            func(export_sessions, name=EXPORT_SESSIONS, timeout=s.export_timeout, max_tries=s.max_tries),
            func(purge_users, name=PURGE_USERS, timeout=s.purge_timeout, max_tries=s.max_tries),
            func(purge_expired_sessions, name=PURGE_EXPIRED_SESSIONS, timeout=s.purge_timeout, max_tries=s.max_tries),
            func(resweep, name=RESWEEP, timeout=s.purge_timeout, max_tries=s.max_tries),
        ]
        cron_jobs: ClassVar[list[Any]] = _crons(s)
        redis_settings = redis_settings(s)
        queue_name = s.queue_name
        max_jobs = s.max_jobs
        job_timeout = s.purge_timeout
        keep_result = s.keep_result
        max_tries = s.max_tries
        poll_delay = s.poll_delay
        # arq reads max_jobs ids per poll by default, then sleeps poll_delay: with 4 slots that caps a
        # worker near 4 / poll_delay jobs/s. Reading more ids per poll keeps every slot busy.
        queue_read_limit = max(s.queue_read_limit, s.max_jobs)
        health_check_interval = 60
        # SIGTERM: stop taking jobs, let running ones finish for this long, then cancel them (the
        # batch in flight rolls back; arq re-queues the job at once).
        job_completion_wait = s.stop_grace
        job_serializer = staticmethod(serializer.serialize)
        job_deserializer = staticmethod(serializer.deserialize)
        on_startup = staticmethod(startup)
        on_shutdown = staticmethod(shutdown)
        log_results = False
        ctx: ClassVar[dict[str, Any]] = {"settings": s}

    _Settings.__name__ = _Settings.__qualname__ = "WorkerSettings"
    return _Settings


class SessionctlWorker(Worker):
    """arq's worker, keeping our job index true however a job ends. arq ends some jobs without
    calling the job's code — the try limit exceeded after a worker was killed on every try (an
    OOM loop), a queue entry that expired, an abort before start — and ends others around it (a
    timeout, an abort): the result it stores then is written into the index and the failed list
    here. (A worker started as plain ``arq worker.settings.WorkerSettings`` lacks this hook:
    ``sessionctl jobs`` and ``status`` settle such jobs from arq's results when they read them.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.ctx.get("settings")
        if isinstance(settings, Settings):
            # arq marks a job it picks up as in progress for its longest timeout + 10 s (two hours
            # with the export's): a worker killed before the job's lease (worker/lease.py) first
            # shortens that mark left the job unrun for two hours. The mark starts at the lease's
            # length instead; the lease renews it while the job runs.
            self.in_progress_timeout_s = settings.lease_ttl

    def _draining(self) -> None:
        state = self.ctx.get("state")
        if isinstance(state, WorkerState):  # not ready at once: the kubelet stops sending it work
            state.health.draining = True
        metrics.WORKER_READY.set(0)

    def handle_sig(self, signum: Any) -> None:
        self._draining()
        super().handle_sig(signum)

    def handle_sig_wait_for_completion(self, signum: Any) -> None:
        self._draining()
        super().handle_sig_wait_for_completion(signum)

    async def finish_job(self, job_id: str, finish: bool, result_data: bytes | None, *args: Any) -> None:
        await super().finish_job(job_id, finish, result_data, *args)
        if finish and result_data:
            await self._record_end(job_id, result_data)

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        await super().finish_failed_job(job_id, result_data)
        if result_data:
            await self._record_end(job_id, result_data)

    async def _record_end(self, job_id: str, result_data: bytes) -> None:
        settings: Settings = self.ctx["settings"]
        try:
            ended = await record_end(job_index(self.pool, settings), job_id, result_data, failures_only=True)
        except Exception as exc:  # bookkeeping never stops the worker; `sessionctl jobs` settles it later
            log.warning("job.index_not_updated", job_id=job_id, error_type=type(exc).__name__)
            return
        if ended is not None and ended.get("state") == "failed":
            kind = job_kind(job_id, settings.queue_name)
            metrics.JOBS.labels(kind, "failed").inc()
            log.warning("job.ended_by_arq", job_id=job_id, error_type=ended["error_type"], error=ended["error"])


def create(settings: Settings, **overrides: Any) -> SessionctlWorker:
    """The worker ``sessionctl worker`` runs (``overrides``: arq ``Worker`` arguments)."""
    return SessionctlWorker(**{**get_kwargs(build_worker_settings(settings)), **overrides})


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":  # ``arq worker.settings.WorkerSettings`` works too
        return build_worker_settings()
    raise AttributeError(name)
