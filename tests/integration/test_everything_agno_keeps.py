"""Everything Agno keeps about a user beyond the agent tables — knowledge vectors (PgVector, on a
real pgvector server), AgentOS login records (written through Agno's authz API) and offloaded media
(Agno's local storage, and its S3 storage against moto's S3 server) — erased, recounted, and the
storage objects deleted; nobody else's rows or objects touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.jobs.person import verify_user
from sessionctl.producer import Producer
from sessionctl.store import media_refs
from tests.agno_seed import agno_db, seed, seed_authz, seed_media_session, seed_sessions, seed_vectors
from tests.conftest import run_worker
from tests.embedded_services import answers, free_port

USER, OTHER = "vera-9c@example.com", "walt-4d@example.com"


def _sa(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://")


def _on(settings: Settings, database_url: str, **more: Any) -> Settings:
    return settings.model_copy(update={"database_url": database_url, **more})


async def _purge(settings: Settings, **kw: Any) -> Any:
    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(user_id=kw.pop("user_id", USER), **kw)
        await run_worker(settings)
        return await producer.status(enq.job_id)


async def test_knowledge_vectors_and_login_records_are_erased_everywhere(
    settings: Settings, vector_database: str, agent_id: str
) -> None:
    s = _on(settings, vector_database)
    schema = s.schema_for(agent_id)
    db = agno_db(vector_database, schema)
    for who in (USER, OTHER):
        await seed_sessions(db, agent_id, who, 2)
    await db.close()
    seed_vectors(_sa(vector_database), "ai", "company_kb", {USER: 3, OTHER: 2, None: 4})
    seed_vectors(_sa(vector_database), schema, "agent_notes", {USER: 2, OTHER: 1})  # inside the agent's schema
    seed_authz(_sa(vector_database), "ai", [USER, OTHER])

    # verify sees every place the user is
    before = await verify_user(s, USER)
    assert before["tables"]["ai"] == {
        "agno_authz_audit": 1,
        "agno_authz_decisions": 1,
        "agno_authz_grouping": 1,
        "agno_authz_users": 1,
        "company_kb": 3,
    }
    assert before["tables"][schema]["agent_notes"] == 2

    # one agent, scope all: the vector table in its schema goes (it used to fail UnknownUserData);
    # the deployment-wide stores are not that agent's
    one = await _purge(s, agent_id=agent_id, scope="all")
    assert one.status == "succeeded", one
    assert one.result["agents"][agent_id]["tables"]["agent_notes"] == 2
    assert one.result.get("stores") is None
    mid = await verify_user(s, USER)
    assert mid["tables"]["ai"]["company_kb"] == 3 and mid["tables"][schema]["agent_notes"] == 0

    dry = await _purge(s, all_agents=True, scope="all", dry_run=True)
    assert dry.status == "dry_run" and dry.result["stores"]["ai.company_kb"] == 3

    every = await _purge(s, all_agents=True, scope="all")
    assert every.status == "succeeded", every
    assert every.result["stores"] == {
        "ai.agno_authz_audit": 1,
        "ai.agno_authz_decisions": 1,
        "ai.agno_authz_grouping": 1,
        "ai.agno_authz_users": 1,
        "ai.company_kb": 3,
    }
    after = await verify_user(s, USER)
    assert after["total"] == 0, after

    conn = await asyncpg.connect(vector_database)
    try:
        # the other user's rows and the shared chunks stay, row for row
        assert await conn.fetchval("SELECT count(*) FROM ai.company_kb WHERE user_id = $1", OTHER) == 2
        assert await conn.fetchval("SELECT count(*) FROM ai.company_kb WHERE user_id IS NULL") == 4
        assert await conn.fetchval(f'SELECT count(*) FROM "{schema}".agent_notes WHERE user_id = $1', OTHER) == 1
        assert await conn.fetchval("SELECT count(*) FROM ai.agno_authz_users WHERE id = $1", OTHER) == 1
        assert await conn.fetchval("SELECT count(*) FROM ai.agno_authz_grouping WHERE subject = $1", OTHER) == 1
        # the audit trails keep the events, without the person
        audit = await conn.fetchrow("SELECT * FROM ai.agno_authz_audit WHERE event_id = $1", f"audit-{USER}")
        assert audit is not None and audit["action"] == "user.created" and audit["actor"] == "admin"
        assert audit["target"] is None and audit["after"] is None
        decision = await conn.fetchrow("SELECT * FROM ai.agno_authz_decisions WHERE event_id = $1", f"decision-{USER}")
        assert decision is not None and decision["action"] == "access.allowed"
        assert decision["actor"] is None and decision["token_ref"] is None
        kept = await conn.fetchrow("SELECT * FROM ai.agno_authz_decisions WHERE event_id = $1", f"decision-{OTHER}")
        assert kept is not None and kept["actor"] == OTHER
        receipt = await conn.fetchrow(
            "SELECT scope, stores FROM sessionctl.receipts WHERE job_id = $1", every.result["job_id"]
        )
        assert receipt is not None and receipt["scope"] == "all"
        assert json.loads(receipt["stores"])["ai.company_kb"] == 3
    finally:
        await conn.close()


async def test_the_printed_grants_cover_vectors_and_login_records_and_without_them_nothing_is_deleted(
    settings: Settings, vector_database: str, agent_id: str
) -> None:
    from sessionctl import doctor
    from sessionctl.store import migrations

    s = _on(settings, vector_database)
    schema = s.schema_for(agent_id)
    await seed(vector_database, schema, agent_id, USER, 2)
    seed_vectors(_sa(vector_database), "ai", "kb", {USER: 1})
    seed_authz(_sa(vector_database), "ai", [USER])
    role = f"worker_{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(vector_database)
    try:
        await migrations.migrate(conn)
        await conn.execute(f"CREATE ROLE {role} LOGIN")
        printed = [line for line in await doctor.grants(s, role) if not line.startswith("--")]
        assert any('"ai"."kb"' in g for g in printed) and any("agno_authz_audit" in g for g in printed), printed
        # the CLI's default is the same; --sessions-only leaves out what only a person's erasure needs
        env = {**os.environ, "DATABASE_URL": vector_database, "SESSIONCTL_HASH_KEY": "k" * 32}
        cli = [sys.executable, "-m", "sessionctl.cli", "grants", "--role", role]
        every = subprocess.run(cli, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
        only = subprocess.run([*cli, "--sessions-only"], env=env, capture_output=True, text=True, check=True).stdout
        assert [line for line in every if not line.startswith("--")] == printed
        assert '"ai"."kb"' not in only and "agno_authz" not in only and f'"{schema}"."agno_sessions"' in only, only
        for stmt in printed:
            if '"ai"."kb"' not in stmt:  # all but the vector table's grant
                await conn.execute(stmt)
        limited = _on(s, vector_database.replace("postgres@", f"{role}@"))
        state = await _purge(limited, all_agents=True, scope="all")
        assert state.status == "failed" and state.error["type"] == "InsufficientPrivilege", state
        assert "ai.kb" in state.error["message"]
        assert (await verify_user(s, USER))["tables"][schema]["agno_sessions"] == 2  # nothing was deleted
        for stmt in printed:  # exactly what `sessionctl grants` prints
            await conn.execute(stmt)
        state = await _purge(limited, all_agents=True, scope="all")
        assert state.status == "succeeded", state
        assert (await verify_user(s, USER))["total"] == 0
    finally:
        await conn.close()


# ---- offloaded media ---------------------------------------------------------------------------


@pytest.mark.parametrize("doctors_indexes", [False, True], ids=["agno-schema", "doctors-indexes"])
async def test_offloaded_media_in_local_storage_is_deleted_with_the_sessions(
    settings: Settings, agent_id: str, tmp_path: Path, pg: asyncpg.Connection, doctors_indexes: bool
) -> None:
    from agno.media.storage import LocalMediaStorage

    storage = LocalMediaStorage(base_path=str(tmp_path / "media"))
    s = settings.model_copy(update={"media_storages": f"local://{tmp_path / 'media'}"})
    schema = s.schema_for(agent_id)
    db = agno_db(s.database_url, schema)
    mine = await seed_media_session(db, storage, agent_id=agent_id, user_id=USER, session_id=f"{agent_id}-pics-1")
    mine += await seed_media_session(db, storage, agent_id=agent_id, user_id=USER, session_id=f"{agent_id}-pics-2")
    theirs = await seed_media_session(db, storage, agent_id=agent_id, user_id=OTHER, session_id=f"{agent_id}-pics-3")
    await seed_sessions(db, agent_id, USER, 3)  # runs without media beside them
    await db.close()
    assert len(mine) == 4 and all(storage.exists(k) for k in mine + theirs)
    if doctors_indexes:  # the media references are then found through sessionctl_runs_media
        for spec in store.NEEDED_INDEXES:
            await store.create_index(pg, schema, spec)
        indexed = await pg.fetchval(
            f'SELECT count(*) FROM "{schema}".agno_runs WHERE run_data @? $1::jsonpath', media_refs.ANY_REF
        )
        assert indexed == 3  # the runs with media: 2 of the user's, 1 of the other's

    state = await _purge(s, all_agents=True)
    assert state.status == "succeeded", state
    assert state.result["stores"] == {"media objects": 4}
    assert not any(storage.exists(k) for k in mine)
    assert all(storage.exists(k) for k in theirs)  # another user's objects stay
    assert await pg.fetchval("SELECT count(*) FROM sessionctl.media_pending") == 0
    receipt = await pg.fetchrow("SELECT stores FROM sessionctl.receipts WHERE job_id = $1", state.result["job_id"])
    assert receipt is not None and json.loads(receipt["stores"]) == {"media objects": 4}


async def test_media_in_a_storage_sessionctl_was_not_given_keeps_the_sessions(
    settings: Settings, agent_id: str, tmp_path: Path, pg: asyncpg.Connection
) -> None:
    from agno.media.storage import LocalMediaStorage

    storage = LocalMediaStorage(base_path=str(tmp_path / "media"))
    db = agno_db(settings.database_url, settings.schema_for(agent_id))
    keys = await seed_media_session(db, storage, agent_id=agent_id, user_id=USER, session_id=f"{agent_id}-p")
    await seed_sessions(db, agent_id, USER, 3)
    await db.close()
    state = await _purge(settings, agent_id=agent_id)  # no SESSIONCTL_MEDIA_STORAGES
    assert state.status == "failed" and state.error["type"] == "MediaStorageNotConfigured", state
    assert "SESSIONCTL_MEDIA_STORAGES" in state.error["message"] and USER not in state.error["message"]
    schema = settings.schema_for(agent_id)
    # the batch holding the session with media was rolled back: its row (and so its keys) stay
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE session_id = $1', f"{agent_id}-p")
    assert all(storage.exists(k) for k in keys)


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """moto's standalone S3-compatible server on a free port (a real HTTP endpoint); its URL."""
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 30
    while not answers("127.0.0.1", port):
        assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")


async def test_offloaded_media_in_s3_is_deleted_and_a_refusing_storage_fails_the_job_until_it_answers(
    settings: Settings, agent_id: str, s3_endpoint: str, aws_env: None, pg: asyncpg.Connection
) -> None:
    import boto3
    from agno.media.storage import S3MediaStorage

    bucket = f"media-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="eu-west-1").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    storage = S3MediaStorage(bucket, region="eu-west-1", endpoint_url=s3_endpoint)
    spec = f"s3://{bucket}?region=eu-west-1&endpoint_url={s3_endpoint}"
    s = settings.model_copy(update={"media_storages": spec, "max_tries": 2})
    db = agno_db(s.database_url, s.schema_for(agent_id))
    mine = await seed_media_session(db, storage, agent_id=agent_id, user_id=USER, session_id=f"{agent_id}-s3-1")
    theirs = await seed_media_session(db, storage, agent_id=agent_id, user_id=OTHER, session_id=f"{agent_id}-s3-2")
    await db.close()
    assert all(storage.exists(k) for k in mine + theirs)

    state = await _purge(s, agent_id=agent_id)
    assert state.status == "succeeded", state
    assert state.result["stores"] == {"media objects": 2}
    assert not any(storage.exists(k) for k in mine) and all(storage.exists(k) for k in theirs)

    # a storage that refuses: the rows go, the keys stay noted, the job fails — no receipt, no "done"
    more = await seed_media_session(
        agno_db(s.database_url, s.schema_for(agent_id)),
        storage,
        agent_id=agent_id,
        user_id=OTHER,
        session_id=f"{agent_id}-s3-3",
    )
    unreachable = s.model_copy(
        update={"media_storages": f"s3://{bucket}?region=eu-west-1&endpoint_url=http://127.0.0.1:9"}
    )
    failed = await _purge(unreachable, agent_id=agent_id, user_id=OTHER)
    assert failed.status == "failed" and failed.error["type"] == "MediaDeleteFailed", failed
    assert await pg.fetchval("SELECT count(*) FROM sessionctl.media_pending WHERE job_id = $1", failed.job_id) == 4
    assert await pg.fetchval("SELECT count(*) FROM sessionctl.receipts WHERE job_id = $1", failed.job_id) == 0
    assert (await verify_user(unreachable, OTHER))["tables"]["sessionctl"]["media_pending"] == 4
    assert all(storage.exists(k) for k in theirs + more)
    # the storage answers again: the erasure asked again deletes the user's noted keys (the failed
    # job's) and only then writes its receipt
    async with Producer(s) as producer:
        retried = await producer.retry(failed.job_id, user_id=OTHER)
        await run_worker(s)
        again = await producer.status(retried.job_id)
    assert again.status == "succeeded", again
    assert again.result["stores"] == {"media objects": 4}
    assert not any(storage.exists(k) for k in theirs + more)
    assert await pg.fetchval("SELECT count(*) FROM sessionctl.media_pending") == 0
    assert await pg.fetchval("SELECT count(*) FROM sessionctl.receipts WHERE job_id = $1", retried.job_id) == 1
