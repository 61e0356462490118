"""Demo data for a first try: sessions, runs and memories of a few users at the agent's schema,
exactly as Agno writes them — agno 3.x through Agno's own ``AsyncPostgresDb``, or the agno 2.x
layout (runs inside the session row, what xpander pins) from a dump that agno 2.5.14 itself wrote
(``sessionctl/data/``; ``tests/fixtures/regenerate.sh`` writes it again)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sessionctl.config import Settings
from sessionctl.errors import AgnoNotInstalled, InvalidRequest
from sessionctl.identifiers import validate_agent_id

MAX_USERS, MAX_SESSIONS = 1000, 10_000
DUMP_2X = Path(__file__).resolve().parent / "data" / "agno-2.5.14-xpander-schema.sql"
DUMP_SCHEMA, DUMP_AGENT, DUMP_USERS = "ag_fixture_legacy", "fixture-legacy", ("alice", "bob")


@dataclass(frozen=True, slots=True)
class Seeded:
    agent_id: str
    schema: str
    users: list[str]
    sessions: int
    runs: int
    memories: int


def user_name(i: int) -> str:
    return f"demo-user-{i}"


async def seed(settings: Settings, agent_id: str, *, users: int = 3, sessions: int = 20, runs: int = 2) -> Seeded:
    """Write ``sessions`` sessions of ``runs`` runs and one memory for each of ``users`` users
    (``demo-user-1`` …). Ids are fixed, so seeding again rewrites the same rows."""
    validate_agent_id(agent_id)
    if not 1 <= users <= MAX_USERS or not 1 <= sessions <= MAX_SESSIONS or not 0 <= runs <= 20:
        raise InvalidRequest(f"demo data: 1–{MAX_USERS} users, 1–{MAX_SESSIONS} sessions each, 0–20 runs each")
    try:
        from agno.db.postgres import AsyncPostgresDb
        from agno.db.schemas.memory import UserMemory
    except ImportError as exc:
        raise AgnoNotInstalled() from exc

    schema = settings.schema_for(agent_id)
    db = AsyncPostgresDb(db_url=settings.dsn.sqlalchemy_async, db_schema=schema)
    names = [user_name(i) for i in range(1, users + 1)]
    start = int(time.time()) - 86_400
    try:
        for user in names:
            for i in range(sessions):
                await write_session(
                    db,
                    agent_id=agent_id,
                    user_id=user,
                    session_id=f"demo-{agent_id}-{user}-s{i}",
                    at=start + i * 60,
                    name=f"chat {i + 1} of {user}",
                    answers=[f"answer {r + 1} in chat {i + 1}" for r in range(runs)],
                )
            memory = UserMemory(memory=f"{user} prefers short answers", user_id=user, memory_id=f"demo-{user}-m0")
            await db.upsert_user_memory(memory)
    finally:
        await db.close()
    return Seeded(agent_id, schema, names, users * sessions, users * sessions * runs, users)


async def write_session(
    db: Any,
    *,
    agent_id: str,
    user_id: str,
    session_id: str,
    at: int,
    name: str,
    answers: list[str],
    metadata: dict[str, Any] | None = None,
) -> None:
    """One agent session and a completed run per answer, through Agno's own upserts (``db``: an
    agno ``AsyncPostgresDb``), as an agent writes them. The tests' seed data is written the same way."""
    from agno.run.agent import RunOutput
    from agno.run.base import RunStatus
    from agno.session import AgentSession

    session = AgentSession(
        session_id=session_id,
        agent_id=agent_id,
        user_id=user_id,
        session_data={"session_name": name},
        metadata=metadata,
        created_at=at,
        updated_at=at,
    )
    if await db.upsert_session(session) is None:
        raise InvalidRequest(f"Agno could not write a session into {db.db_schema}: see the Postgres log")
    for r, answer in enumerate(answers):
        run = RunOutput(
            run_id=f"{session_id}-r{r}",
            agent_id=agent_id,
            session_id=session_id,
            user_id=user_id,
            content=answer,
            status=RunStatus.completed,
            created_at=at,
        )
        await db.upsert_run(run, session_id=session_id, user_id=user_id, run_index=r)


async def seed_2x(settings: Settings, agent_id: str) -> Seeded:
    """The agno 2.x layout at a new agent schema: demo-user-1 (3 sessions) and demo-user-2 (2),
    2 runs inside each session row, a memory each — rows agno 2.5.14 wrote, renamed."""
    from sessionctl.databases import Databases

    validate_agent_id(agent_id)
    schema = settings.schema_for(agent_id)
    names = [user_name(i) for i in range(1, len(DUMP_USERS) + 1)]
    sql = DUMP_2X.read_text(encoding="utf-8").replace(DUMP_SCHEMA, schema).replace(DUMP_AGENT, agent_id)
    for old, new in zip(DUMP_USERS, names, strict=True):
        sql = sql.replace(f"'{old}'", f"'{new}'").replace(f"-{old}-", f"-{new}-").replace(f" {old}", f" {new}")
    dbs = Databases(pool_size=1)
    try:
        async with dbs.connect(settings.dsn) as conn:
            if await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
                raise InvalidRequest(
                    f"schema {schema} exists already: the 2.x demo writes a new agent, pick another --agent"
                )
            await conn.execute(sql)
            sessions = await conn.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions')
    finally:
        await dbs.close()
    return Seeded(agent_id, schema, names, int(sessions), int(sessions) * 2, len(names))
