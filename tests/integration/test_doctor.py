"""Index doctor: reports what is missing, creates it concurrently once, and is a no-op after."""

from __future__ import annotations

import json
import subprocess
import sys

import asyncpg

from sessionctl.config import Settings
from sessionctl.store import media_refs, migrations
from tests.agno_seed import seed

SESSIONCTL = [sys.executable, "-m", "sessionctl.cli"]


def _doctor(env: dict[str, str], *args: str) -> tuple[int, dict]:
    res = subprocess.run([*SESSIONCTL, "doctor", *args, "--json"], env=env, capture_output=True, text=True, check=False)
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout)


async def test_doctor_creates_the_indexes_once_and_is_a_no_op_after(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, worker_env: dict[str, str]
) -> None:
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, "u", 3)
    await migrations.migrate(pg)  # as `sessionctl migrate` does: this test is about the indexes alone

    rc, report = _doctor(worker_env, "--agent", agent_id)
    assert rc == 1 and report["missing"] == 3 and report["created"] == []
    assert report["schemas"][schema]["tables"]["agno_sessions"]["bytes"] > 0

    rc, report = _doctor(worker_env, "--agent", agent_id, "--create-indexes")
    assert rc == 0 and sorted(report["created"]) == [
        f"{schema}.sessionctl_runs_media",
        f"{schema}.sessionctl_sessions_age",
        f"{schema}.sessionctl_sessions_user",
    ]
    defs = {
        r["indexname"]: r["indexdef"]
        for r in await pg.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1", schema)
    }
    assert "(user_id, created_at, session_id)" in defs["sessionctl_sessions_user"]
    assert "COALESCE(updated_at, created_at)" in defs["sessionctl_sessions_age"]
    await pg.execute("SET enable_seqscan = off")  # a 3-row table: only the planner's choice is in question
    plan = "\n".join(
        r[0]
        for r in await pg.fetch(
            f"EXPLAIN SELECT * FROM \"{schema}\".agno_sessions WHERE user_id = 'u' ORDER BY created_at DESC, session_id DESC LIMIT 10"
        )
    )
    # the erasure's read of media references takes the partial index: only runs with media are read
    gone = f"gone AS (SELECT session_id, user_id FROM \"{schema}\".agno_sessions WHERE user_id = 'u')"
    refs = media_refs.refs_of_runs_table(f'"{schema}".agno_runs', "= ANY(ARRAY(SELECT session_id FROM gone))")
    media_plan = "\n".join(r[0] for r in await pg.fetch(f"EXPLAIN WITH {gone} {refs}"))
    await pg.execute("RESET enable_seqscan")
    assert "sessionctl_sessions_user" in plan  # the listing query can use it
    assert "sessionctl_runs_media" in media_plan, media_plan

    rc, report = _doctor(worker_env, "--agent", agent_id, "--create-indexes")
    assert rc == 0 and report["created"] == [] and report["missing"] == 0  # idempotent


async def test_doctor_counts_an_existing_user_index_and_replaces_an_invalid_leftover(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, worker_env: dict[str, str]
) -> None:
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, "u", 2)
    await migrations.migrate(pg)
    await pg.execute(f'CREATE INDEX my_own_user_idx ON "{schema}".agno_sessions (user_id)')
    # an interrupted CREATE INDEX CONCURRENTLY leaves an invalid index behind: simulate one
    await pg.execute(
        f'CREATE INDEX sessionctl_sessions_age ON "{schema}".agno_sessions ((coalesce(updated_at, created_at)))'
    )
    await pg.execute(
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = $1::regclass", f'"{schema}".sessionctl_sessions_age'
    )
    rc, report = _doctor(worker_env, "--agent", agent_id)
    user_ix, age_ix, media_ix = report["schemas"][schema]["indexes"]
    assert user_ix["present"] and user_ix["covered_by"] == "my_own_user_idx"
    assert not age_ix["present"] and age_ix["invalid"] and not media_ix["present"] and rc == 1
    rc, report = _doctor(worker_env, "--agent", agent_id, "--create-indexes")
    assert rc == 0 and report["created"] == [f"{schema}.sessionctl_sessions_age", f"{schema}.sessionctl_runs_media"]
    valid = await pg.fetchval(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = $1::regclass", f'"{schema}".sessionctl_sessions_age'
    )
    assert valid is True
