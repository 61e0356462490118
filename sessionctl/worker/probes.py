"""The worker's HTTP endpoints on ``SESSIONCTL_METRICS_PORT``: ``/metrics`` (Prometheus),
``/healthz`` (liveness: the event loop ticked within ``STALL_S``) and ``/readyz`` (readiness: Redis
and the databases the worker serves answered the last check, and it is not draining after a
SIGTERM). A thread serves them (as prometheus-client's own server does); the event loop writes
:class:`Health`, the thread only reads it — so a blocked loop is seen as not alive."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

STALL_S = 30.0  # the loop not ticking for this long: not alive (a kubelet restarts the pod)


@dataclass
class Health:
    """Written by the event loop, read by the HTTP thread."""

    beat: float = field(default_factory=time.monotonic)
    ready: bool = False
    reason: str = "starting"
    draining: bool = False
    checked_at: float = 0.0

    def tick(self) -> None:
        self.beat = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.beat < STALL_S

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining: SIGTERM received, finishing running jobs"
        if not self.alive():
            return False, f"the event loop has not ticked for {STALL_S:.0f} s"
        return self.ready, self.reason


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not logged
        return


def app(health: Health) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app()

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            ok = health.alive()
            body: dict[str, Any] = {"alive": ok}
        elif path == "/readyz":
            ok, reason = health.readiness()
            body = {"ready": ok, "detail": reason}
        else:
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    return wsgi


def serve(port: int, health: Health, addr: str = "0.0.0.0") -> bool:  # noqa: S104 - probed from outside
    """Serve the endpoints on ``port`` in a daemon thread; ``False`` when the port is taken."""
    try:
        server = make_server(addr, port, app(health), server_class=_Server, handler_class=_Quiet)
    except OSError:
        return False
    threading.Thread(target=server.serve_forever, name="sessionctl-probes", daemon=True).start()
    return True
