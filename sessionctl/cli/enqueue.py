"""Commands that enqueue jobs and follow them: purge, export, retention run, status, jobs, retry.
Each reads as: parse → one call (through the producer) → render."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sessionctl.cli import render
from sessionctl.cli.app import app, retention_app
from sessionctl.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    WAIT_DEFAULT,
    AgentOpt,
    AllAgentsOpt,
    DryRunOpt,
    JsonOpt,
    OneAgentOpt,
    RequestedByOpt,
    TimeoutOpt,
    UserOpt,
    WaitOpt,
    err,
    fail,
    one_target,
    out,
    print_json,
    read_users_file,
    settings,
    user_value,
    with_producer,
)
from sessionctl.identifiers import Ambiguous
from sessionctl.jobs.fields import Compression, KindName, Scope, WindowBy
from sessionctl.jobstate import StatusFilter, job_kind

if TYPE_CHECKING:
    from sessionctl.jobstate import Enqueued, JobState
    from sessionctl.producer import Producer

SCOPE_HELP = "sessions: the user's sessions (with --memories, their memories too); all: every user-keyed Agno table."
AMBIGUOUS_HELP = (
    "How to read ids with surrounding whitespace or invisible characters: refuse them, keep them exactly as"
    " written, or strip the surrounding whitespace."
)


@app.command()
def purge(
    user: UserOpt = None,
    users_file: Annotated[
        Path | None,
        typer.Option("--users-file", help="Up to 10,000 user ids, one per line, exactly as written (`-`: stdin)."),
    ] = None,
    ambiguous_ids: Annotated[Ambiguous, typer.Option("--ambiguous-ids", help=AMBIGUOUS_HELP)] = "refuse",
    agent: AgentOpt = None,
    all_agents: AllAgentsOpt = False,
    dry_run: DryRunOpt = False,
    memories: Annotated[bool, typer.Option("--memories", help="Also erase the user's agno_memories.")] = False,
    scope: Annotated[Scope, typer.Option("--scope", help=SCOPE_HELP)] = "sessions",
    requested_by: RequestedByOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = WAIT_DEFAULT,
    as_json: JsonOpt = False,
) -> None:
    """Enqueue the erasure of a user's sessions (or of many users', --users-file) from one agent or all agents."""
    one_target(agent, all_agents)
    if (user is None) == (users_file is None):
        fail(EXIT_BAD_INPUT, "name the users: --user ID, or --users-file FILE (one id per line)")
    bulk = read_users_file(users_file, ambiguous_ids) if users_file is not None else None
    one = user_value(user)
    target = {"agent_id": agent, "all_agents": all_agents, "dry_run": dry_run, "memories": memories}
    options = {**target, "scope": scope, "requested_by": requested_by}

    async def call(producer: Producer) -> tuple[Enqueued, JobState | None]:
        if bulk is not None:
            enq = await producer.purge_users(user_ids=bulk, ambiguous_ids=ambiguous_ids, **options)  # type: ignore[arg-type]
        else:
            enq = await producer.purge_user_sessions(user_id=one or "", **options)  # type: ignore[arg-type]
        return enq, await _follow(producer, enq, wait, timeout, as_json)

    _report(*with_producer(settings(), call), as_json)


@app.command()
def export(
    out_name: Annotated[str, typer.Option("--out", help="File name inside EXPORT_DIR (written at exactly this name).")],
    agent: AgentOpt = None,
    all_agents: AllAgentsOpt = False,
    user: Annotated[
        str | None, typer.Option("--user", help="Only this user's sessions (default: every user); `-`: from stdin.")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="From this date/time (inclusive).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Up to this date/time (exclusive).")] = None,
    by: Annotated[WindowBy, typer.Option("--by", help="Window on the sessions' created or updated time.")] = "created",
    compress: Annotated[Compression, typer.Option("--compress", help="Compress the file (gz or zst).")] = "none",
    then_purge: Annotated[
        bool, typer.Option("--then-purge", help="Erase the exported sessions once the export verifies.")
    ] = False,
    scope: Annotated[
        Scope,
        typer.Option(
            "--scope",
            help="sessions: the sessions; all: one user's everything beside their sessions (memories, knowledge"
            " chunks, login records, the list of media objects).",
        ),
    ] = "sessions",
    requested_by: RequestedByOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = WAIT_DEFAULT,
    as_json: JsonOpt = False,
) -> None:
    """Enqueue an export of sessions to EXPORT_DIR (JSON Lines, optionally gz/zst), with a manifest."""
    from sessionctl.cli.common import epoch

    one_target(agent, all_agents)
    request = {
        "out": out_name,
        "agent_id": agent,
        "all_agents": all_agents,
        "user_id": user_value(user),
        "since": epoch(since, "--since"),
        "until": epoch(until, "--until"),
        "by": by,
        "compress": compress,
        "then_purge": then_purge,
        "requested_by": requested_by,
        "scope": scope,
    }

    async def call(producer: Producer) -> tuple[Enqueued, JobState | None]:
        enq = await producer.export_sessions(**request)  # type: ignore[arg-type]
        return enq, await _follow(producer, enq, wait, timeout, as_json)

    _report(*with_producer(settings(), call), as_json)


@retention_app.command("run")
def retention_run(
    agent: OneAgentOpt = None,
    dry_run: DryRunOpt = False,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = WAIT_DEFAULT,
    as_json: JsonOpt = False,
) -> None:
    """Enqueue a retention run now (the cron does the same on SESSIONCTL_RETENTION_SCHEDULE)."""
    from sessionctl.retention_policy import load_policy

    config = settings()

    async def call(producer: Producer) -> tuple[Enqueued, JobState | None]:
        load_policy(config.retention_file)  # a missing or broken policy is bad input, said now
        enq = await producer.run_retention(agent_id=agent, dry_run=dry_run)
        return enq, await _follow(producer, enq, wait, timeout, as_json)

    _report(*with_producer(config, call), as_json)


@app.command()
def resweep(
    erase: Annotated[
        bool,
        typer.Option(
            "--erase",
            help="Enqueue a new erasure (origin: resweep, with its own receipt) for each erased user found back.",
        ),
    ] = False,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = WAIT_DEFAULT,
    as_json: JsonOpt = False,
    requested_by: RequestedByOpt = None,
) -> None:
    """Find users erased before who have data again (by HMAC: no raw id is kept); the cron does the same
    on SESSIONCTL_RESWEEP_SCHEDULE."""

    async def call(producer: Producer) -> tuple[Enqueued, JobState | None]:
        enq = await producer.resweep(erase=erase, requested_by=requested_by)
        return enq, await _follow(producer, enq, wait, timeout, as_json)

    _report(*with_producer(settings(), call), as_json)


async def _follow(
    producer: Producer, enq: Enqueued, wait: bool, timeout: float, quiet: bool, *, announce: bool = True
) -> JobState | None:
    """Say at once (on stderr) which job this is and whether a worker like this CLI serves the
    queue; with ``--wait``, the job's final state (or its last, at the timeout) — on a terminal, a
    progress bar fed by the job's progress in Redis meanwhile."""
    if announce and wait:
        joined = " (an identical request was already queued or running: joined it)" if enq.collapsed else ""
        err.print(f"job {enq.job_id} queued{joined}; waiting up to {timeout:g} s", markup=False, highlight=False)
    exporting = job_kind(enq.job_id, producer.settings.queue_name) == "export_sessions"
    note = await producer.check_worker(exports=exporting) if announce else None
    if note is not None:
        err.print(f"warning: {note}", markup=False, highlight=False)
    if not wait:
        return None
    if quiet or not err.is_terminal:
        return await producer.wait(enq.job_id, timeout=timeout)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as bar:
        task = bar.add_task(f"{enq.job_id}: queued", total=None)

        def show(state: Any) -> None:
            p = state.progress or {}
            bar.update(
                task,
                description=f"{state.status}" + (f" ({p['agent']})" if p.get("agent") else ""),
                completed=p.get("processed", 0),
                total=p.get("total"),
            )

        return await producer.wait(enq.job_id, timeout=timeout, on_change=show)


def _report(enq: Enqueued, state: JobState | None, as_json: bool) -> None:
    """What an enqueueing command prints: the job id, or (with --wait) the result; its exit code."""
    if state is None:
        print_json(enq.as_dict()) if as_json else render.enqueued(enq)
        raise typer.Exit(0)
    if as_json:
        print_json({**state.as_dict(), "collapsed": enq.collapsed})
    else:
        render.job_state(state)
    raise typer.Exit(0 if state.ok else EXIT_FAILED)


@app.command()
def status(
    job_id: Annotated[
        str,
        typer.Argument(
            metavar="JOB_ID",
            help="A job id, as printed by any command that enqueues (purge, export, retry, retention run).",
        ),
    ],
    watch: Annotated[bool, typer.Option("--watch", help="Follow the job until it ends.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print a job's state, progress and result (`--watch`: follow it to the end)."""

    async def call(producer: Producer) -> JobState:
        if watch and not as_json and err.is_terminal:
            from sessionctl.jobstate import Enqueued

            final = await _follow(
                producer, Enqueued(job_id, collapsed=False), True, float("inf"), quiet=False, announce=False
            )
            assert final is not None
            return final
        if watch:
            last = None
            state: JobState | None = None
            async for state in producer.watch(job_id):
                line = render.progress_line(state)
                if line != last and not as_json:
                    out.print(line, markup=False, highlight=False)
                last = line
            assert state is not None
            return state
        return await producer.status(job_id)

    state = with_producer(settings(), call)
    print_json(state.as_dict()) if as_json else render.job_state(state)
    raise typer.Exit(0 if state.ok or (not state.done and state.status != "not_found") else EXIT_FAILED)


@app.command()
def jobs(
    status_filter: Annotated[
        StatusFilter | None, typer.Option("--status", help="Jobs in this state (ended: any final one).")
    ] = None,
    kind: Annotated[KindName | None, typer.Option("--kind", help="Jobs of this kind.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most N rows.")] = 50,
    failed: Annotated[bool, typer.Option("--failed", help="Only the failed-job list (kept longer).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List recent jobs, newest first (from sessionctl's own index: no KEYS scan)."""
    async def call(producer: Producer) -> Any:
        return await producer.jobs(status=status_filter, kind=kind, limit=limit, failed_only=failed)

    rows = with_producer(settings(), call)
    if as_json:
        print_json([{k: v for k, v in r.items() if k != "request"} for r in rows])
        if rows.malformed:
            err.print(render.skipped(rows.malformed).lstrip("; "), markup=False)
    else:
        render.jobs(rows, rows.malformed)


@app.command()
def retry(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="A failed job's id (`sessionctl jobs --failed`).")],
    user: Annotated[
        str | None,
        typer.Option("--user", help="The job's user (not kept by sessionctl; checked against its HMAC); `-`: stdin."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Enqueue a failed job's request again."""
    who = user_value(user)

    async def call(producer: Producer) -> Enqueued:
        return await producer.retry(job_id, user_id=who)

    enq = with_producer(settings(), call)
    if as_json:
        print_json({**enq.as_dict(), "retry_of": job_id})
    else:
        out.print(f"job {enq.job_id} queued (retry of {job_id})", markup=False, highlight=False)
