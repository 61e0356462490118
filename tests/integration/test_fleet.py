"""An erasure at every agent of a fleet: the schemas holding the user are found by a few counting
statements, only they are purged, every schema is recounted — bystanders untouched row for row,
every layout (3.x, 2.x runs in the row, no runs table), agents dropped or created meanwhile, and
late writes into a schema already passed caught by the recount and purged in the next round."""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog

from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.demo import seed_2x
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.purge import purge_targets
from sessionctl.jobs.spec import Spec
from sessionctl.jobs.targets import resolve_targets
from sessionctl.producer import Producer
from tests.agno_seed import agno_db, seed, seed_sessions
from tests.conftest import run_worker

USER, OTHER = "demo-user-1", "demo-user-2"  # the names the 2.x dump holds too


async def _agents(s: Settings, conn: asyncpg.Connection, n: int, holders: set[int]) -> list[str]:
    """``n`` agents in Agno's 3.x layout, OTHER in each (2 sessions), USER in ``holders`` (3 each)."""
    names = [f"fleet-{i:03d}" for i in range(n)]
    for i, agent in enumerate(names):
        db = agno_db(s.database_url, s.schema_for(agent))
        await seed_sessions(db, agent, OTHER, 2)
        if i in holders:
            await seed_sessions(db, agent, USER, 3)
        await db.close()
    return names


async def _no_runs_table(s: Settings, conn: asyncpg.Connection, template: str, agent: str) -> str:
    """An agent whose schema has sessions and no runs table (a layout Agno never had, but a fleet may)."""
    schema = s.schema_for(agent)
    await conn.execute(
        f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".agno_sessions (LIKE "{template}".agno_sessions INCLUDING ALL)'
    )
    await conn.execute(
        f'INSERT INTO "{schema}".agno_sessions SELECT * FROM "{template}".agno_sessions WHERE user_id IN ($1, $2)',
        USER,
        OTHER,
    )
    return schema


async def _per_schema(conn: asyncpg.Connection, who: str) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'agno_sessions'"
    )
    return {
        r["nspname"]: int(
            await conn.fetchval(f'SELECT count(*) FROM "{r["nspname"]}".agno_sessions WHERE user_id = $1', who)
        )
        for r in rows
    }


async def test_all_agents_purges_only_the_schemas_holding_the_user_and_recounts_every_one(
    own_database: tuple[Settings, asyncpg.Connection],
) -> None:
    s, conn = own_database
    names = await _agents(s, conn, 24, holders={2, 9, 17})
    await seed_2x(s, "fleet-legacy")  # agno 2.x: runs inside the row; USER 3 sessions, OTHER 2
    bare = await _no_runs_table(s, conn, s.schema_for(names[2]), "fleet-bare")
    others_before = await _per_schema(conn, OTHER)

    async with Producer(s) as producer:
        dry = await producer.purge_user_sessions(all_agents=True, user_id=USER, dry_run=True)
        await run_worker(s)
        enq = await producer.purge_user_sessions(all_agents=True, user_id=USER)
        await run_worker(s)
        dry_state, state = await producer.status(dry.job_id), await producer.status(enq.job_id)
    assert dry_state.status == "dry_run" and dry_state.result["would_delete"]["sessions"] == 3 * 3 + 3 + 3
    assert state.status == "succeeded", state
    r = state.result
    held = {s.schema_for(names[i]) for i in (2, 9, 17)} | {s.schema_for("fleet-legacy"), bare}
    assert set(r["agents"]) == held  # only the schemas that held the user
    assert r["schemas_checked"] == 26 and r["sessions_deleted"] == 15 and r["remaining"] == 0
    assert r["agents"][s.schema_for("fleet-legacy")]["runs_deleted"] == 6  # 2 runs inside each row
    assert all(n == 0 for n in (await _per_schema(conn, USER)).values())
    assert await _per_schema(conn, OTHER) == others_before  # bystanders untouched, schema by schema
    receipt = await conn.fetchrow("SELECT counts, agents FROM sessionctl.receipts WHERE job_id = $1", enq.job_id)
    assert receipt is not None and '"schemas_checked": 26' in receipt["counts"]


class _LateWriter:
    """Progress that, at the first batch, writes the user's sessions into a schema the first count
    already passed (as an agent still holding them in memory would)."""

    def __init__(self, url: str, schema: str, agent: str) -> None:
        self.url, self.schema, self.agent, self.done = url, schema, agent, False

    async def update(self, *, processed: int, total: int | None, agent: str | None, force: bool = False) -> None:
        if self.done:
            return
        self.done = True
        await seed(self.url, self.schema, self.agent, USER, 2, prefix=f"{self.agent}-late")


async def test_agents_dropped_or_created_meanwhile_and_late_writes_are_all_handled(
    own_database: tuple[Settings, asyncpg.Connection],
) -> None:
    s, conn = own_database
    names = await _agents(s, conn, 8, holders={1, 4})
    dbs = Databases(pool_size=2)
    late_agent = names[6]
    writer = _LateWriter(s.database_url, s.schema_for(late_agent), late_agent)
    ctx = JobContext(settings=s, databases=dbs, hash_key=b"k", job_id="fleet-test", progress=writer)  # type: ignore[arg-type]
    try:
        targets = await resolve_targets(ctx, None, True)
        # after the job resolved its agents: one holding the user is dropped, a new one holding them appears
        await conn.execute(f'DROP SCHEMA "{s.schema_for(names[4])}" CASCADE')
        db = agno_db(s.database_url, s.schema_for("fleet-new"))
        await seed_sessions(db, "fleet-new", USER, 2)
        await seed_sessions(db, "fleet-new", OTHER, 1)
        await db.close()
        log: Any = structlog.get_logger()
        agents, _, checked = await purge_targets(ctx, Spec([USER], shared_files=True), targets, log)
    finally:
        await dbs.close()
    assert writer.done
    left = await _per_schema(conn, USER)
    assert all(n == 0 for n in left.values()), left
    assert s.schema_for(names[4]) not in left  # dropped, rows and all
    assert agents[s.schema_for(late_agent)].sessions_deleted == 2  # the late writes, next round
    assert agents[s.schema_for("fleet-new")].sessions_deleted == 2  # created meanwhile
    assert agents[s.schema_for(names[1])].sessions_deleted == 3
    assert checked == 8  # 8 - 1 dropped + 1 created
    assert (await _per_schema(conn, OTHER))[s.schema_for("fleet-new")] == 1
