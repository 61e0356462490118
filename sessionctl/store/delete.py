"""Deleting sessions and everything Agno's ``delete_sessions`` deletes with them, one statement
(and one transaction) per batch; the snapshots and index ranges the batches walk."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from sessionctl.store import media_refs
from sessionctl.store.counts import expired_where
from sessionctl.store.delete_statement import BatchOutcome, DeleteStatement, cascade_counter, outcome
from sessionctl.store.params import USERS_1, Params, rowcount
from sessionctl.store.tables import (
    MEMORIES,
    RUNS,
    SESSIONS,
    SessionKey,
)

if TYPE_CHECKING:
    from sessionctl.store.catalog import Layout


async def _snapshot(conn: asyncpg.Connection, layout: Layout, where: str, args: list[Any]) -> int:
    """Note the ids of matching sessions in a temp table of this connection; how many there are.

    One scan of ``agno_sessions`` (which has no index on ``user_id`` in Agno's schema) instead of
    one per batch; the batches then walk the snapshot by primary key. Sessions that arrive later
    are caught by the final count (its own statement, so its own snapshot), and purged by another
    round.
    """
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS sessionctl_ids (session_id text PRIMARY KEY); TRUNCATE sessionctl_ids"
    )
    status = await conn.execute(
        f"INSERT INTO pg_temp.sessionctl_ids SELECT session_id FROM {layout.q(SESSIONS)} WHERE {where}", *args
    )
    return rowcount(status)


async def some_user_session_ids(conn: asyncpg.Connection, layout: Layout, users: list[str], limit: int) -> list[str]:
    """Up to ``limit`` ids of these users' sessions (a purge takes a user with few sessions in
    one go, without the temp table of a snapshot: ~5 ms saved per agent schema)."""
    rows = await conn.fetch(f"SELECT session_id FROM {layout.q(SESSIONS)} WHERE {USERS_1} LIMIT $2", users, limit)
    return [r["session_id"] for r in rows]


async def snapshot_user_session_ids(conn: asyncpg.Connection, layout: Layout, users: list[str]) -> int:
    return await _snapshot(conn, layout, USERS_1, [users])


_BATCHES = itertools.count()


@dataclass(frozen=True, slots=True)
class TidBatch:
    """A batch of sessions found by tuple id: how many, their tuple ids and their owners when they
    were read — as Postgres array literals, read and sent back as they are (no Python object per
    session: for 100,000 sessions that was ~0.15 s of decoding and encoding)."""

    n: int
    tids: str
    owners: str | None  # each session's owner; None when read for one user (``owner``)
    owner: str | None = None  # the one user they were read for


async def user_session_tid_batches(
    conn: asyncpg.Connection, layout: Layout, users: list[str], size: int
) -> list[TidBatch]:
    """The tuple ids of these users' sessions with their owners, in one scan (a plain table:
    ``layout.plain``), cut into batches of ``size`` in the order the scan met them."""
    owners = "array_agg(user_id)::text" if len(users) > 1 else "NULL"
    rows = await conn.fetch(
        f"SELECT count(*) AS n, array_agg(ctid)::text AS tids, {owners} AS owners FROM"
        f" (SELECT ctid, user_id, (row_number() OVER () - 1) / $2 AS b FROM {layout.q(SESSIONS)} WHERE {USERS_1}) s"
        " GROUP BY b ORDER BY b",
        users,
        size,
    )
    owner = users[0] if len(users) == 1 else None
    return [TidBatch(int(r["n"]), r["tids"], r["owners"], owner) for r in rows]


async def snapshot_expired(
    conn: asyncpg.Connection,
    layout: Layout,
    cutoff: int,
    types: list[str] | None,
    exclude: list[str] | None,
    keep: list[str] | None = None,
) -> int:
    """Note the ids of the sessions past the cutoff (none of the users of ``keep``)."""
    p = Params()
    return await _snapshot(conn, layout, expired_where(p, cutoff, types, exclude, keep=keep), p.values)


async def next_snapshot_ids(conn: asyncpg.Connection, after: str | None, limit: int) -> list[str]:
    """The next ``limit`` ids of the snapshot, in id order (keyset: no offset)."""
    rows = await conn.fetch(
        "SELECT session_id FROM pg_temp.sessionctl_ids WHERE $1::text IS NULL OR session_id > $1::text"
        " ORDER BY session_id LIMIT $2",
        after,
        limit,
    )
    return [r["session_id"] for r in rows]


# Each delete below is ONE statement (atomic, one round trip, errors raised) that deletes what
# Agno's ``delete_sessions(ids, user_id=…)`` deletes — the session rows (with any 2.x runs inside
# them), their runs, external-agent transcripts, tool-result index rows and the payloads those
# rows point at in ``fs.agno_fs``. The session rows are chosen by a condition on alias ``d`` that
# also re-checks why they may go (owner, age, unchanged stamp) *in* the delete; everything hanging
# off a session is keyed on the sessions that statement actually deleted, so a session that
# changed owner meanwhile is neither deleted nor stripped.


async def delete_user_sessions(
    conn: asyncpg.Connection, layout: Layout, users: str | list[str], session_ids: list[str]
) -> BatchOutcome:
    """Delete those of these sessions that (still) belong to the user(s). ``per_user`` of the
    outcome counts the sessions deleted per user."""
    owners = [users] if isinstance(users, str) else users
    p = Params()
    where = f"d.session_id = ANY({p(session_ids)}::text[]) AND d.user_id IN (SELECT unnest({p(owners)}::text[]))"
    outcome, _ = await _delete_sessions(conn, layout, p, where)
    return outcome


async def delete_sessions_by_tids(conn: asyncpg.Connection, layout: Layout, batch: TidBatch) -> BatchOutcome:
    """Delete the sessions at these tuple ids that (still) belong to the owner read with each: a
    tuple id read earlier may since hold another row (the owner is checked again in the delete) or
    none (a row updated meanwhile moved: it is left for the recount). One TID probe per session,
    whatever the number of users (a list of the users in the condition makes the planner loop
    over them for every row)."""
    p = Params()
    if batch.owner is not None:  # one user's batch: a TID scan, the owner a filter (any plan does well)
        where = f"d.ctid = ANY({p(batch.tids)}::text::tid[]) AND d.user_id = {p(batch.owner)}"
        outcome, _ = await _delete_sessions(conn, layout, p, where, one_user=batch.owner)
        return outcome
    pairs = f"unnest({p(batch.tids)}::text::tid[], {p(batch.owners)}::text::text[])"
    # Many users' batch: a statement text of its own every time, so Postgres plans it for its
    # values: after five runs of one prepared statement it may switch to a generic plan, which
    # loops over the pairs for every row. (plan_cache_mode = force_custom_plan would instead replan
    # the cascade's trigger query for every session deleted; docs/decisions.md.)
    where = f"(d.ctid, d.user_id) IN (SELECT t, u FROM {pairs} AS x(t, u)) /* batch {next(_BATCHES)} */"
    outcome, _ = await _delete_sessions(conn, layout, p, where)
    return outcome


async def delete_all_of_users(conn: asyncpg.Connection, layout: Layout, users: list[str]) -> BatchOutcome:
    """Delete every session of these users in one statement (a batch of users whose sessions
    were counted to fit a batch; needs the ``user_id`` index — see
    :func:`sessionctl.jobs.schema_purge.purge_schema`)."""
    p = Params()
    # Here ANY is an index condition (one descent per user), not a filter scanning the array per row.
    outcome, _ = await _delete_sessions(conn, layout, p, f"d.user_id = ANY({p(users)}::text[])")
    return outcome


async def split_keys(
    conn: asyncpg.Connection, layout: Layout, user_id: str, counted: int, parts: int
) -> list[SessionKey]:
    """Keys that cut the user's sessions, in ``(created_at, session_id)`` order, into ``parts``
    ranges of about ``counted / parts`` sessions each (one index probe per cut; needs
    ``layout.user_index``). Fewer come back when the user has fewer sessions than counted, or where
    a cut falls on a NULL ``created_at`` (such sessions sort last and are left to the recount)."""
    if parts < 2 or counted < parts:
        return []
    offsets = [counted * i // parts for i in range(1, parts)]
    rows = await conn.fetch(
        "SELECT k.created_at, k.session_id FROM unnest($2::bigint[]) WITH ORDINALITY AS o(skip, i),"
        f" LATERAL (SELECT created_at, session_id FROM {layout.q(SESSIONS)} WHERE user_id = $1"
        " ORDER BY created_at, session_id OFFSET o.skip LIMIT 1) AS k ORDER BY o.i",
        user_id,
        offsets,
    )
    # One snapshot for every probe: the keys are distinct and in index order.
    keys: list[SessionKey] = []
    for r in rows:
        if r["created_at"] is None:
            break
        keys.append((int(r["created_at"]), str(r["session_id"])))
    return keys


async def delete_user_range(
    conn: asyncpg.Connection,
    layout: Layout,
    user_id: str,
    after: SessionKey | None,
    limit: int,
    *,
    start: SessionKey | None = None,
    stop: SessionKey | None = None,
) -> tuple[BatchOutcome, SessionKey | None]:
    """Delete the user's next ``limit`` sessions in ``(created_at, session_id)`` order after
    ``after`` (from ``start`` on, inclusive, when ``after`` is ``None``) and before ``stop``; the
    outcome and where the next batch starts (``None``: the walk is over — the outcome may still
    count sessions deleted).

    Walks the ``(user_id, created_at, session_id)`` index (``layout.user_index``) once and deletes
    the rows it found by their tuple id: no snapshot, no primary-key probe per session. A row
    updated between the walk and the delete moves and is left for the caller's recount.
    """
    p = Params()
    user = p(user_id)
    bounds = ""
    if after is not None:
        bounds += f" AND (created_at, session_id) > ({p(after[0])}::bigint, {p(after[1])}::text)"
    elif start is not None:
        bounds += f" AND (created_at, session_id) >= ({p(start[0])}::bigint, {p(start[1])}::text)"
    if stop is not None:
        bounds += f" AND (created_at, session_id) < ({p(stop[0])}::bigint, {p(stop[1])}::text)"
    pick = (
        f"pick AS MATERIALIZED (SELECT ctid AS t, created_at, session_id FROM {layout.q(SESSIONS)}"
        f" WHERE user_id = {user}{bounds} ORDER BY created_at, session_id LIMIT {p(limit)})"
    )
    outcome, row = await _delete_sessions(
        conn,
        layout,
        p,
        f"d.ctid = ANY(ARRAY(SELECT t FROM pick)) AND d.user_id = {user}",
        before=(pick,),
        extra=(
            "(SELECT (created_at, session_id) FROM pick ORDER BY created_at DESC NULLS LAST, session_id DESC"
            " LIMIT 1) AS last",
        ),
        one_user=user_id,
    )
    last = row["last"]
    if last is None or last[0] is None:  # nothing left there (NULL created_at: left to the recount)
        return outcome, None
    return outcome, (int(last[0]), str(last[1]))


async def delete_unchanged_sessions(
    conn: asyncpg.Connection, layout: Layout, user_id: str, sessions: list[tuple[str, int | None]]
) -> BatchOutcome:
    """Delete the user's sessions whose last-change stamp (``coalesce(updated_at, created_at)``) is
    still the given one (``None``: still neither) — export-then-erase erases exactly what it handed
    over."""
    p = Params()
    ids = p([sid for sid, _ in sessions])
    where = (
        f"d.session_id = ANY({ids}::text[]) AND d.user_id = {p(user_id)}"
        f" AND EXISTS (SELECT 1 FROM unnest({ids}::text[], {p([stamp for _, stamp in sessions])}::bigint[])"
        " AS v(session_id, stamp) WHERE v.session_id = d.session_id"
        " AND v.stamp IS NOT DISTINCT FROM coalesce(d.updated_at, d.created_at))"
    )
    outcome, _ = await _delete_sessions(conn, layout, p, where)
    return outcome


async def delete_expired_sessions(
    conn: asyncpg.Connection,
    layout: Layout,
    session_ids: list[str],
    cutoff: int,
    types: list[str] | None,
    exclude: list[str] | None,
    keep: list[str] | None = None,
) -> BatchOutcome:
    """Delete those of these sessions that are (still) past the cutoff and (still) of none of the
    users of ``keep``, with all that hangs off them."""
    p = Params()
    expired = expired_where(p, cutoff, types, exclude, alias="d.", keep=keep)
    where = f"d.session_id = ANY({p(session_ids)}::text[]) AND {expired}"
    outcome, _ = await _delete_sessions(conn, layout, p, where)
    return outcome


async def delete_session_by_id(
    conn: asyncpg.Connection, layout: Layout, session_id: str, user_id: str | None = None
) -> BatchOutcome:
    """Delete one session (only if it belongs to ``user_id`` when given), with all that hangs off it."""
    p = Params()
    where = f"d.session_id = {p(session_id)}" + ("" if user_id is None else f" AND d.user_id = {p(user_id)}")
    outcome, _ = await _delete_sessions(conn, layout, p, where)
    return outcome


async def _delete_sessions(
    conn: asyncpg.Connection,
    layout: Layout,
    p: Params,
    where: str,
    *,
    before: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
    one_user: str | None = None,
) -> tuple[BatchOutcome, asyncpg.Record]:
    """Run the delete of the sessions ``where`` selects (CTEs ``before`` may feed it; ``extra``
    columns are returned beside the counts) in its own transaction. ``one_user``: ``where``
    admits only this user's sessions, so they need no counting per user."""
    sink: media_refs.MediaCollector | None = None
    try:
        async with conn.transaction():
            # Every lookup here is by key: stale statistics after a bulk load must not make the
            # planner scan a whole runs table per batch.
            await conn.execute("SET LOCAL enable_seqscan = off")
            before_cascade = await cascade_counter(conn, layout)
            statement = DeleteStatement(
                layout, where, before, extra, one_user, runs_by_cascade=before_cascade is not None
            )
            row = await conn.fetchrow(statement.sql(), *p.values)
            cascaded = 0
            if before_cascade is not None:
                after = await conn.fetchval("SELECT pg_stat_get_xact_tuples_deleted(to_regclass($1))", layout.q(RUNS))
                cascaded = int(after) - before_cascade
            runs = layout.q(RUNS) if layout.has(RUNS) else None
            sink = await media_refs.hand_over(
                conn, row.get("media"), runs, layout.q(SESSIONS), layout.legacy_runs_column
            )
    except BaseException:
        if (current := media_refs.CURRENT.get()) is not None:
            current.rolled_back(conn)  # keys noted in a transaction that did not commit
        raise
    if sink is not None:  # committed: now the objects may go
        await sink.committed(conn)
    return outcome(row, cascaded, one_user), row


async def delete_user_memories(conn: asyncpg.Connection, layout: Layout, users: list[str]) -> int:
    if not layout.has(MEMORIES):
        return 0
    return rowcount(await conn.execute(f"DELETE FROM {layout.q(MEMORIES)} WHERE {USERS_1}", users))
