"""What keeps an erasure across a fleet fast, on real Postgres through sessionctl's own pool: the
counts that find and prove a person are prepared once per connection and reuse one generic plan
whoever is counted (what is skipped is a parameter, not a new statement); the catalog's layout
queries never switch to a generic plan; a connection goes back to the pool without a reset round
trip, and still without a transaction left open."""

from __future__ import annotations

import asyncpg

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.privacy import user_hmac
from sessionctl.store.person import count_person
from tests.agno_seed import seed

UNIONS = "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'SELECT 0 AS i, (SELECT count(*)%'"


async def _agents(settings: Settings, conn: asyncpg.Connection, n: int) -> list[str]:
    schemas = [settings.schema_for(f"plans-{i}") for i in range(n)]
    for i, schema in enumerate(schemas):
        await seed(settings.database_url, schema, f"plans-{i}", "alice", 1 + i, runs=1)
        await seed(settings.database_url, schema, f"plans-{i}", "bob", 2, runs=1)
    return schemas


async def test_a_persons_counts_are_prepared_once_and_reuse_one_plan_whoever_is_counted(
    own_database: tuple[Settings, asyncpg.Connection],
) -> None:
    settings, admin = own_database
    schemas = await _agents(settings, admin, 3)
    dbs = Databases(pool_size=1, statement_cache_size=settings.statement_cache_size)
    try:
        async with dbs.connect(settings.dsn) as conn:
            hmac = user_hmac(b"k", "alice")
            skipped = f"{schemas[0]}.agno_sessions"  # as an erasure that recounted it a moment ago
            alice = await count_person(conn, ["alice"], [hmac], schemas=schemas, skip={skipped})
            assert skipped not in alice.rows  # not counted: not reported
            assert [alice.rows[f"{s}.agno_sessions"] for s in schemas[1:]] == [2, 3]
            assert [alice.rows[f"{s}.agno_runs"] for s in schemas] == [1, 2, 3]
            first = await conn.fetchval(UNIONS)
            assert first == 1  # 6 tables: one statement

            for who, skip in (("bob", set()), ("nobody", {f"{schemas[1]}.agno_runs"}), ("alice", set())):
                tally = await count_person(conn, [who], [hmac], schemas=schemas, skip=skip)
                want = {"bob": 2, "nobody": 0, "alice": None}[who]
                if want is not None:
                    assert {n for k, n in tally.rows.items() if k.endswith(".agno_sessions")} == {want}
            assert alice.rows[f"{schemas[2]}.agno_sessions"] == tally.rows[f"{schemas[2]}.agno_sessions"] == 3
            # the same statement each time (another person, another skip): prepared once, one plan
            assert await conn.fetchval(UNIONS) == first
            plans = await conn.fetchrow(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE 'SELECT 0 AS i, (SELECT count(*)%'"
            )
            assert plans["generic_plans"] >= 4 and plans["custom_plans"] == 0
    finally:
        await dbs.close()


async def test_the_layouts_catalog_queries_are_planned_for_their_list_every_time(
    own_database: tuple[Settings, asyncpg.Connection],
) -> None:
    """Prepared, Postgres switches a statement to a generic plan from its sixth call when it
    estimates it no worse: for the layouts' catalog queries that plan took 0.44 s where a plan for
    the actual list takes 0.02 s (docs/decisions.md)."""
    settings, admin = own_database
    schemas = await _agents(settings, admin, 2)
    dbs = Databases(pool_size=1, statement_cache_size=settings.statement_cache_size)
    try:
        async with dbs.connect(settings.dsn) as conn:
            for _ in range(8):
                layouts = await store.read_layouts(conn, schemas)
            assert sorted(layouts) == sorted(schemas)
            rows = await conn.fetch(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE (statement LIKE '%has_runs%' OR statement LIKE '%tgenabled%')"
                " AND statement NOT LIKE '%pg_prepared_statements%'"
            )
            assert len(rows) == 2
            assert all(r["generic_plans"] == 0 and r["custom_plans"] >= 8 for r in rows), [dict(r) for r in rows]
    finally:
        await dbs.close()


async def test_a_connection_goes_back_to_the_pool_without_a_transaction_left_open(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    """No reset statement on release (sessionctl keeps no session state on a connection), but a
    transaction a caller left open is still rolled back before the next one gets the connection."""
    table = f"pool_{settings.queue_name.rsplit(':', 1)[1]}"
    await pg.execute(f"CREATE TABLE public.{table} (n int)")
    dbs = Databases(pool_size=1)
    try:
        async with dbs.connect(settings.dsn) as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("BEGIN")
            await conn.execute(f"INSERT INTO public.{table} VALUES (1)")
        async with dbs.connect(settings.dsn) as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # the same connection
            assert not conn.is_in_transaction()
            assert await conn.fetchval(f"SELECT count(*) FROM public.{table}") == 0
    finally:
        await dbs.close()
        await pg.execute(f"DROP TABLE public.{table}")


async def test_the_privilege_check_finds_each_table_by_schema_and_name_under_a_generic_plan(
    own_database: tuple[Settings, asyncpg.Connection],
) -> None:
    """A pooled connection runs the privilege check on Postgres's generic plan from its sixth job
    on: it must still find each table by schema and name together — by name alone, every job at
    one agent of 2,000 read every agent's same-named tables (seconds a job)."""
    import json

    from sessionctl.store import access

    settings, admin = own_database
    schemas = await _agents(settings, admin, 3)
    needs = [access.Need(s, t, ("DELETE",)) for s in schemas for t in ("agno_sessions", "agno_runs")]
    assert await access.problems(admin, [*needs, access.Need("nowhere", "agno_sessions", ("DELETE",))]) == [
        "nowhere.agno_sessions: does not exist"
    ]
    literal = ["{" + ",".join(x) + "}" for x in zip(*[(n.schema, n.table, "DELETE") for n in needs], strict=True)]
    await admin.execute(f"PREPARE problems(text[], text[], text[]) AS {access.PROBLEMS}")
    try:
        await admin.execute("SET plan_cache_mode = force_generic_plan")
        arrays = ", ".join(f"'{a}'" for a in literal)  # schema and table names of this test: no quotes
        plan = json.loads(await admin.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE problems({arrays})"))
    finally:
        await admin.execute("RESET plan_cache_mode; DEALLOCATE problems")

    def nodes(node: dict[str, object]) -> list[dict[str, object]]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]  # type: ignore[attr-defined]

    lookups = [n for n in nodes(plan[0]["Plan"]) if n.get("Relation Name") == "pg_class"]
    assert lookups and all("relnamespace" in str(n.get("Index Cond", "")) for n in lookups), lookups
