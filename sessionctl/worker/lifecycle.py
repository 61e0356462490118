"""A worker's life around its jobs: what startup puts in arq's ``ctx`` (:class:`WorkerState`), its
report in the queue's list of live workers and the queue's depth every few seconds, its liveness
and readiness, the DSR deliveries it runs beside its jobs, and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from sessionctl import deliveries, media_storages, metrics
from sessionctl.config import Settings, load_settings
from sessionctl.databases import Databases
from sessionctl.jobs.kinds import kind_of
from sessionctl.logs import configure_logging, get_logger
from sessionctl.resolvers import ResolverChain, build_chain
from sessionctl.worker import probes
from sessionctl.worker.enqueue import Enqueuer
from sessionctl.worker.jobindex import JobIndex
from sessionctl.worker.queue import Queue, beat, deployment, forget

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
    enqueuer: Enqueuer
    storages: list[media_storages.Storage] = field(default_factory=list)  # SESSIONCTL_MEDIA_STORAGES
    depth_task: asyncio.Task[None] | None = None
    deliveries: deliveries.Deliveries | None = None  # webhooks of the DSR service
    deliveries_task: asyncio.Task[None] | None = None
    health: probes.Health = field(default_factory=probes.Health)  # /healthz, /readyz
    health_task: asyncio.Task[None] | None = None
    worker_id: str = field(default_factory=new_worker_id)  # its report in the queue's list of live workers


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or load_settings()
    configure_logging(settings.log_format, settings.log_level)
    queue = Queue(ctx["redis"], settings.queue_name)
    state = WorkerState(
        settings=settings,
        databases=Databases(
            pool_size=settings.pool_size,
            client_cache_size=settings.client_cache_size,
            max_databases=settings.max_databases,
            statement_cache_size=settings.statement_cache_size,
        ),
        hash_key=settings.hash_key_bytes,
        index=JobIndex.of(ctx["redis"], settings),
        resolvers=build_chain(settings),  # one per worker: its TTL cache spans jobs
        enqueuer=Enqueuer(queue, settings),
        storages=media_storages.parse_storages(settings.media_storages),
    )
    ctx["state"] = state
    serving = settings.metrics_port != 0 and probes.serve(settings.metrics_port, state.health)
    state.health_task = asyncio.create_task(_watch_health(ctx["redis"], state))
    state.depth_task = asyncio.create_task(_keep_alive(ctx["redis"], settings, state.worker_id))

    async def requeue(kind: str, payload: dict[str, Any], job_id: str) -> None:
        """A request whose job vanished with Redis, enqueued again under its next job id."""
        from sessionctl.jobs.fields import parse_request

        await state.enqueuer.put_as(kind, parse_request(kind_of(kind).request, payload), job_id)

    state.deliveries = deliveries.Deliveries(
        settings, lambda: state.databases.connect(settings.dsn), queue.state, requeue
    )
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
