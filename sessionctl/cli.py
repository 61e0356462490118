"""``sessionctl``: the command line.

Exit codes: 0 success; 1 the job failed (or is not done when ``--wait`` timed out);
2 bad input (nothing was enqueued, no row touched); 3 Redis or Postgres unreachable.
"""

from __future__ import annotations

import asyncio
import json
import sys
import warnings
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from sessionctl.config import Settings, load_settings
from sessionctl.errors import InvalidRequest, PermanentError, SessionctlError, TransientError, unexpected
from sessionctl.identifiers import Ambiguous, read_id_lines

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Bulk maintenance of Agno agent sessions in Postgres: GDPR erasure as arq jobs.",
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 1, 2, 3


def _fail(code: int, message: str) -> NoReturn:
    err.print(f"error: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        settings = load_settings()
    except ValidationError as exc:  # name the variable and the rule, never the value (a DSN password)
        problems = [
            f"{'.'.join(str(x) for x in e.get('loc', ())) or 'settings'}: {e.get('msg', 'invalid')}"
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        _fail(EXIT_BAD_INPUT, "invalid configuration: " + "; ".join(problems))
    from sessionctl.logs import configure_logging

    # commands print their output on stdout; their own log lines (warnings) go to stderr
    configure_logging(settings.log_format, "WARNING")
    return settings


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        return asyncio.run(coro)
    except PermanentError as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    except TransientError as exc:
        _fail(EXIT_UNAVAILABLE, str(exc))
    except SessionctlError as exc:
        _fail(EXIT_FAILED, str(exc))
    except Exception as exc:  # no traceback, no foreign text (it may quote row values): class and SQLSTATE
        _fail(EXIT_FAILED, unexpected(exc))


USER_HELP = "The user id; `-` reads it from stdin (keeps it out of the process list)."
AMBIGUOUS_HELP = (
    "How to read ids with surrounding whitespace or invisible characters: refuse (default), keep (exactly as"
    " written) or strip (surrounding whitespace removed)."
)


def _user(user: str | None) -> str | None:
    """The ``--user`` value; ``-`` reads one id from stdin (one line, exactly as written, the
    line's ending removed), so the id never sits in the process list for the command's life."""
    if user != "-":
        return user
    try:
        ids = read_id_lines(sys.stdin.buffer.read(), source="--user - (stdin)")
    except InvalidRequest as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    if len(ids) != 1:
        _fail(EXIT_BAD_INPUT, f"--user - reads exactly one user id from stdin, got {len(ids)}")
    return ids[0]


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


@app.command()
def worker(
    burst: Annotated[bool, typer.Option("--burst", help="Run the queued jobs, then exit.")] = False,
) -> None:
    """Run a worker (same as `arq worker.WorkerSettings`)."""
    from redis.exceptions import RedisError

    from sessionctl.logs import configure_logging
    from worker.settings import create

    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    try:
        _ = settings.dsn  # a bad DATABASE_URL or REDIS_URL is bad input, said before anything starts
        w = create(settings, burst=burst)
    except PermanentError as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    try:
        w.run()
    except (RedisError, OSError) as exc:
        _fail(EXIT_UNAVAILABLE, f"cannot connect to Redis ({type(exc).__name__}): check REDIS_URL and that Redis is up")
    except SessionctlError as exc:
        _fail(EXIT_BAD_INPUT if isinstance(exc, PermanentError) else EXIT_UNAVAILABLE, str(exc))
    if burst and w.jobs_failed:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def purge(
    user: Annotated[str | None, typer.Option("--user", help=USER_HELP)] = None,
    users_file: Annotated[
        Path | None,
        typer.Option("--users-file", help="Up to 10,000 user ids, one per line, exactly as written (`-`: stdin)."),
    ] = None,
    ambiguous_ids: Annotated[str, typer.Option("--ambiguous-ids", help=AMBIGUOUS_HELP)] = "refuse",
    agent: Annotated[str | None, typer.Option("--agent", help="The agent id.")] = None,
    all_agents: Annotated[bool, typer.Option("--all-agents", help="Every agent schema in the database.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")] = False,
    memories: Annotated[bool, typer.Option("--memories", help="Also erase the user's agno_memories.")] = False,
    scope: Annotated[
        str, typer.Option("--scope", help="sessions (default), or all: every user-keyed Agno table.")
    ] = "sessions",
    requested_by: Annotated[
        str | None, typer.Option("--requested-by", help="A label for who asked (ticket id).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job and print its result.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait with --wait.")] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Enqueue the erasure of a user's sessions (or of many users', --users-file) from one agent or all agents."""
    if (agent is None) == (not all_agents):
        _fail(EXIT_BAD_INPUT, "name exactly one target: --agent ID or --all-agents")
    if (user is None) == (users_file is None):
        _fail(EXIT_BAD_INPUT, "name the users: --user ID, or --users-file FILE (one id per line)")
    if ambiguous_ids not in ("refuse", "keep", "strip"):
        _fail(EXIT_BAD_INPUT, f"--ambiguous-ids must be refuse, keep or strip, not {ambiguous_ids!r}")
    how: Ambiguous = ambiguous_ids  # type: ignore[assignment]
    bulk = _read_users_file(users_file, how) if users_file is not None else None
    user = _user(user)
    settings = _settings()

    async def go() -> int:
        from sessionctl.producer import Producer

        async with Producer(settings) as producer:
            if bulk is not None:
                enq = await producer.purge_users(
                    user_ids=bulk,
                    agent_id=agent,
                    all_agents=all_agents,
                    dry_run=dry_run,
                    memories=memories,
                    scope=scope,
                    requested_by=requested_by,
                    ambiguous_ids=how,
                )
                return await _report(producer, enq, wait, timeout, as_json)
            enq = await producer.purge_user_sessions(
                user_id=user or "",
                agent_id=agent,
                all_agents=all_agents,
                dry_run=dry_run,
                memories=memories,
                scope=scope,
                requested_by=requested_by,
            )
            return await _report(producer, enq, wait, timeout, as_json)

    raise typer.Exit(_run(go()))


def _read_users_file(path: Path, ambiguous: Ambiguous) -> list[str]:
    """One user id per line, exactly as written (identifiers.read_id_lines: split on \\n only, an
    ambiguous line refuses the file unless ``ambiguous`` says how to read it); duplicates dropped."""
    try:
        data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        _fail(EXIT_BAD_INPUT, f"cannot read --users-file {path}: {(exc.strerror or type(exc).__name__).lower()}")
    try:
        ids = read_id_lines(data, source=f"--users-file {path}", ambiguous=ambiguous)
    except InvalidRequest as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    if not ids:
        _fail(EXIT_BAD_INPUT, f"--users-file {path} holds no user ids")
    unique = list(dict.fromkeys(ids))
    if len(unique) < len(ids):
        err.print(f"{len(ids) - len(unique)} repeated user id(s) ignored", markup=False)
    return unique


async def _wait(producer: Any, job_id: str, timeout: float, quiet: bool) -> Any:
    """Wait for a job; on a terminal, a progress bar fed by the job's progress in Redis."""
    if quiet or not err.is_terminal:
        return await producer.wait(job_id, timeout=timeout)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as bar:
        task = bar.add_task(f"{job_id}: queued", total=None)

        def show(state: Any) -> None:
            p = state.progress or {}
            bar.update(
                task,
                description=f"{state.status}" + (f" ({p['agent']})" if p.get("agent") else ""),
                completed=p.get("processed", 0),
                total=p.get("total"),
            )

        return await producer.wait(job_id, timeout=timeout, on_change=show)


def _print_state(state: Any) -> None:
    p = out.print
    r = state.result
    if r and r.get("kind") == "export_sessions":
        _print_export(state)
        return
    if r and r.get("kind") == "purge_expired_sessions":
        p(f"job       {state.job_id}", markup=False, highlight=False)
        p(f"status    {state.status}  (as of {r['as_of']})", markup=False)
        p(f"deleted   sessions={r['sessions_deleted']}  remaining past cutoff {r['remaining']}", markup=False)
        for name, a in sorted(r["agents"].items()):
            what = f"policy {a['policy']}: deleted {a['deleted']}" if a.get("policy") else "kept (no policy)"
            p(f"  {name}: {what}", markup=False, highlight=False)
        return
    if r and r.get("kind") == "purge_users":
        p(f"job       {state.job_id}", markup=False, highlight=False)
        p(f"status    {state.status}", markup=False)
        p(f"users     {r['users_count']}  target {r['target']}", markup=False, highlight=False)
        p(
            f"deleted   sessions={r['sessions_deleted']} runs={r['runs_deleted']}  remaining {r['remaining']}",
            markup=False,
        )
        return
    p(f"job       {state.job_id}", markup=False, highlight=False)
    p(f"status    {state.status}" + (f" (attempt {state.attempt})" if state.attempt else ""), markup=False)
    if state.error:
        p(f"error     {state.error['type']}: {state.error['message']}", markup=False, highlight=False)
    if r:
        p(f"user      hmac:{r['user_hmac']}", markup=False, highlight=False)
        p(f"target    {r['target']}", markup=False, highlight=False)
        if r.get("dry_run"):
            would = r.get("would_delete") or {}
            p("would delete  " + ", ".join(f"{k}={v}" for k, v in would.items()), markup=False)
        else:
            p(
                f"deleted   sessions={r['sessions_deleted']} runs={r['runs_deleted']} "
                f"memories={r['memories_deleted']} late={r.get('late_sessions', 0)}",
                markup=False,
            )
            p(f"remaining {r['remaining']}", markup=False)
        for name, a in sorted(r.get("agents", {}).items()):
            counts = a.get("would_delete") or {"sessions": a["sessions_deleted"], "runs": a["runs_deleted"]}
            p(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in counts.items()), markup=False, highlight=False)
        p(f"finished  {r['finished_at']}", markup=False)
    elif state.status == "not_found":
        p("no such job: it was never enqueued, or its result has expired (SESSIONCTL_KEEP_RESULT)", markup=False)
    elif not state.done:
        p("the job is not finished yet; check again with: sessionctl status " + state.job_id, markup=False)


def _print_export(state: Any) -> None:
    p, r = out.print, state.result
    p(f"job       {state.job_id}", markup=False, highlight=False)
    p(f"status    {state.status}", markup=False)
    p(f"file      {r['path']}  ({r['bytes']} bytes, {r['compress']})", markup=False, highlight=False)
    p(f"manifest  {r['manifest_path']}", markup=False, highlight=False)
    p(f"sha256    {r['sha256']}", markup=False)
    p(f"sessions  {r['sessions']}  " + ", ".join(f"{k}={v}" for k, v in sorted(r["agents"].items())), markup=False)
    if r.get("user_hmac"):
        p(f"user      hmac:{r['user_hmac']}", markup=False)
    if r.get("purge"):
        p(
            f"erased    sessions={r['purge']['sessions_deleted']} runs={r['purge']['runs_deleted']} remaining=0",
            markup=False,
        )


def _epoch(value: str | None, flag: str) -> int | None:
    """ISO 8601 date or datetime (UTC unless it says otherwise), or epoch seconds."""
    if value is None:
        return None
    from datetime import UTC, datetime

    try:
        return int(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        _fail(EXIT_BAD_INPUT, f"{flag} {value!r} is not a date: use 2026-01-31, 2026-01-31T12:00:00Z or epoch seconds")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


@app.command()
def export(
    out_name: Annotated[str, typer.Option("--out", help="File name inside EXPORT_DIR (written at exactly this name).")],
    agent: Annotated[str | None, typer.Option("--agent", help="The agent id.")] = None,
    all_agents: Annotated[bool, typer.Option("--all-agents", help="Every agent schema in the database.")] = False,
    user: Annotated[
        str | None, typer.Option("--user", help="Only this user's sessions (default: every user); `-`: from stdin.")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="From this date/time (inclusive).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Up to this date/time (exclusive).")] = None,
    by: Annotated[str, typer.Option("--by", help="Window on 'created' or 'updated' time.")] = "created",
    compress: Annotated[str, typer.Option("--compress", help="none, gz or zst.")] = "none",
    then_purge: Annotated[
        bool, typer.Option("--then-purge", help="Erase the exported sessions once the export verifies.")
    ] = False,
    requested_by: Annotated[str | None, typer.Option("--requested-by", help="A label for who asked.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job and print its result.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait with --wait.")] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Enqueue an export of sessions to EXPORT_DIR (JSON Lines, optionally gz/zst), with a manifest."""
    if (agent is None) == (not all_agents):
        _fail(EXIT_BAD_INPUT, "name exactly one target: --agent ID or --all-agents")
    if compress not in ("none", "gz", "zst"):
        _fail(EXIT_BAD_INPUT, f"--compress must be gz or zst (or none), not {compress!r}")
    if by not in ("created", "updated"):
        _fail(EXIT_BAD_INPUT, f"--by must be created or updated, not {by!r}")
    user = _user(user)
    settings = _settings()
    since_s, until_s = _epoch(since, "--since"), _epoch(until, "--until")

    async def go() -> int:
        from sessionctl.producer import Producer

        async with Producer(settings) as producer:
            enq = await producer.export_sessions(
                out=out_name,
                agent_id=agent,
                all_agents=all_agents,
                user_id=user,
                since=since_s,
                until=until_s,
                by=by,
                compress=compress,
                then_purge=then_purge,
                requested_by=requested_by,
            )
            return await _report(producer, enq, wait, timeout, as_json)

    raise typer.Exit(_run(go()))


async def _report(producer: Any, enq: Any, wait: bool, timeout: float, as_json: bool) -> int:
    """What purge and export print once enqueued: the job id, or (with --wait) the result."""
    if not wait:
        if as_json:
            _print_json(enq.as_dict())
        else:
            note = " (an identical request was already queued or running: joined it)" if enq.collapsed else ""
            out.print(f"job {enq.job_id} queued{note}", markup=False, highlight=False)
        return 0
    if not as_json and enq.collapsed:
        err.print("an identical request was already queued or running: waiting for it", markup=False)
    state = await _wait(producer, enq.job_id, timeout, as_json)
    if as_json:
        _print_json({**state.as_dict(), "collapsed": enq.collapsed})
    else:
        _print_state(state)
    return 0 if state.ok else EXIT_FAILED


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="An export file (plain, .gz or .zst content).")],
    agent: Annotated[str, typer.Option("--agent", help="The agent to write the sessions into.")],
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the manifest check.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Write an export back through Agno's own API (restore)."""
    settings = _settings()

    async def go() -> int:
        from dataclasses import asdict

        from sessionctl.agents import AgentHandle
        from sessionctl.databases import Databases
        from sessionctl.restore import import_export

        dbs = Databases(pool_size=2)
        try:
            handle = AgentHandle(agent, settings=settings, databases=dbs)
            res = await import_export(file, handle, verify=not no_verify, key=settings.hash_key_bytes)
        finally:
            await dbs.close()
        if as_json:
            _print_json(asdict(res))
        else:
            out.print(
                f"imported {res.sessions} sessions ({res.runs} runs) into {res.agent_id} ({res.schema_name})"
                + (", manifest verified" if res.verified else ""),
                markup=False,
                highlight=False,
            )
        return 0

    raise typer.Exit(_run(go()))


@app.command()
def status(
    job_id: Annotated[str, typer.Argument(help="The job id printed by `sessionctl purge`.")],
    watch: Annotated[bool, typer.Option("--watch", help="Follow the job until it ends.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print a job's state, progress and result (`--watch`: follow it to the end)."""
    settings = _settings()

    async def go() -> int:
        from sessionctl.producer import Producer

        async with Producer(settings) as producer:
            if watch and not as_json and err.is_terminal:
                state = await _wait(producer, job_id, float("inf"), quiet=False)
            elif watch:
                last = None
                async for state in producer.watch(job_id):
                    line = _progress_line(state)
                    if line != last and not as_json:
                        out.print(line, markup=False, highlight=False)
                    last = line
            else:
                state = await producer.status(job_id)
        if as_json:
            _print_json(state.as_dict())
        else:
            _print_state(state)
        return 0 if state.ok or (not state.done and state.status != "not_found") else EXIT_FAILED

    raise typer.Exit(_run(go()))


def _progress_line(state: Any) -> str:
    p = state.progress or {}
    done = f" {p.get('processed', 0)}/{p.get('total') if p.get('total') is not None else '?'}" if p else ""
    where = f" agent={p['agent']}" if p.get("agent") else ""
    rate = f" rate={p['rate']}/s" if p.get("rate") else ""
    attempt = f" attempt={state.attempt}" if state.attempt else ""
    return f"{state.job_id} {state.status}{done}{where}{rate}{attempt}"


@app.command()
def jobs(
    status_filter: Annotated[str | None, typer.Option("--status", help="queued, running, complete or failed.")] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind", help="purge_user_sessions, purge_users, export_sessions or purge_expired_sessions."
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most N rows.")] = 50,
    failed: Annotated[bool, typer.Option("--failed", help="Only the failed-job list (kept longer).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List recent jobs, newest first (from sessionctl's own index: no KEYS scan)."""
    from worker.jobindex import STATUS_GROUPS

    if status_filter is not None and status_filter not in STATUS_GROUPS:
        _fail(EXIT_BAD_INPUT, f"--status must be one of {', '.join(STATUS_GROUPS)}, not {status_filter!r}")
    settings = _settings()

    async def go() -> int:
        from sessionctl.producer import Producer

        async with Producer(settings) as producer:
            rows = await producer.jobs(status=status_filter, kind=kind, limit=limit, failed_only=failed)
        skipped = f"; {rows.malformed} unreadable index entries skipped" if rows.malformed else ""
        if as_json:
            _print_json([{k: v for k, v in r.items() if k != "request"} for r in rows])
            if skipped:
                err.print(skipped.lstrip("; "), markup=False)
            return 0
        from datetime import UTC, datetime

        for r in rows:
            when = datetime.fromtimestamp((r["enqueued_at"] or r["finished_at"] or 0) / 1000, UTC)
            counts = " ".join(f"{k}={v}" for k, v in (r["summary"] or {}).items())
            error = f" {r['error_type']}: {r['error']}" if r["error_type"] else ""
            out.print(
                f"{when:%Y-%m-%d %H:%M:%S}  {r['state']:<9} {r['kind']:<20} {r['job_id']}  target={r['target']}"
                + (f" attempt={r['attempt']}" if r["attempt"] else "")
                + (f"  {counts}" if counts else "")
                + error,
                markup=False,
                highlight=False,
            )
        err.print(f"{len(rows)} job(s){skipped}", markup=False)
        return 0

    raise typer.Exit(_run(go()))


@app.command()
def retry(
    job_id: Annotated[str, typer.Argument(help="A failed job's id (see `sessionctl jobs --failed`).")],
    user: Annotated[
        str | None,
        typer.Option("--user", help="The job's user (not kept by sessionctl; checked against its HMAC); `-`: stdin."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Enqueue a failed job's request again."""
    user = _user(user)
    settings = _settings()

    async def go() -> int:
        from sessionctl.producer import Producer

        async with Producer(settings) as producer:
            enq = await producer.retry(job_id, user_id=user)
        if as_json:
            _print_json({**enq.as_dict(), "retry_of": job_id})
        else:
            out.print(f"job {enq.job_id} queued (retry of {job_id})", markup=False, highlight=False)
        return 0

    raise typer.Exit(_run(go()))


@app.command("receipts")
def receipts_(
    user: Annotated[str, typer.Option("--user", help="The user (looked up by HMAC); `-`: from stdin.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Find a user's erasure receipts (durable, in Postgres)."""
    user = _user(user) or ""
    settings = _settings()

    async def go() -> int:
        from sessionctl.databases import Databases
        from sessionctl.identifiers import validate_user_id
        from sessionctl.privacy import user_hmac
        from sessionctl.store import receipts

        validate_user_id(user)
        hmac = user_hmac(settings.hash_key_bytes, user)
        dbs = Databases(pool_size=1)
        try:
            async with dbs.connect(settings.dsn) as conn:
                rows = await receipts.find(conn, hmac)
        finally:
            await dbs.close()
        if as_json:
            _print_json({"user_hmac": hmac, "receipts": rows})
        else:
            for r in rows:
                c = r["counts"]
                out.print(
                    f"{r['finished_at']}  {r['kind']:<22} {r['job_id']}  target={r['target']} "
                    f"sessions={c.get('sessions', 0)} runs={c.get('runs', 0)} memories={c.get('memories', 0)} "
                    f"late={r['late_sessions']} remaining={r['remaining']}"
                    + (f"  requested_by={r['requested_by']}" if r["requested_by"] else ""),
                    markup=False,
                    highlight=False,
                )
            err.print(f"{len(rows)} receipt(s) for hmac:{hmac}", markup=False)
        return 0

    raise typer.Exit(_run(go()))


@app.command()
def verify(
    user: Annotated[str, typer.Option("--user", help="The user to look for; `-`: from stdin.")],
    agent: Annotated[str | None, typer.Option("--agent", help="One agent.")] = None,
    all_agents: Annotated[bool, typer.Option("--all-agents", help="Every agent schema (default).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Recount the user's rows in every user-keyed table; exit 0 only when all are 0."""
    if agent is not None and all_agents:
        _fail(EXIT_BAD_INPUT, "name at most one target: --agent ID or --all-agents")
    user = _user(user) or ""
    settings = _settings()

    async def go() -> int:
        from sessionctl.verify import verify_user

        report = await verify_user(settings, user, agent_id=agent)
        if as_json:
            _print_json(report)
        else:
            for schema, tables in sorted(report["tables"].items()):
                for table, n in sorted(tables.items()):
                    mark = "ok " if n == 0 else "LEFT"
                    out.print(f"{mark} {schema}.{table}: {n}", markup=False, highlight=False)
            out.print(
                f"user hmac:{report['user_hmac']}: {report['total']} row(s) left in {len(report['tables'])} schema(s)",
                markup=False,
            )
        return 0 if report["total"] == 0 else EXIT_FAILED

    raise typer.Exit(_run(go()))


@app.command()
def doctor(
    agent: Annotated[str | None, typer.Option("--agent", help="One agent (default: every agent schema).")] = None,
    create_indexes: Annotated[
        bool, typer.Option("--create-indexes", help="Build missing indexes (CREATE INDEX CONCURRENTLY).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Per agent schema: indexes, table sizes, and whether this role can do and prove an erasure
    (grants, row-level security); the receipts schema. Exit 1 while anything is missing."""
    settings = _settings()

    async def go() -> int:
        from sessionctl.doctor import diagnose

        report = await diagnose(settings, agent_id=agent, create=create_indexes)
        if as_json:
            _print_json(report)
        else:
            _print_doctor(report)
        return 0 if report["ok"] else EXIT_FAILED

    raise typer.Exit(_run(go()))


def _print_doctor(report: dict[str, Any]) -> None:
    p = out.print
    if report["read_only"]:
        p("FAIL database: read-only (a replica?): point DATABASE_URL at the primary", markup=False)
    mark = "ok  " if report["receipts"]["ok"] else "FAIL"
    p(f"{mark} receipts: {report['receipts']['detail']}", markup=False, highlight=False)
    for schema, info in report["schemas"].items():
        sessions = info["tables"].get("agno_sessions", {})
        p(
            f"{schema}: agno_sessions ~{sessions.get('rows_estimate', 0)} rows, {sessions.get('bytes', 0) // 1024} KiB",
            markup=False,
            highlight=False,
        )
        for ix in info["indexes"]:
            if ix.get("created"):
                state = "created"
            elif ix["present"]:
                state = "ok" + (f" (covered by {ix['covered_by']})" if ix["covered_by"] else "")
            else:
                state = "MISSING" + (" (an invalid leftover exists)" if ix["invalid"] else "")
            p(f"  {ix['index']:<26} {state:<12} {ix['purpose']}", markup=False, highlight=False)
        for problem in info["access"]:
            p(f"  ACCESS  {problem}", markup=False, highlight=False)
        for problem in info["access_scope_all"]:
            p(f"  access for --scope all: {problem}", markup=False, highlight=False)
    if report["missing"]:
        p(f"{report['missing']} index(es) missing: run sessionctl doctor --create-indexes", markup=False)
    if report["access_problems"]:
        p(
            f"role {report['role']} cannot do and prove an erasure in {report['access_problems']} table(s):"
            f" run sessionctl grants --role {report['role']} (and BYPASSRLS where row-level security hides rows)",
            markup=False,
            highlight=False,
        )


@app.command()
def grants(
    role: Annotated[str, typer.Option("--role", help="The worker's database role.")],
    agent: Annotated[str | None, typer.Option("--agent", help="One agent (default: every agent schema).")] = None,
    scope: Annotated[
        str, typer.Option("--scope", help="all (default: every user-keyed table) or sessions (sessions and memories).")
    ] = "all",
) -> None:
    """Print the minimal SQL grants for a worker role, from the agent schemas as they are now."""
    if scope not in ("all", "sessions"):
        _fail(EXIT_BAD_INPUT, f"--scope must be all or sessions, not {scope!r}")
    settings = _settings()

    async def go() -> int:
        from sessionctl.doctor import grants as grant_lines

        for line in await grant_lines(settings, role, agent_id=agent, scope=scope):
            out.print(line, markup=False, highlight=False)
        return 0

    raise typer.Exit(_run(go()))


@app.command()
def migrate() -> None:
    """Create or upgrade sessionctl's receipts schema (run once per database as an administrator)."""
    settings = _settings()

    async def go() -> int:
        from sessionctl.doctor import migrate as run_migrations

        version = await run_migrations(settings)
        out.print(f"receipts schema sessionctl at version {version} in {settings.dsn.redacted}", markup=False)
        return 0

    raise typer.Exit(_run(go()))


retention_app = typer.Typer(no_args_is_help=True, help="The retention policy: show it, run it.")
app.add_typer(retention_app, name="retention")


@retention_app.command("show")
def retention_show(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The effective policy per agent schema, and what it would delete now."""
    settings = _settings()

    async def go() -> int:
        import time as _time

        from sessionctl import store
        from sessionctl.databases import Databases
        from sessionctl.retention_policy import buckets, load_policy

        policy = load_policy(settings.retention_file)
        now = int(_time.time())
        rows: list[dict[str, Any]] = []
        dbs = Databases(pool_size=1)
        try:
            async with dbs.connect(settings.dsn) as conn:
                for schema in await store.discover_agent_schemas(conn):
                    layout = await store.read_layout(conn, schema)
                    match = policy.rule_for(schema, schema, settings.schema_template)
                    if layout is None or match is None or await store.session_table_problems(conn, schema):
                        rows.append({"schema": schema, "policy": None, "would_delete": 0, "buckets": []})
                        continue
                    entry, rule = match
                    bs = []
                    for b in buckets(rule, now):
                        n = await store.count_expired(
                            conn, layout, b.cutoff, list(b.types) if b.types else None, list(b.exclude or ()) or None
                        )
                        bs.append({**b.describe(), "would_delete": n})
                    rows.append(
                        {
                            "schema": schema,
                            "policy": entry,
                            "max_age_days": rule.max_age_days,
                            "session_types": rule.session_types,
                            "export_before_delete": rule.export_before_delete,
                            "would_delete": sum(x["would_delete"] for x in bs),
                            "buckets": bs,
                        }
                    )
        finally:
            await dbs.close()
        if as_json:
            _print_json({"as_of": now, "agents": rows})
        else:
            for r in rows:
                if r["policy"] is None:
                    out.print(f"{r['schema']}: kept (no policy applies)", markup=False, highlight=False)
                    continue
                ages = f"max {r['max_age_days']} days" if r["max_age_days"] else "no default age"
                types = "".join(f", {t} {d} days" for t, d in r["session_types"].items())
                export = ", export first" if r["export_before_delete"] else ""
                out.print(
                    f"{r['schema']}: {r['policy']}: {ages}{types}{export} — would delete {r['would_delete']} now",
                    markup=False,
                    highlight=False,
                )
        return 0

    raise typer.Exit(_run(go()))


@retention_app.command("run")
def retention_run(
    agent: Annotated[str | None, typer.Option("--agent", help="One agent (default: every agent schema).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job and print its result.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait with --wait.")] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Enqueue a retention run now (the cron does the same on SESSIONCTL_RETENTION_SCHEDULE)."""
    settings = _settings()

    async def go() -> int:
        from sessionctl.producer import Producer
        from sessionctl.retention_policy import load_policy

        load_policy(settings.retention_file)  # a missing or broken policy is bad input, said now
        async with Producer(settings) as producer:
            enq = await producer.run_retention(agent_id=agent, dry_run=dry_run)
            return await _report(producer, enq, wait, timeout, as_json)

    raise typer.Exit(_run(go()))


@app.command()
def agents(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """The agents sessionctl can see, where each lives (password hidden), team or not, sessions held."""
    settings = _settings()

    async def go() -> int:
        from jobs.context import JobContext
        from jobs.targets import resolve_targets
        from sessionctl import store
        from sessionctl.databases import Databases

        dbs = Databases(pool_size=1)
        rows = []
        try:
            ctx = JobContext(settings=settings, databases=dbs, hash_key=b"", job_id="agents")
            chain = ctx.chain()
            for t in await resolve_targets(ctx, None, True):
                async with dbs.connect(t.dsn) as conn:
                    n = await store.count_sessions(conn, t.layout)
                loc = chain.cached(t.label)
                rows.append(
                    {
                        "agent": t.label,
                        "database": t.dsn.redacted,
                        "schema": t.layout.schema,
                        "team": loc.team if loc else None,
                        "source": loc.source if loc else "discovered",
                        "sessions": int(n),
                    }
                )
        finally:
            await dbs.close()
        if as_json:
            _print_json(rows)
        else:
            for r in rows:
                team = " team" if r["team"] else ""
                out.print(
                    f"{r['agent']}  {r['database']}  schema={r['schema']}{team}  sessions={r['sessions']}"
                    f"  ({r['source']})",
                    markup=False,
                    highlight=False,
                )
            err.print(f"{len(rows)} agent(s)", markup=False)
        return 0

    raise typer.Exit(_run(go()))


@app.command()
def health(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Check Redis, Postgres and the worker's health-check key; exit 0 only if all are fine."""
    settings = _settings()

    async def go() -> int:
        from worker.health import check_health

        report = await check_health(settings)
        if as_json:
            _print_json(report)
        else:
            for name, r in report["checks"].items():
                out.print(f"{'ok  ' if r['ok'] else 'FAIL'} {name}: {r['detail']}", markup=False, highlight=False)
        return 0 if report["ok"] else EXIT_FAILED

    raise typer.Exit(_run(go()))


@app.command()
def sessions(
    agent: Annotated[str, typer.Option("--agent", help="The agent id.")],
    user: Annotated[str, typer.Option("--user", help=USER_HELP)],
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Show at most N (newest first).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON lines).")] = False,
) -> None:
    """List a user's sessions of one agent, newest first (all of them, not 50)."""
    user = _user(user) or ""
    settings = _settings()

    async def go() -> int:
        from sessionctl.agents import AgentHandle
        from sessionctl.databases import Databases
        from sessionctl.identifiers import validate_user_id

        validate_user_id(user)
        dbs = Databases(pool_size=1)
        try:
            from sessionctl.resolvers import build_chain

            handle = await AgentHandle.resolve(agent, settings=settings, databases=dbs, chain=build_chain(settings))
            shown = 0
            async for page in handle.aiter_user_session_rows(user):
                for row in page:
                    if limit is not None and shown >= limit:
                        return 0
                    _print_session(row, as_json)
                    shown += 1
            if not as_json:
                err.print(f"{shown} session(s)", markup=False)
        finally:
            await dbs.close()
        return 0

    raise typer.Exit(_run(go()))


def _print_session(row: dict[str, Any], as_json: bool) -> None:
    name = (row.get("session_data") or {}).get("session_name") if isinstance(row.get("session_data"), dict) else None
    summary = {
        "session_id": row["session_id"],
        "session_type": row["session_type"],
        "created_at": row["created_at"],
        "updated_at": row.get("updated_at"),
        "session_name": name,
        "runs": len(row.get("runs") or []),
    }
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        out.print(
            f"{summary['session_id']}  {summary['session_type']:<8} created={summary['created_at']} "
            f"runs={summary['runs']}" + (f"  {name!r}" if name else ""),
            markup=False,
            highlight=False,
        )


def main() -> None:
    warnings.filterwarnings("once", category=RuntimeWarning, module="sessionctl")
    try:
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
