"""Taking a data-subject request in, all or nothing: everything is checked before anything is
written; the request is recorded in the ledger (with its first job's id and the person's id
sealed) *before* its job is enqueued — so an answer of 4xx never leaves a job behind, and a
request answered 202 reaches a receipt even if Redis loses the job (a worker enqueues it again).

A ``request_ref`` seen before returns that request when it means the same (kind, person, target,
scope, memories, dry run; an export's window and format), and is refused with ``409`` naming what
differs otherwise — a dry run never stands in for an erasure. A request made by another token is
never returned: its reference is taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from fastapi import HTTPException

from sessionctl import ledger, webhooks
from sessionctl.api.auth import Caller
from sessionctl.api.models import Accepted, DsrIn
from sessionctl.config import Settings
from sessionctl.errors import RedisUnavailable
from sessionctl.logs import get_logger
from sessionctl.privacy import user_hmac
from sessionctl.producer import Producer
from sessionctl.store import dsr_requests

log = get_logger("sessionctl.api")
OLDEST = timedelta(days=3660)  # a received_at older than ten years is a mistake, not a request
FUTURE = timedelta(minutes=5)  # clocks a little apart


@dataclass(frozen=True, slots=True)
class Filed:
    row: Any  # the request as recorded
    job: tuple[str, str, dict[str, Any]] | None  # (kind, job id, payload) to enqueue now; None: asked again
    collapsed: bool


async def take(
    settings: Settings, connect: Any, producer: Producer, kind: str, body: DsrIn, options: dict[str, Any], who: Caller
) -> Accepted:
    """Check, record, then enqueue one request; what the caller is answered."""
    now = datetime.now(UTC)
    received = body.received_at or now
    if received > now + FUTURE:
        raise HTTPException(422, "received_at is in the future")
    if received < now - OLDEST:
        raise HTTPException(422, "received_at is more than ten years ago")
    if body.callback_url is not None:
        if not settings.webhook_secret_values:
            raise HTTPException(
                422,
                "callback_url needs SESSIONCTL_WEBHOOK_SECRET or SESSIONCTL_WEBHOOK_SECRETS set on this service and"
                " workers",
            )
        webhooks.check_callback(body.callback_url, settings.webhook_allowed_hosts)
    if body.agent_id is not None:
        await producer.require_agent(body.agent_id)  # an agent without session storage: 422, nothing recorded
    row = {
        "kind": kind,
        "request_ref": body.request_ref,
        "user_hmac": user_hmac(settings.hash_key_bytes, body.user_id),
        "target": body.target,
        "options": options,
        "received_at": received,
        "due_at": ledger.due_date(received, settings.dsr_deadline_days),
        "callback_url": body.callback_url,
        "requested_by": body.requested_by,
        "token_name": who.name,
        "dry_run": bool(options.get("dry_run")),
    }
    # the job's request as the worker will read it: whatever it refuses is refused now, not after
    # the request was recorded
    request_id = ledger.new_request_id()
    first = ledger.next_job(settings, {**row, "request_id": request_id, "job_ids": []}, body.user_id)
    request = producer.parse(first[0], first[2])
    async with connect() as conn:
        if row["request_ref"] is None:  # nothing to compare with: one INSERT, atomic on its own
            filed = await _record(conn, settings, row, body.user_id, request_id)
        else:  # the reference looked up, locked and compared in one transaction
            async with conn.transaction():
                filed = await _record(conn, settings, row, body.user_id, request_id)
    status = "queued"
    if filed.job is not None:
        job_kind, job_id, payload = filed.job
        try:
            if filed.job == first:  # the request's first job, as validated above
                await producer.enqueue_parsed(job_kind, request, job_id)
            else:  # a new job of a request asked again
                await producer.enqueue_as(job_kind, payload, job_id)
        except RedisUnavailable:  # recorded: a worker's next round enqueues it (sessionctl.ledger.reconcile)
            log.warning("dsr.enqueue_later", request_id=filed.row["request_id"], job_id=job_id)
            status = "recorded"
    else:
        status = (await producer.status(filed.row["job_ids"][-1])).status
    log.info(
        "dsr.received",
        request_id=filed.row["request_id"],
        job_id=filed.row["job_ids"][-1],
        kind=kind,
        collapsed=filed.collapsed,
    )
    return Accepted(
        job_id=filed.row["job_ids"][-1],
        request_id=filed.row["request_id"],
        status=status,
        due_at=filed.row["due_at"],
        collapsed=filed.collapsed,
        dry_run=bool(filed.row["dry_run"]),
    )


async def _record(
    conn: asyncpg.Connection, settings: Settings, row: dict[str, Any], user_id: str, request_id: str
) -> Filed:
    """In the intake's transaction: the request of this reference (the same meaning, or 409), or a
    new one (``request_id``) with its first job."""
    kind, ref = row["kind"], row["request_ref"]
    for _ in range(3):  # a reference taken by a concurrent request between the look and the insert
        if ref is not None and (known := await dsr_requests.lock_by_ref(conn, kind, ref)) is not None:
            return await _again(conn, settings, known, row, user_id)
        inserted, job = await ledger.record_first(conn, settings, row, user_id, request_id)
        if inserted is not None:
            return Filed(inserted, job, collapsed=False)
    raise HTTPException(409, "request_ref is being used by another request at this very moment: send it again")


async def _again(conn: asyncpg.Connection, settings: Settings, known: Any, row: dict[str, Any], user_id: str) -> Filed:
    """A reference seen before: the same request (served anew if its last job failed), or 409."""
    if known["token_name"] != row["token_name"]:
        raise HTTPException(409, "request_ref is taken by another caller's request: use a reference of your own")
    differ = ledger.differences(known, row["kind"], row["user_hmac"], row["target"], row["options"])
    if differ:
        raise HTTPException(
            409,
            f"request_ref names a request that differs in {', '.join(differ)}: a reference means one request —"
            " send this one with a new request_ref",
        )
    waiting = known["completed_at"] is None and known["status"] in ("open", "dry_run")
    if waiting and known["last_job_status"] == "failed":  # asked again after a failure: a new job serves it
        job_kind, job_id, payload = ledger.next_job(settings, known, user_id)
        await dsr_requests.add_job(conn, known["request_id"], job_id)
        again = await dsr_requests.get_request(conn, known["request_id"])
        return Filed(again, (job_kind, job_id, payload), collapsed=True)
    return Filed(known, None, collapsed=True)
