"""Commands that run or look after a deployment: worker, health, doctor, grants, migrate, demo."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, Literal

import typer

from sessionctl.cli import render
from sessionctl.cli.app import app, demo_app
from sessionctl.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    JsonOpt,
    OneAgentOpt,
    fail,
    out,
    print_json,
    run,
    settings,
)
from sessionctl.config import state_dir
from sessionctl.errors import PermanentError, SessionctlError


@app.command()
def worker(
    burst: Annotated[bool, typer.Option("--burst", help="Run the queued jobs, then exit.")] = False,
) -> None:
    """Run a worker (`arq sessionctl.worker.settings.WorkerSettings` runs arq's plain one)."""
    from redis.exceptions import RedisError

    from sessionctl import deployment
    from sessionctl.logs import configure_logging
    from sessionctl.worker.settings import create

    config = settings()
    configure_logging(config.log_format, config.log_level)
    try:
        _ = config.dsn  # a bad DATABASE_URL or REDIS_URL is bad input, said before anything starts
        deployment.load(config.config_file)  # so is a malformed deployment file (each job reads it again)
        w = create(config, burst=burst)
    except PermanentError as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    try:
        w.run()
    except (RedisError, OSError) as exc:
        fail(EXIT_UNAVAILABLE, f"cannot connect to Redis ({type(exc).__name__}): check REDIS_URL and that Redis is up")
    except SessionctlError as exc:
        fail(EXIT_BAD_INPUT if isinstance(exc, PermanentError) else EXIT_UNAVAILABLE, str(exc))
    if burst and w.jobs_failed:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def health(as_json: JsonOpt = False) -> None:
    """Check Redis, Postgres and the worker's health-check key; exit 0 only if all are fine."""
    from sessionctl.cli.health import check_health

    report = run(check_health(settings()))
    print_json(report) if as_json else render.health(report)
    raise typer.Exit(0 if report["ok"] else EXIT_FAILED)


@app.command()
def doctor(
    agent: OneAgentOpt = None,
    create_indexes: Annotated[
        bool, typer.Option("--create-indexes", help="Build missing indexes (CREATE INDEX CONCURRENTLY).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check indexes, grants, row-level security and the receipts schema per agent; exit 1 while one is missing.

    Per agent schema: the indexes sessionctl's queries need, table sizes, and whether this role can
    do and prove an erasure there; whether the database takes writes and the receipts schema is
    ready."""
    from sessionctl.doctor import diagnose

    report = run(diagnose(settings(), agent_id=agent, create=create_indexes))
    print_json(report) if as_json else render.doctor(report)
    raise typer.Exit(0 if report["ok"] else EXIT_FAILED)


@app.command()
def grants(
    role: Annotated[str, typer.Option("--role", help="The worker's database role.")],
    agent: OneAgentOpt = None,
    sessions_only: Annotated[
        bool,
        typer.Option(
            "--sessions-only",
            help="Only what erasures of scope sessions need (sessions, their runs, memories); without it, what every"
            " erasure needs, a person's (scope all, the DSR service's default) included.",
        ),
    ] = False,
) -> None:
    """Print the minimal SQL grants for a worker role, from the agent schemas as they are now."""
    from sessionctl.doctor import grants as grant_lines

    scope = "sessions" if sessions_only else "all"
    for line in run(grant_lines(settings(), role, agent_id=agent, scope=scope)):
        out.print(line, markup=False, highlight=False)


@app.command()
def migrate() -> None:
    """Create or upgrade sessionctl's receipts schema (run once per database as an administrator)."""
    from sessionctl.doctor import migrate as run_migrations

    config = settings()
    version = run(run_migrations(config))
    out.print(f"receipts schema sessionctl at version {version} in {config.dsn.redacted}", markup=False)


@demo_app.command("seed")
def demo_seed(
    agent: Annotated[str, typer.Option("--agent", help="The agent id to write the demo sessions for.")] = "demo-agent",
    users: Annotated[int, typer.Option("--users", min=1, max=1000, help="How many users (demo-user-1 …).")] = 3,
    sessions: Annotated[int, typer.Option("--sessions", min=1, max=10_000, help="Sessions per user.")] = 20,
    layout: Annotated[
        Literal["3x", "2x"],
        typer.Option("--layout", help="3x: as Agno 3.x writes; 2x: runs in the session row, as agno 2.5.14 wrote."),
    ] = "3x",
) -> None:
    """Write demo sessions, runs and memories for a few users, as Agno writes them."""
    from sessionctl.demo import seed, seed_2x

    config = settings()
    done = run(seed_2x(config, agent) if layout == "2x" else seed(config, agent, users=users, sessions=sessions))
    where = f"{done.schema} in {config.dsn.redacted}"
    out.print(
        f"wrote {done.sessions} sessions ({done.runs} runs) and {done.memories} memories of"
        f" {', '.join(done.users[:3])}{' …' if len(done.users) > 3 else ''} into {where}, through Agno",
        markup=False,
        highlight=False,
    )
    out.print(
        f"next: printf '{done.users[0]}\\n' | sessionctl purge --agent {agent} --user - --wait"
        "   (a worker must be running: sessionctl worker)",
        markup=False,
        highlight=False,
    )


@demo_app.command("start")
def demo_start(
    agent: Annotated[str, typer.Option("--agent", help="The agent id to write the demo sessions for.")] = "demo-agent",
    users: Annotated[int, typer.Option("--users", min=1, max=1000, help="How many users (demo-user-1 …).")] = 3,
) -> None:
    """Everything for a first try: services (embedded ones if none is configured), demo data, a worker."""
    from sessionctl import embedded
    from sessionctl.demo import seed

    if not embedded.configured():
        services = run(_up())
        state = "started" if services.started else "found running"
        out.print(
            f"no DATABASE_URL/REDIS_URL configured: {state} an embedded Postgres and Redis under {state_dir()}"
            " (`sessionctl demo stop` stops them; their data stays)",
            markup=False,
            highlight=False,
        )
    config = settings()
    done = run(seed(config, agent, users=users, sessions=20))
    out.print(
        f"wrote {done.sessions} sessions ({done.runs} runs) and {done.memories} memories of {', '.join(done.users[:3])}"
        f"{' …' if len(done.users) > 3 else ''} into {done.schema}, through Agno",
        markup=False,
        highlight=False,
    )
    out.print(_worker_line(config), markup=False, highlight=False)
    out.print(f"exports are written to {config.export_dir} (SESSIONCTL_EXPORT_DIR)", markup=False, highlight=False)
    out.print(
        "next:\n"
        f"  printf '{done.users[0]}\\n' | sessionctl purge --agent {agent} --user - --wait   # erase one user\n"
        f"  printf '{done.users[0]}\\n' | sessionctl receipts --user -                      # its receipt\n"
        "  sessionctl doctor          # indexes, grants, receipts\n"
        "  sessionctl demo stop       # stop the demo worker (and the embedded services)",
        markup=False,
        highlight=False,
    )


async def _up() -> Any:
    from sessionctl import embedded

    return embedded.up()


def _worker_line(config: Any) -> str:
    """Start a worker in the background unless a live one like this CLI already serves the queue."""
    import subprocess
    import sys
    import time

    from sessionctl.cli.common import with_producer

    async def serving(producer: Any) -> bool:
        live = [w for w in await (await producer.queue()).workers() if _alive(str(w.get("worker", "")))]
        return bool(live) and await producer.check_worker() is None

    if with_producer(config, serving):
        return "a worker already serves the queue"
    root = state_dir()
    root.mkdir(parents=True, exist_ok=True)
    with (root / "worker.log").open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "sessionctl.cli", "worker"], stdout=log, stderr=log, start_new_session=True
        )
    (root / "worker.pid").write_text(str(worker.pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if with_producer(config, serving):
            return f"started a worker in the background (pid {worker.pid}, log {root / 'worker.log'})"
        if worker.poll() is not None:
            break
        time.sleep(0.5)
    fail(EXIT_UNAVAILABLE, f"the demo worker did not report within 30 s: see {root / 'worker.log'}")


def _alive(worker_id: str) -> bool:
    """Is the worker that reported under this id alive? A worker of this host is checked by its
    process (a killed one's report outlives it by up to 30 s); one of another host is taken at its
    word."""
    import os
    import socket

    host, _, rest = worker_id.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@demo_app.command("stop")
def demo_stop() -> None:
    """Stop the demo worker and the embedded services (their data stays for the next start)."""
    from sessionctl import embedded

    stopped = False
    pid = state_dir() / "worker.pid"
    if pid.is_file():  # first, while Redis still runs: the worker takes its report back as it stops
        with contextlib.suppress(ValueError, ProcessLookupError):
            _stop(int(pid.read_text().strip()))
        pid.unlink(missing_ok=True)
        stopped = True
    if embedded.down():
        out.print(f"stopped the demo worker and the embedded services ({state_dir()})", markup=False)
    elif stopped:
        out.print("stopped the demo worker", markup=False)
    else:
        out.print("nothing to stop: no demo worker, no embedded services", markup=False)


def _stop(pid: int, wait_s: float = 60.0) -> None:
    """SIGTERM, then wait until the process is gone (its running job finishes, its report in
    Redis is taken back): the next ``demo start`` finds the queue without a worker."""
    import os
    import signal
    import time

    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
