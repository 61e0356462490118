"""``sessionctl health``: is Redis up, is Postgres up, has a worker reported for this queue."""

from __future__ import annotations

import asyncio
from typing import Any

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.errors import SessionctlError
from worker import redisconf


async def check_health(settings: Settings) -> dict[str, Any]:
    checks: dict[str, dict[str, Any]] = {}

    async def redis_check() -> None:
        r = None
        try:
            r = await asyncio.wait_for(redisconf.connect(settings), 10)
            await r.ping()
            checks["redis"] = {"ok": True, "detail": "ping ok"}
            beat = await r.get(settings.queue_name + ":health-check")
            checks["worker"] = (
                {"ok": True, "detail": beat.decode(errors="replace")}
                if beat
                else {
                    "ok": False,
                    "detail": f"no worker health-check key for queue {settings.queue_name} "
                    "(no worker running, or none for a minute)",
                }
            )
        except Exception as exc:
            checks["redis"] = {"ok": False, "detail": f"cannot reach Redis ({type(exc).__name__}): check REDIS_URL"}
            checks["worker"] = {"ok": False, "detail": "unknown: Redis is unreachable"}
        finally:
            if r is not None:
                await r.aclose()

    async def postgres_check() -> None:
        dbs = Databases(pool_size=1)
        try:
            async with dbs.connect(settings.dsn) as conn:
                version = await store.server_version(conn)
            checks["postgres"] = {"ok": True, "detail": f"{settings.dsn.redacted} (server {version})"}
        except SessionctlError as exc:
            checks["postgres"] = {"ok": False, "detail": str(exc)}
        except Exception as exc:
            checks["postgres"] = {"ok": False, "detail": f"{type(exc).__name__} at {settings.dsn.redacted}"}
        finally:
            await dbs.close()

    await asyncio.wait_for(asyncio.gather(redis_check(), postgres_check()), timeout=30)
    ordered = {k: checks[k] for k in ("redis", "postgres", "worker") if k in checks}
    return {"ok": all(c["ok"] for c in ordered.values()), "checks": ordered}
