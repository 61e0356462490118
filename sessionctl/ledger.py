"""The deadline ledger of data-subject requests, the jobs that serve them, and the webhooks owed
when those jobs end.

A request (``sessionctl serve``: ``POST /v1/erasures`` or ``/v1/exports``) is a row of
``sessionctl.dsr_requests``, recorded *before* its job is enqueued: the person's HMAC and, while
the request is open, their id sealed under the operator's key (:func:`~sessionctl.privacy.seal_subject`)
— so a request whose job Redis lost is enqueued again by a worker (:func:`reconcile`), and a worker
never runs a request's job that the ledger does not name. Its meaning (kind, person, target, scope,
memories, dry run; an export's window and format) decides what a repeated ``request_ref`` gets:
the same request, or a refusal naming what differs. Due in one calendar month by default (GDPR art.
12(3); ``SESSIONCTL_DSR_DEADLINE_DAYS``), extended while open and not yet due, to at most two
months past the first due date, every extension listed. It completes only when a job of it
succeeded *and* wrote its receipt; a dry run is never an open request and never completes one.
When a job ends, :func:`settle_job` closes its requests and notes one webhook per request with a
``callback_url``; a worker delivers them (:mod:`sessionctl.deliveries`).
"""

from __future__ import annotations

import calendar
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from sessionctl import webhooks
from sessionctl.config import Settings
from sessionctl.connectors import answers
from sessionctl.errors import InvalidRequest
from sessionctl.logs import get_logger
from sessionctl.privacy import seal_subject, unseal_subject
from sessionctl.store import dsr_requests, webhook_deliveries

log = get_logger("sessionctl.ledger")

# The job kinds that serve requests (jobs.models names them; the core imports no job module).
PURGE_USER_SESSIONS = "purge_user_sessions"
EXPORT_SESSIONS = "export_sessions"
JOB_KIND = {"erasure": PURGE_USER_SESSIONS, "export": EXPORT_SESSIONS}
# A request's newest job that Redis holds neither queued, running nor ended this long after it was
# added vanished (Redis lost its state): the request is enqueued again. Longer than any pause
# between the intake's commit and its enqueue.
REQUEUE_AFTER_S = 15.0
CLOSED_JOB = {"succeeded", "dry_run", "partial", "failed"}
EXTENSION_MONTHS = 2  # art. 12(3): "extended by two further months where necessary"
# What a request means: a repeated request_ref must mean the same (else 409, naming what differs).
MEANING = {
    "erasure": ("user", "target", "scope", "memories", "dry_run"),
    "export": ("user", "target", "scope", "since", "until", "by", "compress"),
}


def new_request_id() -> str:
    return "dsr_" + secrets.token_hex(10)


def add_months(when: datetime, months: int) -> datetime:
    """The same day ``months`` calendar months later (or that month's last day when it has fewer)."""
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    return when.replace(year=year, month=month, day=min(when.day, calendar.monthrange(year, month)[1]))


def due_date(received_at: datetime, deadline_days: int | None) -> datetime:
    """When a request received then is due: ``deadline_days`` later, or one calendar month (the
    same day of the next month, or its last day when it has fewer days)."""
    if deadline_days is not None:
        return received_at + timedelta(days=deadline_days)
    return add_months(received_at, 1)


def meaning(kind: str, user_hmac: str, target: str, options: dict[str, Any]) -> dict[str, Any]:
    """What a request asks for, as compared when its ``request_ref`` comes again."""
    values = {"user": user_hmac, "target": target, **options}
    return {k: values.get(k) for k in MEANING[kind]}


def differences(row: Any, kind: str, user_hmac: str, target: str, options: dict[str, Any]) -> list[str]:
    """The parts of the meaning in which a new request differs from the recorded one (by name; the
    person only as "user": never an id)."""
    recorded = json.loads(row["options"]) if isinstance(row["options"], str) else dict(row["options"])
    before = meaning(kind, row["user_hmac"], row["target"], recorded)
    now = meaning(kind, user_hmac, target, options)
    return [k for k in MEANING[kind] if before[k] != now[k]]


def job_id_for(settings: Settings, kind: str, request_id: str, n: int) -> str:
    """The ``n``-th job of a request: never reused, whatever Redis forgets (the request id is random
    and ``n`` is counted in Postgres), led by the deployment's queue name."""
    return f"{settings.queue_name}:{JOB_KIND[kind]}:{request_id}.{n}"


def job_payload(row: Any, user_id: str, n: int) -> dict[str, Any]:
    """The job request (``jobs.models``) that serves a recorded request, the ``n``-th time."""
    options = json.loads(row["options"]) if isinstance(row["options"], str) else dict(row["options"])
    target = {"agent_id": None, "all_agents": True} if row["target"] == "*" else {"agent_id": row["target"]}
    common = {
        "user_id": user_id,
        **target,
        "scope": options.get("scope", "sessions"),
        "requested_by": row["requested_by"] or row["token_name"],
        "request_id": row["request_id"],
    }
    if row["kind"] == "erasure":
        return {**common, "memories": bool(options.get("memories")), "dry_run": bool(options.get("dry_run"))}
    suffix = {"none": "", "gz": ".gz", "zst": ".zst"}[options.get("compress", "none")]
    return {
        **common,
        "out": f"{row['request_id']}.{n}.jsonl{suffix}",
        **{k: options.get(k) for k in ("since", "until")},
        "by": options.get("by", "created"),
        "compress": options.get("compress", "none"),
    }


def next_job(settings: Settings, row: Any, user_id: str) -> tuple[str, str, dict[str, Any]]:
    """(job kind, job id, payload) of the request's next job."""
    n = len(row["job_ids"]) + 1
    return JOB_KIND[row["kind"]], job_id_for(settings, row["kind"], row["request_id"], n), job_payload(row, user_id, n)


def sealed(settings: Settings, request_id: str, user_id: str) -> bytes:
    return seal_subject(settings.hash_key_bytes, request_id, user_id)


async def record_first(
    conn: asyncpg.Connection, settings: Settings, row: dict[str, Any], user_id: str, request_id: str | None = None
) -> tuple[Any, tuple[str, str, dict[str, Any]]]:
    """Record a new request (``row``: what was asked, without id or jobs; ``request_id``: its id, or
    a new one) with its first job's id and the person's id sealed: (what intake answers of the
    recorded request — ``None`` when its ``(kind, request_ref)`` is taken —, (job kind, job id,
    payload) to enqueue once committed)."""
    request_id = request_id or new_request_id()
    first = {**row, "request_id": request_id, "job_ids": []}
    job_kind, job_id, payload = next_job(settings, first, user_id)
    inserted = await dsr_requests.insert_request(
        conn, {**first, "job_ids": [job_id], "subject": sealed(settings, request_id, user_id)}
    )
    return inserted, (job_kind, job_id, payload)


# ---- due dates (GDPR art. 12(3)) ---------------------------------------------------------------------


def extension(row: Any, until: datetime, reason: str, by: str, now: datetime) -> dict[str, Any]:
    """The entry recording an extension of this request to ``until``, if art. 12(3) allows it: the
    request is open and not yet due, ``until`` is later than it is due and at most two months past
    its first due date. Raises :class:`~sessionctl.errors.InvalidRequest` saying which rule."""
    if row["status"] != "open":
        raise InvalidRequest("only an open request can be extended")
    if now > row["due_at"]:
        raise InvalidRequest("the request is overdue: an extension must be decided before the due date")
    if until <= row["due_at"]:
        raise InvalidRequest("an extension moves the due date later than it is (to shorten one, send a correction)")
    limit = add_months(row["first_due_at"], EXTENSION_MONTHS)
    if until > limit:
        raise InvalidRequest(f"at most two months past the first due date: until {_utc(limit)} (art. 12(3))")
    return _due_entry("extension", row, until, reason, by, now)


def correction(row: Any, until: datetime, reason: str, by: str, now: datetime) -> dict[str, Any]:
    """The entry recording a correction of a mistaken extension: the due date moves earlier, never
    before the first due date; the extension stays listed with the correction after it."""
    if row["status"] != "open":
        raise InvalidRequest("only an open request can be corrected")
    if not row["first_due_at"] <= until < row["due_at"]:
        raise InvalidRequest(
            "a correction moves the due date earlier, to no earlier than the first due date"
            f" ({_utc(row['first_due_at'])})"
        )
    return _due_entry("correction", row, until, reason, by, now)


def _utc(when: datetime) -> str:
    """A time as a rule's message says it: to the second, in UTC."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _due_entry(kind: str, row: Any, until: datetime, reason: str, by: str, now: datetime) -> dict[str, Any]:
    """How a change of the due date is listed in the request's ``extensions``."""
    return {
        "kind": kind,
        "at": now.isoformat(),
        "from": row["due_at"].isoformat(),
        "until": until.isoformat(),
        "reason": reason,
        "by": by,
    }


# ---- a job ended ---------------------------------------------------------------------------------------


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
    verified file is its proof); an erasure refused by a legal hold ends ``on_hold``. A request a
    DSR platform sent is answered to the platform once every ledger request it became has ended."""
    held = status == "failed" and isinstance(error, dict) and error.get("type") == "PersonOnHold"
    status = "on_hold" if held else status if status in ("succeeded", "dry_run") else "failed"
    noted = 0
    async with conn.transaction():
        receipt = await dsr_requests.receipt_of_job(conn, job_id) if status == "succeeded" else None
        if status == "succeeded" and receipt is None and kind != EXPORT_SESSIONS:
            status = "failed"  # an erasure is never "completed" without its receipt
        complete = None if receipt is None else receipt["complete"]
        remains = None if receipt is None else _json(receipt["remains"])
        receipt_id = None if receipt is None else int(receipt["id"])
        for row in await dsr_requests.settle(conn, job_id, status, receipt_id, complete, remains):
            request = dict(row)
            log.info(
                "dsr.settled", request_id=request["request_id"], job_id=job_id, status=status, closed=request["status"]
            )
            if request["callback_url"]:
                body = webhooks.body_for(request, job_id, kind, status, result, error)
                noted += await webhook_deliveries.add_delivery(
                    conn, request["request_id"], job_id, request["callback_url"], body
                )
            if request["connector_request_id"]:  # a DSR platform's request: answered once all its parts end
                noted += await answers.note_if_ended(conn, settings, request["connector_request_id"], error)
    return noted


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


Enqueue = Callable[[str, dict[str, Any], str], Awaitable[None]]


async def reconcile(
    conn: asyncpg.Connection,
    settings: Settings,
    job_state: Callable[[str], Awaitable[Any]],
    enqueue: Enqueue | None = None,
    limit: int = 200,
) -> int:
    """Requests whose newest job ended without being settled (its worker died before settling):
    settled from the job's state in Redis. Requests whose newest job vanished — Redis holds it
    neither queued, running nor ended (a restart without persistence, a failover to an empty
    replica, a flush) — are settled from the job's receipt when it wrote one, and otherwise enqueued
    again with the sealed id (``enqueue``). Webhooks noted."""
    noted = 0
    for row in await dsr_requests.unsettled(conn, limit):
        job_id, kind = str(row["job_id"]), JOB_KIND[row["kind"]]
        state = await job_state(job_id)
        if state.status in CLOSED_JOB:
            noted += await settle_job(
                conn, settings, job_id=job_id, kind=kind, status=state.status, result=state.result, error=state.error
            )
        elif state.status == "not_found" and row["age"].total_seconds() >= REQUEUE_AFTER_S:
            noted += await _vanished(conn, settings, str(row["request_id"]), job_id, kind, enqueue)
    return noted


async def _vanished(
    conn: asyncpg.Connection, settings: Settings, request_id: str, job_id: str, kind: str, enqueue: Enqueue | None
) -> int:
    receipt = await dsr_requests.receipt_of_job(conn, job_id)
    if receipt is not None:  # it ran to its receipt; only its result in Redis is gone
        counts = _json(receipt["counts"]) or {}
        result = {
            "sessions_deleted": counts.get("sessions"),
            "runs_deleted": counts.get("runs"),
            "memories_deleted": counts.get("memories"),
            "remaining": 0,
        }
        return await settle_job(conn, settings, job_id=job_id, kind=kind, status="succeeded", result=result, error=None)
    if enqueue is None:
        return 0
    async with conn.transaction():
        row = await dsr_requests.lock_pending(conn, request_id)
        if row is None or row["job_ids"][-1] != job_id or row["last_job_status"] is not None:
            return 0  # settled or served again meanwhile (by another worker)
        user_id = (
            None if row["subject"] is None else unseal_subject(settings.hash_key_bytes, request_id, row["subject"])
        )
        if user_id is None:
            error = {
                "type": "JobLost",
                "message": "the request's job vanished from Redis and its sealed id does not"
                " open under this SESSIONCTL_HASH_KEY: ask again",
            }
            return await settle_job(conn, settings, job_id=job_id, kind=kind, status="failed", result=None, error=error)
        job_kind, new_id, payload = next_job(settings, row, user_id)
        await dsr_requests.add_job(conn, request_id, new_id)
    await enqueue(job_kind, payload, new_id)
    log.warning("dsr.requeued", request_id=request_id, vanished=job_id, job_id=new_id)
    return 0
