"""The floor of HTTP intake for `bench/intake.py`: a hand-written FastAPI endpoint doing the least an
erasure intake must — a pydantic body, one INSERT of the request (an asyncpg pool), one arq
``enqueue_job`` — and nothing else (no token, no ledger rules, no job index, no webhook row).

    BENCH_DSN=postgresql://… BENCH_REDIS=redis://… python -m uvicorn bench.floor_intake:app --port 8900
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from arq import create_pool
from arq.connections import RedisSettings
from fastapi import FastAPI
from pydantic import BaseModel

TABLE = "CREATE TABLE IF NOT EXISTS floor_requests (id text PRIMARY KEY, user_id text NOT NULL, agent_id text)"


class ErasureIn(BaseModel):
    user_id: str
    agent_id: str | None = None


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(os.environ["BENCH_DSN"], min_size=2, max_size=10)
    async with app.state.pool.acquire() as conn:
        await conn.execute(TABLE)
    app.state.arq = await create_pool(RedisSettings.from_dsn(os.environ["BENCH_REDIS"]))
    try:
        yield
    finally:
        await app.state.arq.aclose()
        await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/v1/erasures", status_code=202)
async def erasure(body: ErasureIn) -> dict[str, Any]:
    request_id = uuid.uuid4().hex
    async with app.state.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO floor_requests (id, user_id, agent_id) VALUES ($1, $2, $3)",
            request_id,
            body.user_id,
            body.agent_id,
        )
    job = await app.state.arq.enqueue_job(
        "purge_user_sessions", body.model_dump(), _job_id=request_id, _queue_name="bench:floor"
    )
    return {"request_id": request_id, "job_id": None if job is None else job.job_id}
