"""Test data written through Agno's own API (so tests follow Agno's real layouts), and cloned in
SQL from those Agno-written rows when a test needs volume."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
from agno.db.postgres import AsyncPostgresDb
from agno.db.schemas.memory import UserMemory

from sessionctl.demo import DUMP_2X, write_session

# A pg_dump of one agent schema as xpander writes it (agno 2.5.14): the one `demo seed --layout 2x`
# loads, shipped in sessionctl/data/; tests/fixtures/regenerate.sh writes it again.
FIXTURE_2X = DUMP_2X
FIXTURE_2X_SCHEMA = "ag_fixture_legacy"


def agno_db(db_url: str, schema: str) -> AsyncPostgresDb:
    return AsyncPostgresDb(db_url=db_url.replace("postgresql://", "postgresql+psycopg://"), db_schema=schema)


async def seed_sessions(
    db: AsyncPostgresDb,
    agent_id: str,
    user_id: str,
    count: int,
    *,
    runs: int = 2,
    base_ts: int | None = None,
    prefix: str | None = None,
    extras: bool = False,
) -> list[str]:
    """``count`` sessions of ``user_id``, each with ``runs`` runs, written by Agno.

    With ``extras``, each session also gets an external-agent transcript and an offloaded tool
    result whose payload sits in ``fs.agno_fs`` — everything Agno's delete cascades to.
    """
    base_ts = base_ts or int(time.time()) - 10_000
    prefix = prefix or f"{agent_id}-{user_id}"
    ids = []
    for i in range(count):
        sid = f"{prefix}-s{i}"
        ts = base_ts + i
        await write_session(
            db,
            agent_id=agent_id,
            user_id=user_id,
            session_id=sid,
            at=ts,
            name=f"chat {i} of {user_id}",
            answers=[f"answer {r} for {user_id}" for r in range(runs)],
            metadata={"n": i},
        )
        if extras:
            await db.append_transcript_entries(
                framework="claude_code",
                project_key="proj",
                session_id=f"ext-{sid}",
                entries=[{"uuid": f"{sid}-t0", "text": f"transcript of {user_id}"}],
                agno_session_id=sid,
            )
            await db.upsert_tool_result(
                {
                    "result_id": f"{sid}-tr0",
                    "namespace": f"{db.db_schema}",
                    "path": f"/results/{sid}.txt",
                    "session_id": sid,
                    "run_id": f"{sid}-r0",
                    "tool_call_id": "call-1",
                    "tool_name": "search",
                    "args_hash": "h",
                    "content_type": "text/plain",
                    "size_bytes": 10,
                    "line_count": 1,
                    "preview": "prev",
                    "user_id": user_id,
                    "created_at": ts,
                    "expires_at": None,
                }
            )
        ids.append(sid)
    return ids


async def seed(db_url: str, schema: str, agent_id: str, user_id: str, count: int, **kw: Any) -> list[str]:
    """:func:`seed_sessions` through an Agno client of its own (opened, then closed)."""
    db = agno_db(db_url, schema)
    try:
        return await seed_sessions(db, agent_id, user_id, count, **kw)
    finally:
        await db.close()


async def seed_memory(db: AsyncPostgresDb, agent_id: str, user_id: str, n: int = 1) -> None:
    for i in range(n):
        await db.upsert_user_memory(
            UserMemory(memory=f"{user_id} likes tea {i}", memory_id=f"{agent_id}-{user_id}-m{i}", user_id=user_id)
        )


async def ensure_payload_table(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        CREATE SCHEMA IF NOT EXISTS fs;
        CREATE TABLE IF NOT EXISTS fs.agno_fs (
            namespace varchar NOT NULL, path varchar NOT NULL, content text NOT NULL,
            size_bytes bigint NOT NULL, version bigint NOT NULL, created_at bigint NOT NULL,
            updated_at bigint, user_id varchar NOT NULL DEFAULT '', PRIMARY KEY (namespace, path))
        """
    )


async def add_payloads(conn: asyncpg.Connection, schema: str) -> int:
    """A payload in fs.agno_fs for every tool-result index row of the schema (as Agno's store writes)."""
    status = await conn.execute(
        f"INSERT INTO fs.agno_fs (namespace, path, content, size_bytes, version, created_at, user_id) "
        f"SELECT namespace, path, 'payload of ' || coalesce(user_id, ''), 10, 1, created_at, coalesce(user_id, '') "
        f'FROM "{schema}".agno_tool_results ON CONFLICT DO NOTHING'
    )
    return int(status.split()[-1])


async def clone_sessions(
    conn: asyncpg.Connection, schema: str, template_id: str, user_id: str | list[str], n: int, tag: str
) -> None:
    """``n`` copies of an Agno-written session (and its runs) for ``user_id`` — or for each user of a
    list — in SQL, for volume."""
    users = [user_id] if isinstance(user_id, str) else user_id
    suffix = f"'-{tag}' || g" if isinstance(user_id, str) else f"'-{tag}' || u.k || '-' || g"
    copies = "unnest($2::text[]) WITH ORDINALITY u(id, k), generate_series(1, $3) g"
    await conn.execute(
        f"""
        INSERT INTO "{schema}".agno_sessions (session_id, session_type, agent_id, team_id, workflow_id, user_id,
               session_data, agent_data, team_data, workflow_data, metadata, summary, created_at, updated_at)
        SELECT s.session_id || {suffix}, s.session_type, s.agent_id, s.team_id, s.workflow_id, u.id,
               s.session_data, s.agent_data, s.team_data, s.workflow_data, s.metadata, s.summary,
               s.created_at + g, s.updated_at + g
          FROM "{schema}".agno_sessions s, {copies} WHERE s.session_id = $1
        """,
        template_id,
        users,
        n,
    )
    cols = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema=$1 AND table_name='agno_runs' "
        "ORDER BY ordinal_position",
        schema,
    )
    names = [c["column_name"] for c in cols]
    select = []
    for c in names:
        if c in ("run_id", "session_id"):
            select.append(f"r.{c} || {suffix}")
        elif c == "user_id":
            select.append("u.id")
        else:
            select.append(f"r.{c}")
    await conn.execute(
        f'INSERT INTO "{schema}".agno_runs ({", ".join(names)}) SELECT {", ".join(select)} '
        f'FROM "{schema}".agno_runs r, {copies} WHERE r.session_id = $1',
        template_id,
        users,
        n,
    )


async def load_2x_fixture(conn: asyncpg.Connection, schema: str) -> None:
    """The shared agno 2.5.14 dump (runs inside the session row), renamed into ``schema``."""
    sql = FIXTURE_2X.read_text().replace(FIXTURE_2X_SCHEMA, schema)
    lines = [ln for ln in sql.splitlines() if not ln.startswith("SELECT pg_catalog.set_config")]
    await conn.execute("\n".join(lines))


async def table_rows(conn: asyncpg.Connection, schema: str) -> dict[str, list[Any]]:
    """Every row of every table of a schema, as sorted JSON text, for row-for-row comparison.

    Write-time stamps (``created_at``/``updated_at``, which Agno sets from the clock) are left out.
    """
    tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename", schema)
    out: dict[str, list[Any]] = {}
    for t in tables:
        name = t["tablename"]
        rows = await conn.fetch(
            f"SELECT (to_jsonb(x) - 'created_at' - 'updated_at')::text AS j FROM \"{schema}\".\"{name}\" x"
        )
        out[name] = sorted(r["j"].replace(schema, "<schema>") for r in rows)
    return out


async def seed_indexed_user(
    database_url: str, pg: asyncpg.Connection, schema: str, agent_id: str, user: str, n: int
) -> list[str]:
    """``n`` sessions of ``user`` (one written by Agno, the rest cloned) in an agent schema with
    the doctor's ``(user_id, created_at, session_id)`` index; the user's session ids in index order."""
    from sessionctl import store

    await seed(database_url, schema, agent_id, user, 1)
    await clone_sessions(pg, schema, f"{agent_id}-{user}-s0", user, n - 1, "c")
    await store.create_index(pg, schema, store.NEEDED_INDEXES[0])
    rows = await pg.fetch(
        f'SELECT session_id FROM "{schema}".agno_sessions WHERE user_id = $1 ORDER BY created_at, session_id', user
    )
    return [r["session_id"] for r in rows]


async def seed_media_session(
    db: AsyncPostgresDb, storage: Any, *, agent_id: str, user_id: str, session_id: str, images: int = 2
) -> list[str]:
    """A session whose run carries ``images`` images offloaded by Agno's own path
    (``offload_run_media``) to ``storage`` (an Agno ``MediaStorage``); the storage keys."""
    from agno.media import Image
    from agno.run.agent import RunOutput
    from agno.run.base import RunStatus
    from agno.utils.media_offload import offload_run_media

    await write_session(
        db, agent_id=agent_id, user_id=user_id, session_id=session_id, at=int(time.time()), name="pics", answers=[]
    )
    run = RunOutput(
        run_id=f"{session_id}-r-media",
        agent_id=agent_id,
        session_id=session_id,
        user_id=user_id,
        content="here are your pictures",
        status=RunStatus.completed,
        created_at=int(time.time()),
        images=[Image(content=f"{session_id} picture {i}".encode(), mime_type="image/png") for i in range(images)],
    )
    if run.images:  # one object referenced twice, as Agno does for an input image the message carries too
        run.images.append(run.images[0])
    offload_run_media(run, storage, session_id)
    await db.upsert_run(run, session_id=session_id, user_id=user_id, run_index=0)
    return list(dict.fromkeys(img.media_reference.storage_key for img in run.images or []))


def seed_vectors(sa_url: str, schema: str, table: str, chunks: dict[str | None, int]) -> None:
    """Chunks written by Agno's own ``PgVector`` (the table created by it): ``{user_id: n}``, None
    for shared chunks."""
    from dataclasses import dataclass

    from agno.knowledge.document import Document
    from agno.knowledge.embedder.base import Embedder
    from agno.vectordb.pgvector import PgVector

    @dataclass
    class Tiny(Embedder):  # a deterministic 3-dimensional embedding: no model, no network
        dimensions: int | None = 3

        def get_embedding(self, text: str) -> list[float]:
            return [float(len(text)), 1.0, 0.5]

        def get_embedding_and_usage(self, text: str) -> tuple[list[float], dict[str, Any] | None]:
            return self.get_embedding(text), None

    vectors = PgVector(table_name=table, schema=schema, db_url=sa_url, embedder=Tiny())
    vectors.create()
    for user, n in chunks.items():
        docs = [Document(content=f"chunk {i} of {user or 'everyone'}") for i in range(n)]
        vectors.insert(f"hash-{user}", docs, user_id=user)


def seed_authz(sa_url: str, schema: str, users: list[str]) -> None:
    """AgentOS login records through Agno's own authz API: a user record and a role each, a change
    event naming the user (as target; an admin as actor) and an access decision (the user as actor)."""
    from agno.db.postgres import PostgresDb

    db = PostgresDb(db_url=sa_url, db_schema=schema)
    now = int(time.time())
    for u in users:
        db.upsert_authz_user(
            u, {"email": f"{u}@example.com", "name": u.title(), "disabled": False, "created_at": now, "updated_at": now}
        )
        db.assign_authz_role(u, "viewer")
        db.record_authz_audit_event(
            {
                "event_id": f"audit-{u}",
                "created_at": now,
                "actor": "admin",
                "action": "user.created",
                "target": u,
                "after": f'[{{"id": "{u}", "email": "{u}@example.com"}}]',
            }
        )
        db.record_authz_decision(
            {
                "event_id": f"decision-{u}",
                "created_at": now,
                "actor": u,
                "action": "access.allowed",
                "target": "GET /sessions",
                "token_ref": f"jti-{u}",
            }
        )
