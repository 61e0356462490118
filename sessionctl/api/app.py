"""``sessionctl serve``: the DSR service over HTTP, put together — intake (:mod:`.routes_intake`,
:mod:`.intake`), jobs and receipts (:mod:`.routes_jobs`), the deadline ledger
(:mod:`.routes_requests`), webhooks resent and tested (:mod:`.routes_webhooks`), DSR platforms
(:mod:`.routes_connectors`), legal holds (:mod:`.routes_holds`), health, the
console (:mod:`.console`), the errors (:mod:`.errors`) and the spec (:mod:`.spec`).

It records and enqueues (through the same :class:`~sessionctl.producer.Producer` as the CLI) and
reads; workers do the work. No endpoint takes a raw user id in its path or query: they come in POST
bodies, and leave only as HMACs. A token sees the requests and jobs it made (``audit``: all of
them); an export's file goes only to the token that asked for it. The OpenAPI spec is served as
``SESSIONCTL_OPENAPI`` says (off by default).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from sessionctl import __version__
from sessionctl.api import (
    console,
    errors,
    routes_connectors,
    routes_holds,
    routes_intake,
    routes_jobs,
    routes_requests,
    routes_webhooks,
    spec,
)
from sessionctl.api.auth import Tokens
from sessionctl.config import Settings, load_settings
from sessionctl.connectors.sombra import SombraKeys
from sessionctl.databases import Databases
from sessionctl.producer import Producer

health = APIRouter(tags=["health"])


@health.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health.get("/readyz", responses={503: {"description": "Redis or Postgres unreachable"}})
async def readyz(request: Request) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        await (await request.app.state.producer.redis()).ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = type(exc).__name__
    try:
        async with request.app.state.connect() as conn:
            await conn.fetchval("SELECT 1")
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = type(exc).__name__
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        databases = Databases(pool_size=settings.pool_size, client_cache_size=8)
        app.state.settings = settings
        app.state.databases = databases
        app.state.connect = lambda: databases.connect(settings.dsn)
        app.state.tokens = Tokens(app.state.connect)
        app.state.sombra = SombraKeys(settings)
        async with Producer(settings) as producer:
            app.state.producer = producer
            # What startup made (modules, the app, pools) lives as long as the process: out of the
            # garbage collector's sight, which otherwise walks it again and again under load.
            gc.freeze()
            try:
                yield
            finally:
                await databases.close()

    app = FastAPI(
        title="sessionctl",
        version=__version__,
        summary="Erasure and export of what Agno agents keep about a person, for data-subject requests",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    routes_intake.install(app)  # first: the routes asked most, on the app's own router
    errors.install(app)
    spec.install(app, settings)
    spec.webhooks(app)
    routers = (health, routes_jobs, routes_requests, routes_webhooks, routes_connectors, routes_holds)
    for router in routers:
        app.include_router(router if isinstance(router, APIRouter) else router.router)
    app.include_router(console.router(settings))
    return app
