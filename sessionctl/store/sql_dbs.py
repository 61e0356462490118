"""Agno's SQLite and MySQL databases (``agno.db.sqlite.SqliteDb``, ``agno.db.mysql.MySQLDb``): the
statements that count, read and erase a person there, through SQLAlchemy Core on a synchronous
connection (a backend's thread). The same tables as an agent schema in Postgres (``USER_STORES``),
plus what Agno keeps beside them in such a file: AgentFS's ``agno_fs`` (a person's partition and the
payloads of their tool results) and AgentOS's login records (``agno_authz_*``).

Owners are compared exactly. The MySQL tables Agno creates compare case-insensitively and ignore
trailing spaces (``utf8mb4_general_ci``: ``'Alice' = 'alice '``), so every comparison there is
``BINARY``: another person's rows are never matched."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from sessionctl.store.tables import MEMORIES, RUNS, SESSIONS, SPANS, TOOL_RESULTS, TRACES, TRANSCRIPTS, USER_STORES

FS = "agno_fs"
COMPACTIONS = "agno_compactions"
_AUDIT = "UPDATE {t} SET actor = NULL, target = NULL, before = NULL, after = NULL"
# AgentOS's login records in the same file: (table, person column(s), statement head)
AUTHZ: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("agno_authz_users", ("id",), "DELETE FROM {t}"),
    ("agno_authz_grouping", ("subject",), "DELETE FROM {t}"),
    ("agno_authz_audit", ("actor", "target"), _AUDIT),
    ("agno_authz_decisions", ("actor",), "UPDATE {t} SET actor = NULL, token_ref = NULL"),
)
# The keyword argument of Agno's class that renames each table (others keep Agno's name).
TABLE_KWARGS: dict[str, str] = {
    "session_table": SESSIONS,
    "runs_table": RUNS,
    "memory_table": "agno_memories",
    "metrics_table": "agno_metrics",
    "eval_table": "agno_eval_runs",
    "knowledge_table": "agno_knowledge",
    "traces_table": TRACES,
    "spans_table": SPANS,
    "versions_table": "agno_schema_versions",
    "components_table": "agno_components",
    "learnings_table": "agno_learnings",
    "approvals_table": "agno_approvals",
    "schedules_table": "agno_schedules",
    "schedule_runs_table": "agno_schedule_runs",
}
_ACTIONS = {s.table: s.action for s in USER_STORES if s.place == "agent"}


@dataclass(slots=True)
class SqlLayout:
    """One database's Agno tables: their names as created (Agno's, or the ones the agent gave), the
    ones with a ``user_id`` column, and how each is treated."""

    dialect: str  # "sqlite" or "mysql"
    schema: str | None  # MySQL: the database Agno's tables are in (MySQLDb's db_schema)
    present: set[str]  # every table there
    names: dict[str, str]  # Agno's name -> the table's name here
    user_tables: list[str] = field(default_factory=list)  # with a user_id column, Agno's names

    def has(self, agno_name: str) -> bool:
        return self.names.get(agno_name, agno_name) in self.present

    def q(self, agno_name: str) -> str:
        name = self.names.get(agno_name, agno_name)
        if self.dialect == "mysql":
            return f"{_tick(str(self.schema))}.{_tick(name)}"
        return '"' + name.replace('"', '""') + '"'

    def owner(self, column: str = "user_id") -> str:
        """``column`` names one of the users of ``:users`` (exactly)."""
        return f"BINARY {column} IN :users" if self.dialect == "mysql" else f"{column} IN :users"

    def unknown(self) -> list[str]:
        """Tables with a ``user_id`` column sessionctl has no rule for."""
        return sorted(t for t in self.user_tables if t not in _ACTIONS and t != FS)


def _tick(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _run(conn: Connection, sql: str, users: list[str] | None = None, **params: Any) -> Any:
    stmt = text(sql)
    if users is not None:
        stmt = stmt.bindparams(bindparam("users", expanding=True))
        params["users"] = users
    return conn.execute(stmt, params)


def read_layout(conn: Connection, dialect: str, schema: str | None, renamed: dict[str, str]) -> SqlLayout:
    """The tables of the database (``renamed``: the ``*_table`` arguments the agent gave Agno's class)."""
    names = {TABLE_KWARGS[k]: v for k, v in renamed.items() if k in TABLE_KWARGS}
    if names.get(SESSIONS, SESSIONS) != SESSIONS and "runs_table" not in renamed:  # Agno's own rule
        names[RUNS] = f"{names[SESSIONS]}_runs"
    if dialect == "mysql":
        rows = _run(
            conn,
            "SELECT table_name AS t, max(column_name = 'user_id') AS u FROM information_schema.columns"
            " WHERE table_schema = :schema GROUP BY table_name",
            schema=schema,
        ).all()
        present, keyed = {str(r[0]) for r in rows}, {str(r[0]) for r in rows if r[1]}
    else:
        present = {str(r[0]) for r in _run(conn, "SELECT name FROM sqlite_master WHERE type = 'table'").all()}
        keyed = {t for t in present if _has_user_id(conn, t)}
    back = {v: k for k, v in names.items()}
    layout = SqlLayout(dialect, schema, present, names)
    layout.user_tables = sorted(back.get(t, t) for t in keyed)
    return layout


def _has_user_id(conn: Connection, table: str) -> bool:
    quoted = '"' + table.replace('"', '""') + '"'
    return any(c[1] == "user_id" for c in _run(conn, f"PRAGMA table_info({quoted})").all())


def count_person(conn: Connection, layout: SqlLayout, users: list[str]) -> dict[str, int]:
    """The users' rows per table (Agno's names): every table with a ``user_id`` column, the login
    records, and the rows that hang off their sessions (transcripts, tool-result payloads)."""
    out = {t: _count(conn, f"{layout.q(t)} WHERE {layout.owner()}", users) for t in layout.user_tables}
    for table, columns, _ in AUTHZ:
        if layout.has(table):
            where = " OR ".join(layout.owner(c) for c in columns)
            out[table] = _count(conn, f"{layout.q(table)} WHERE {where}", users)
    if layout.has(TRANSCRIPTS) and layout.has(SESSIONS):
        where = f"agno_session_id IN ({_sessions(layout)})"
        out[TRANSCRIPTS] = _count(conn, f"{layout.q(TRANSCRIPTS)} WHERE {where}", users)
    if layout.has(TOOL_RESULTS) and layout.has(FS):  # payloads of their tool results (kept with user_id '')
        out["agno_fs payloads"] = _count(conn, f"{layout.q(FS)} WHERE {_payload_of(layout)}", users)
    return out


def _payload_of(layout: SqlLayout) -> str:
    """An ``agno_fs`` row is the payload of a tool result of the users (or of their sessions)."""
    fs, sessions = layout.q(FS), _sessions(layout) if layout.has(SESSIONS) else None
    owned = layout.owner("r.user_id") + (f" OR r.session_id IN ({sessions})" if sessions else "")
    return (
        f"EXISTS (SELECT 1 FROM {layout.q(TOOL_RESULTS)} r WHERE ({owned})"
        f" AND r.namespace = {fs}.namespace AND r.path = {fs}.path)"
    )


def _count(conn: Connection, where: str, users: list[str]) -> int:
    return int(_run(conn, f"SELECT count(*) FROM {where}", users).scalar() or 0)


def _sessions(layout: SqlLayout) -> str:
    return f"SELECT session_id FROM {layout.q(SESSIONS)} WHERE {layout.owner()}"


def erase_person(conn: Connection, layout: SqlLayout, users: list[str]) -> dict[str, int]:
    """Delete (or anonymize) the users' rows, children first, in the caller's transaction: what
    Agno's ``delete_sessions`` removes with their sessions (runs, transcripts, compactions, tool
    results and their payloads), every other table with a ``user_id`` column, their AgentFS
    partition and their login records; rows touched per table."""
    sessions = _sessions(layout) if layout.has(SESSIONS) else None
    out = _erase_children(conn, layout, users, sessions)
    for table in [t for t in layout.user_tables if t != SESSIONS] + ([SESSIONS] if sessions else []):
        q = layout.q(table)
        head = f"DELETE FROM {q}" if _ACTIONS.get(table, "delete") == "delete" else f"UPDATE {q} SET user_id = NULL"
        out[table] = out.get(table, 0) + _run(conn, f"{head} WHERE {layout.owner()}", users).rowcount
    for table, columns, head in AUTHZ:
        if layout.has(table):
            where = " OR ".join(layout.owner(c) for c in columns)
            out[table] = _run(conn, f"{head.format(t=layout.q(table))} WHERE {where}", users).rowcount
    return {t: int(n) for t, n in out.items() if n}


def _erase_children(conn: Connection, layout: SqlLayout, users: list[str], sessions: str | None) -> dict[str, int]:
    """What hangs off the users' sessions and traces, deleted before them: transcripts, tool-result
    payloads, spans, runs, compactions, tool results."""
    out: dict[str, int] = {}
    if sessions and layout.has(TRANSCRIPTS):
        q = layout.q(TRANSCRIPTS)
        out[TRANSCRIPTS] = _run(conn, f"DELETE FROM {q} WHERE agno_session_id IN ({sessions})", users).rowcount
    if layout.has(TOOL_RESULTS) and layout.has(FS):  # the payloads their tool results point at
        out[FS] = _run(conn, f"DELETE FROM {layout.q(FS)} WHERE {_payload_of(layout)}", users).rowcount
    if layout.has(TRACES) and layout.has(SPANS):
        traces = f"SELECT trace_id FROM {layout.q(TRACES)} WHERE {layout.owner()}"
        out[SPANS] = _run(conn, f"DELETE FROM {layout.q(SPANS)} WHERE trace_id IN ({traces})", users).rowcount
    for child in (RUNS, COMPACTIONS, TOOL_RESULTS):
        if sessions and layout.has(child):
            out[child] = _run(conn, f"DELETE FROM {layout.q(child)} WHERE session_id IN ({sessions})", users).rowcount
    return out


def person_rows(conn: Connection, layout: SqlLayout, user: str) -> list[dict[str, Any]]:
    """Every row of the person, table by table (an access export)."""
    out: list[dict[str, Any]] = []
    for table in layout.user_tables:
        result = _run(conn, f"SELECT * FROM {layout.q(table)} WHERE {layout.owner()}", [user])
        out += [{"table": table, "row": dict(r._mapping)} for r in result]
    for table, columns, _ in AUTHZ:
        if layout.has(table):
            where = " OR ".join(layout.owner(c) for c in columns)
            result = _run(conn, f"SELECT * FROM {layout.q(table)} WHERE {where}", [user])
            out += [{"table": table, "row": dict(r._mapping)} for r in result]
    return out


def owners(conn: Connection, layout: SqlLayout) -> Counter[str]:
    """Every owner id with its rows, over the tables with a ``user_id`` column (the re-sweep)."""
    found: Counter[str] = Counter()
    for table in layout.user_tables:
        key = "BINARY user_id" if layout.dialect == "mysql" else "user_id"  # 'Alice' and 'alice' are two people
        rows = _run(conn, f"SELECT {key}, count(*) FROM {layout.q(table)} WHERE user_id <> '' GROUP BY {key}")
        for uid, n in rows.all():
            found[uid.decode() if isinstance(uid, bytes) else str(uid)] += int(n)
    return found


def run_ids(conn: Connection, layout: SqlLayout, users: list[str]) -> set[str]:
    """The ids of the users' runs, and of every run of their sessions."""
    if not layout.has(RUNS):
        return set()
    where = layout.owner() + (f" OR session_id IN ({_sessions(layout)})" if layout.has(SESSIONS) else "")
    return {str(r[0]) for r in _run(conn, f"SELECT run_id FROM {layout.q(RUNS)} WHERE {where}", users).all()}


def _older(layout: SqlLayout, table: str, keep: list[str]) -> str:
    """The table's rows last updated (else created) before ``:cutoff``, none of them of the users
    of ``keep`` (bound as ``:users``; a row of no user is of none of them)."""
    where = f"{layout.q(table)} WHERE coalesce(updated_at, created_at) < :cutoff"
    return where + (f" AND (user_id IS NULL OR NOT ({layout.owner()}))" if keep else "")


def _expired_sessions(layout: SqlLayout, keep: list[str]) -> str:
    return f"SELECT session_id FROM {_older(layout, SESSIONS, keep)}"


def count_expired(conn: Connection, layout: SqlLayout, cutoff: int, keep: list[str] | None = None) -> int:
    """Sessions and memories last updated (else created) before ``cutoff`` (a retention policy),
    none of the users of ``keep`` (under a legal hold)."""
    held = list(keep or ())
    n = 0
    for table in (SESSIONS, MEMORIES):
        if layout.has(table):
            found = _run(conn, f"SELECT count(*) FROM {_older(layout, table, held)}", held or None, cutoff=cutoff)
            n += int(found.scalar() or 0)
    return n


def delete_expired(conn: Connection, layout: SqlLayout, cutoff: int, keep: list[str] | None = None) -> int:
    """Delete them, each session with what Agno's ``delete_sessions`` takes with it, in the caller's
    transaction; how many sessions and memories went."""
    held = list(keep or ())
    users = held or None
    n = 0
    if layout.has(SESSIONS):
        sessions = _expired_sessions(layout, held)
        if layout.has(TRANSCRIPTS):
            q = layout.q(TRANSCRIPTS)
            _run(conn, f"DELETE FROM {q} WHERE agno_session_id IN ({sessions})", users, cutoff=cutoff)
        if layout.has(TOOL_RESULTS) and layout.has(FS):
            fs = layout.q(FS)
            _run(
                conn,
                f"DELETE FROM {fs} WHERE EXISTS (SELECT 1 FROM {layout.q(TOOL_RESULTS)} r WHERE r.session_id IN"
                f" ({sessions}) AND r.namespace = {fs}.namespace AND r.path = {fs}.path)",
                users,
                cutoff=cutoff,
            )
        for child in (RUNS, COMPACTIONS, TOOL_RESULTS):
            if layout.has(child):
                _run(conn, f"DELETE FROM {layout.q(child)} WHERE session_id IN ({sessions})", users, cutoff=cutoff)
    for table in (SESSIONS, MEMORIES):
        if layout.has(table):
            n += _run(conn, f"DELETE FROM {_older(layout, table, held)}", users, cutoff=cutoff).rowcount
    return int(n)


def namespace_files(conn: Connection, layout: SqlLayout, namespaces: list[str], *, erase: bool = False) -> int:
    """AgentFS files in namespaces named after the person (a ``{user_id}`` template: kept with
    ``user_id = ''``): counted, or deleted."""
    if not namespaces or not layout.has(FS):
        return 0
    where = f"{layout.q(FS)} WHERE namespace IN :users AND user_id = ''"
    if erase:
        return int(_run(conn, f"DELETE FROM {where}", namespaces).rowcount)
    return int(_run(conn, f"SELECT count(*) FROM {where}", namespaces).scalar() or 0)


def namespace_rows(conn: Connection, layout: SqlLayout, namespaces: list[str]) -> list[dict[str, Any]]:
    if not namespaces or not layout.has(FS):
        return []
    result = _run(conn, f"SELECT * FROM {layout.q(FS)} WHERE namespace IN :users AND user_id = ''", namespaces)
    return [{"table": FS, "row": dict(r._mapping)} for r in result]
