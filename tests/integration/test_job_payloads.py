"""The job validates its payload again on start; bad payloads fail permanently, touch nothing, and
a pickled payload is never executed."""

from __future__ import annotations

import json
import pickle

import asyncpg
import pytest
import redis.asyncio as aioredis

from sessionctl.config import Settings
from sessionctl.producer import Producer
from tests.agno_seed import seed, table_rows
from tests.conftest import run_worker

USER = "gina-77@example.com"


async def _enqueue_raw(settings: Settings, job_id: str, raw: bytes) -> None:
    """Put a job straight into Redis, as a hostile or buggy producer would."""
    r = aioredis.from_url(settings.redis_url)
    await r.psetex(f"arq:job:{job_id}", 60_000, raw)
    await r.zadd(settings.queue_name, {job_id: 1})
    await r.aclose()


def _job(payload_args: list, kwargs: dict | None = None) -> bytes:
    return json.dumps({"t": 1, "f": "purge_user_sessions", "a": payload_args, "k": kwargs or {}, "et": 1}).encode()


@pytest.mark.parametrize(
    ("args", "kwargs", "needle"),
    [
        ([{"agent_id": "{agent}", "user_id": ""}], None, "user id is empty"),
        ([{"agent_id": "x; drop table t", "user_id": USER}], None, "not a valid agent id"),
        ([{"agent_id": "{agent}", "user_id": 42}], None, "user_id"),
        ([{"agent_id": "{agent}", "user_id": USER, "dry_run": "false"}], None, "dry_run"),
        ([{"agent_id": "{agent}", "user_id": USER, "surprise": 1}], None, "surprise"),
        ([{"user_id": USER}], None, "exactly one target"),
        (["not an object"], None, "JSON object"),
        ([], None, "exactly one JSON object"),
        ([{"agent_id": "{agent}", "user_id": USER}, 2], None, "exactly one JSON object"),
        ([], {"agent_id": "{agent}", "user_id": USER}, "exactly one JSON object"),
    ],
)
async def test_bad_payload_fails_permanently_and_touches_nothing(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, args: list, kwargs: dict | None, needle: str
) -> None:
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, USER, 3)
    before = await table_rows(pg, schema)
    fill = json.loads(json.dumps([args, kwargs or {}]).replace("{agent}", agent_id))
    await _enqueue_raw(settings, f"{settings.queue_name}:raw-1", _job(fill[0], fill[1]))
    worker = await run_worker(settings)
    async with Producer(settings) as producer:
        state = await producer.status(f"{settings.queue_name}:raw-1")
    assert state.status == "failed"
    assert state.error is not None and state.error["type"] == "InvalidRequest", state.error
    assert needle in state.error["message"]
    assert worker.jobs_retried == 0
    assert await table_rows(pg, schema) == before


async def test_pickled_payload_is_rejected_not_executed(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, tmp_path
) -> None:
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, USER, 2)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (open, (str(marker), "w"))

    raw = pickle.dumps(
        {
            "t": 1,
            "f": "purge_user_sessions",
            "a": [{"agent_id": agent_id, "user_id": USER}],
            "k": {"x": Evil()},
            "et": 1,
        }
    )
    await _enqueue_raw(settings, f"{settings.queue_name}:pickled-1", raw)
    worker = await run_worker(settings)
    assert not marker.exists()
    assert worker.jobs_failed == 1 and worker.jobs_complete == 0
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id=$1', USER) == 2
