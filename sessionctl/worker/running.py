"""Running one job: its payload validated again (and, for a data-subject request's job, the ledger
asked whether it names it), the procedure run under a lease, the job index and the metrics kept
true, errors mapped onto arq (:mod:`sessionctl.worker.retry`), and the requests it served settled
in the ledger. :func:`entry` makes the arq function of each job kind (:mod:`sessionctl.jobs.kinds`)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sessionctl import ledger, media_storages, metrics, tracing
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
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.fields import parse_request
from sessionctl.jobs.kinds import JobKind, kind_of
from sessionctl.jobs.models import PURGE_USER_SESSIONS, PurgeRequest
from sessionctl.logs import get_logger
from sessionctl.store import dsr_requests
from sessionctl.store import media_refs as media_sql
from sessionctl.worker.jobindex import request_without_user
from sessionctl.worker.lease import lease
from sessionctl.worker.lifecycle import WorkerState
from sessionctl.worker.progress import RedisProgress
from sessionctl.worker.retry import to_arq

log = get_logger("sessionctl.worker")
Entry = Callable[..., Awaitable[dict[str, Any]]]


def entry(kind: JobKind) -> Entry:
    """The arq function of a job kind: ``ctx`` and one JSON object, the request."""

    async def job(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        return await run(ctx, kind, args, kwargs)

    job.__name__ = job.__qualname__ = kind.name
    job.__doc__ = f"arq entry point of ``{kind.procedure.__module__}.{kind.procedure.__name__}``."
    return job


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
        media=media_storages.MediaSink(state.storages, state.hash_key, job_id),
        enqueue_erasure=lambda payload: _enqueue_erasure(state, payload),
    )


async def _enqueue_erasure(state: WorkerState, payload: dict[str, Any]) -> str:
    """What a re-sweep asks for: a regular erasure job, marked ``origin: resweep``."""
    request = parse_request(PurgeRequest, {**payload, "origin": "resweep", "requested_by": "resweep"})
    return (await state.enqueuer.put(PURGE_USER_SESSIONS, request)).job_id


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


async def run(ctx: dict[str, Any], kind: JobKind, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Validate the payload again, run the procedure under a lease, keep the job index and the
    metrics up to date, and map errors onto arq."""
    state, jctx = _job_context(ctx)
    t0 = time.monotonic()
    await state.index.running(jctx.job_id, attempt=jctx.job_try)
    try:
        if kwargs or len(args) != 1:
            raise InvalidRequest("job payload must be exactly one JSON object (the request)")
        request = parse_request(kind.request, args[0])
        request_id = getattr(request, "request_id", None)  # the data-subject request the job serves
        if request_id is not None:
            await _check_recorded(state, jctx.job_id, str(request_id))
        result = await _procedure(ctx, kind, jctx, request)
    except Exception as exc:
        raise await _failed(state, jctx, kind.name, exc, args, time.monotonic() - t0) from (
            exc if isinstance(exc, SessionctlError) else None  # a foreign error's text stays out (see _internal)
        )
    data = result.model_dump(mode="json")
    status = str(data.get("status", "succeeded"))
    metrics.JOBS.labels(kind.name, status).inc()
    metrics.JOB_SECONDS.labels(kind.name, status).observe(time.monotonic() - t0)
    await state.index.finished(jctx.job_id, state=status, summary=_summary(data))
    await _settle_requests(state, jctx.job_id, kind.name, status, data, None)
    return data


async def _procedure(ctx: dict[str, Any], kind: JobKind, jctx: JobContext, request: BaseModel) -> BaseModel:
    """The job's procedure, under its lease and trace span, its deletes handing media over."""
    state: WorkerState = ctx["state"]
    token = media_sql.CURRENT.set(jctx.media)  # the store's deletes hand their media references over
    parent = await _trace_parent(ctx["redis"], jctx.job_id)
    try:
        with tracing.span("sessionctl.job", parent, job_id=jctx.job_id, kind=kind.name, job_try=jctx.job_try) as span:
            async with lease(ctx["redis"], jctx.job_id, state.settings.lease_ttl):
                result = await kind.procedure(jctx, request)
            done = result.model_dump(include={"status", "user_hmac", "sessions_deleted", "sessions"})
            tracing.set_attributes(span, **done)
    finally:
        media_sql.CURRENT.reset(token)
    return result


async def _failed(
    state: WorkerState, jctx: JobContext, kind: str, exc: Exception, args: tuple[Any, ...], elapsed: float
) -> BaseException:
    """A try failed: what to raise to arq (a ``Retry`` while tries remain, else the error itself),
    the index, metrics and log updated, the requests it served settled when it failed for good."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        err: SessionctlError = QueueUnavailable(f"lost Redis mid-job ({type(exc).__name__})")
    else:
        err = exc if isinstance(exc, SessionctlError) else _internal(exc, jctx.job_id, kind)
    settings = state.settings
    outcome = to_arq(err, job_try=jctx.job_try, max_tries=settings.max_tries, base_delay=settings.retry_base_delay)
    retrying = outcome is not err
    if not retrying and isinstance(err, TransientError):  # the last try: say so, not "will retry"
        err = outcome = type(err)(f"{err}; gave up after {jctx.job_try} tries (SESSIONCTL_MAX_TRIES)")
    label = "retried" if retrying else "failed"
    metrics.JOBS.labels(kind, label).inc()
    metrics.JOB_SECONDS.labels(kind, label).observe(elapsed)
    log.warning(
        "job.retry" if retrying else "job.failed",
        job_id=jctx.job_id,
        kind=kind,
        job_try=jctx.job_try,
        error_type=type(err).__name__,
        error=str(err),
        permanent=isinstance(err, PermanentError),
        transient=isinstance(err, TransientError),
        elapsed_ms=round(elapsed * 1000, 1),
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
    return outcome


async def _settle_requests(
    state: WorkerState, job_id: str, kind: str, status: str, result: dict[str, Any] | None, error: Any
) -> None:
    """The DSR requests this job served (sessionctl/ledger.py): closed, their webhooks noted and sent
    at once. A failure here leaves them to the deliveries' next round (it settles from the job's
    result in Redis): the job's own outcome stands."""
    if not kind_of(kind).serves_requests:
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
        found = await dsr_requests.job_of_request(conn, request_id, job_id)
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
