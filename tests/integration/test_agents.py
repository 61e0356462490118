"""The local per-agent API: the SDK's helpers, its error contract, caching and complete listing."""

from __future__ import annotations

import asyncpg
import pytest

from sessionctl.agents import AgentHandle
from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.errors import AgentNotFound, InvalidConnectionURI, NotAgnoStorage
from tests.agno_seed import agno_db, clone_sessions, load_2x_fixture, seed, seed_sessions

USER = "hank-0c@example.com"


async def test_lists_all_sessions_newest_first_with_a_tie_breaker_equal_to_what_agno_returns(
    settings: Settings, pg: asyncpg.Connection, databases: Databases, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    db = agno_db(settings.database_url, schema)
    await seed_sessions(db, agent_id, USER, 30, base_ts=1_700_000_000)
    # 40 more sessions sharing one created_at: only the tie-breaker orders them
    await seed_sessions(db, agent_id, USER, 40, base_ts=1_700_000_000, prefix="tie")
    await pg.execute(f"UPDATE \"{schema}\".agno_sessions SET created_at = 1700000005 WHERE session_id LIKE 'tie-%'")
    await seed_sessions(db, agent_id, "other", 3)
    handle = AgentHandle(agent_id, settings=settings, databases=databases)

    got = [s async for s in handle.aiter_user_sessions(USER, page_size=7)]  # many pages
    assert len(got) == 70
    keys = [(s.created_at, s.session_id) for s in got]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == 70
    assert [s.session_id for s in await handle.aget_user_sessions(USER)] == [s.session_id for s in got]
    for s in got[:10]:  # the same objects Agno itself returns: ids, user, runs, data
        theirs = await db.get_session(s.session_id)
        assert theirs is not None
        assert s.to_dict() == theirs.to_dict()
        assert len(s.runs or []) == 2
    await db.close()


async def test_reads_the_2x_layout_with_runs_inside_the_row(
    settings: Settings, pg: asyncpg.Connection, databases: Databases, agent_id: str
) -> None:
    await load_2x_fixture(pg, settings.schema_for(agent_id))
    handle = AgentHandle(agent_id, settings=settings, databases=databases)
    sessions = await handle.aget_user_sessions("alice")
    assert [s.session_id for s in sessions] == [
        "fixture-legacy-alice-x0",
        "fixture-legacy-alice-x1",
        "fixture-legacy-alice-x2",
    ]
    assert all(len(s.runs or []) == 2 for s in sessions)
    one = await handle.aget_session("fixture-legacy-bob-x0")
    assert one is not None and one.user_id == "bob" and len(one.runs or []) == 2


async def test_error_contract(settings: Settings, pg: asyncpg.Connection, databases: Databases, agent_id: str) -> None:
    missing = AgentHandle(agent_id, settings=settings, databases=databases)
    with pytest.raises(LookupError, match="does not exist"):
        await missing.aget_db()
    await pg.execute(f'CREATE SCHEMA "{missing.schema}"')
    with pytest.raises(AgentNotFound, match="has no agno_sessions table"):
        await missing.aget_user_sessions("u")
    await pg.execute(f'CREATE TABLE "{missing.schema}".agno_sessions (id int)')
    with pytest.raises(NotImplementedError) as info:
        await missing.aget_db()
    assert isinstance(info.value, NotAgnoStorage)
    bad = settings.model_copy(update={"database_url": "mysql://nope"})
    with pytest.raises(ValueError, match="not supported") as verr:
        AgentHandle(agent_id, settings=bad, databases=databases)
    assert isinstance(verr.value, InvalidConnectionURI)


async def test_clients_are_cached_per_agent_and_share_one_engine(
    settings: Settings, databases: Databases, agent_id: str
) -> None:
    agents = [f"{agent_id}-{i}" for i in range(3)]
    for a in agents:
        await seed(settings.database_url, settings.schema_for(a), a, USER, 1)
    handles = [AgentHandle(a, settings=settings, databases=databases) for a in agents]
    first = [await h.aget_db() for h in handles]
    again = [await h.aget_db() for h in handles]
    assert all(x is y for x, y in zip(first, again, strict=True))
    assert databases.clients_built == 3
    assert len({id(c.db_engine) for c in first}) == 1  # one engine (one pool) for the database
    assert [c.db_schema for c in first] == [h.schema for h in handles]
    sessions = await first[0].get_sessions(user_id=USER)
    assert len(sessions) == 1  # the cached client is a working Agno client

    small = Databases(client_cache_size=2)
    for h in handles:
        small.agno_client(h.dsn, h.schema)
    assert small.cached_clients == 2  # bounded LRU
    await small.close()


async def test_delete_one_session_and_sync_twins(
    settings: Settings, pg: asyncpg.Connection, databases: Databases, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    ids = await seed(settings.database_url, schema, agent_id, USER, 3, extras=True)
    handle = AgentHandle(agent_id, settings=settings, databases=databases)
    assert await handle.adelete_session(ids[0], user_id="someone-else") is False  # not theirs: kept
    assert await handle.adelete_session(ids[0]) is True
    assert await handle.adelete_session(ids[0]) is False
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_runs WHERE session_id=$1', ids[0]) == 0
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_transcripts WHERE agno_session_id=$1', ids[0]) == 0

    assert [s.session_id for s in handle.get_user_sessions(USER)] == [ids[2], ids[1]]
    got = handle.get_session(ids[1])
    assert got is not None and got.session_id == ids[1]
    assert handle.delete_session(ids[1]) is True
    sync_db = handle.get_db()
    assert type(sync_db).__name__ == "PostgresDb" and sync_db.db_schema == schema


async def test_volume_listing_uses_keyset_pages(
    settings: Settings, pg: asyncpg.Connection, databases: Databases, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, USER, 1)
    await clone_sessions(pg, schema, f"{agent_id}-{USER}-s0", USER, 1500, "v")
    handle = AgentHandle(agent_id, settings=settings, databases=databases)
    pages = [len(p) async for p in handle.aiter_user_session_rows(USER, page_size=500)]
    assert pages == [500, 500, 500, 1]


async def test_sync_helpers_share_one_bridge_per_process(
    settings: Settings, databases: Databases, agent_id: str
) -> None:
    import threading

    await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 1)
    for _ in range(5):  # a fresh Settings each time, as a caller might build them
        fresh = settings.model_copy()
        assert len(AgentHandle(agent_id, settings=fresh, databases=databases).get_user_sessions(USER)) == 1
    assert sum(t.name == "sessionctl-sync" for t in threading.enumerate()) == 1


async def test_pools_are_bounded_in_number(settings: Settings, pg_database: str) -> None:
    from sessionctl.identifiers import Dsn

    dbs = Databases(pool_size=1, max_databases=2)
    urls = [pg_database, pg_database.replace("127.0.0.1", "localhost"), pg_database + "?application_name=x"]
    try:
        for url in urls:
            async with dbs.connect(Dsn.parse(url)) as conn:
                assert await conn.fetchval("SELECT 1") == 1
        assert len(dbs._pools) == 2  # the least recently used idle pool was closed
        assert Dsn.parse(urls[0]) not in dbs._pools
    finally:
        await dbs.close()


async def test_a_pool_in_use_or_being_opened_is_never_evicted(pg_database: str) -> None:
    import asyncio

    from sessionctl.errors import DatabaseUnavailable
    from sessionctl.identifiers import Dsn

    dbs = Databases(pool_size=1, max_databases=1)
    urls = [pg_database, pg_database.replace("127.0.0.1", "localhost")]

    async def use(url: str) -> str:
        try:
            async with dbs.connect(Dsn.parse(url)) as conn:
                await conn.fetchval("SELECT pg_sleep(0.05)")
                return "ok"
        except DatabaseUnavailable:
            return "busy"  # retryable: the other database holds the only slot

    try:
        results = await asyncio.gather(*[use(urls[i % 2]) for i in range(20)])
        assert set(results) <= {"ok", "busy"} and "ok" in results  # never a pool closed under a user
    finally:
        await dbs.close()
