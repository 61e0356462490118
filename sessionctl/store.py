"""Every SQL statement sessionctl runs against an agent's Agno tables (asyncpg).

Schema and table names reach SQL only as quoted identifiers (:func:`quote_ident`) — validated
first when they come from input;
values are always bind parameters. Agno's own client hides database errors (reads return ``[]``,
deletes ``None``), so everything that decides an outcome — what exists, how many rows a user has
left — is read here, with errors raised, never swallowed.

Which tables a schema has is read once per schema (:func:`read_layout`): Agno 3.x keeps runs in
``agno_runs`` (foreign-keyed to the session, ``ON DELETE CASCADE``); Agno 2.x keeps them in the
``runs`` jsonb column of the session row; a migrated schema may have both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from sessionctl.identifiers import quote_ident

SESSIONS = "agno_sessions"
RUNS = "agno_runs"
MEMORIES = "agno_memories"
TRANSCRIPTS = "agno_transcripts"
TOOL_RESULTS = "agno_tool_results"
PAYLOADS = '"fs".agno_fs'  # Agno's default store of offloaded tool-result payloads, shared by all agents


@dataclass(frozen=True, slots=True)
class Layout:
    """The Agno tables (of :data:`LAYOUT_TABLES`) one agent schema holds, as read from the catalog."""

    schema: str
    tables: frozenset[str]
    legacy_runs_column: bool  # agno 2.x: runs inside agno_sessions.runs
    payload_table: bool  # fs.agno_fs exists in this database
    # agno_runs.session_id references agno_sessions(session_id) ON DELETE CASCADE, agno_runs is a
    # plain table: the enabled state (pg_trigger.tgenabled: O, A, R or D) of the cascade's trigger;
    # "" when there is no such cascade.
    runs_cascade: str = ""
    # a valid index led by (user_id, created_at, session_id) on a plain agno_sessions (neither
    # partitioned nor inherited from): the purge may walk it in ranges deleted by tuple id
    user_index: bool = False
    # agno_sessions.created_at may be NULL, in it or in a table inheriting from it (Agno declares
    # it NOT NULL; a hand-altered table may not): an export walks such sessions apart, last
    created_at_nullable: bool = False

    def has(self, table: str) -> bool:
        return table in self.tables

    def q(self, table: str) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(table)}"


@dataclass(slots=True)
class Counts:
    """Rows of one user in one agent schema (what a purge deletes or would delete)."""

    sessions: int = 0
    runs: int = 0
    transcripts: int = 0
    tool_results: int = 0
    tool_result_payloads: int = 0
    memories: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


SessionKey = tuple[int, str]  # (created_at, session_id): a session's place in the user_id index
# An export's place in (created_at, session_id) order (created_at None among undated sessions)
ExportKey = tuple[int | None, str]


@dataclass(slots=True)
class BatchOutcome:
    counts: Counts = field(default_factory=Counts)
    tool_results_without_payload: int = 0
    per_user: dict[str, int] = field(default_factory=dict)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Decode json/jsonb to Python objects, as Agno's SQLAlchemy engine does."""
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


# -- discovery ------------------------------------------------------------------------------------


async def schema_exists(conn: asyncpg.Connection, schema: str) -> bool:
    row = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
    return row is not None


# Agno's session table, as far as our SQL relies on it: these columns, of these types.
REQUIRED_SESSION_COLUMNS: dict[str, frozenset[str]] = {
    "session_id": frozenset({"character varying", "text"}),
    "session_type": frozenset({"character varying", "text"}),
    "user_id": frozenset({"character varying", "text"}),
    "created_at": frozenset({"bigint", "integer"}),
    "updated_at": frozenset({"bigint", "integer"}),
}


async def session_table_problems(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Why ``schema.agno_sessions`` is not Agno's session table (empty when it is)."""
    # pg_catalog, not information_schema: its views cost ~20 ms a call in a database of 2,000
    # agent schemas (bench/connections.py), and hide the tables a role may not read.
    rows = await conn.fetch(
        "SELECT a.attname AS column_name, format_type(a.atttypid, NULL) AS data_type FROM pg_attribute a"
        " WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
        f"{quote_ident(schema)}.{quote_ident(SESSIONS)}",
    )
    types = {r["column_name"]: r["data_type"] for r in rows}
    problems = []
    for column, allowed in REQUIRED_SESSION_COLUMNS.items():
        if column not in types:
            problems.append(f"no {column} column")
        elif types[column] not in allowed:
            problems.append(f"{column} is {types[column]}")
    return problems


async def read_layout(conn: asyncpg.Connection, schema: str) -> Layout | None:
    """The schema's Agno tables, or ``None`` when it has no ``agno_sessions`` table.

    The caller checks :func:`session_table_problems` (see ``AgentHandle.layout``).
    """
    # By name, through pg_class's (relname, relnamespace) index: listing a schema's tables
    # otherwise scans every schema's (in a database of 2,000 agents, a join on pg_namespace made
    # of it 25 ms and growing with the square of the schemas; this is well under 1 ms).
    rows = await conn.fetch(
        """
        SELECT c.relname AS table_name,
               EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = 'runs' AND NOT a.attisdropped) AS has_runs
          FROM pg_class c
         WHERE c.relname = ANY($2::name[]) AND c.relkind IN ('r', 'p')
           AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)
        """,
        schema,
        sorted(LAYOUT_TABLES),
    )
    tables = {r["table_name"]: r["has_runs"] for r in rows}
    if SESSIONS not in tables:
        return None
    payload = await conn.fetchval("SELECT to_regclass('fs.agno_fs') IS NOT NULL")
    sessions = f"{quote_ident(schema)}.{quote_ident(SESSIONS)}"
    cascade = None
    if RUNS in tables:
        cascade = await conn.fetchval(
            "SELECT t.tgenabled::text FROM pg_constraint c"
            " JOIN pg_trigger t ON t.tgconstraint = c.oid AND t.tgrelid = c.confrelid"
            "  AND t.tgfoid = 'pg_catalog.\"RI_FKey_cascade_del\"'::regproc"
            " WHERE c.contype = 'f' AND c.confdeltype = 'c' AND c.conrelid = to_regclass($1)"
            " AND c.confrelid = to_regclass($2) AND (SELECT relkind FROM pg_class WHERE oid = c.conrelid) = 'r'"
            " AND c.conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = c.conrelid"
            "  AND attname = 'session_id')]"
            " AND c.confkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = c.confrelid"
            "  AND attname = 'session_id')] LIMIT 1",
            f"{quote_ident(schema)}.{quote_ident(RUNS)}",
            sessions,
        )
    # Led by (user_id, created_at, session_id), ascending, in the columns' own collations: the
    # order a range walk asks for (any other index would make each range sort). On a plain table
    # only: a range is deleted by tuple id, and tuple ids repeat across the parts of a partitioned
    # table, and across a table and the tables that inherit from it.
    user_index = await conn.fetchval(
        "SELECT (SELECT relkind = 'r' AND NOT relhassubclass FROM pg_class WHERE oid = to_regclass($1))"
        " AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass($1) AND i.indisvalid"
        " AND i.indisready AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts >= 3"
        " AND (SELECT array_agg(a.attname::text ORDER BY k.n) FROM unnest(i.indkey[0:2]) WITH ORDINALITY k(attnum, n)"
        "      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)"
        "     = ARRAY['user_id', 'created_at', 'session_id']"
        " AND (SELECT bool_and(o = 0) FROM unnest(i.indoption[0:2]) o)"
        " AND (SELECT bool_and(ic.c = a.attcollation) FROM unnest(i.indkey[0:2], i.indcollation[0:2]) ic(k, c)"
        "      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ic.k)"
        " AND (SELECT amname FROM pg_am JOIN pg_class c ON c.relam = pg_am.oid WHERE c.oid = i.indexrelid) = 'btree')",
        sessions,
    )
    # over the table and every table inheriting from it (a child may drop NOT NULL; a partition
    # may not)
    nullable = await conn.fetchval(
        "WITH RECURSIVE t(oid) AS (SELECT to_regclass($1)::oid"
        "  UNION SELECT i.inhrelid FROM pg_inherits i JOIN t ON i.inhparent = t.oid)"
        " SELECT bool_or(NOT a.attnotnull) FROM pg_attribute a JOIN t ON a.attrelid = t.oid"
        " WHERE a.attname = 'created_at' AND NOT a.attisdropped",
        sessions,
    )
    return Layout(
        created_at_nullable=bool(nullable),
        schema=schema,
        tables=frozenset(tables),
        legacy_runs_column=bool(tables[SESSIONS]),
        payload_table=bool(payload),
        runs_cascade=cascade or "",
        user_index=bool(user_index),
    )


async def discover_agent_schemas(conn: asyncpg.Connection) -> list[str]:
    """Schemas holding an Agno sessions table (the agents of this database), sorted."""
    rows = await conn.fetch(
        """
        SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relname = 'agno_sessions' AND c.relkind IN ('r', 'p')
         ORDER BY n.nspname
        """
    )
    return [r["nspname"] for r in rows]


# -- counting (the proof) --------------------------------------------------------------------------

# "user_id IN (SELECT unnest($n::text[]))", never "user_id = ANY($n)", wherever a list of users is
# matched: Postgres hashes an ANY array only when it is a constant of the plan, and a statement
# prepared by asyncpg soon runs a generic plan, where ANY scans the whole array for every row
# (bulk erasure of 10,000 users without the user_id index: 0.08x of a raw DELETE). IN (subquery)
# is a hashed lookup, or a join on the index, in every plan.
USERS_1 = "user_id IN (SELECT unnest($1::text[]))"  # the users of parameter $1


async def count_user_sessions(conn: asyncpg.Connection, layout: Layout, users: str | list[str]) -> int:
    owners = [users] if isinstance(users, str) else users
    value = await conn.fetchval(f"SELECT count(*) FROM {layout.q(SESSIONS)} WHERE {USERS_1}", owners)
    return int(value)


async def count_sessions_per_user(conn: asyncpg.Connection, layout: Layout, users: list[str]) -> dict[str, int]:
    rows = await conn.fetch(
        f"SELECT user_id, count(*) AS n FROM {layout.q(SESSIONS)} WHERE {USERS_1} GROUP BY 1", users
    )
    return {r["user_id"]: int(r["n"]) for r in rows}


async def count_user(conn: asyncpg.Connection, layout: Layout, users: list[str], *, memories: bool) -> Counts:
    """Everything a purge of these users would delete in this schema (for dry runs)."""
    s = layout.q(SESSIONS)
    legacy = _legacy_runs_expr("s") if layout.legacy_runs_column else "0"
    row = await conn.fetchrow(
        f"SELECT count(*) AS sessions, coalesce(sum({legacy}), 0) AS legacy_runs"
        f"  FROM {s} s WHERE s.user_id IN (SELECT unnest($1::text[]))",
        users,
    )
    counts = Counts(sessions=int(row["sessions"]), runs=int(row["legacy_runs"]))
    user_sessions = f"SELECT session_id FROM {s} WHERE {USERS_1}"
    if layout.has(RUNS):
        counts.runs += int(
            await conn.fetchval(f"SELECT count(*) FROM {layout.q(RUNS)} WHERE session_id IN ({user_sessions})", users)
        )
    if layout.has(TRANSCRIPTS):
        counts.transcripts = int(
            await conn.fetchval(
                f"SELECT count(*) FROM {layout.q(TRANSCRIPTS)} WHERE agno_session_id IN ({user_sessions})", users
            )
        )
    if layout.has(TOOL_RESULTS):
        tr = layout.q(TOOL_RESULTS)
        counts.tool_results = int(
            await conn.fetchval(f"SELECT count(*) FROM {tr} WHERE session_id IN ({user_sessions})", users)
        )
        if layout.payload_table and counts.tool_results:
            counts.tool_result_payloads = int(
                await conn.fetchval(
                    f"SELECT count(*) FROM {PAYLOADS} f JOIN {tr} t"
                    "  ON f.namespace = t.namespace AND f.path = t.path"
                    f" WHERE t.session_id IN ({user_sessions})",
                    users,
                )
            )
    if memories and layout.has(MEMORIES):
        counts.memories = int(await conn.fetchval(f"SELECT count(*) FROM {layout.q(MEMORIES)} WHERE {USERS_1}", users))
    return counts


def _legacy_runs_expr(alias: str) -> str:
    return f"CASE WHEN jsonb_typeof({alias}.runs) = 'array' THEN jsonb_array_length({alias}.runs) ELSE 0 END"


# -- deleting ------------------------------------------------------------------------------------


class _Params:
    """The bind parameters of one statement: ``p(value)`` adds one and returns its ``$n``."""

    def __init__(self, values: list[Any] | None = None) -> None:
        self.values: list[Any] = [] if values is None else values  # appended to: the caller's list

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


async def _snapshot(conn: asyncpg.Connection, layout: Layout, where: str, args: list[Any]) -> int:
    """Note the ids of matching sessions in a temp table of this connection; how many there are.

    One scan of ``agno_sessions`` (which has no index on ``user_id`` in Agno's schema) instead of
    one per batch; the batches then walk the snapshot by primary key. Sessions that arrive later
    are caught by the final count, which takes a new snapshot.
    """
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS sessionctl_ids (session_id text PRIMARY KEY); TRUNCATE sessionctl_ids"
    )
    status = await conn.execute(
        f"INSERT INTO pg_temp.sessionctl_ids SELECT session_id FROM {layout.q(SESSIONS)} WHERE {where}", *args
    )
    return _rowcount(status)


async def some_user_session_ids(conn: asyncpg.Connection, layout: Layout, users: list[str], limit: int) -> list[str]:
    """Up to ``limit`` ids of these users' sessions (a purge takes a user with few sessions in
    one go, without the temp table of a snapshot: ~5 ms saved per agent schema)."""
    rows = await conn.fetch(f"SELECT session_id FROM {layout.q(SESSIONS)} WHERE {USERS_1} LIMIT $2", users, limit)
    return [r["session_id"] for r in rows]


async def snapshot_user_session_ids(conn: asyncpg.Connection, layout: Layout, users: list[str]) -> int:
    return await _snapshot(conn, layout, USERS_1, [users])


async def snapshot_expired(
    conn: asyncpg.Connection, layout: Layout, cutoff: int, types: list[str] | None, exclude: list[str] | None
) -> int:
    p = _Params()
    return await _snapshot(conn, layout, _expired_where(p, cutoff, types, exclude), p.values)


def _expired_where(
    p: _Params, cutoff: int, types: list[str] | None, exclude: list[str] | None, *, alias: str = ""
) -> str:
    """Sessions last updated (or, never updated, created) before ``cutoff``; of ``types``, or not of ``exclude``."""
    conds = [f"coalesce({alias}updated_at, {alias}created_at) < {p(cutoff)}"]
    if types is not None:
        conds.append(f"{alias}session_type = ANY({p(types)}::text[])")
    if exclude:
        conds.append(f"NOT ({alias}session_type = ANY({p(exclude)}::text[]))")
    return " AND ".join(conds)


async def count_expired(
    conn: asyncpg.Connection, layout: Layout, cutoff: int, types: list[str] | None, exclude: list[str] | None
) -> int:
    p = _Params()
    where = _expired_where(p, cutoff, types, exclude)
    return int(await conn.fetchval(f"SELECT count(*) FROM {layout.q(SESSIONS)} WHERE {where}", *p.values))


async def sessions_by_ids(conn: asyncpg.Connection, layout: Layout, session_ids: list[str]) -> list[dict[str, Any]]:
    """Session rows by id (for exporting a snapshot before deleting it), in id order."""
    rows = await conn.fetch(
        f"SELECT * FROM {layout.q(SESSIONS)} WHERE session_id = ANY($1::text[]) ORDER BY session_id", session_ids
    )
    return [dict(r) for r in rows]


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
    p = _Params()
    where = f"d.session_id = ANY({p(session_ids)}::text[]) AND d.user_id IN (SELECT unnest({p(owners)}::text[]))"
    outcome, _ = await _delete_sessions(conn, layout, p, where)
    return outcome


async def delete_all_of_users(conn: asyncpg.Connection, layout: Layout, users: list[str]) -> BatchOutcome:
    """Delete every session of these users in one statement (a batch of users whose sessions
    were counted to fit a batch; needs the ``user_id`` index — see :func:`purge` in jobs)."""
    p = _Params()
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
    p = _Params()
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
    conn: asyncpg.Connection, layout: Layout, user_id: str, sessions: list[tuple[str, int]]
) -> BatchOutcome:
    """Delete the user's sessions whose last-change stamp (``coalesce(updated_at, created_at)``) is
    still the given one — export-then-erase erases exactly what it handed over."""
    p = _Params()
    ids = p([sid for sid, _ in sessions])
    where = (
        f"d.session_id = ANY({ids}::text[]) AND d.user_id = {p(user_id)}"
        " AND (d.session_id, coalesce(d.updated_at, d.created_at))"
        f" IN (SELECT * FROM unnest({ids}::text[], {p([stamp for _, stamp in sessions])}::bigint[]))"
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
) -> BatchOutcome:
    """Delete those of these sessions that are (still) past the cutoff, with all that hangs off them."""
    p = _Params()
    where = f"d.session_id = ANY({p(session_ids)}::text[]) AND " + _expired_where(p, cutoff, types, exclude, alias="d.")
    outcome, _ = await _delete_sessions(conn, layout, p, where)
    return outcome


async def delete_session_by_id(
    conn: asyncpg.Connection, layout: Layout, session_id: str, user_id: str | None = None
) -> BatchOutcome:
    """Delete one session (only if it belongs to ``user_id`` when given), with all that hangs off it."""
    p = _Params()
    where = f"d.session_id = {p(session_id)}" + ("" if user_id is None else f" AND d.user_id = {p(user_id)}")
    outcome, _ = await _delete_sessions(conn, layout, p, where)
    return outcome


async def _delete_sessions(
    conn: asyncpg.Connection,
    layout: Layout,
    p: _Params,
    where: str,
    *,
    before: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
    one_user: str | None = None,
) -> tuple[BatchOutcome, asyncpg.Record]:
    """Run the delete of the sessions ``where`` selects (CTEs ``before`` may feed it; ``extra``
    columns are returned beside the counts) in its own transaction. ``one_user``: ``where``
    admits only this user's sessions, so they need no counting per user."""
    legacy = [f"{_legacy_runs_expr('d')} AS legacy_runs"] if layout.legacy_runs_column else []
    parts = [
        *before,
        f"gone AS (DELETE FROM {layout.q(SESSIONS)} AS d WHERE {where}"
        f" RETURNING {', '.join(['d.session_id', 'd.user_id', *legacy])})",
    ]
    picks = ["(SELECT count(*) FROM gone) AS sessions", *extra]
    if legacy:
        picks.append("(SELECT sum(legacy_runs) FROM gone) AS legacy")
    if one_user is None:
        picks.append(
            "(SELECT json_object_agg(coalesce(u, ''), n) FROM"
            " (SELECT user_id AS u, count(*) AS n FROM gone GROUP BY 1) x) AS per_user"
        )
    deleted = "= ANY(ARRAY(SELECT session_id FROM gone))"  # exactly the sessions deleted, probed by index
    runs = layout.q(RUNS)
    async with conn.transaction():
        # Every lookup here is by key. After a bulk load, stale statistics can make the planner
        # scan a whole runs table per batch (seen: 21 ms instead of 0.4 ms per 200 sessions).
        await conn.execute("SET LOCAL enable_seqscan = off")
        by_cascade = None
        if layout.has(RUNS) and layout.runs_cascade:
            # Runs go by Agno's foreign key (ON DELETE CASCADE), as in a plain DELETE of the sessions;
            # how many it removed is this transaction's own delete counter of the runs table, read
            # before and after (the same count a RETURNING would give, without a second delete
            # probing every run: measured 0.62x -> 0.81x of a raw DELETE). When the cascade would
            # not fire (its trigger disabled, or not firing in this session_replication_role) or
            # there are no statistics counters (track_counts off), the runs are deleted and
            # counted by the statement below instead.
            stat = await conn.fetchrow(
                "SELECT current_setting('track_counts')::bool AS on,"
                " current_setting('session_replication_role') AS role,"
                " pg_stat_get_xact_tuples_deleted(to_regclass($1)) AS n",
                runs,
            )
            if stat["on"] and _cascade_fires(layout.runs_cascade, stat["role"]):
                by_cascade = int(stat["n"])
        if layout.has(RUNS) and by_cascade is None:
            parts.append(f"r AS (DELETE FROM {runs} WHERE session_id {deleted} RETURNING 1)")
            picks.append("(SELECT count(*) FROM r) AS runs")
        if layout.has(TRANSCRIPTS):
            parts.append(f"t AS (DELETE FROM {layout.q(TRANSCRIPTS)} WHERE agno_session_id {deleted} RETURNING 1)")
            picks.append("(SELECT count(*) FROM t) AS transcripts")
        if layout.has(TOOL_RESULTS):
            parts.append(
                f"tr AS (DELETE FROM {layout.q(TOOL_RESULTS)} WHERE session_id {deleted} RETURNING namespace, path)"
            )
            picks.append("(SELECT count(*) FROM tr) AS tool_results")
            if layout.payload_table:
                parts.append(
                    f"p AS (DELETE FROM {PAYLOADS} f USING tr WHERE f.namespace = tr.namespace AND f.path = tr.path"
                    " RETURNING 1)"
                )
                picks.append("(SELECT count(*) FROM p) AS payloads")
        row = await conn.fetchrow("WITH " + ",\n".join(parts) + "\nSELECT " + ", ".join(picks), *p.values)
        cascaded = 0
        if by_cascade is not None:
            cascaded = int(await conn.fetchval("SELECT pg_stat_get_xact_tuples_deleted(to_regclass($1))", runs))
            cascaded -= by_cascade
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
    return out, row


def _cascade_fires(tgenabled: str, replication_role: str) -> bool:
    """Does a trigger in this enabled state fire under this ``session_replication_role``?"""
    replica = replication_role == "replica"
    return tgenabled == "A" or (tgenabled == "O" and not replica) or (tgenabled == "R" and replica)


async def delete_user_memories(conn: asyncpg.Connection, layout: Layout, users: list[str]) -> int:
    if not layout.has(MEMORIES):
        return 0
    return _rowcount(await conn.execute(f"DELETE FROM {layout.q(MEMORIES)} WHERE {USERS_1}", users))


def _rowcount(status: str) -> int:
    # asyncpg returns the command tag, e.g. "DELETE 42"
    return int(status.rsplit(" ", 1)[1])


# -- listing -------------------------------------------------------------------------------------


async def list_user_sessions_page(
    conn: asyncpg.Connection,
    layout: Layout,
    user_id: str,
    *,
    after: SessionKey | None,
    limit: int,
) -> list[dict[str, Any]]:
    """One keyset page of the user's session rows, newest first (``created_at DESC, session_id DESC``).

    Rows are returned as Agno stores them (every column of ``agno_sessions``), with ``runs`` set to
    the run dicts of the runs table merged over any 2.x blob — see :func:`runs_for_sessions`.
    """
    s = layout.q(SESSIONS)
    if after is None:
        rows = await conn.fetch(
            f"SELECT * FROM {s} WHERE user_id = $1 ORDER BY created_at DESC, session_id DESC LIMIT $2",
            user_id,
            limit,
        )
    else:
        rows = await conn.fetch(
            f"SELECT * FROM {s} WHERE user_id = $1 AND (created_at, session_id) < ($2, $3)"
            " ORDER BY created_at DESC, session_id DESC LIMIT $4",
            user_id,
            after[0],
            after[1],
            limit,
        )
    return [dict(r) for r in rows]


async def runs_for_sessions(
    conn: asyncpg.Connection, layout: Layout, session_ids: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """``run_data`` of the runs table per session, in Agno's order (run_index, created_at, run_id)."""
    if not layout.has(RUNS) or not session_ids:
        return {}
    rows = await conn.fetch(
        f"SELECT session_id, run_data FROM {layout.q(RUNS)} WHERE session_id = ANY($1::text[])"
        " ORDER BY session_id, run_index ASC NULLS LAST, created_at ASC, run_id ASC",
        session_ids,
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["session_id"], []).append(r["run_data"])
    return out


async def get_session_row(conn: asyncpg.Connection, layout: Layout, session_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT * FROM {layout.q(SESSIONS)} WHERE session_id = $1", session_id)
    return dict(row) if row is not None else None


# -- exporting -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """Which sessions an export (or export-then-erase) covers: a user (or all), a half-open time range."""

    user_id: str | None = None
    since: int | None = None  # epoch seconds, inclusive
    until: int | None = None  # epoch seconds, exclusive
    by: str = "created"  # "created": created_at; "updated": coalesce(updated_at, created_at)
    # None: every session; False: only those with a creation time; True: only those without (an
    # export walks them apart, last, where Layout.created_at_nullable)
    undated: bool | None = None

    def where(self, first_arg: int = 1) -> tuple[str, list[Any]]:
        conds: list[str] = []
        args: list[Any] = []
        col = "coalesce(updated_at, created_at)" if self.by == "updated" else "created_at"
        if self.user_id is not None:
            args.append(self.user_id)
            conds.append(f"user_id = ${first_arg + len(args) - 1}")
        if self.since is not None:
            args.append(self.since)
            conds.append(f"{col} >= ${first_arg + len(args) - 1}")
        if self.until is not None:
            args.append(self.until)
            conds.append(f"{col} < ${first_arg + len(args) - 1}")
        if self.undated is not None:
            conds.append("created_at IS NULL" if self.undated else "created_at IS NOT NULL")
        return (" AND ".join(conds) or "TRUE"), args


async def count_window(conn: asyncpg.Connection, layout: Layout, window: Window) -> int:
    where, args = window.where()
    return int(await conn.fetchval(f"SELECT count(*) FROM {layout.q(SESSIONS)} WHERE {where}", *args))


def _export_bounds(window: Window, after: ExportKey | None, upto: ExportKey | None, args: list[Any]) -> str:
    """The keyset conditions of an export page on ``s``: after ``after``, up to ``upto`` inclusive,
    in ``created_at, session_id`` order — by session id alone among sessions without a creation
    time (``window.undated``), each bound the index can use."""
    p = _Params(args)
    sql = ""
    if window.undated:
        if after is not None:
            sql += f" AND s.session_id > {p(after[1])}"
        if upto is not None:
            sql += f" AND s.session_id <= {p(upto[1])}"
        return sql
    if after is not None:
        sql += f" AND (s.created_at, s.session_id) > ({p(after[0])}, {p(after[1])})"
    if upto is not None:
        sql += f" AND (s.created_at, s.session_id) <= ({p(upto[0])}, {p(upto[1])})"
    return sql


def export_key(row: Any) -> ExportKey:
    """A row's place in an export's order (``created_at``, ``session_id``)."""
    at = row["created_at"]
    return (None if at is None else int(at), str(row["session_id"]))


async def export_page_end(
    conn: asyncpg.Connection, layout: Layout, window: Window, *, after: ExportKey | None, limit: int
) -> tuple[ExportKey | None, bool]:
    """Where the page of ``limit`` sessions of the window after ``after`` ends — the key of its
    last session, ``None`` when fewer remain — and whether it is the window's last page: known
    before the page is rendered, so the next one can start. Cheap where the order is indexed
    (``layout.user_index`` for a user's window)."""
    where, args = window.where()
    where += _export_bounds(window, after, None, args)
    rows = await conn.fetch(  # the page's last session, and the next page's first if any
        f"SELECT s.created_at, s.session_id FROM {layout.q(SESSIONS)} s WHERE {where}"
        f" ORDER BY s.created_at, s.session_id OFFSET ${len(args) + 1} LIMIT 2",
        *args,
        limit - 1,
    )
    return (export_key(rows[0]) if rows else None), len(rows) < 2


async def export_lines(
    conn: asyncpg.Connection,
    layout: Layout,
    window: Window,
    *,
    envelope: dict[str, Any],
    after: ExportKey | None,
    limit: int,
    upto: ExportKey | None = None,
) -> list[asyncpg.Record]:
    """One keyset page of the window (oldest first, after ``after``, up to ``upto`` inclusive,
    at most ``limit``), each session rendered by Postgres as one
    export line, ``envelope`` plus ``"session"``: every column of the row and its ``runs`` — as
    COPY would render it, with no JSON decoding or encoding in the worker. Returns
    ``created_at, session_id, line``.

    ``runs`` is what Agno's ``merge_runs_table_with_legacy_blob`` returns, computed in SQL for
    the two layouts Agno writes: runs only in ``agno_runs`` (3.x: in run_index, created_at,
    run_id order), or only in a 2.x blob (its run dicts with a run_id, in blob order). A session
    with runs in both places (half migrated), or a blob that is not a JSON array, gets ``line``
    NULL: the caller renders it with Agno's own merge.
    """
    where, args = window.where()
    where += _export_bounds(window, after, upto, args)
    table_runs = "NULL::jsonb"
    join = ""
    if layout.has(RUNS):
        join = (
            " LEFT JOIN LATERAL (SELECT jsonb_agg(r.run_data ORDER BY r.run_index ASC NULLS LAST, r.created_at ASC,"
            f" r.run_id ASC) AS runs FROM {layout.q(RUNS)} r WHERE r.session_id = s.session_id) tr ON TRUE"
        )
        table_runs = "tr.runs"
    if layout.legacy_runs_column:
        blob_runs = (
            "(SELECT coalesce(jsonb_agg(e ORDER BY o), '[]') FROM jsonb_array_elements(s.runs) WITH ORDINALITY x(e, o)"
            " WHERE jsonb_typeof(e) = 'object' AND coalesce(e -> 'run_id', 'null') <> 'null')"
        )
        empty_blob = "(s.runs IS NULL OR s.runs = 'null' OR s.runs = '[]')"
        runs = (
            f"CASE WHEN {empty_blob} THEN coalesce({table_runs}, '[]')"
            f" WHEN jsonb_typeof(s.runs) = 'array' AND {table_runs} IS NULL THEN {blob_runs} END"
        )
    else:
        runs = f"coalesce({table_runs}, '[]')"
    # The envelope is written around the session's JSON as text: nesting the session in a jsonb
    # object would copy every session once more (measured in process: 0.73x -> 0.83x of COPY). As bytea, the
    # line reaches the worker as bytes, never decoded and re-encoded.
    head = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))[:-1] + ',"session":'
    args += [head, limit]
    # The window's columns are the session row's: tr and m only add "runs".
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT s.created_at, s.session_id, (SELECT convert_to(${len(args) - 1}::text"
        " || (to_jsonb(s) || jsonb_build_object('runs', m.runs))::text || E'}\\n', 'UTF8')"
        "  WHERE m.runs IS NOT NULL) AS line"
        f" FROM {layout.q(SESSIONS)} s{join} CROSS JOIN LATERAL (SELECT {runs} AS runs) m"
        f" WHERE {where} ORDER BY s.created_at, s.session_id LIMIT ${len(args)}",
        *args,
    )
    return rows


# -- restoring ---------------------------------------------------------------------------------------


async def restore_updated_at(conn: asyncpg.Connection, layout: Layout, stamps: list[tuple[str, int | None]]) -> None:
    """Put back the exported ``updated_at`` that Agno's upsert replaced with the write time."""
    await conn.execute(
        f"UPDATE {layout.q(SESSIONS)} s SET updated_at = v.updated_at"
        " FROM unnest($1::text[], $2::bigint[]) AS v(session_id, updated_at) WHERE s.session_id = v.session_id",
        [sid for sid, _ in stamps],
        [ts for _, ts in stamps],
    )


async def sessions_owned_elsewhere(
    conn: asyncpg.Connection, layout: Layout, sessions: list[tuple[str, str | None, str | None]]
) -> list[str]:
    """Of these (session id, user id, session type), the ids of sessions the table holds under
    another user (or none), or of another type: rows an import must not change."""
    rows = await conn.fetch(
        f"SELECT s.session_id FROM {layout.q(SESSIONS)} s"
        " JOIN unnest($1::text[], $2::text[], $3::text[]) AS v(session_id, user_id, session_type)"
        " ON s.session_id = v.session_id"
        " WHERE s.user_id IS DISTINCT FROM v.user_id OR s.session_type IS DISTINCT FROM v.session_type",
        [x[0] for x in sessions],
        [x[1] for x in sessions],
        [x[2] for x in sessions],
    )
    return [r["session_id"] for r in rows]


async def runs_of_other_sessions(conn: asyncpg.Connection, layout: Layout, runs: list[tuple[str, str]]) -> list[str]:
    """Of these (run id, session id), the run ids the runs table holds under another session:
    Agno's ``upsert_run`` would overwrite them (it matches on run_id alone)."""
    if not layout.has(RUNS) or not runs:
        return []
    rows = await conn.fetch(
        f"SELECT r.run_id FROM {layout.q(RUNS)} r"
        " JOIN unnest($1::text[], $2::text[]) AS v(run_id, session_id) ON r.run_id = v.run_id"
        " WHERE r.session_id IS DISTINCT FROM v.session_id",
        [x[0] for x in runs],
        [x[1] for x in runs],
    )
    return [r["run_id"] for r in rows]


async def count_sessions_by_id(conn: asyncpg.Connection, layout: Layout, session_ids: list[str]) -> int:
    return int(
        await conn.fetchval(
            f"SELECT count(*) FROM {layout.q(SESSIONS)} WHERE session_id = ANY($1::text[])", session_ids
        )
    )


# -- verifying (independent recount) ------------------------------------------------------------------


async def user_keyed_tables(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Every table of the schema with a ``user_id`` column: where a user's data can be — read from
    pg_catalog, which (unlike information_schema) also lists tables this role may not read: a
    recount then fails loudly on them instead of skipping them. Partitions are counted through
    their parent."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped"
        " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname",
        schema,
    )
    return [r["relname"] for r in rows]


async def count_user_rows(conn: asyncpg.Connection, schema: str, table: str, user_id: str) -> int:
    q = f"{quote_ident(schema)}.{quote_ident(table)}"
    return int(await conn.fetchval(f"SELECT count(*) FROM {q} WHERE user_id = $1", user_id))


async def count_user_payloads(conn: asyncpg.Connection, user_id: str) -> int | None:
    """The user's rows in Agno's shared payload table ``fs.agno_fs`` (``None`` if there is none)."""
    if await conn.fetchval("SELECT to_regclass('fs.agno_fs')") is None:
        return None
    return int(await conn.fetchval(f"SELECT count(*) FROM {PAYLOADS} WHERE user_id = $1", user_id))


# -- everything keyed by the user (scope "all") ------------------------------------------------------

SPANS = "agno_spans"
TRACES = "agno_traces"


@dataclass(frozen=True, slots=True)
class UserStore:
    """One Agno table that holds a user's data, and how an erasure treats it."""

    table: str
    action: str  # "delete" the user's rows, or "anonymize" them (user_id set to NULL)
    note: str


# Every Agno table with a user_id column, in the order an erasure visits them (children first).
# tests/test_scope_all.py fails when Agno declares a user-keyed table this list does not know.
USER_STORES: tuple[UserStore, ...] = (
    UserStore("agno_sessions", "delete", "sessions, purged first with their runs, transcripts and tool results"),
    UserStore("agno_sessions_sandbox_bindings", "delete", "sandbox leases of the user's sessions"),
    UserStore("agno_runs", "delete", "runs the user made in sessions owned by others (team sessions)"),
    UserStore("agno_memories", "delete", "what agents remember about the user"),
    UserStore("agno_learnings", "delete", "what agents learned from the user"),
    UserStore("agno_compactions", "delete", "folded transcripts (archived messages, verbatim)"),
    UserStore("agno_tool_results", "delete", "offloaded tool results and their payloads in fs.agno_fs"),
    UserStore("agno_traces", "delete", "traces of the user's runs, with their spans"),
    UserStore("agno_eval_runs", "delete", "evaluations run on the user's data"),
    UserStore("agno_approvals", "delete", "approval requests of the user's runs"),
    UserStore("agno_jobs", "delete", "queued background runs, with the user's input"),
    UserStore("agno_schedule_runs", "delete", "runs of the user's schedules"),
    UserStore("agno_schedules", "delete", "the user's schedules"),
    UserStore("agno_knowledge", "delete", "content the user added"),
    UserStore("agno_metrics", "delete", "the user's daily usage aggregates"),
    UserStore("agno_auth_tokens", "delete", "the user's OAuth tokens"),
    UserStore("agno_components", "anonymize", "agents/teams the user defined: shared configuration"),
    UserStore("agno_company_products", "anonymize", "shared business records the user created"),
    UserStore("agno_company_projects", "anonymize", "shared business records the user created"),
    UserStore("agno_company_sources", "anonymize", "shared business records the user created"),
    UserStore("agno_company_tasks", "anonymize", "shared business records the user created"),
    UserStore("agno_service_accounts", "anonymize", "service accounts the user created: still in use"),
)
KNOWN_USER_TABLES = frozenset(s.table for s in USER_STORES)
# The tables a Layout knows about (what ``Layout.has`` is asked).
LAYOUT_TABLES = KNOWN_USER_TABLES | {SESSIONS, RUNS, MEMORIES, TRANSCRIPTS, TOOL_RESULTS, SPANS, TRACES}


async def erase_user_stores(
    conn: asyncpg.Connection, layout: Layout, users: list[str], *, shared_files: bool
) -> dict[str, int]:
    """Delete (or anonymize) the users' rows in every user-keyed table but ``agno_sessions`` (which the
    session purge handles), in one transaction; rows touched per table.

    ``fs.agno_fs`` is shared by every agent of the database: payloads that this schema's tool-result
    rows point at always go; the user's *other* files only when ``shared_files`` (an all-agents
    erasure) — an erasure at one agent must not delete files of the user's other agents.
    """
    counts: dict[str, int] = {}
    async with conn.transaction():
        for st in USER_STORES:
            if st.table == SESSIONS or not layout.has(st.table):
                continue
            q = layout.q(st.table)
            if st.table == TRACES and layout.has(SPANS):
                counts[SPANS] = _rowcount(
                    await conn.execute(
                        f"DELETE FROM {layout.q(SPANS)} WHERE trace_id IN (SELECT trace_id FROM {q} WHERE {USERS_1})",
                        users,
                    )
                )
            if st.table == TOOL_RESULTS and layout.payload_table:
                row = await conn.fetchrow(
                    f"WITH tr AS (DELETE FROM {q} WHERE {USERS_1} RETURNING namespace, path),"
                    f" p AS (DELETE FROM {PAYLOADS} f USING tr WHERE f.namespace = tr.namespace AND f.path = tr.path"
                    " RETURNING 1) SELECT (SELECT count(*) FROM tr) AS t, (SELECT count(*) FROM p) AS p",
                    users,
                )
                counts[st.table] = int(row["t"])
                counts["fs.agno_fs"] = int(row["p"])
                continue
            if st.action == "delete":
                status = await conn.execute(f"DELETE FROM {q} WHERE {USERS_1}", users)
            else:
                status = await conn.execute(f"UPDATE {q} SET user_id = NULL WHERE {USERS_1}", users)
            counts[st.table] = _rowcount(status)
        if shared_files and layout.payload_table:  # the user's files no index row of this schema points at
            counts["fs.agno_fs"] = counts.get("fs.agno_fs", 0) + _rowcount(
                await conn.execute(f"DELETE FROM {PAYLOADS} WHERE {USERS_1}", users)
            )
    return counts


async def count_user_files(conn: asyncpg.Connection, users: list[str]) -> int:
    if await conn.fetchval("SELECT to_regclass('fs.agno_fs')") is None:
        return 0
    return int(await conn.fetchval(f"SELECT count(*) FROM {PAYLOADS} WHERE {USERS_1}", users))


async def remaining_user_rows(conn: asyncpg.Connection, schema: str, users: list[str]) -> dict[str, int]:
    """The users' rows left in every user-keyed table of the schema (known to us or not)."""
    out: dict[str, int] = {}
    for table in await user_keyed_tables(conn, schema):
        q = f"{quote_ident(schema)}.{quote_ident(table)}"
        out[table] = int(await conn.fetchval(f"SELECT count(*) FROM {q} WHERE {USERS_1}", users))
    return out


# -- index doctor -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexSpec:
    name: str
    table: str
    keys: str  # the index's key list, SQL
    first_column: str | None  # an existing valid index led by this column covers the need
    purpose: str


NEEDED_INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec(
        "sessionctl_sessions_user",
        SESSIONS,
        "(user_id, created_at, session_id)",
        "user_id",
        "per-user reads and deletes: purge, listing newest first, a user's export (Agno has none on user_id)",
    ),
    IndexSpec(
        "sessionctl_sessions_age",
        SESSIONS,
        "((coalesce(updated_at, created_at)))",
        None,
        "retention: sessions past a cutoff by last update, falling back to creation",
    ),
)


async def index_status(conn: asyncpg.Connection, schema: str, spec: IndexSpec) -> dict[str, Any]:
    """Is the need met: by our index (valid or not), or by another valid index led by the same column?"""
    ours = await conn.fetchrow(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
        schema,
        spec.name,
    )
    covered_by = None
    if spec.first_column is not None:
        covered_by = await conn.fetchval(
            "SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
            " JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]"
            " WHERE n.nspname = $1 AND t.relname = $2 AND a.attname = $3 AND i.indisvalid"
            " ORDER BY ic.relname = $4 DESC LIMIT 1",
            schema,
            spec.table,
            spec.first_column,
            spec.name,
        )
    valid = bool(ours and ours["indisvalid"])
    return {
        "index": spec.name,
        "table": spec.table,
        "purpose": spec.purpose,
        "present": valid or covered_by is not None,
        "invalid": ours is not None and not ours["indisvalid"],
        "covered_by": covered_by if covered_by and covered_by != spec.name else None,
    }


async def create_index(conn: asyncpg.Connection, schema: str, spec: IndexSpec) -> None:
    """``CREATE INDEX CONCURRENTLY IF NOT EXISTS`` (never blocks writes; outside a transaction). An
    invalid leftover of an interrupted build would satisfy ``IF NOT EXISTS``: it is dropped first."""
    table = f"{quote_ident(schema)}.{quote_ident(spec.table)}"
    index = f"{quote_ident(schema)}.{quote_ident(spec.name)}"
    status = await index_status(conn, schema, spec)
    if status["invalid"]:
        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index}")
    await conn.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote_ident(spec.name)} ON {table} {spec.keys}")


async def table_sizes(conn: asyncpg.Connection, schema: str) -> dict[str, dict[str, int]]:
    rows = await conn.fetch(
        "SELECT c.relname, pg_total_relation_size(c.oid) AS bytes, greatest(c.reltuples, 0)::bigint AS rows"
        " FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)"
        " AND c.relkind IN ('r', 'p') AND c.relname LIKE 'agno\\_%' ORDER BY 1",
        schema,
    )
    return {r["relname"]: {"bytes": int(r["bytes"]), "rows_estimate": int(r["rows"])} for r in rows}
