"""The stores a deployment file declares, each written through Agno's own classes: a person is
counted in each, erased from each for good, and a bystander keeps everything."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sessionctl import deployment
from sessionctl.backends import Person, opened
from sessionctl.config import Settings
from sessionctl.jobs.person import verify_user
from sessionctl.producer import Producer
from tests.agno_seed import seed
from tests.agno_stores import EveryStore, every_store
from tests.conftest import run_worker


@pytest.fixture
def stores(tmp_path: Path, mysql_database: tuple[str, str], redis_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[EveryStore, list[str]]:
    users = [f"o'brien-{uuid.uuid4().hex[:6]}", f"Bob-{uuid.uuid4().hex[:6]}"]
    monkeypatch.setenv("SCT_TEST_MYSQL_URL", mysql_database[0])
    return every_store(tmp_path, mysql_database, redis_url, users), users


def _grep(folder: Path, text: str) -> list[str]:
    found = subprocess.run(["grep", "-rla", text, str(folder)], capture_output=True, text=True).stdout
    return found.split()


async def test_each_store_finds_the_person_erases_them_for_good_and_keeps_the_bystander(stores: tuple[EveryStore, list[str]]) -> None:
    seeded, (person, bystander) = stores
    declared = deployment.load(str(seeded.config))
    assert len(declared.stores) == 8
    me = Person([person], set(seeded.run_ids[person]))
    other = Person([bystander], set(seeded.run_ids[bystander]))
    async with opened(declared) as backends:
        before = {b.label: (await b.count(me), await b.count(other)) for b in backends}
        assert all(mine > 0 and theirs > 0 for mine, theirs in before.values()), before
        erased = {b.label: await b.erase(me) for b in backends}
        after = {b.label: (await b.count(me), await b.count(other)) for b in backends}
    assert erased == {label: mine for label, (mine, _) in before.items()}, (erased, before)
    assert after == {label: (0, theirs) for label, (_, theirs) in before.items()}, after
    # gone from the files too, not only from the queries (LanceDB keeps deleted rows in its files
    # and versions, Chroma in free pages and a segment folder, until rewritten)
    for kind in ("lancedb", "chroma", "qdrant", "agentfs"):
        assert _grep(seeded.folders[kind], f"of {person}") == [], kind
        assert _grep(seeded.folders[kind], f"of {bystander}"), kind
    # SQLite: overwritten in place (secure_delete), not left in free pages (nor in its journal)
    files = sorted(seeded.config.parent.glob("agno.db*"))
    assert not [f for f in files if _grep(f, person)] and [f for f in files if _grep(f, bystander)], files


async def _purge(settings: Settings, user: str, **kw: Any) -> Any:
    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(user_id=user, all_agents=True, scope="all", **kw)
        await run_worker(settings)
        return await producer.status(enq.job_id)


async def test_one_erasure_of_the_person_empties_every_declared_store_and_the_receipt_lists_each(
    settings: Settings, stores: tuple[EveryStore, list[str]], agent_id: str
) -> None:
    seeded, (person, bystander) = stores
    s = settings.model_copy(update={"config_file": str(seeded.config)})
    for user in (person, bystander):
        await seed(s.database_url, s.schema_for(agent_id), agent_id, user, 2)
    labels = deployment.load(str(seeded.config)).labels()
    before = await verify_user(s, person)
    theirs = (await verify_user(s, bystander))["tables"]
    assert all(before["tables"][label]["items"] > 0 for label in labels), before["tables"]

    state = await _purge(s, person)
    assert state.status == "succeeded" and state.result["complete"] is True, state
    assert all(state.result["stores"][label] == before["tables"][label]["items"] for label in labels), state.result
    after = await verify_user(s, person)
    assert after["total"] == 0 and all(after["tables"][label] == {"items": 0} for label in labels), after
    assert (await verify_user(s, bystander))["tables"] == theirs  # the bystander keeps every row and item
    conn = await asyncpg.connect(s.database_url)
    try:
        receipt = await conn.fetchrow(
            "SELECT stores FROM sessionctl.receipts WHERE job_id = $1", state.result["job_id"]
        )
    finally:
        await conn.close()
    assert receipt is not None and set(labels) <= set(json.loads(receipt["stores"])), receipt


async def test_an_unreachable_or_missing_store_fails_the_erasure_before_anything_is_deleted(
    settings: Settings, stores: tuple[EveryStore, list[str]], agent_id: str
) -> None:
    from qdrant_client import QdrantClient

    seeded, (person, _) = stores
    s = settings.model_copy(update={"config_file": str(seeded.config), "max_tries": 1})
    await seed(s.database_url, s.schema_for(agent_id), agent_id, person, 2)
    held = QdrantClient(path=str(seeded.folders["qdrant"]))  # local mode: one client per folder
    try:
        state = await _purge(s, person)
    finally:
        held.close()
    assert state.status == "failed" and state.error["type"] == "StoreUnreachable", state
    assert "qdrant:knowledge" in state.error["message"] and "held by another client" in state.error["message"]
    counts = await verify_user(s, person)
    assert counts["tables"][s.schema_for(agent_id)]["agno_sessions"] == 2  # nothing was deleted anywhere
    assert counts["tables"]["lancedb:knowledge"]["items"] == 3 and counts["tables"]["sqlite:agno.db"]["items"] > 0

    good = seeded.config.read_text()
    seeded.config.write_text(good.replace('table_name = "knowledge"', 'table_name = "knowlege"'))  # a typo
    state = await _purge(s, person)
    assert state.status == "failed" and state.error["type"] == "StoreMisdeclared", state
    assert "table 'knowlege' does not exist" in state.error["message"], state.error
    seeded.config.write_text(good)
    assert (await verify_user(s, person))["tables"][s.schema_for(agent_id)]["agno_sessions"] == 2  # nor here


async def test_the_access_export_holds_the_persons_items_from_every_declared_store(
    settings: Settings, stores: tuple[EveryStore, list[str]], agent_id: str, tmp_path: Path
) -> None:
    seeded, (person, bystander) = stores
    s = settings.model_copy(update={"config_file": str(seeded.config), "export_dir": str(tmp_path / "exports")})
    await seed(s.database_url, s.schema_for(agent_id), agent_id, person, 1)
    async with Producer(s) as producer:
        enq = await producer.export_sessions(out="person.jsonl", all_agents=True, user_id=person, scope="all")
        await run_worker(s)
        state = await producer.status(enq.job_id)
    assert state.status == "succeeded", state
    lines = [json.loads(x) for x in (tmp_path / "exports" / "person.jsonl").read_text().splitlines()]
    items: dict[str, int] = {}
    for line in lines:
        if "item" in line:
            items[line["store"]] = items.get(line["store"], 0) + 1
    assert items == {
        "lancedb:knowledge": 3, "qdrant:knowledge": 3, "chroma:knowledge": 3, "sqlite:agno.db": items["sqlite:agno.db"],
        f"mysql:{seeded.mysql_db}": 4, f"redis:{seeded.prefix}": 4, "agentfs:agentfs": 2,
    }  # fmt: skip
    assert items["sqlite:agno.db"] >= 4  # session, 2 runs, memory, their AgentFS files and tool result
    assert all(state.result["stores"][label] == n for label, n in items.items()), state.result["stores"]
    text = (tmp_path / "exports" / "person.jsonl").read_text()
    assert bystander not in text  # nobody else's data


async def test_the_resweep_finds_a_person_back_in_a_declared_store(
    settings: Settings, stores: tuple[EveryStore, list[str]]
) -> None:
    from tests.agno_stores import seed_lancedb

    seeded, (person, _) = stores
    s = settings.model_copy(update={"config_file": str(seeded.config)})
    assert (await _purge(s, person)).status == "succeeded"
    seed_lancedb(seeded.folders["lancedb"], {person: 2})  # an agent wrote their chunks back
    async with Producer(s) as producer:
        enq = await producer.resweep()
        await run_worker(s)
        state = await producer.status(enq.job_id)
    where = {m["where"]: m["rows"] for m in state.result["matches"]}
    assert where == {"lancedb:knowledge.items": 2}, state.result
    assert sorted(state.result["stores_not_swept"]) == ["agentos_events:" + seeded.prefix + ":os:events", "chroma:knowledge"]


async def test_retention_cleans_memories_traces_and_evals_and_a_declared_session_store_by_their_own_time(
    settings: Settings, stores: tuple[EveryStore, list[str]], agent_id: str, tmp_path: Path
) -> None:
    import sqlite3
    import time as clock

    from tests.agno_seed import agno_db, seed_memory

    seeded, (person, bystander) = stores
    schema = settings.schema_for(agent_id)
    db = agno_db(settings.database_url, schema)
    for user in (person, bystander):
        await seed(settings.database_url, schema, agent_id, user, 1)
        await seed_memory(db, agent_id, user)
    await db.close()
    old = int(clock.time()) - 90 * 86_400
    conn = await asyncpg.connect(settings.database_url)
    try:  # the person's memory is 90 days old; the bystander's is new
        await conn.execute(f'UPDATE "{schema}".agno_memories SET created_at = $1, updated_at = $1 WHERE user_id = $2', old, person)
    finally:
        await conn.close()
    with sqlite3.connect(seeded.config.parent / "agno.db") as lite:  # and so are their session and memory there
        lite.execute("UPDATE agno_sessions SET created_at = ?, updated_at = ? WHERE user_id = ?", (old, old, person))
        lite.execute("UPDATE agno_memories SET created_at = ?, updated_at = ? WHERE user_id = ?", (old, old, person))
    policy = tmp_path / "retention.toml"
    policy.write_text(
        f'[agents."{agent_id}"]\nmax_age_days = 365\n[agents."{agent_id}".items]\nmemories = 30\n'
        '[stores."sqlite:agno.db"]\nmax_age_days = 30\n'
    )
    s = settings.model_copy(update={"config_file": str(seeded.config), "retention_file": str(policy)})
    async with Producer(s) as producer:  # at every agent: the declared stores belong to none of them
        enq = await producer.run_retention()
        await run_worker(s)
        state = await producer.status(enq.job_id)
    assert state.status == "succeeded", state
    assert state.result["agents"][schema]["items"] == {"memories": {"deleted": 1, "remaining": 0}}
    assert state.result["stores"] == {"sqlite:agno.db": {"deleted": 2, "remaining": 0}}  # a session and a memory
    left = await verify_user(s, person)
    assert left["tables"][schema]["agno_memories"] == 0 and (await verify_user(s, bystander))["tables"][schema]["agno_memories"] == 1
    with sqlite3.connect(seeded.config.parent / "agno.db") as lite:
        runs = lite.execute("SELECT count(*) FROM agno_runs WHERE session_id = ?", (f"sq-{person}-s0",)).fetchone()[0]
        kept = lite.execute("SELECT count(*) FROM agno_sessions WHERE user_id = ?", (bystander,)).fetchone()[0]
    assert runs == 0 and kept == 1  # the session went with its runs; the recent one stays

    policy.write_text(f'[agents."{agent_id}"]\nmax_age_days = 1\n[stores."lancedb:knowledge"]\nmax_age_days = 30\n')
    async with Producer(s) as producer:
        enq = await producer.run_retention()
        await run_worker(s)
        refused = await producer.status(enq.job_id)
    assert refused.status == "failed" and "keep(s) no time per item" in refused.error["message"], refused
    assert (await verify_user(s, bystander))["tables"][schema]["agno_sessions"] == 1  # refused before any delete


def _age_every_item(seeded: EveryStore, mysql_url: str, redis_url: str, at: int) -> None:
    """Every session and memory of the SQLite file, the MySQL database and the Redis prefix, and
    every AgentFS file, made ``at`` old (epoch seconds)."""
    import json
    import os
    import sqlite3

    import redis
    from sqlalchemy import create_engine, text

    with sqlite3.connect(seeded.config.parent / "agno.db") as lite:
        for table in ("agno_sessions", "agno_memories"):
            lite.execute(f"UPDATE {table} SET created_at = ?, updated_at = ?", (at, at))
    engine = create_engine(mysql_url)
    with engine.begin() as conn:
        for table in ("agno_sessions", "agno_memories"):
            update = f"UPDATE `{seeded.mysql_db}`.`{table}` SET created_at = :at, updated_at = :at"
            conn.execute(text(update), {"at": at})
    engine.dispose()
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    for table in ("sessions", "memories"):
        for key in r.scan_iter(match=f"{seeded.prefix}:{table}:*"):
            if ":index:" not in key and r.type(key) == "string":
                record = json.loads(r.get(key) or "{}")
                r.set(key, json.dumps(record | {"created_at": at, "updated_at": at}))
    r.close()
    for f in seeded.folders["agentfs"].rglob("*"):
        if f.is_file():
            os.utime(f, (at, at))


async def test_retention_keeps_everything_of_a_person_under_legal_hold_in_the_declared_stores(
    settings: Settings,
    stores: tuple[EveryStore, list[str]],
    mysql_database: tuple[str, str],
    redis_url: str,
    tmp_path: Path,
) -> None:
    """Everything in SQLite, MySQL, Redis and AgentFS 90 days old, the person under a legal hold:
    retention by age takes the bystander's (and the shared file), the person's stay, counted nowhere."""
    import time as clock

    from sessionctl.privacy import user_hmac
    from sessionctl.store import legal_holds, migrations

    seeded, (person, bystander) = stores
    _age_every_item(seeded, mysql_database[0], redis_url, int(clock.time()) - 90 * 86_400)
    declared = {s.label: s for s in deployment.load(str(seeded.config)).stores}
    label = {s.kind: s.label for s in declared.values() if s.kind in ("sqlite", "mysql", "redis", "agentfs")}
    timed = tuple(label.values())
    me, other = Person([person]), Person([bystander])
    async with opened(deployment.Deployment(stores=tuple(declared[t] for t in timed))) as backends:
        before = {b.label: (await b.count(me), await b.count(other)) for b in backends}
    policy = tmp_path / "retention.toml"
    policy.write_text("".join(f'[stores."{t}"]\nmax_age_days = 30\n' for t in timed))
    s = settings.model_copy(update={"config_file": str(seeded.config), "retention_file": str(policy)})
    conn = await asyncpg.connect(settings.database_url)
    key, hmac_ = settings.hash_key_bytes, user_hmac(settings.hash_key_bytes, person)
    try:
        await migrations.migrate(conn)
        await legal_holds.place(conn, hmac_, legal_holds.seal(key, hmac_, person), "matter", "test")
        async with Producer(s) as producer:
            enq = await producer.run_retention()
            await run_worker(s)
            state = await producer.status(enq.job_id)
    finally:
        await legal_holds.release(conn, hmac_, "test")
        await conn.close()
    assert state.status == "succeeded", state
    assert state.result["held"] == 1
    stored = state.result["stores"]
    # Redis is shared and its prefix is named after this test's folder: records an earlier run left
    # there (of other people, not held now) go too
    assert stored.pop(label["redis"])["remaining"] == 0
    assert stored == {
        label["sqlite"]: {"deleted": 2, "remaining": 0},  # the bystander's session (with its runs) and memory
        label["mysql"]: {"deleted": 2, "remaining": 0},
        label["agentfs"]: {"deleted": 3, "remaining": 0},  # the bystander's 2 files, and the shared one
    }, state.result["stores"]
    async with opened(deployment.Deployment(stores=tuple(declared[t] for t in timed))) as backends:
        after = {b.label: (await b.count(me), await b.count(other)) for b in backends}
    assert {t: mine for t, (mine, _) in after.items()} == {t: mine for t, (mine, _) in before.items()}, (before, after)
    assert after[label["sqlite"]][1] < before[label["sqlite"]][1] and after[label["agentfs"]][1] == 0
    assert after[label["redis"]][1] < before[label["redis"]][1]
    await _forget_prefix(redis_url, seeded.prefix)


async def _forget_prefix(redis_url: str, prefix: str) -> None:
    """The test's RedisDb records gone (the next run of this test reuses the prefix)."""
    import redis.asyncio as aioredis

    r = aioredis.from_url(redis_url)
    try:
        async for key in r.scan_iter(match=f"{prefix}:*", count=1000):
            await r.unlink(key)
    finally:
        await r.aclose()
