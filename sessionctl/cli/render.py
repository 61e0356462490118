"""How each kind of result reads on a terminal (``--json`` prints the data as it is)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sessionctl.cli.common import err, out


def line(text: str) -> None:
    out.print(text, markup=False, highlight=False)


def job_state(state: Any) -> None:
    """A job's state as it reads on a terminal: by the kind of its result (a table of renderers),
    or, without a result, its status and error."""
    r = state.result
    render = RESULTS.get(r.get("kind", "")) if r else None
    if render is not None:
        render(state, r)
        return
    line(f"job       {state.job_id}")
    line(f"status    {state.status}" + (f" (attempt {state.attempt})" if state.attempt else ""))
    if state.error:
        line(f"error     {state.error['type']}: {state.error['message']}")
    if state.status == "not_found":
        line("no such job: it was never enqueued, or its result has expired (SESSIONCTL_KEEP_RESULT)")
    elif not state.done:
        line("the job is not finished yet; check again with: sessionctl status " + state.job_id)


def erasure(state: Any, r: dict[str, Any]) -> None:
    """One user's erasure (``purge_user_sessions``): counts, what it left, per agent."""
    line(f"job       {state.job_id}")
    line(f"status    {state.status}" + (f" (attempt {state.attempt})" if state.attempt else ""))
    line(f"user      hmac:{r['user_hmac']}")
    line(f"target    {r['target']}")
    if r.get("dry_run"):
        line("would delete  " + ", ".join(f"{k}={v}" for k, v in (r.get("would_delete") or {}).items()))
    else:
        line(
            f"deleted   sessions={r['sessions_deleted']} runs={r['runs_deleted']} "
            f"memories={r['memories_deleted']} late={r.get('late_sessions', 0)}"
        )
        line(f"remaining {r['remaining']}")
    if r.get("stores"):
        line("outside   " + ", ".join(f"{k}={v}" for k, v in r["stores"].items()))
    completeness(r)
    if r.get("origin") == "resweep":
        line("origin    resweep (the user was found back after an earlier erasure)")
    for name, a in sorted(r.get("agents", {}).items()):
        counts = a.get("would_delete") or {"sessions": a["sessions_deleted"], "runs": a["runs_deleted"]}
        line(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    line(f"finished  {r['finished_at']}")


def bulk(state: Any, r: dict[str, Any]) -> None:
    line(f"job       {state.job_id}")
    line(f"status    {state.status}")
    line(f"users     {r['users_count']}  target {r['target']}")
    line(f"deleted   sessions={r['sessions_deleted']} runs={r['runs_deleted']}  remaining {r['remaining']}")
    completeness(r, users="--users-file FILE")


def retention_run(state: Any, r: dict[str, Any]) -> None:
    line(f"job       {state.job_id}")
    line(f"status    {state.status}  (as of {r['as_of']})")
    line(f"deleted   sessions={r['sessions_deleted']}  remaining past cutoff {r['remaining']}")
    if r.get("held"):
        line(f"held      {r['held']} person(s) under a legal hold: everything of theirs kept")
    for name, a in sorted(r["agents"].items()):
        what = f"policy {a['policy']}: deleted {a['deleted']}" if a.get("policy") else "kept (no policy)"
        line(f"  {name}: {what}")


def completeness(r: dict[str, Any], users: str = "--user -") -> None:
    """Whether the erasure's person is gone from every store, in one line; if not, what is left and
    how to erase it."""
    if r.get("complete") is None:
        return
    for label, how in (r.get("exemptions") or {}).items():
        out.print(f"note      {label}: {how}", markup=False, highlight=False)
    if r["complete"]:
        out.print("complete  yes: nothing of the person is left in any store sessionctl checks", markup=False)
        return
    left = ", ".join(f"{k}={'(cannot be counted)' if v < 0 else v}" for k, v in (r.get("remains") or {}).items())
    out.print(
        f"complete  no: left {left} — erase everything with: sessionctl purge --all-agents --scope all {users}",
        markup=False,
        highlight=False,
    )


def resweep(state: Any, r: dict[str, Any]) -> None:
    p = out.print
    p(f"job       {state.job_id}", markup=False, highlight=False)
    p(f"status    {r['status']}", markup=False)
    p(
        f"swept     {r['stores_swept']} stores ({r['keys_seen']} distinct person keys)",
        markup=False,
        highlight=False,
    )
    p(f"found     erased users with data again: {r['users_matched']} ({r['rows']} rows)", markup=False)
    for m in r["matches"]:
        since = f", oldest row {m['first_seen']}" if m.get("first_seen") else ""
        p(
            f"  hmac:{m['user_hmac']}  {m['where']}: {m['rows']} rows{since} (erased {m['erased_at']})",
            markup=False,
            highlight=False,
        )
    for h, job in r.get("erasures", {}).items():
        p(f"  erasing hmac:{h} again: job {job}", markup=False, highlight=False)
    if r["users_matched"] and not r.get("erasures"):
        p("erase them again with: sessionctl resweep --erase (or SESSIONCTL_RESWEEP_ERASE=true)", markup=False)
    if r.get("media_retried"):
        p(f"media     {r['media_retried']} objects left pending by lost jobs deleted", markup=False)


def export(state: Any, r: dict[str, Any]) -> None:
    p = out.print
    p(f"job       {state.job_id}", markup=False, highlight=False)
    p(f"status    {state.status}", markup=False)
    size = f"{r['bytes']} bytes, {r['compress']}; on the worker's disk"
    p(f"file      {r['path']}  ({size})", markup=False, highlight=False)
    if r["sessions"] == 0:
        p("note      no session matched (this user, this window): the file holds no line", markup=False)
    p(f"manifest  {r['manifest_path']}", markup=False, highlight=False)
    p(f"sha256    {r['sha256']}", markup=False)
    p(f"sessions  {r['sessions']}  " + ", ".join(f"{k}={v}" for k, v in sorted(r["agents"].items())), markup=False)
    if r.get("user_hmac"):
        p(f"user      hmac:{r['user_hmac']}", markup=False)
    if r.get("stores") and r.get("scope") == "all":
        p("stores    " + ", ".join(f"{k}={v}" for k, v in r["stores"].items()), markup=False, highlight=False)
    if r.get("purge"):
        p(
            f"erased    sessions={r['purge']['sessions_deleted']} runs={r['purge']['runs_deleted']} remaining=0",
            markup=False,
        )
        completeness(r["purge"])


# How each job kind's result reads (the kinds of sessionctl.jobs.kinds; a kind without a renderer
# shows its status and error).
RESULTS: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    "purge_user_sessions": erasure,
    "purge_users": bulk,
    "export_sessions": export,
    "purge_expired_sessions": retention_run,
    "resweep": resweep,
}


def progress_line(state: Any) -> str:
    p = state.progress or {}
    done = f" {p.get('processed', 0)}/{p.get('total') if p.get('total') is not None else '?'}" if p else ""
    where = f" agent={p['agent']}" if p.get("agent") else ""
    rate = f" rate={p['rate']}/s" if p.get("rate") else ""
    attempt = f" attempt={state.attempt}" if state.attempt else ""
    return f"{state.job_id} {state.status}{done}{where}{rate}{attempt}"


def doctor(report: dict[str, Any]) -> None:
    p = out.print
    if report["read_only"]:
        p("FAIL database: read-only (a replica?): point DATABASE_URL at the primary", markup=False)
    mark = "ok  " if report["receipts"]["ok"] else "FAIL"
    p(f"{mark} receipts: {report['receipts']['detail']}", markup=False, highlight=False)
    if not report["schemas"]:
        p(
            f"no Agno agent schema in {report['database']} (no schema holds an agno_sessions table):"
            " check DATABASE_URL, or write demo data with `sessionctl demo seed`",
            markup=False,
            highlight=False,
        )
    for schema, info in report["schemas"].items():
        sessions = info["tables"].get("agno_sessions", {})
        n = sessions.get("rows", 0)
        rows = f"{n:,} rows" if sessions.get("exact", True) else f"~{n:,} rows (estimate)"
        p(f"{schema}: agno_sessions {rows}, {sessions.get('bytes', 0) // 1024:,} KiB", markup=False, highlight=False)
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
    for s in report.get("declared_stores", []):
        p(f"{'ok  ' if s['ok'] else 'FAIL'} {s['store']}: {s['detail']}", markup=False, highlight=False)
    for problem in report.get("stores_access_scope_all", []):
        p(f"access for --all-agents --scope all (vector, login tables): {problem}", markup=False, highlight=False)
    if report["missing"]:
        p(f"{report['missing']} index(es) missing: run sessionctl doctor --create-indexes", markup=False)
    if report["access_problems"]:
        p(
            f"role {report['role']} cannot do and prove an erasure in {report['access_problems']} table(s):"
            f" run sessionctl grants --role {report['role']} (and BYPASSRLS where row-level security hides rows)",
            markup=False,
            highlight=False,
        )


def when(epoch: Any) -> str:
    """Epoch seconds as a UTC time a person reads (JSON output keeps the number)."""
    if not isinstance(epoch, int | float):
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def session(row: dict[str, Any], as_json: bool) -> None:
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
            f"{summary['session_id']}  {summary['session_type']:<8} created {when(summary['created_at'])} "
            f"runs={summary['runs']}" + (f"  {name!r}" if name else ""),
            markup=False,
            highlight=False,
        )


def jobs(rows: list[dict[str, Any]], malformed: int) -> None:
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
    err.print(f"{len(rows)} job(s){skipped(malformed)}", markup=False)


def skipped(malformed: int) -> str:
    return f"; {malformed} unreadable index entries skipped" if malformed else ""


def receipts(hmac: str, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        c = r["counts"]
        out.print(
            f"{r['finished_at']}  {r['kind']:<22} {r['job_id']}  target={r['target']} "
            f"sessions={c.get('sessions', 0)} runs={c.get('runs', 0)} memories={c.get('memories', 0)} "
            f"late={r['late_sessions']} remaining={r['remaining']}"
            + (f" scope={r['scope']}" if r.get("scope", "sessions") != "sessions" else "")
            + "".join(f" {k.replace(' ', '_')}={v}" for k, v in (r.get("stores") or {}).items())
            + (f"  requested_by={r['requested_by']}" if r["requested_by"] else "")
            + ("  origin=resweep" if r.get("origin") == "resweep" else "")
            + {True: "  complete", False: "  INCOMPLETE", None: ""}[r.get("complete")],
            markup=False,
            highlight=False,
        )
    err.print(f"{len(rows)} receipt(s) for hmac:{hmac}", markup=False)


def verify(report: dict[str, Any]) -> None:
    for schema, tables in sorted(report["tables"].items()):
        for table, n in sorted(tables.items()):
            mark = "ok " if n == 0 else "LEFT"
            out.print(f"{mark} {schema}.{table}: {n}", markup=False, highlight=False)
    out.print(
        f"user hmac:{report['user_hmac']}: {report['total']} row(s) left in {len(report['tables'])} schema(s)",
        markup=False,
    )


def agents(rows: list[dict[str, Any]]) -> None:
    """One line an agent, led by what ``--agent`` takes."""
    guessed = 0
    for r in rows:
        team = " team" if r["team"] else ""
        name = r["agent"] or f"(no agent id names {r['schema']}: use --all-agents)"
        if r["agent"] and r["agent_from"] == "schema":
            name, guessed = f"{name} *", guessed + 1
        out.print(
            f"{name}  {r['database']}  schema={r['schema']}{team}  sessions={r['sessions']}  ({r['source']})",
            markup=False,
            highlight=False,
        )
    err.print(f"{len(rows)} agent(s); the first column is what --agent takes", markup=False)
    if guessed:
        err.print(
            "* read back from the schema name only (no session records the agent's id): it reaches that schema,"
            " but the agent may spell its id with '-' where this has '_'",
            markup=False,
        )


def retention(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r["policy"] is None:
            out.print(f"{r['schema']}: kept (no policy applies)", markup=False, highlight=False)
            continue
        ages = f"max {r['max_age_days']} days" if r["max_age_days"] else "no default age"
        types = "".join(f", {t} {d} days" for t, d in r["session_types"].items())
        export_first = ", export first" if r["export_before_delete"] else ""
        items = "".join(f", {i} {n}" for i, n in (r.get("items") or {}).items())
        out.print(
            f"{r['schema']}: {r['policy']}: {ages}{types}{export_first} — would delete {r['would_delete']} now{items}",
            markup=False,
            highlight=False,
        )


def health(report: dict[str, Any]) -> None:
    for name, r in report["checks"].items():
        out.print(f"{'ok  ' if r['ok'] else 'FAIL'} {name}: {r['detail']}", markup=False, highlight=False)


def enqueued(enq: Any) -> None:
    note = " (an identical request was already queued or running: joined it)" if enq.collapsed else ""
    out.print(f"job {enq.job_id} queued{note}", markup=False, highlight=False)


def imported(res: Any) -> None:
    out.print(
        f"imported {res.sessions} sessions ({res.runs} runs) into {res.agent_id} ({res.schema_name})"
        + (", manifest verified" if res.verified else ""),
        markup=False,
        highlight=False,
    )
