"""Delivering the webhooks owed to callers, and the rounds that keep the ledger true: every
``ROUND_S`` (and at once when a job of this worker noted one), a worker settles the requests whose
jobs ended unseen or vanished (:func:`sessionctl.ledger.reconcile`), deletes expired exports, and
delivers what is due — each attempt recorded, retried with backoff until a 2xx, or given up after
``SESSIONCTL_WEBHOOK_GIVE_UP_HOURS``. The allowed hosts are checked again before every attempt."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from sessionctl import export_lifetime, metrics, webhooks
from sessionctl.config import Settings
from sessionctl.connectors import answers, pull
from sessionctl.errors import SessionctlError
from sessionctl.ledger import Enqueue, reconcile
from sessionctl.logs import get_logger
from sessionctl.store import dsr_requests, webhook_deliveries

log = get_logger("sessionctl.deliveries")
ROUND_S = 2.0  # between two rounds (at once when a job of this worker noted a webhook)


class Deliveries:
    """Delivers the webhooks owed (a worker runs one): every ``ROUND_S``, and at once when a job of
    this worker noted one; each attempt recorded; retried with backoff until a 2xx, or given up after
    ``SESSIONCTL_WEBHOOK_GIVE_UP_HOURS``."""

    def __init__(
        self,
        settings: Settings,
        connect: Callable[[], Any],
        job_state: Callable[[str], Awaitable[Any]],
        enqueue: Enqueue | None = None,
    ):
        self.settings = settings
        self.connect = connect  # an async context manager giving a connection to DATABASE_URL's database
        self.job_state = job_state
        self.enqueue = enqueue  # how a request whose job vanished is enqueued again
        self.wake = asyncio.Event()
        self.open_requests: int | None = None  # waiting for a job at the last round; None: not looked yet
        self.next_pull = 0.0  # when Transcend's pending requests are fetched next (pull mode)

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
        """One round: settle what ended unseen, fetch Transcend's pending requests when pull mode is
        on and due, then deliver what is due. Deliveries made."""
        await self._pull(client)
        async with self.connect() as conn:
            await reconcile(conn, self.settings, self.job_state, self.enqueue)
            open_, overdue = await dsr_requests.open_and_overdue(conn)
            self.open_requests = await dsr_requests.pending_count(conn)
            metrics.REQUESTS_OPEN.set(open_)
            metrics.REQUESTS_OVERDUE.set(overdue)
            await export_lifetime.expire(conn)
            due = await webhook_deliveries.claim_deliveries(conn, 20, 2 * self.settings.webhook_timeout + 1)
        sent = 0
        for d in due:
            sent += await self._deliver(client, dict(d))
        return sent

    async def _pull(self, client: httpx.AsyncClient) -> None:
        """Transcend's pull mode: its pending requests filed, every ``SESSIONCTL_TRANSCEND_PULL_SECONDS``."""
        if not pull.enabled(self.settings) or self.enqueue is None or time.monotonic() < self.next_pull:
            return
        self.next_pull = time.monotonic() + self.settings.transcend_pull_seconds
        try:
            filed = await pull.pull_round(client, self.settings, self.connect, self.enqueue)
        except (httpx.HTTPError, ValueError) as exc:  # Sombra unreachable or not JSON: the next round tries
            log.warning("transcend.pull_failed", error_type=type(exc).__name__)
            return
        if filed:
            log.info("transcend.pulled", filed=filed)

    async def _deliver(self, client: httpx.AsyncClient, d: dict[str, Any]) -> int:
        if d.get("kind", "webhook") == "webhook":
            attempt = await self._webhook(client, d)
        else:  # a DSR platform's answer (sessionctl.connectors.answers)
            attempt = await answers.deliver(client, self.settings, self.connect, d)
        return await self._recorded(d, attempt)

    async def _webhook(self, client: httpx.AsyncClient, d: dict[str, Any]) -> dict[str, Any]:
        """One attempt at a caller's webhook: checked against the allowed hosts again, signed now."""
        keys = self.settings.webhook_keys()
        body = d["body"] if isinstance(d["body"], str) else json.dumps(d["body"])
        refused = None
        try:  # checked again now: a host removed from the allowed list since intake receives nothing
            webhooks.check_callback(d["url"], self.settings.webhook_allowed_hosts)
        except SessionctlError as exc:
            refused = f"not sent: {exc}"
        if refused is not None:
            attempt: dict[str, Any] = {"at": round(time.time(), 3), "ok": False, "error": refused}
        elif not keys:
            unset = "SESSIONCTL_WEBHOOK_SECRET and SESSIONCTL_WEBHOOK_SECRETS unset"
            attempt = {"at": round(time.time(), 3), "ok": False, "error": unset}
        else:  # signed now, by the scheme and every secret configured now; the event id is the delivery's
            headers = webhooks.signed_headers(self.settings.webhook_scheme, keys, d["event_id"], body.encode())
            attempt = await webhooks.post(client, d["url"], body.encode(), headers)
        if refused is not None:
            attempt["final"] = True
        return attempt

    async def _recorded(self, d: dict[str, Any], attempt: dict[str, Any]) -> int:
        """Note the attempt: delivered, due again after a backoff, or given up."""
        refused = attempt.pop("final", False)
        tries = int(d["tries"]) + 1
        age_h = (datetime.now(UTC) - d["created_at"]).total_seconds() / 3600
        give_up = refused or age_h >= self.settings.webhook_give_up_hours
        retry = None if attempt["ok"] or give_up else webhooks.backoff_s(tries)
        async with self.connect() as conn:
            await webhook_deliveries.record_attempt(
                conn, d["id"], attempt, delivered=bool(attempt["ok"]), retry_in_s=retry
            )
        outcome = "delivered" if attempt["ok"] else ("retrying" if retry is not None else "gave_up")
        metrics.WEBHOOKS.labels(outcome).inc()
        log.info(
            "webhook." + outcome,
            delivery=d["id"],
            kind=d.get("kind", "webhook"),
            event_id=d["event_id"],
            request_id=d["request_id"],
            job_id=d["job_id"],
            attempt=tries,
            status_code=attempt.get("status_code"),
            error=attempt.get("error"),
        )
        return 1 if attempt["ok"] else 0
