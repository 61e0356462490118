"""The worker's probes over HTTP, on a real worker process: /healthz and /readyz answer on the
metrics port; /readyz says which dependency is down; a SIGTERM turns the worker not ready at
once, while its running job finishes (the kubelet stops sending traffic before the pod goes)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import asyncpg
import httpx

from sessionctl.config import Settings
from sessionctl.producer import Producer
from tests.agno_seed import seed
from tests.embedded_services import free_port

USER = "probe-user"


async def _get(url: str) -> tuple[int, dict[str, Any] | str]:
    async with httpx.AsyncClient(timeout=5) as client:
        resp = await client.get(url)
    try:
        return resp.status_code, resp.json()
    except ValueError:
        return resp.status_code, resp.text


async def _until(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_probes_answer_and_a_sigterm_turns_the_worker_not_ready_while_its_job_finishes(
    settings: Settings, worker_env: dict[str, str], agent_id: str, pg: asyncpg.Connection, tmp_path: Any
) -> None:
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, USER, 3)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**worker_env, "SESSIONCTL_METRICS_PORT": str(port), "SESSIONCTL_STOP_GRACE": "30"}
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "sessionctl.cli", "worker"], env=env, stdout=log, stderr=log)
    blocker = await asyncpg.connect(settings.database_url)
    try:

        async def ready() -> bool:
            code, body = await _get(f"{base}/readyz")
            return code == 200 and isinstance(body, dict) and body["ready"] is True

        await _until(ready)
        assert await _get(f"{base}/healthz") == (200, {"alive": True})
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{base}/metrics")).text
        assert "sessionctl_worker_ready 1.0" in text and "sessionctl_queue_oldest_age_seconds" in text

        # a job that will be running when SIGTERM comes: its delete waits on our lock
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(f'LOCK TABLE "{schema}".agno_sessions IN ACCESS EXCLUSIVE MODE')
        async with Producer(settings) as p:
            enq = await p.purge_user_sessions(user_id=USER, agent_id=agent_id)

            async def running() -> bool:
                return (await p.status(enq.job_id)).status == "running"

            await _until(running)
            os.kill(proc.pid, signal.SIGTERM)

            async def draining() -> dict[str, Any] | None:
                code, body = await _get(f"{base}/readyz")
                return body if code == 503 and isinstance(body, dict) else None

            body = await _until(draining, timeout=10)
            assert "draining" in body["detail"]
            assert (await _get(f"{base}/healthz"))[0] == 200  # alive: finishing its job
            assert proc.poll() is None
            await tx.rollback()  # the job goes on, and finishes within the grace
            state = await p.wait(enq.job_id, timeout=30)
        assert state.status == "succeeded" and state.result and state.result["sessions_deleted"] == 3
        assert proc.wait(30) == 0
    finally:
        await blocker.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_readiness_names_the_database_that_does_not_answer(
    settings: Settings, worker_env: dict[str, str]
) -> None:
    from tests.embedded_services import free_port as closed_port

    port = free_port()
    env = {
        **worker_env,
        "SESSIONCTL_METRICS_PORT": str(port),
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed_port()}/nowhere",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessionctl.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        async def not_ready() -> dict[str, Any] | None:
            code, body = await _get(f"http://127.0.0.1:{port}/readyz")
            return body if code == 503 and isinstance(body, dict) and "unreachable" in body["detail"] else None

        body = await _until(not_ready)
        assert "database postgresql://postgres@127.0.0.1" in body["detail"] and "nowhere" in body["detail"]
        assert (await _get(f"http://127.0.0.1:{port}/healthz"))[0] == 200  # alive, only not ready
        assert json.dumps(body).count("password") == 0
    finally:
        proc.terminate()
        proc.wait(30)
