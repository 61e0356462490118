"""The console's jobs and workers: a job's page (the request it served, progress, its result as a
table of counts, its error, its tries) and the workers with their last heartbeat and what they serve."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from sessionctl.api.console_session import Console
from sessionctl.store import dsr_requests

COUNTS = (int, float)


def add_pages(r: APIRouter, console: Console) -> None:
    @r.get("/jobs/{job_id}", response_class=HTMLResponse, response_model=None)
    async def job_page(job_id: str, request: Request) -> Response:
        officer = await console.officer(request)
        if officer is None:
            return console.to_login()
        producer = request.app.state.producer
        state = await producer.status(job_id)
        indexed = await producer.jobs_by_id([job_id])
        if state.status == "not_found" and not indexed:
            return console.page(request, "job.html", officer, status=404, job=None, job_id=job_id)
        async with request.app.state.connect() as conn:
            served = await dsr_requests.requests_of_job(conn, job_id)
        meta = indexed[0] if indexed else {}
        return console.page(
            request,
            "job.html",
            officer,
            job=state,
            meta=meta,
            job_id=job_id,
            counts=result_counts(state.result or meta.get("summary") or {}),
            requests=[dict(x) for x in served],
        )

    @r.get("/workers", response_class=HTMLResponse, response_model=None)
    async def workers_page(request: Request) -> Response:
        officer = await console.officer(request)
        if officer is None:
            return console.to_login()
        live = await (await request.app.state.producer.queue()).workers()
        now = time.time()
        rows = [{**w, "ago": max(0.0, now - float(w.get("at") or now))} for w in live]
        queue = request.app.state.settings.queue_name
        return console.page(request, "workers.html", officer, workers=rows, queue=queue, health=await health(request))


def result_counts(result: dict[str, Any]) -> list[tuple[str, Any]]:
    """A job's result as rows of (what, how many): numbers, and a store's or agent's counts flattened."""
    rows: list[tuple[str, Any]] = []
    for key, value in result.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, COUNTS):
            rows.append((key.replace("_", " "), value))
        elif isinstance(value, dict) and key in ("stores", "would_delete", "remains"):
            rows.extend((f"{key.replace('_', ' ')}: {k}", v) for k, v in value.items() if isinstance(v, COUNTS))
    return rows


async def health(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        await (await request.app.state.producer.redis()).ping()
        out["Redis"] = "ok"
    except Exception as exc:
        out["Redis"] = f"unreachable ({type(exc).__name__})"
    try:
        async with request.app.state.connect() as conn:
            await conn.fetchval("SELECT 1")
        out["Postgres"] = "ok"
    except Exception as exc:
        out["Postgres"] = f"unreachable ({type(exc).__name__})"
    producer = request.app.state.producer
    live = await (await producer.queue()).workers()
    worker = await producer.check_worker()
    names = ", ".join(str(w.get("worker")) for w in live)
    out["Workers"] = (f"{len(live)} live: {names}" if live else "none") + ("" if worker is None else f" — {worker}")
    return out
