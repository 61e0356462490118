"""Counting a user's rows with our own SQL — the proof of an erasure, and a dry run's answer.
Agno's client swallows errors (a read returns ``[]``); these raise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from sessionctl.identifiers import quote_ident
from sessionctl.store.params import USERS_1, Params, legacy_runs_expr, users_match
from sessionctl.store.tables import (
    MEMORIES,
    PAYLOADS,
    RUNS,
    SESSIONS,
    TOOL_RESULTS,
    TRANSCRIPTS,
)

if TYPE_CHECKING:
    from sessionctl.store.catalog import Layout


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
    legacy = legacy_runs_expr("s") if layout.legacy_runs_column else "0"
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


def expired_where(
    p: Params,
    cutoff: int,
    types: list[str] | None,
    exclude: list[str] | None,
    *,
    alias: str = "",
    keep: list[str] | None = None,
) -> str:
    """Sessions last updated (or, never updated, created) before ``cutoff``; of ``types``, or not of
    ``exclude``; not of the users of ``keep`` (under a legal hold — a session of no user still expires)."""
    conds = [f"coalesce({alias}updated_at, {alias}created_at) < {p(cutoff)}"]
    if types is not None:
        conds.append(f"{alias}session_type = ANY({p(types)}::text[])")
    if exclude:
        conds.append(f"NOT ({alias}session_type = ANY({p(exclude)}::text[]))")
    if keep:
        conds.append(kept_out(p, keep, alias=alias))
    return " AND ".join(conds)


def kept_out(p: Params, keep: list[str], *, alias: str = "") -> str:
    """The row belongs to none of the users of ``keep`` (a row of no user does not belong to them).
    ``<> ALL`` over a constant list: a handful of held people, never a user list to hash."""
    return f"({alias}user_id IS NULL OR {alias}user_id <> ALL({p(keep)}::text[]))"


async def count_expired(
    conn: asyncpg.Connection,
    layout: Layout,
    cutoff: int,
    types: list[str] | None,
    exclude: list[str] | None,
    keep: list[str] | None = None,
) -> int:
    p = Params()
    where = expired_where(p, cutoff, types, exclude, keep=keep)
    return int(await conn.fetchval(f"SELECT count(*) FROM {layout.q(SESSIONS)} WHERE {where}", *p.values))


async def count_user_rows(conn: asyncpg.Connection, schema: str, table: str, user_id: str) -> int:
    q = f"{quote_ident(schema)}.{quote_ident(table)}"
    return int(await conn.fetchval(f"SELECT count(*) FROM {q} WHERE user_id = $1", user_id))


async def count_user_payloads(conn: asyncpg.Connection, user_id: str) -> int | None:
    """The user's rows in Agno's shared payload table ``fs.agno_fs`` (``None`` if there is none)."""
    if await conn.fetchval("SELECT to_regclass('fs.agno_fs')") is None:
        return None
    return int(await conn.fetchval(f"SELECT count(*) FROM {PAYLOADS} WHERE user_id = $1", user_id))


async def count_sessions(conn: asyncpg.Connection, layout: Layout) -> int:
    """Every session the schema holds (``sessionctl agents``)."""
    return int(await conn.fetchval(f"SELECT count(*) FROM {layout.q(SESSIONS)}"))


TABLES_PER_COUNT = 250  # tables counted by one statement (a UNION ALL of one count each)


async def count_each(
    conn: asyncpg.Connection, selects: list[str], users: list[str], skip: set[int] | None = None
) -> list[int]:
    """The rows each ``FROM … WHERE …`` over ``$1`` (the users) selects, ``TABLES_PER_COUNT`` of
    them a statement — how an erasure finds the few schemas of a fleet that hold a person, proves
    the rest hold nothing, and recounts the person everywhere; those of ``skip`` (indexes into
    ``selects``) are not run, and count 0.

    Each statement is prepared once per pooled connection (asyncpg's statement cache) and runs a
    generic plan: planning a 250-branch union costs several times running it, so every count after
    the first costs only its execution (docs/decisions.md). What is skipped is a parameter (each
    branch gated by ``$2[i]``, a one-time filter), not a change of text: the same tables make the
    same statements, whoever is counted. A transaction a statement: every count holds a lock on its
    table until the transaction ends, and thousands would overflow Postgres's lock table."""
    out: list[int] = []
    for start in range(0, len(selects), TABLES_PER_COUNT):
        chunk = selects[start : start + TABLES_PER_COUNT]
        union = " UNION ALL ".join(
            f"SELECT {i} AS i, (SELECT count(*) {body}) AS n WHERE ($2::bool[])[{i + 1}]"
            for i, body in enumerate(chunk)
        )
        wanted = [skip is None or start + i not in skip for i in range(len(chunk))]
        async with conn.transaction():
            # many cheap counts: never worth compiling; one plan for whoever is counted
            await conn.execute("SET LOCAL jit = off; SET LOCAL plan_cache_mode = force_generic_plan")
            rows = await conn.fetch(union, users, wanted)
        counted = [0] * len(chunk)
        for r in rows:
            counted[int(r["i"])] = int(r["n"])
        out += counted
    return out


async def count_users_per_schema(
    conn: asyncpg.Connection, layouts: list[Layout], users: list[str], *, memories: bool = False
) -> dict[str, int]:
    """The users' sessions (and, with ``memories``, memories) in each of many schemas of one
    database (:func:`count_each`) — what an erasure at every agent reads to find the few schemas
    that hold the users, and recounts to prove the rest hold nothing. A schema dropped meanwhile
    fails the statement (retried)."""
    where = users_match(len(users))
    keyed: list[tuple[str, str]] = []
    for layout in layouts:
        keyed.append((layout.schema, f"FROM {layout.q(SESSIONS)} WHERE {where}"))
        if memories and layout.has(MEMORIES):
            keyed.append((layout.schema, f"FROM {layout.q(MEMORIES)} WHERE {where}"))
    out: dict[str, int] = {}
    for (schema, _), n in zip(keyed, await count_each(conn, [body for _, body in keyed], users), strict=True):
        out[schema] = out.get(schema, 0) + n
    return out


async def run_ids_of(conn: asyncpg.Connection, layout: Layout, users: list[str]) -> set[str]:
    """The ids of the users' runs in this schema, and of every run of their sessions (AgentOS keeps
    a run's event stream under the run's id). Nothing for the 2.x layout (runs inside the session
    row, before AgentOS's event streams)."""
    if not layout.has(RUNS):
        return set()
    rows = await conn.fetch(
        f"SELECT run_id FROM {layout.q(RUNS)} WHERE {USERS_1}"
        f" OR session_id IN (SELECT session_id FROM {layout.q(SESSIONS)} WHERE {USERS_1})",
        users,
    )
    return {str(r["run_id"]) for r in rows}
