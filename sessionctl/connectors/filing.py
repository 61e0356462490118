"""Filing a DSR platform's request, all or nothing: the platform's request and the ledger requests it
becomes (one per user id of the person) are recorded in one transaction — an erasure of a person
under a legal hold is recorded ``on_hold`` and becomes none, a person the mapping does not know is
recorded ``not_found`` — then their jobs are enqueued (a job Redis loses is enqueued again by a
worker, as for any request). The way to answer the platform (a nonce, callbacks) is sealed under
the operator's key; it never reaches a log."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from sessionctl import ledger
from sessionctl.config import Settings
from sessionctl.connectors import answers
from sessionctl.connectors.replies import seal_reply
from sessionctl.errors import InvalidRequest, RedisUnavailable
from sessionctl.logs import get_logger
from sessionctl.privacy import user_hmac
from sessionctl.store import connector_requests, legal_holds

log = get_logger("sessionctl.connectors")
Enqueue = Callable[[str, dict[str, Any], str], Awaitable[None]]
OPTIONS = {
    "erasure": {"scope": "all", "memories": True, "dry_run": False},
    "export": {"scope": "all", "since": None, "until": None, "by": "created", "compress": "none"},
}


@dataclass(slots=True)
class PlatformRequest:
    """What a platform asked, once its signature or secret was checked."""

    platform: str  # transcend | ketch
    kind: str  # erasure | export
    platform_ref: str  # the platform's own id of the request
    replay_key: str  # what may never be seen twice (a token's jti, a nonce, a request uid)
    identifier: str  # the person as the platform knows them
    identifier_type: str
    reply: dict[str, Any]  # how to answer (sealed): a nonce, callbacks, the platform's metadata
    received_at: datetime
    user_ids: list[str] = field(default_factory=list)  # from the identity mapping
    answer_later: bool = False  # pulled: no response carries an answer, every outcome is delivered


@dataclass(frozen=True, slots=True)
class Filing:
    row: Any  # the platform request as recorded
    new: bool  # False: this replay key or platform request was seen before; nothing was recorded


def new_id() -> str:
    return "con_" + secrets.token_hex(10)


async def seen(conn: asyncpg.Connection, req: PlatformRequest) -> Any:
    """The platform request recorded under this replay key, if any."""
    return await connector_requests.by_replay_key(conn, req.platform, req.replay_key)


async def filed_before(conn: asyncpg.Connection, req: PlatformRequest) -> Any:
    """The platform request of the same kind recorded for the same platform id, if any."""
    return await connector_requests.by_ref(conn, req.platform, req.kind, req.platform_ref)


async def file(conn: asyncpg.Connection, settings: Settings, req: PlatformRequest, enqueue: Enqueue) -> Filing:
    """Record the platform's request and its ledger requests, then enqueue their jobs."""
    key = settings.hash_key_bytes
    hmacs = [user_hmac(key, u) for u in req.user_ids]
    jobs: list[tuple[str, str, dict[str, Any]]] = []
    async with conn.transaction():
        connector_id = new_id()
        held = req.kind == "erasure" and bool(hmacs) and bool(await legal_holds.active(conn, hmacs))
        status = "not_found" if not hmacs else "on_hold" if held else "open"
        row = await connector_requests.insert(
            conn,
            {
                "id": connector_id,
                "platform": req.platform,
                "kind": req.kind,
                "platform_ref": req.platform_ref,
                "replay_key": req.replay_key,
                "identifier_hmac": user_hmac(key, req.identifier),
                "user_hmacs": hmacs,
                "reply": seal_reply(settings, connector_id, req.reply)
                if status == "open" or req.answer_later
                else None,
                "status": status,
            },
        )
        if row is None:  # the same replay key, recorded meanwhile
            return Filing(await seen(conn, req), new=False)
        if status != "open" and req.answer_later:
            await answers.note_at_filing(conn, connector_id, req.platform, req.kind, status)
        if status == "open":
            request_ids = []
            for n, user_id in enumerate(req.user_ids, 1):
                request_id, job = await _ledger_request(conn, settings, req, user_id, n)
                request_ids.append(request_id)
                jobs.append(job)
            await connector_requests.attach(conn, connector_id, request_ids)
            row = await connector_requests.get(conn, connector_id)
    for job_kind, job_id, payload in jobs:
        try:
            await enqueue(job_kind, payload, job_id)
        except RedisUnavailable:  # recorded: a worker's next round enqueues it
            log.warning("connector.enqueue_later", connector_request_id=connector_id, job_id=job_id)
    log.info(
        "connector.received",
        platform=req.platform,
        kind=req.kind,
        connector_request_id=connector_id,
        status=status,
        user_ids=len(hmacs),
    )
    return Filing(row, new=True)


async def _ledger_request(
    conn: asyncpg.Connection, settings: Settings, req: PlatformRequest, user_id: str, n: int
) -> tuple[str, tuple[str, str, dict[str, Any]]]:
    """One user id's ledger request (ref ``<platform>:<platform ref>``, ``#n`` from the second id on)."""
    ref = f"{req.platform}:{req.platform_ref}" + ("" if n == 1 else f"#{n}")
    row = {
        "kind": req.kind,
        "request_ref": ref[:200],
        "user_hmac": user_hmac(settings.hash_key_bytes, user_id),
        "target": "*",
        "options": OPTIONS[req.kind],
        "received_at": req.received_at,
        "due_at": ledger.due_date(req.received_at, settings.dsr_deadline_days),
        "callback_url": None,
        "requested_by": req.platform,
        "token_name": f"connector:{req.platform}",
        "dry_run": False,
    }
    inserted, job = await ledger.record_first(conn, settings, row, user_id)
    if inserted is None:
        raise InvalidRequest(f"ledger reference {ref} is already taken: this platform request was filed before")
    return str(inserted["request_id"]), job
