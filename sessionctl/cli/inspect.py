"""Commands that read (or restore) data directly, without a job: receipts, verify, sessions,
agents, import, retention show."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sessionctl.cli import render
from sessionctl.cli.app import app, retention_app
from sessionctl.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    JsonOpt,
    RequiredUserOpt,
    err,
    fail,
    print_json,
    run,
    settings,
    user_value,
)


@app.command("receipts")
def receipts_(user: RequiredUserOpt, as_json: JsonOpt = False) -> None:
    """Find a user's erasure receipts (durable, in Postgres), by the HMAC of the user id."""
    from sessionctl.verify import find_receipts

    hmac, rows = run(find_receipts(settings(), user_value(user) or ""))
    print_json({"user_hmac": hmac, "receipts": rows}) if as_json else render.receipts(hmac, rows)


@app.command()
def verify(
    user: RequiredUserOpt,
    agent: Annotated[str | None, typer.Option("--agent", help="One agent.")] = None,
    all_agents: Annotated[bool, typer.Option("--all-agents", help="Every agent schema (the default).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Recount the user's rows in every user-keyed table; exit 0 only when all are 0."""
    from sessionctl.jobs.person import verify_user

    if agent is not None and all_agents:
        fail(EXIT_BAD_INPUT, "name at most one target: --agent ID or --all-agents")
    report = run(verify_user(settings(), user_value(user) or "", agent_id=agent))
    print_json(report) if as_json else render.verify(report)
    raise typer.Exit(0 if report["total"] == 0 else EXIT_FAILED)


@app.command()
def sessions(
    agent: Annotated[str, typer.Option("--agent", help="The agent id.")],
    user: RequiredUserOpt,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Show at most N (newest first).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON lines).")] = False,
) -> None:
    """List a user's sessions of one agent, newest first (all of them, not 50)."""
    from sessionctl.agents import stream_user_sessions

    who = user_value(user) or ""
    shown = run(stream_user_sessions(settings(), agent, who, limit, lambda row: render.session(row, as_json)))
    if not as_json:
        err.print(f"{shown} session(s)", markup=False)


@app.command()
def agents(as_json: JsonOpt = False) -> None:
    """The agents sessionctl can see, where each lives (password hidden), team or not, sessions held."""
    from sessionctl.jobs.targets import overview

    rows = run(overview(settings()))
    print_json(rows) if as_json else render.agents(rows)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="An export file (plain, .gz or .zst content).")],
    agent: Annotated[str, typer.Option("--agent", help="The agent to write the sessions into.")],
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the manifest check.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write an export back through Agno's own API (restore); never over another user's rows.

    The manifest must authenticate and match the file; a line that would change a session of
    another user or a run of another session refuses the whole file before anything is written."""
    from dataclasses import asdict

    from sessionctl.restore import import_file

    res = run(import_file(settings(), file, agent, verify=not no_verify))
    print_json(asdict(res)) if as_json else render.imported(res)


@retention_app.command("show")
def retention_show(as_json: JsonOpt = False) -> None:
    """The effective policy per agent schema, and what it would delete now."""
    from sessionctl.retention_policy import preview

    now, rows = run(preview(settings()))
    print_json({"as_of": now, "agents": rows}) if as_json else render.retention(rows)
