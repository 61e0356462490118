"""sessionctl deletes exactly what Agno's own ``delete_sessions(ids, user_id=…)`` deletes.

The same data is seeded twice; one copy is purged by sessionctl (through Redis and a worker), the
other by Agno. Every table of both schemas — and the shared tool-result payload table — must then
be equal row for row. Run on Agno 3.x tables (runs in ``agno_runs``) and on the agno 2.5.14 layout
xpander writes (runs inside the session row), from the shared fixture.
"""

from __future__ import annotations

import asyncpg
import pytest

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.producer import Producer
from tests.agno_seed import (
    add_payloads,
    agno_db,
    ensure_payload_table,
    load_2x_fixture,
    seed_memory,
    seed_sessions,
    table_rows,
)
from tests.conftest import run_worker

ALICE, BOB = "alice", "bob"

# How sessionctl picks the sessions to delete: without the doctor's user_id index, a snapshot of
# ids walked by primary key; with it, the user's sessions in one statement when they fit a batch,
# or ranges of the index when they do not (batch size 4 < Alice's sessions).
PATHS = {"snapshot": (False, 2000), "index-one-batch": (True, 2000), "index-ranges": (True, 4)}


async def _choose_path(settings: Settings, pg: asyncpg.Connection, schema: str, path: str) -> Settings:
    indexed, batch_size = PATHS[path]
    if indexed:
        await store.create_index(pg, schema, store.NEEDED_INDEXES[0])
        layout = await store.read_layout(pg, schema)
        assert layout is not None and layout.user_index
    return settings.model_copy(update={"batch_size": batch_size})


async def _payloads(pg: asyncpg.Connection, schema: str) -> list[str]:
    rows = await pg.fetch("SELECT path, content, user_id FROM fs.agno_fs WHERE namespace = $1 ORDER BY path", schema)
    return [f"{r['path']}|{r['content']}|{r['user_id']}" for r in rows]


async def _purge_with_sessionctl(settings: Settings, agent: str, user: str, memories: bool) -> dict:
    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent, user_id=user, memories=memories)
        await run_worker(settings)
        state = await producer.status(enq.job_id)
    assert state.status == "succeeded", state
    assert state.result is not None
    return state.result


@pytest.mark.parametrize("path", list(PATHS))
async def test_conformance_agno_3x_layout(settings: Settings, pg: asyncpg.Connection, agent_id: str, path: str) -> None:
    ours, theirs = agent_id + "-ours", agent_id + "-agno"
    s_ours, s_theirs = settings.schema_for(ours), settings.schema_for(theirs)
    await ensure_payload_table(pg)
    for schema in (s_ours, s_theirs):
        db = agno_db(settings.database_url, schema)
        # identical content in both copies: same agent id, same session ids, same timestamps
        await seed_sessions(db, "agent-x", ALICE, 6, runs=2, extras=True, base_ts=1_700_000_000, prefix="a")
        await seed_sessions(db, "agent-x", BOB, 4, runs=2, extras=True, base_ts=1_700_000_000, prefix="b")
        await seed_memory(db, "agent-x", ALICE, 2)
        await seed_memory(db, "agent-x", BOB, 1)
        await db.close()
        assert await add_payloads(pg, schema) == 10
    assert await table_rows(pg, s_ours) == await table_rows(pg, s_theirs)  # the copies start equal
    settings = await _choose_path(settings, pg, s_ours, path)

    result = await _purge_with_sessionctl(settings, ours, ALICE, memories=True)

    db = agno_db(settings.database_url, s_theirs)
    sessions = await db.get_sessions(user_id=ALICE)
    assert len(sessions) == 6
    await db.delete_sessions([s.session_id for s in sessions], user_id=ALICE)
    memories = await db.get_user_memories(user_id=ALICE)
    await db.delete_user_memories([m.memory_id for m in memories], user_id=ALICE)
    await db.close()

    after_ours, after_theirs = await table_rows(pg, s_ours), await table_rows(pg, s_theirs)
    assert after_ours == after_theirs
    assert await _payloads(pg, s_ours) == await _payloads(pg, s_theirs)
    # and the comparison is not vacuous: Bob's rows are there, Alice's are gone
    assert len(after_ours["agno_sessions"]) == 4 and len(after_ours["agno_runs"]) == 8
    assert len(after_ours["agno_transcripts"]) == 4 and len(after_ours["agno_tool_results"]) == 4
    assert len(await _payloads(pg, s_ours)) == 4
    a = result["agents"][ours]
    assert (a["sessions_deleted"], a["runs_deleted"], a["transcripts_deleted"]) == (6, 12, 6)
    assert (a["tool_results_deleted"], a["tool_result_payloads_deleted"], a["memories_deleted"]) == (6, 6, 2)
    assert a["batches"] == {"snapshot": 1, "index-one-batch": 1, "index-ranges": 2}[path]


@pytest.mark.parametrize("path", list(PATHS))
async def test_conformance_agno_2x_layout_runs_inside_the_session_row(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, path: str
) -> None:
    ours, theirs = agent_id + "-ours", agent_id + "-agno"
    s_ours, s_theirs = settings.schema_for(ours), settings.schema_for(theirs)
    for schema in (s_ours, s_theirs):
        await load_2x_fixture(pg, schema)
    before = await table_rows(pg, s_ours)
    assert "agno_runs" not in before  # the 2.x layout: runs live in agno_sessions.runs
    assert before == await table_rows(pg, s_theirs)
    settings = await _choose_path(settings, pg, s_ours, "index-one-batch" if path == "index-ranges" else path)
    if path == "index-ranges":
        settings = settings.model_copy(update={"batch_size": 2})  # Alice has 3 sessions here

    result = await _purge_with_sessionctl(settings, ours, ALICE, memories=True)

    db = agno_db(settings.database_url, s_theirs)
    ids = [
        r["session_id"]
        for r in await pg.fetch(f'SELECT session_id FROM "{s_theirs}".agno_sessions WHERE user_id = $1', ALICE)
    ]
    await db.delete_sessions(ids, user_id=ALICE)
    memories = await db.get_user_memories(user_id=ALICE)
    await db.delete_user_memories([m.memory_id for m in memories], user_id=ALICE)
    await db.close()

    after_ours = await table_rows(pg, s_ours)
    assert after_ours == await table_rows(pg, s_theirs)
    assert len(after_ours["agno_sessions"]) == 2  # Bob's two sessions stay, runs inside them
    assert all('"user_id": "bob"' in row for row in after_ours["agno_sessions"])
    a = result["agents"][ours]
    assert (a["sessions_deleted"], a["runs_deleted"], a["memories_deleted"]) == (3, 6, 1)
    assert a["batches"] == {"snapshot": 1, "index-one-batch": 1, "index-ranges": 2}[path]
