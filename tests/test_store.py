"""The SQL of a purge batch, on real Postgres: owner-checked, atomic, keyed on what it deleted."""

from __future__ import annotations

import asyncpg

from sessionctl import store
from sessionctl.config import Settings
from tests.agno_seed import add_payloads, agno_db, ensure_payload_table, seed_sessions


async def test_a_session_that_changed_owner_after_the_snapshot_is_neither_deleted_nor_stripped(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    await ensure_payload_table(pg)
    db = agno_db(settings.database_url, schema)
    ids = await seed_sessions(db, agent_id, "alice", 4, extras=True)
    await db.close()
    await add_payloads(pg, schema)
    await store.init_connection(pg)
    layout = await store.read_layout(pg, schema)
    assert layout is not None and layout.has(store.RUNS) and layout.payload_table
    assert await store.snapshot_user_session_ids(pg, layout, ["alice"]) == 4
    snapshot = await store.next_snapshot_ids(pg, None, 100)
    assert sorted(snapshot) == sorted(ids)

    moved = ids[1]  # handed to bob between the snapshot and the delete
    await pg.execute(f'UPDATE "{schema}".agno_sessions SET user_id = $1 WHERE session_id = $2', "bob", moved)

    outcome = await store.delete_user_sessions(pg, layout, "alice", snapshot)
    c = outcome.counts
    assert (c.sessions, c.runs, c.transcripts, c.tool_results, c.tool_result_payloads) == (3, 6, 3, 3, 3)
    left = await pg.fetch(f'SELECT session_id, user_id FROM "{schema}".agno_sessions')
    assert [(r["session_id"], r["user_id"]) for r in left] == [(moved, "bob")]
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_runs WHERE session_id = $1', moved) == 2
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_transcripts WHERE agno_session_id = $1', moved) == 1
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_tool_results WHERE session_id = $1', moved) == 1
    assert await pg.fetchval("SELECT count(*) FROM fs.agno_fs WHERE namespace = $1", schema) == 1
    assert await store.count_user_sessions(pg, layout, ["alice"]) == 0


async def test_snapshot_paging_is_keyset_and_complete(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    db = agno_db(settings.database_url, schema)
    ids = await seed_sessions(db, agent_id, "zed", 25, runs=0)
    await db.close()
    layout = await store.read_layout(pg, schema)
    assert layout is not None
    await store.snapshot_user_session_ids(pg, layout, ["zed"])
    seen: list[str] = []
    after = None
    while page := await store.next_snapshot_ids(pg, after, 7):
        seen.extend(page)
        after = page[-1]
    assert seen == sorted(ids)
