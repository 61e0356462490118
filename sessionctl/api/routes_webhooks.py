"""Completion webhooks on demand: resend a delivery (``POST /v1/webhooks/{delivery_id}/resend``: the
same event id and body, due again at once) and send a signed test event to a URL now
(``POST /v1/webhooks/test``), so a receiver can check its verification before a real request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Security

from sessionctl import webhooks
from sessionctl.api.auth import ERRORS, Anyone, Caller, need
from sessionctl.api.models import Resent, WebhookAttempt, WebhookTestIn
from sessionctl.config import Settings
from sessionctl.logs import get_logger
from sessionctl.store import webhook_deliveries

log = get_logger("sessionctl.api")
router = APIRouter(tags=["webhooks"])
BIGINT_MAX = 2**63 - 1


async def _may_call_back(who: Annotated[Caller, Security(need(None))]) -> Caller:
    """A caller who may name a callback URL: a token with the ``erase`` or ``export`` scope."""
    if not {"erase", "export"} & set(who.scopes):
        raise HTTPException(403, "this token lacks the 'erase' or 'export' scope (the scopes that may name a callback)")
    return who


CallerBack = Annotated[Caller, Depends(_may_call_back)]


@router.post("/v1/webhooks/{delivery_id}/resend", responses={**ERRORS, 404: {"description": "no delivery of yours"}})
async def resend(delivery_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)], request: Request, who: Anyone) -> Resent:
    """Make a webhook delivery of your requests (``audit``: any) due again at once — even one
    delivered or given up — with the same event id and body; its attempts are kept."""
    async with request.app.state.connect() as conn, conn.transaction():
        row = await webhook_deliveries.lock_delivery(conn, delivery_id)
        if row is None or (who.owner is not None and row["token_name"] != who.owner):
            raise HTTPException(404, "no webhook delivery of yours with this id")
        again = await webhook_deliveries.resend(conn, delivery_id)
    assert again is not None  # locked above, in this transaction
    log.info("webhook.resend", delivery=delivery_id, event_id=again["event_id"], by=who.name)
    return Resent(
        delivery_id=delivery_id,
        event_id=again["event_id"],
        request_id=again["request_id"],
        job_id=again["job_id"],
        attempts=again["tries"],
    )


@router.post(
    "/v1/webhooks/test",
    responses={**ERRORS, 422: {"description": "a URL not allowed, or no webhook secret set"}},
)
async def send_test_event(body: WebhookTestIn, request: Request, who: CallerBack) -> WebhookAttempt:
    """Send one signed test event (``{"event": "test", "event_id": …}``) to ``url`` now, not queued:
    the attempt's status code, ``ok`` and duration. ``url`` must be on
    ``SESSIONCTL_WEBHOOK_ALLOWED_HOSTS``, as a callback_url."""
    settings: Settings = request.app.state.settings
    webhooks.check_callback(body.url, settings.webhook_allowed_hosts)  # refused: 422, nothing sent
    keys = settings.webhook_keys()
    if not keys:
        raise HTTPException(422, "no webhook secret: set SESSIONCTL_WEBHOOK_SECRET or SESSIONCTL_WEBHOOK_SECRETS")
    attempt = await webhooks.send_probe(body.url, settings.webhook_scheme, keys, settings.webhook_timeout)
    log.info(
        "webhook.test",
        event_id=attempt["event_id"],
        ok=attempt["ok"],
        status_code=attempt.get("status_code"),
        by=who.name,
    )
    return WebhookAttempt.model_validate({k: v for k, v in attempt.items() if k != "at"})
