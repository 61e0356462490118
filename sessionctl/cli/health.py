"""``sessionctl health``: is Redis up, is Postgres up, has a worker reported for this queue."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.errors import SessionctlError
from sessionctl.worker import redisconf
from sessionctl.worker.queue import Queue


async def check_health(settings: Settings) -> dict[str, Any]:
    checks: dict[str, dict[str, Any]] = {}

    async def redis_check() -> None:
        r = None
        try:
            r = await asyncio.wait_for(redisconf.connect(settings), 10)
            await r.ping()
            checks["redis"] = {"ok": True, "detail": "ping ok"}
            checks["worker"] = await worker_check(r, settings)
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


async def worker_check(redis: Any, settings: Settings) -> dict[str, Any]:
    """How many workers have reported for this queue lately (each worker reports on its own, and
    takes its report back when it stops gracefully), for which database, and their job counters
    (arq's own health line, refreshed every minute, read into words)."""
    found = await Queue(redis, settings.queue_name).workers()
    if not found:
        return {
            "ok": False,
            "detail": f"no worker has reported for queue {settings.queue_name} in the last 30 s: start one with"
            " `sessionctl worker`",
            "workers": [],
        }
    latest = found[0]
    ago = max(0.0, time.time() - float(latest.get("at", 0)))
    where = sorted({str(a.get("database")) for a in found})
    detail = (
        f"{len(found)} worker{'s' if len(found) != 1 else ''} reported in the last 30 s (latest {ago:.0f} s ago),"
        f" serving {', '.join(where)} (sessionctl {latest.get('version')})"
    )
    beat = await redis.get(settings.queue_name + ":health-check")
    line = beat.decode(errors="replace") if beat else ""
    counters = dict(re.findall(r"(j_complete|j_failed|j_retried|j_ongoing|queued)=(\d+)", line))
    if counters:
        names = {"j_complete": "done", "j_failed": "failed", "j_retried": "retried", "j_ongoing": "running"}
        detail += "; jobs " + ", ".join(f"{names.get(k, k)} {v}" for k, v in counters.items())
    return {"ok": True, "detail": detail, "workers": [str(a.get("worker")) for a in found]}
