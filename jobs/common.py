"""What the jobs share: the time as results write it, adding a batch to an agent's counts, and
the durable receipt of an erasure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jobs.context import JobContext
from jobs.models import AgentPurgeResult
from sessionctl import store
from sessionctl.store import receipts


def now_iso() -> str:
    """Now, UTC, ISO 8601 with milliseconds (``started_at``/``finished_at`` of every result)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


async def write_receipt(
    ctx: JobContext,
    *,
    kind: str,
    user_hmac: str,
    target: str,
    agents: dict[str, AgentPurgeResult],
    started: str,
    requested_by: str | None,
) -> None:
    totals: dict[str, int] = {}
    per_agent: dict[str, Any] = {}
    for label, a in agents.items():
        counts = {
            "sessions": a.sessions_deleted,
            "runs": a.runs_deleted,
            "transcripts": a.transcripts_deleted,
            "tool_results": a.tool_results_deleted,
            "tool_result_payloads": a.tool_result_payloads_deleted,
            "memories": a.memories_deleted,
        }
        per_agent[label] = {"schema": a.schema_name, **counts, "late_sessions": a.late_sessions}
        if a.tables:
            per_agent[label]["tables"] = a.tables
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    dsn = ctx.settings.dsn
    async with ctx.databases.connect(dsn) as conn:
        await receipts.ensure(conn, dsn.redacted)
        await receipts.record(
            conn,
            job_id=ctx.job_id,
            kind=kind,
            user_hmac=user_hmac,
            target=target,
            agents=per_agent,
            counts=totals,
            late_sessions=sum(a.late_sessions for a in agents.values()),
            started_at=datetime.fromisoformat(started),
            finished_at=datetime.now(UTC),
            requested_by=requested_by,
            enqueued_at=ctx.enqueued_at,
        )


def accumulate(res: AgentPurgeResult, outcome: store.BatchOutcome) -> None:
    c = outcome.counts
    res.batches += 1
    res.sessions_deleted += c.sessions
    res.runs_deleted += c.runs
    res.transcripts_deleted += c.transcripts
    res.tool_results_deleted += c.tool_results
    res.tool_result_payloads_deleted += c.tool_result_payloads
    res.tool_results_without_payload += outcome.tool_results_without_payload


