"""Running the DSR service in a test: the API on a free port (uvicorn, in this event loop), a
callback receiver that records what it gets and answers as told, a real worker, tokens."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn

from sessionctl.config import Settings
from sessionctl.store import api_tokens, migrations
from sessionctl.tokens import new_token, token_hash
from sessionctl.worker.settings import create
from tests.embedded_services import answers, free_port


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 (a free port) in this loop; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@contextlib.contextmanager
def serve_process(
    settings: Settings, hash_key: str, log: Any = subprocess.DEVNULL, cwd: Path | None = None, **env: str
) -> Iterator[str]:
    """``sessionctl serve`` in its own process with these settings (and ``env``: more variables),
    started in ``cwd``, on a free port, ready before this yields its base URL; stopped after."""
    port = free_port()
    child = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONCTL_")}
    child.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        SESSIONCTL_QUEUE=settings.queue_name,
        SESSIONCTL_HASH_KEY=hash_key,
        SESSIONCTL_LOG_LEVEL="WARNING",
        **env,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessionctl.cli", "serve", "--port", str(port)], env=child, stdout=log, stderr=log, cwd=cwd
    )
    try:
        deadline = time.monotonic() + 30
        while not answers("127.0.0.1", port):
            assert proc.poll() is None and time.monotonic() < deadline, "sessionctl serve did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Receiver:
    """An HTTP endpoint for callbacks: records each request (headers, body) and answers with the
    next status of ``answers`` (then 200); ``hang`` makes the first request wait that long."""

    answers: list[int] = field(default_factory=list)
    hang: float = 0.0
    got: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.got.append({"path": scope["path"], "headers": headers, "body": body})
        self.arrived.set()
        if self.hang and len(self.got) == 1:
            await asyncio.sleep(self.hang)
        status = self.answers.pop(0) if self.answers else 200
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def json_bodies(self) -> list[dict[str, Any]]:
        return [json.loads(g["body"]) for g in self.got]


async def make_token(conn: asyncpg.Connection, name: str, scopes: list[str]) -> str:
    await migrations.migrate(conn)
    token = new_token()
    assert await api_tokens.create_token(conn, name, token_hash(token), scopes)
    return token


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[None]:
    """A real arq worker (not burst: its webhook deliveries run beside its jobs) until the block ends."""
    w = create(settings, poll_delay=0.05, handle_signals=False)
    task = asyncio.create_task(w.main())
    try:
        yield
    finally:
        await _stop(w)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _stop(w: Any, drain: float = 15.0) -> None:
    """Let the jobs the worker holds finish (up to ``drain`` seconds), then close it. arq's close
    cancels what still runs and gathers it: a job cancelled outside arq's own handler (while it
    settles) raises CancelledError out of close before it shut the worker down — the worker's
    shutdown, not this test's: it is finished here, and re-raised only when this task itself is
    being cancelled."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + drain
    while any(not t.done() for t in w.tasks.values()) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    try:
        await w.close()
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        # close stopped at its gather: what it had left (the worker's own shutdown, arq's pool)
        if w.on_shutdown:
            await w.on_shutdown(w.ctx)
        await w.pool.close(close_connection_pool=True)


async def until(check: Callable[[], Any], timeout: float = 30.0, every: float = 0.1) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; that value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(every)


SECRET = "whsec-test-0123456789"


@contextlib.asynccontextmanager
async def dsr_service(base: Settings, conn: asyncpg.Connection, **update: Any) -> AsyncIterator[dict[str, Any]]:
    """The DSR service on a free port over a database of the test's own, a callback receiver allowed
    as a host, and tokens: ``all`` (read, erase, export), ``read``, ``other`` (read, erase, export:
    another caller), ``audit``. No worker: a test starts one when it wants the jobs run."""
    from pydantic import SecretStr

    from sessionctl.api.app import create_app

    receiver = Receiver()
    async with serving(receiver) as hook_url:
        port = hook_url.rsplit(":", 1)[1]
        s = base.model_copy(
            update={
                "webhook_secret": SecretStr(SECRET),
                "webhook_allowed_hosts": f"127.0.0.1:{port}",
                "webhook_timeout": 1.0,
                **update,
            }
        )
        tokens = {
            "all": await make_token(conn, "officer", ["read", "erase", "export"]),
            "read": await make_token(conn, "auditor", ["read"]),
            "other": await make_token(conn, "other-platform", ["read", "erase", "export"]),
            "audit": await make_token(conn, "privacy-office", ["read", "audit"]),
        }
        async with serving(create_app(s)) as api_url, httpx.AsyncClient(base_url=api_url, timeout=30) as client:
            yield {
                "settings": s,
                "conn": conn,
                "client": client,
                "receiver": receiver,
                "hook": f"{hook_url}/hooks/dsr",
                "tokens": tokens,
            }


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
