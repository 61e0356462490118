"""``sessionctl``: the command line.

Exit codes: 0 success; 1 the job failed (or is not done when ``--wait`` timed out); 2 bad input or
a permanent configuration problem (nothing was enqueued, no row touched); 3 Redis or Postgres
unreachable.

- :mod:`.app`: the typer application; :mod:`.common`: consoles, exit codes, settings, the one way
  a command runs its call, user ids from argv, stdin or a file, shared options;
- :mod:`.enqueue`: purge, export, retention run, status, jobs, retry;
- :mod:`.inspect`: receipts, verify, sessions, agents, import, retention show;
- :mod:`.operate`: worker, health, doctor, grants, migrate;
- :mod:`.service`: serve, token, requests; :mod:`.webhooks`: webhooks list, resend, test;
- :mod:`.render`: how each kind of result reads on a terminal.
"""

from __future__ import annotations

from sessionctl.cli import enqueue, holds, inspect, operate, service, webhooks  # noqa: F401 - commands register on import, in this order
from sessionctl.cli.app import app, main

__all__ = ["app", "main"]
