"""The OpenAPI spec (the bearer scheme, 401/403, the webhooks, the package's version), served as
``SESSIONCTL_OPENAPI`` says: off, for any valid token, or public with ``/docs`` and ``/redoc``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from sessionctl.api.auth import Anyone
from sessionctl.api.models import WebhookBody
from sessionctl.config import Settings


def install(app: FastAPI, settings: Settings) -> None:
    """The OpenAPI spec (bearer scheme, 401/403, webhooks, the package's version), as
    ``SESSIONCTL_OPENAPI`` says: off, for any valid token, or public with /docs and /redoc."""
    if settings.openapi == "off":
        return

    def spec() -> dict[str, Any]:
        return app.openapi()

    if settings.openapi == "token":

        @app.get("/openapi.json", include_in_schema=False)
        async def openapi_token(_: Anyone) -> JSONResponse:
            return JSONResponse(spec())

        return

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_public() -> JSONResponse:
        return JSONResponse(spec())

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="sessionctl")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="sessionctl")


def webhooks(app: FastAPI) -> None:
    """The completion webhooks, declared in the spec (OpenAPI ``webhooks``)."""
    events = ("erasure.completed", "erasure.dry_run", "erasure.on_hold", "erasure.failed", "export.completed")
    for event in (*events, "export.failed"):

        async def hook(body: WebhookBody) -> None:
            """Sent to a request's callback_url when its job ends, signed as ``SESSIONCTL_WEBHOOK_SCHEME``
            says (``X-Sessionctl-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``,
            Stripe's scheme; or Standard Webhooks' ``webhook-id``/``webhook-timestamp``/``webhook-signature``);
            at least once: deduplicate on ``event_id``."""

        app.webhooks.post(event, summary=f"{event}: a request's job ended")(hook)
