"""The crons: each only *enqueues* a regular job (a retention run, a re-sweep), once per scheduled
tick. arq runs crons once (``max_tries=1``) and never again after an interruption; the regular job
has retries, the lease and the job index, and a repeated run is harmless. The tick is the
*scheduled* time (from arq's cron job id ``<name>:<ms>``), and each tick is claimed once (SET NX):
several workers, clocks a little apart, make one job per tick. Cron names are led by the queue's,
so two deployments on one Redis each run their own ticks."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

from arq.cron import CronJob, cron

from sessionctl.config import Settings
from sessionctl.jobs.models import PURGE_EXPIRED_SESSIONS, RESWEEP, ResweepRequest, RetentionRequest
from sessionctl.logs import get_logger
from sessionctl.retention_policy import parse_schedule
from sessionctl.worker.lifecycle import WorkerState

log = get_logger("sessionctl.worker")
CLAIM_S = 7 * 86400  # how long a tick's claim is kept (longer than any clock skew)


async def retention_tick(ctx: dict[str, Any]) -> str | None:
    """Enqueue the retention run of this tick, as of the scheduled time."""
    tick = _tick(ctx)
    when = datetime.strptime(tick, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    request = RetentionRequest(as_of=int(when.timestamp()), tick=tick, requested_by="cron")
    return await _once(ctx, "retention", tick, PURGE_EXPIRED_SESSIONS, request)


async def resweep_tick(ctx: dict[str, Any]) -> str | None:
    """Enqueue the re-sweep of this tick."""
    tick = _tick(ctx)
    return await _once(ctx, "resweep", tick, RESWEEP, ResweepRequest(tick=tick, requested_by="cron"))


async def _once(ctx: dict[str, Any], name: str, tick: str, kind: str, request: Any) -> str | None:
    """Enqueue the tick's job unless another worker claimed the tick first; its job id."""
    state: WorkerState = ctx["state"]
    if not await ctx["redis"].set(f"{state.settings.queue_name}:tick:{name}:{tick}", "1", nx=True, ex=CLAIM_S):
        log.info(f"{name}.tick_taken", tick=tick)
        return None
    enq = await state.enqueuer.put(kind, request)
    log.info(f"{name}.tick", tick=tick, job_id=enq.job_id, collapsed=enq.collapsed)
    return enq.job_id


def _tick(ctx: dict[str, Any]) -> str:
    """The scheduled time of a cron run (from arq's cron job id ``<name>:<ms>``), to the second."""
    scheduled = str(ctx.get("job_id", "")).rsplit(":", 1)[-1]
    ms = int(scheduled) if scheduled.isdigit() else int(time.time() * 1000)
    return datetime.fromtimestamp(ms / 1000, UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S")


def crons(s: Settings) -> list[CronJob]:
    """The retention cron, when a policy file is configured; the re-sweep cron, when scheduled."""
    planned: list[tuple[Callable[[dict[str, Any]], Awaitable[str | None]], str, str]] = []
    if s.retention_file:
        planned.append((retention_tick, f"{s.queue_name}:retention", s.retention_schedule))
    if s.resweep_schedule:
        planned.append((resweep_tick, f"{s.queue_name}:resweep_cron", s.resweep_schedule))  # not a job name
    out = []
    for tick, name, schedule in planned:
        when = parse_schedule(schedule)
        out.append(
            cron(
                cast(Any, tick),  # arq's WorkerCoroutine protocol: any coroutine function of ctx
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
