"""arq worker settings and the job functions it runs."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from arq.connections import RedisSettings
from arq.worker import func
from pydantic import BaseModel

import jobs.export
import jobs.purge
from jobs.context import JobContext
from jobs.models import EXPORT_SESSIONS, PURGE_USER_SESSIONS, ExportRequest, PurgeRequest, parse_request
from sessionctl.config import Settings, load_settings
from sessionctl.databases import Databases
from sessionctl.errors import InternalError, InvalidRequest, PermanentError, SessionctlError, TransientError
from sessionctl.logs import configure_logging, get_logger
from worker import serializer
from worker.progress import RedisProgress
from worker.retry import to_arq

log = get_logger("sessionctl.worker")


@dataclass(slots=True)
class WorkerState:
    """What startup puts in arq's ``ctx["state"]``."""

    settings: Settings
    databases: Databases
    hash_key: bytes


def redis_settings(settings: Settings) -> RedisSettings:
    try:
        return RedisSettings.from_dsn(settings.redis_url)
    except (RuntimeError, ValueError) as exc:
        raise InvalidRequest("REDIS_URL is invalid: expected redis://[:password@]host:6379/0 or rediss://…") from exc


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or load_settings()
    configure_logging(settings.log_format, settings.log_level)
    ctx["state"] = WorkerState(
        settings=settings,
        databases=Databases(pool_size=settings.pool_size, client_cache_size=settings.client_cache_size),
        hash_key=settings.hash_key_bytes,
    )
    log.info("worker.start", database=settings.dsn.redacted, queue=settings.queue_name, max_jobs=settings.max_jobs)


async def shutdown(ctx: dict[str, Any]) -> None:
    state: WorkerState | None = ctx.get("state")
    if state is not None:
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
        progress=RedisProgress(ctx["redis"], job_id, state.settings.keep_result),
    )


async def _run(
    ctx: dict[str, Any],
    kind: str,
    model: type[BaseModel],
    procedure: Callable[[JobContext, Any], Awaitable[BaseModel]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    """Validate the payload again, run the procedure, map its errors onto arq (worker/retry.py)."""
    state, jctx = _job_context(ctx)
    t0 = time.monotonic()
    try:
        if kwargs or len(args) != 1:
            raise InvalidRequest("job payload must be exactly one JSON object (the request)")
        request = parse_request(model, args[0])
        result = await procedure(jctx, request)
    except SessionctlError as exc:
        outcome = to_arq(
            exc,
            job_try=jctx.job_try,
            max_tries=state.settings.max_tries,
            base_delay=state.settings.retry_base_delay,
        )
        log.warning(
            "job.retry" if outcome is not exc else "job.failed",
            job_id=jctx.job_id,
            kind=kind,
            job_try=jctx.job_try,
            error_type=type(exc).__name__,
            error=str(exc),
            permanent=isinstance(exc, PermanentError),
            transient=isinstance(exc, TransientError),
            elapsed_ms=round((time.monotonic() - t0) * 1000, 1),
        )
        raise outcome from exc
    except Exception as exc:
        # A bug or an unforeseen driver error. Its text may quote row values (a user id, content):
        # it stays out of logs and results; the class and, for Postgres, the SQLSTATE say where to look.
        sqlstate = getattr(exc, "sqlstate", None)
        log.error("job.failed", job_id=jctx.job_id, kind=kind, error_type=type(exc).__name__, sqlstate=sqlstate)
        where = f" (SQLSTATE {sqlstate})" if sqlstate else ""
        raise InternalError(f"unexpected {type(exc).__name__}{where}; see the worker log") from None
    return result.model_dump(mode="json")


async def purge_user_sessions(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """arq entry point of ``jobs.purge.purge_user_sessions``."""
    return await _run(ctx, PURGE_USER_SESSIONS, PurgeRequest, jobs.purge.purge_user_sessions, args, kwargs)


async def export_sessions(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """arq entry point of ``jobs.export.export_sessions``."""
    return await _run(ctx, EXPORT_SESSIONS, ExportRequest, jobs.export.export_sessions, args, kwargs)


def build_worker_settings(settings: Settings | None = None) -> type:
    """A WorkerSettings class for these settings (the module-level one reads the environment)."""
    s = settings or load_settings()

    class _Settings:
        functions: ClassVar[list[Any]] = [
            func(purge_user_sessions, name=PURGE_USER_SESSIONS, timeout=s.job_timeout, max_tries=s.max_tries),
            func(export_sessions, name=EXPORT_SESSIONS, timeout=s.job_timeout, max_tries=s.max_tries),
        ]
        redis_settings = redis_settings(s)
        queue_name = s.queue_name
        max_jobs = s.max_jobs
        job_timeout = s.job_timeout
        keep_result = s.keep_result
        max_tries = s.max_tries
        poll_delay = 0.25
        health_check_interval = 60
        job_serializer = staticmethod(serializer.serialize)
        job_deserializer = staticmethod(serializer.deserialize)
        on_startup = staticmethod(startup)
        on_shutdown = staticmethod(shutdown)
        log_results = False
        ctx: ClassVar[dict[str, Any]] = {"settings": s}

    _Settings.__name__ = _Settings.__qualname__ = "WorkerSettings"
    return _Settings


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":  # ``arq worker.settings.WorkerSettings`` works too
        return build_worker_settings()
    raise AttributeError(name)
