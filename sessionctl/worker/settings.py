"""arq's ``WorkerSettings`` for sessionctl, and the worker class ``sessionctl worker`` runs. What a
worker does is elsewhere: its life (:mod:`.lifecycle`), a job's run (:mod:`.running`), the crons
(:mod:`.crons`); the job kinds it serves come from :mod:`sessionctl.jobs.kinds`."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from arq.worker import Worker, func, get_kwargs

from sessionctl import metrics
from sessionctl.config import Settings, load_settings
from sessionctl.jobs.kinds import KINDS
from sessionctl.jobstate import job_kind
from sessionctl.logs import get_logger
from sessionctl.worker import serializer
from sessionctl.worker.crons import crons
from sessionctl.worker.jobindex import JobIndex, record_end
from sessionctl.worker.lifecycle import WorkerState, shutdown, startup
from sessionctl.worker.redisconf import redis_settings
from sessionctl.worker.running import entry
from sessionctl.worker.wake import Wake

log = get_logger("sessionctl.worker")


def build_worker_settings(settings: Settings | None = None) -> type:
    """A WorkerSettings class for these settings (the module-level one reads the environment)."""
    s = settings or load_settings()

    class _Settings:
        functions: ClassVar[list[Any]] = [
            func(cast(Any, entry(k)), name=k.name, timeout=k.timeout(s), max_tries=s.max_tries) for k in KINDS.values()
        ]
        cron_jobs: ClassVar[list[Any]] = crons(s)
        redis_settings = redis_settings(s)
        queue_name = s.queue_name
        max_jobs = s.max_jobs
        job_timeout = s.purge_timeout
        keep_result = s.keep_result
        max_tries = s.max_tries
        poll_delay = s.poll_delay
        # arq reads max_jobs ids per poll by default, then sleeps poll_delay: reading more ids per
        # poll keeps every slot busy.
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
    here. (A worker started as plain ``arq sessionctl.worker.settings.WorkerSettings`` lacks this hook:
    ``sessionctl jobs`` and ``status`` settle such jobs from arq's results when they read them.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.ctx.get("settings")
        if isinstance(settings, Settings):
            # arq marks a job it picks up as in progress for its longest timeout + 10 s: a worker
            # killed before the job's lease (sessionctl/worker/lease.py) first shortens that mark
            # would keep the job from every other worker that long. The mark starts at the lease's
            # length instead; the lease renews it while the job runs.
            self.in_progress_timeout_s = settings.lease_ttl
        # Between two polls a worker waits for the next job's wake-up token, at most the poll delay
        # (sessionctl/worker/wake.py); arq's own pause between polls is then none. A burst worker
        # polls as arq does.
        self._wake = None if self.burst or self.poll_delay_s <= 0 else Wake(self.queue_name, self.poll_delay_s)
        if self._wake is not None:
            self.poll_delay_s = 0

    async def _poll_iteration(self) -> None:
        await super()._poll_iteration()
        if self._wake is not None:
            await self._wake.wait(self.pool, can_take=self.allow_pick_jobs and self.job_counter < self.max_jobs)

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
            ended = await record_end(JobIndex.of(self.pool, settings), job_id, result_data, failures_only=True)
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
    if name == "WorkerSettings":  # ``arq sessionctl.worker.settings.WorkerSettings`` works too
        return build_worker_settings()
    raise AttributeError(name)
