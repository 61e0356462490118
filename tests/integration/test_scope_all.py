"""Scope "all": every table of an agent schema that holds a user's rows, declared in one place
(``store.USER_STORES``), erased, recounted — and a test that fails when Agno adds a user-keyed
table the list does not know."""

from __future__ import annotations

import inspect
import uuid

import asyncpg
import pytest
from agno.db.postgres import AsyncPostgresDb
from agno.db.postgres import schemas as agno_schemas

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.producer import Producer
from tests.agno_seed import ensure_payload_table
from tests.conftest import run_worker

USER, OTHER = "nina-7a@example.com", "omar-3b@example.com"

# Agno's schema definitions with a user_id column, and the table each becomes (default names).
AGNO_USER_KEYED = {
    "SESSION_TABLE_SCHEMA": "agno_sessions",
    "_get_run_table_schema": "agno_runs",
    "MEMORY_TABLE_SCHEMA": "agno_memories",
    "EVAL_TABLE_SCHEMA": "agno_eval_runs",
    "KNOWLEDGE_TABLE_SCHEMA": "agno_knowledge",
    "METRICS_TABLE_SCHEMA": "agno_metrics",
    "TRACE_TABLE_SCHEMA": "agno_traces",
    "COMPONENT_TABLE_SCHEMA": "agno_components",
    "LEARNINGS_TABLE_SCHEMA": "agno_learnings",
    "SCHEDULE_TABLE_SCHEMA": "agno_schedules",
    "_get_schedule_runs_table_schema": "agno_schedule_runs",
    "SOURCES_TABLE_SCHEMA": "agno_company_sources",
    "PRODUCTS_TABLE_SCHEMA": "agno_company_products",
    "TASKS_TABLE_SCHEMA": "agno_company_tasks",
    "PROJECTS_TABLE_SCHEMA": "agno_company_projects",
    "JOBS_TABLE_SCHEMA": "agno_jobs",
    "TOOL_RESULTS_TABLE_SCHEMA": "agno_tool_results",
    "COMPACTIONS_TABLE_SCHEMA": "agno_compactions",
    "APPROVAL_TABLE_SCHEMA": "agno_approvals",
    "AUTH_TOKEN_TABLE_SCHEMA": "agno_auth_tokens",
    "SERVICE_ACCOUNT_TABLE_SCHEMA": "agno_service_accounts",
    "_get_sandbox_bindings_table_schema": "agno_sessions_sandbox_bindings",
}

TABLE_TYPES = [
    "sessions",
    "runs",
    "memories",
    "metrics",
    "evals",
    "knowledge",
    "versions",
    "traces",
    "spans",
    "learnings",
    "schedules",
    "schedule_runs",
    "products",
    "sources",
    "projects",
    "tasks",
    "jobs",
    "tool_results",
    "transcripts",
    "approvals",
    "auth_tokens",
    "service_accounts",
    "sandbox_bindings",
]


def _agno_user_keyed_definitions() -> set[str]:
    found = set()
    for name, obj in vars(agno_schemas).items():
        if isinstance(obj, dict) and "user_id" in obj:
            found.add(name)
        elif inspect.isfunction(obj) and name.startswith("_get_") and name.endswith("_table_schema"):
            params = inspect.signature(obj).parameters
            definition = obj(*[p.default for p in params.values()])
            if isinstance(definition, dict) and "user_id" in definition:
                found.add(name)
        elif isinstance(obj, dict) and name.endswith("_TABLE_SCHEMAS"):
            for sub, d in obj.items():
                if isinstance(d, dict) and "user_id" in d:
                    found.add(f"{name}[{sub}]")
    return found


def test_every_user_keyed_table_agno_declares_is_in_the_list() -> None:
    declared = _agno_user_keyed_definitions()
    unknown = declared - set(AGNO_USER_KEYED)
    assert not unknown, (
        f"Agno declares user-keyed tables sessionctl does not know: {sorted(unknown)} — add them to "
        "store.USER_STORES (delete or anonymize) and to AGNO_USER_KEYED here"
    )
    assert set(AGNO_USER_KEYED.values()) == store.KNOWN_USER_TABLES


async def _value(col: dict, tag: str) -> str:
    t = col["data_type"]
    if t in ("character varying", "text"):
        return f"'{col['column_name']}-{tag}'"
    if t in ("bigint", "integer", "smallint"):
        return "1"
    if t in ("jsonb", "json"):
        return "'{}'"
    if t == "boolean":
        return "false"
    if t.startswith("timestamp"):
        return "now()"
    if t == "date":
        return "current_date"
    if t in ("double precision", "real", "numeric"):
        return "0"
    if t == "ARRAY":
        return "'{}'"
    raise AssertionError(f"no test value for {t}")


async def _plant(
    conn: asyncpg.Connection, schema: str, table: str, user: str | None, overrides: dict[str, str]
) -> None:
    cols = await conn.fetch(
        "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns"
        " WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        schema,
        table,
    )
    tag = uuid.uuid4().hex[:8]
    names, values = [], []
    for c in cols:
        name = c["column_name"]
        if name in overrides:
            v = overrides[name]
        elif name == "user_id":
            v = "NULL" if user is None else f"'{user}'"
        elif c["is_nullable"] == "NO" and c["column_default"] is None:
            v = await _value(dict(c), tag)
        else:
            continue
        names.append(f'"{name}"')
        values.append(v)
    await conn.execute(f'INSERT INTO "{schema}"."{table}" ({", ".join(names)}) VALUES ({", ".join(values)})')


async def test_scope_all_clears_every_user_keyed_table(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    db = AsyncPostgresDb(
        db_url=settings.database_url.replace("postgresql://", "postgresql+psycopg://"), db_schema=schema
    )
    for t in TABLE_TYPES:  # every table Agno's Postgres adapter creates
        await db._get_table(t, create_table_if_not_found=True)
    await db.close()
    await ensure_payload_table(pg)
    keyed = await store.user_keyed_tables(pg, schema)
    assert len(keyed) >= 19 and set(keyed) <= store.KNOWN_USER_TABLES

    await pg.execute("SET session_replication_role = replica")  # plant rows without satisfying every FK
    for who in (USER, OTHER):
        for table in keyed:
            extra = {"session_id": f"'s-{who}'"} if table == "agno_sessions" else {}
            if table == "agno_traces":
                extra = {"trace_id": f"'trace-{who}'"}
            if table == "agno_tool_results":
                extra = {"namespace": f"'{schema}'", "path": f"'/p/{who}'", "session_id": "'elsewhere'"}
            await _plant(pg, schema, table, who, extra)
        await _plant(pg, schema, "agno_spans", None, {"trace_id": f"'trace-{who}'"})
        await pg.execute(
            "INSERT INTO fs.agno_fs (namespace, path, content, size_bytes, version, created_at, user_id)"
            " VALUES ($1, $2, 'payload', 7, 1, 1, $3), ($1, $4, 'loose', 5, 1, 1, $3)",
            schema,
            f"/p/{who}",
            who,
            f"/loose/{who}",
        )
    await pg.execute("SET session_replication_role = DEFAULT")

    async with Producer(settings) as producer:
        # One after the other: queued together, a worker runs both at once, and the dry run may
        # count after the purge deleted (the cause of this test's one failure in a run).
        dry = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, scope="all", dry_run=True)
        await run_worker(settings)
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, scope="all")
        await run_worker(settings)
        dry_state = await producer.status(dry.job_id)
        state = await producer.status(enq.job_id)
    assert dry_state.status == "dry_run"
    assert dry_state.result["agents"][agent_id]["would_delete"]["table:agno_memories"] == 1
    assert state.status == "succeeded", state
    tables = state.result["agents"][agent_id]["tables"]

    for table in keyed:
        mine = await pg.fetchval(f'SELECT count(*) FROM "{schema}"."{table}" WHERE user_id = $1', USER)
        theirs = await pg.fetchval(f'SELECT count(*) FROM "{schema}"."{table}" WHERE user_id = $1', OTHER)
        assert (table, mine) == (table, 0)
        assert (table, theirs) == (table, 1)  # the other user's rows stay, row for row
    anonymized = [s.table for s in store.USER_STORES if s.action == "anonymize" and s.table in keyed]
    for table in anonymized:
        assert await pg.fetchval(f'SELECT count(*) FROM "{schema}"."{table}" WHERE user_id IS NULL') == 1
        assert tables[table] == 1
    # one agent's erasure: its tool results' payloads go, the user's other files (other agents') stay
    assert tables["agno_memories"] == 1 and tables["agno_spans"] == 1 and tables["fs.agno_fs"] == 1
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_spans WHERE trace_id = $1', f"trace-{OTHER}") == 1
    assert await pg.fetchval("SELECT count(*) FROM fs.agno_fs WHERE user_id = $1", USER) == 1
    assert await pg.fetchval("SELECT count(*) FROM fs.agno_fs WHERE user_id = $1", OTHER) == 2
    # an erasure at every agent takes the user's files in the database-wide store too
    async with Producer(settings) as producer:
        every = await producer.purge_user_sessions(all_agents=True, user_id=USER, scope="all")
        await run_worker(settings)
        assert (await producer.status(every.job_id)).status == "succeeded"
    assert await pg.fetchval("SELECT count(*) FROM fs.agno_fs WHERE user_id = $1", USER) == 0
    assert await pg.fetchval("SELECT count(*) FROM fs.agno_fs WHERE user_id = $1", OTHER) == 2
    receipt = await pg.fetchrow("SELECT agents FROM sessionctl.receipts WHERE job_id = $1", enq.job_id)
    assert receipt is not None and '"agno_memories": 1' in receipt["agents"]


async def test_a_user_keyed_table_sessionctl_does_not_know_fails_the_erasure(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    db = AsyncPostgresDb(
        db_url=settings.database_url.replace("postgresql://", "postgresql+psycopg://"), db_schema=schema
    )
    await db._get_table("sessions", create_table_if_not_found=True)
    await db.close()
    await pg.execute(f'CREATE TABLE "{schema}".agno_future_feature (id text, user_id text)')
    await pg.execute(f"INSERT INTO \"{schema}\".agno_future_feature VALUES ('1', $1)", USER)
    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, scope="all")
        worker = await run_worker(settings)
        state = await producer.status(enq.job_id)
    assert state.status == "failed" and worker.jobs_retried == 0
    assert state.error["type"] == "UnknownUserData" and "agno_future_feature" in state.error["message"]
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_future_feature') == 1


@pytest.mark.parametrize("scope", ["sessions", "all"])
def test_scope_is_part_of_the_request_identity(scope: str) -> None:
    from sessionctl.jobs.models import PurgeRequest

    assert PurgeRequest(user_id="u", agent_id="a", scope=scope).scope == scope  # type: ignore[arg-type]
