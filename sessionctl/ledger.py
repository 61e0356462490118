"""The deadline ledger of data-subject requests, and the webhooks owed when their jobs end.

A request (``sessionctl serve``: ``POST /v1/erasures`` or ``/v1/exports``) is a row of
``sessionctl.dsr_requests``: the user's HMAC, when it was received and when it is due (one
calendar month by default, GDPR art. 12(3); ``SESSIONCTL_DSR_DEADLINE_DAYS``), an extension with
its reason, the jobs that served it. It completes only when a job of it succeeded *and* wrote its
receipt. When a job ends, :func:`settle_job` closes its requests and notes one webhook per
request with a ``callback_url``; a worker delivers them (:class:`Deliveries`) — also the ones a
killed worker left, and the ones of jobs that ended before their request was recorded
(:func:`reconcile`).
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from sessionctl import metrics, webhooks
from sessionctl.config import Settings
from sessionctl.logs import get_logger
from sessionctl.store import ledger as sql

log = get_logger("sessionctl.ledger")

EXPORT_SESSIONS = "export_sessions"  # the job kind (jobs.models), named here: core imports no job module
ROUND_S = 2.0  # between two rounds of settling and delivering (at once when a job of this worker noted one)
CLOSED_JOB = {"succeeded", "dry_run", "partial", "failed", "not_found"}


def new_request_id() -> str:
    return "dsr_" + secrets.token_hex(10)


def due_date(received_at: datetime, deadline_days: int | None) -> datetime:
    """When a request received then is due: ``deadline_days`` later, or one calendar month (the
    same day of the next month, or its last day when it has fewer days)."""
    if deadline_days is not None:
        return received_at + timedelta(days=deadline_days)
    year, month = (received_at.year + 1, 1) if received_at.month == 12 else (received_at.year, received_at.month + 1)
    day = min(received_at.day, calendar.monthrange(year, month)[1])
    return received_at.replace(year=year, month=month, day=day)


async def settle_job(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    job_id: str,
    kind: str,
    status: str,
    result: dict[str, Any] | None,
    error: Any,
) -> int:
    """A job ended: close (or keep open) the requests it served, and note a webhook for each that
    asked for one — in one transaction. How many webhooks were noted. ``partial`` and ``not_found``
    count as failed, and so does an erasure without its receipt (an export writes none: its
    verified file is its proof)."""
    status = status if status in ("succeeded", "dry_run") else "failed"
    noted = 0
    async with conn.transaction():
        receipt = await sql.receipt_of_job(conn, job_id) if status == "succeeded" else None
        if status == "succeeded" and receipt is None and kind != EXPORT_SESSIONS:
            status = "failed"  # an erasure is never "completed" without its receipt
        for row in await sql.settle(conn, job_id, status, receipt):
            request = dict(row)
            log.info(
                "dsr.settled", request_id=request["request_id"], job_id=job_id, status=status, closed=request["status"]
            )
            if request["callback_url"]:
                body = webhooks.body_for(request, job_id, kind, status, result, error)
                noted += await sql.add_delivery(conn, request["request_id"], job_id, request["callback_url"], body)
    return noted


async def reconcile(
    conn: asyncpg.Connection, settings: Settings, job_state: Callable[[str], Awaitable[Any]], limit: int = 200
) -> int:
    """Open requests whose newest job ended without being settled (it ended before the request was
    recorded, or its worker died before settling): settle them from the job's state in Redis."""
    rows = await conn.fetch(
        "SELECT request_id, job_ids[array_length(job_ids, 1)] AS job_id FROM sessionctl.dsr_requests"
        " WHERE status = 'open' AND last_job_status IS NULL AND array_length(job_ids, 1) > 0"
        " ORDER BY created_at LIMIT $1",
        limit,
    )
    noted = 0
    for job_id in dict.fromkeys(r["job_id"] for r in rows):
        state = await job_state(job_id)
        if state.status not in CLOSED_JOB:
            continue
        kind = job_id.split(":", 1)[0]
        noted += await settle_job(
            conn, settings, job_id=job_id, kind=kind, status=state.status, result=state.result, error=state.error
        )
    return noted


class Deliveries:
    """Delivers the webhooks owed (a worker runs one): every ``ROUND_S``, and at once when a job of
    this worker noted one; each attempt recorded; retried with backoff until a 2xx, or given up after
    ``SESSIONCTL_WEBHOOK_GIVE_UP_HOURS``."""

    def __init__(self, settings: Settings, connect: Callable[[], Any], job_state: Callable[[str], Awaitable[Any]]):
        self.settings = settings
        self.connect = connect  # an async context manager giving a connection to DATABASE_URL's database
        self.job_state = job_state
        self.wake = asyncio.Event()
        self.open_requests: int | None = None  # at the last round; None: not looked yet

    def may_have_requests(self) -> bool:
        """Could a job of this worker serve an open request? (``False`` only when the last round
        found none: a job then skips settling, and a request recorded since is settled by the
        next round from the job's result.)"""
        return self.open_requests is None or self.open_requests > 0

    async def run(self) -> None:
        timeout = httpx.Timeout(self.settings.webhook_timeout)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            while True:
                pause = ROUND_S
                try:
                    await self.once(client)
                except asyncio.CancelledError:
                    raise
                except asyncpg.UndefinedTableError:  # the schema predates the DSR service: nothing owed
                    self.open_requests, pause = 0, 60.0  # looked at again in a minute
                except Exception as exc:  # a database or network outage: try again next round
                    log.warning("webhook.round_failed", error_type=type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), pause)
                self.wake.clear()

    async def once(self, client: httpx.AsyncClient) -> int:
        """One round: settle what ended unseen, then deliver what is due. Deliveries made."""
        async with self.connect() as conn:
            await reconcile(conn, self.settings, self.job_state)
            open_, overdue = await sql.open_and_overdue(conn)
            self.open_requests = open_
            metrics.REQUESTS_OPEN.set(open_)
            metrics.REQUESTS_OVERDUE.set(overdue)
            due = await sql.claim_deliveries(conn, 20, 2 * self.settings.webhook_timeout + 1)
        sent = 0
        for d in due:
            sent += await self._deliver(client, dict(d))
        return sent

    async def _deliver(self, client: httpx.AsyncClient, d: dict[str, Any]) -> int:
        secret = self.settings.webhook_secret
        body = d["body"] if isinstance(d["body"], str) else json.dumps(d["body"])
        if secret is None:
            unset = "SESSIONCTL_WEBHOOK_SECRET unset"
            attempt: dict[str, Any] = {"at": round(time.time(), 3), "ok": False, "error": unset}
        else:
            attempt = await webhooks.post(client, d["url"], body.encode(), secret.get_secret_value().encode())
        tries = int(d["tries"]) + 1
        age_h = (datetime.now(UTC) - d["created_at"]).total_seconds() / 3600
        retry = None if attempt["ok"] or age_h >= self.settings.webhook_give_up_hours else webhooks.backoff_s(tries)
        async with self.connect() as conn:
            await sql.record_attempt(conn, d["id"], attempt, delivered=bool(attempt["ok"]), retry_in_s=retry)
        outcome = "delivered" if attempt["ok"] else ("retrying" if retry is not None else "gave_up")
        metrics.WEBHOOKS.labels(outcome).inc()
        log.info(
            "webhook." + outcome,
            delivery=d["id"],
            request_id=d["request_id"],
            job_id=d["job_id"],
            attempt=tries,
            status_code=attempt.get("status_code"),
            error=attempt.get("error"),
        )
        return 1 if attempt["ok"] else 0
