"""The one statement a batch of deletes is (:class:`DeleteStatement`): the sessions a condition
selects and everything Agno's ``delete_sessions`` deletes with exactly those — runs (by the cascade
where it fires, counted from the transaction's delete counter: :func:`cascade_counter`),
transcripts, tool-result rows and their payloads — returning the counts and the media references of
the deleted runs; and the batch's counts read off its row (:func:`outcome`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg

from sessionctl.store import media_refs
from sessionctl.store.counts import Counts
from sessionctl.store.params import legacy_runs_expr
from sessionctl.store.tables import PAYLOADS, RUNS, SESSIONS, TOOL_RESULTS, TRANSCRIPTS

if TYPE_CHECKING:
    from sessionctl.store.catalog import Layout


@dataclass(slots=True)
class BatchOutcome:
    """What one batch deleted: the rows of each kind, tool results whose payload was already gone,
    and the sessions per user."""

    counts: Counts = field(default_factory=Counts)
    tool_results_without_payload: int = 0
    per_user: dict[str, int] = field(default_factory=dict)


async def cascade_counter(conn: asyncpg.Connection, layout: Layout) -> int | None:
    """When the runs go by Agno's foreign key (``ON DELETE CASCADE``), as in a plain DELETE of the
    sessions: this transaction's delete counter of the runs table now, to read how many the cascade
    removed afterwards (the count a RETURNING would give, without a second delete probing every
    run). ``None`` when the cascade would not fire (its trigger disabled, or not firing in this
    ``session_replication_role``) or there are no statistics counters (``track_counts`` off): the
    statement then deletes and counts the runs itself."""
    if not (layout.has(RUNS) and layout.runs_cascade):
        return None
    stat = await conn.fetchrow(
        "SELECT current_setting('track_counts')::bool AS on, current_setting('session_replication_role') AS role,"
        " pg_stat_get_xact_tuples_deleted(to_regclass($1)) AS n",
        layout.q(RUNS),
    )
    return int(stat["n"]) if stat["on"] and _cascade_fires(layout.runs_cascade, stat["role"]) else None


@dataclass(frozen=True, slots=True)
class DeleteStatement:
    """One statement deleting the sessions ``where`` selects and everything hanging off exactly
    those (runs, transcripts, tool results and their payloads), returning the counts and the media
    references the deleted runs hold."""

    layout: Layout
    where: str
    before: tuple[str, ...]
    extra: tuple[str, ...]
    one_user: str | None
    runs_by_cascade: bool

    def sql(self) -> str:
        parts, picks = self._sessions()
        deleted = "= ANY(ARRAY(SELECT session_id FROM gone))"  # exactly the sessions deleted, probed by index
        for part, pick in self._children(deleted):
            parts.append(part)
            picks.append(pick)
        refs = self._media(deleted)
        if refs:  # the media these sessions uploaded: noted in this transaction (sessionctl.media_storages)
            picks.append(
                "(SELECT jsonb_agg(jsonb_build_object('s', s, 'u', u, 'ref', ref)) FROM ("
                + " UNION ALL ".join(refs)
                + ") x) AS media"
            )
        return "WITH " + ",\n".join(parts) + "\nSELECT " + ", ".join(picks)

    def _sessions(self) -> tuple[list[str], list[str]]:
        lay = self.layout
        legacy = (
            [f"{legacy_runs_expr('d')} AS legacy_runs", media_refs.refs_in_row("d")] if lay.legacy_runs_column else []
        )
        parts = [
            *self.before,
            f"gone AS (DELETE FROM {lay.q(SESSIONS)} AS d WHERE {self.where}"
            f" RETURNING {', '.join(['d.session_id', 'd.user_id', *legacy])})",
        ]
        picks = ["(SELECT count(*) FROM gone) AS sessions", *self.extra]
        if legacy:
            picks.append("(SELECT sum(legacy_runs) FROM gone) AS legacy")
        if self.one_user is None:
            picks.append(
                "(SELECT json_object_agg(coalesce(u, ''), n) FROM"
                " (SELECT user_id AS u, count(*) AS n FROM gone GROUP BY 1) x) AS per_user"
            )
        return parts, picks

    def _children(self, deleted: str) -> list[tuple[str, str]]:
        lay = self.layout
        out = []
        if lay.has(RUNS) and not self.runs_by_cascade:
            out.append(
                (
                    f"r AS (DELETE FROM {lay.q(RUNS)} WHERE session_id {deleted} RETURNING 1)",
                    "(SELECT count(*) FROM r) AS runs",
                )
            )
        if lay.has(TRANSCRIPTS):
            out.append(
                (
                    f"t AS (DELETE FROM {lay.q(TRANSCRIPTS)} WHERE agno_session_id {deleted} RETURNING 1)",
                    "(SELECT count(*) FROM t) AS transcripts",
                )
            )
        if lay.has(TOOL_RESULTS):
            out.append(
                (
                    f"tr AS (DELETE FROM {lay.q(TOOL_RESULTS)} WHERE session_id {deleted} RETURNING namespace, path)",
                    "(SELECT count(*) FROM tr) AS tool_results",
                )
            )
            if lay.payload_table:
                out.append(
                    (
                        f"p AS (DELETE FROM {PAYLOADS} f USING tr WHERE f.namespace = tr.namespace AND f.path = tr.path"
                        " RETURNING 1)",
                        "(SELECT count(*) FROM p) AS payloads",
                    )
                )
        return out

    def _media(self, deleted: str) -> list[str]:
        refs = [media_refs.REFS_OF_LEGACY_ROWS] if self.layout.legacy_runs_column else []
        if self.layout.has(RUNS):
            refs.append(media_refs.refs_of_runs_table(self.layout.q(RUNS), deleted))
        return refs


def outcome(row: asyncpg.Record, cascaded: int, one_user: str | None) -> BatchOutcome:
    out = BatchOutcome()
    c = out.counts
    c.sessions = int(row["sessions"])
    c.runs = int(row.get("legacy") or 0) + int(row.get("runs", 0)) + cascaded
    c.transcripts = int(row.get("transcripts", 0))
    c.tool_results = int(row.get("tool_results", 0))
    c.tool_result_payloads = int(row.get("payloads", 0))
    out.tool_results_without_payload = c.tool_results - c.tool_result_payloads
    if one_user is None:
        out.per_user = {str(k): int(v) for k, v in (row["per_user"] or {}).items()}
    elif c.sessions:
        out.per_user = {one_user: c.sessions}
    return out


def _cascade_fires(tgenabled: str, replication_role: str) -> bool:
    """Does a trigger in this enabled state fire under this ``session_replication_role``?"""
    replica = replication_role == "replica"
    return tgenabled == "A" or (tgenabled == "O" and not replica) or (tgenabled == "R" and replica)
