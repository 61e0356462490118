"""The re-sweep: an agent writes an erased user's sessions back; the sweep finds exactly that user,
by HMAC, only where an erasure covered; ``--erase`` erases them again with a receipt of its own."""

from __future__ import annotations

import asyncpg
from prometheus_client import REGISTRY

from sessionctl.config import Settings
from sessionctl.privacy import user_hmac
from sessionctl.producer import Producer
from tests.agno_seed import agno_db, seed_memory, seed_sessions
from tests.conftest import HASH_KEY, run_worker, run_workers_for

USER, THIRD, OTHER = "back-bea-1@example.com", "third-tom-2@example.com", "stays-sam-3@example.com"


async def _done(settings: Settings, enq_coro: object) -> dict[str, object]:
    async with Producer(settings) as producer:
        enq = await getattr(producer, enq_coro[0])(**enq_coro[1])  # type: ignore[index]
        await run_worker(settings)
        state = await producer.status(enq.job_id)
    assert state.status in ("succeeded", "dry_run"), state
    return state.result  # type: ignore[return-value]


async def test_an_erased_user_written_back_is_found_and_erased_again(
    own_database: tuple[Settings, asyncpg.Connection], agent_id: str
) -> None:
    settings, pg = own_database
    a, b = agent_id, agent_id + "-b"
    sa, sb = settings.schema_for(a), settings.schema_for(b)
    for agent in (a, b):
        db = agno_db(settings.database_url, settings.schema_for(agent))
        for who in (USER, THIRD, OTHER):
            await seed_sessions(db, agent, who, 2, prefix=f"{agent}-{who}-old")
        await db.close()

    await _done(settings, ("purge_user_sessions", {"user_id": USER, "all_agents": True}))
    await _done(settings, ("purge_user_sessions", {"user_id": THIRD, "agent_id": a}))

    # nothing came back yet: nothing found (THIRD's sessions at b were never erased)
    quiet = await _done(settings, ("resweep", {}))
    assert quiet["users_matched"] == 0 and quiet["matches"] == [], quiet
    assert quiet["keys_seen"] >= 3 and quiet["stores_swept"] >= 4

    # an agent that held the sessions in memory writes them back; THIRD returns at a and at b, and
    # gets a memory at a (an erasure of scope "sessions" did not cover memories)
    db = agno_db(settings.database_url, sa)
    await seed_sessions(db, a, USER, 3, prefix=f"{a}-back")
    await seed_sessions(db, a, THIRD, 1, prefix=f"{a}-third-back")
    await seed_memory(db, a, THIRD)
    await db.close()

    found = await _done(settings, ("resweep", {}))
    matches = {(m["user_hmac"], m["where"]): m for m in found["matches"]}
    h_user, h_third = user_hmac(HASH_KEY.encode(), USER), user_hmac(HASH_KEY.encode(), THIRD)
    # scope "sessions" covers agno_sessions (the runs came back inside those sessions)
    assert set(matches) == {(h_user, f"{sa}.agno_sessions"), (h_third, f"{sa}.agno_sessions")}, found["matches"]
    assert matches[(h_user, f"{sa}.agno_sessions")]["rows"] == 3
    assert matches[(h_third, f"{sa}.agno_sessions")]["rows"] == 1
    assert matches[(h_user, f"{sa}.agno_sessions")]["first_seen"] is not None
    assert found["users_matched"] == 2 and found["erasures"] == {}
    assert USER not in str(found) and THIRD not in str(found)
    assert REGISTRY.get_sample_value("sessionctl_resweep_users_found") == 2

    again = await _done(settings, ("resweep", {"erase": True}))
    assert set(again["erasures"]) == {h_user, h_third}
    await run_worker(settings)  # the erasures the sweep enqueued
    for who, n in ((USER, 0), (THIRD, 0), (OTHER, 2)):
        assert await pg.fetchval(f'SELECT count(*) FROM "{sa}".agno_sessions WHERE user_id = $1', who) == n
    # THIRD was erased at a only: their sessions at b are not this sweep's to erase
    assert await pg.fetchval(f'SELECT count(*) FROM "{sb}".agno_sessions WHERE user_id = $1', THIRD) == 2
    assert await pg.fetchval(f'SELECT count(*) FROM "{sb}".agno_sessions WHERE user_id = $1', OTHER) == 2
    rows = await pg.fetch(
        "SELECT user_hmac, target, origin FROM sessionctl.receipts WHERE origin = 'resweep' ORDER BY user_hmac"
    )
    assert sorted((r["user_hmac"], r["target"]) for r in rows) == sorted([(h_user, "*"), (h_third, a)])

    after = await _done(settings, ("resweep", {}))
    assert after["users_matched"] == 0, after["matches"]
    assert REGISTRY.get_sample_value("sessionctl_resweep_users_found") == 0


async def test_the_cron_with_the_erase_policy_erases_a_returning_user_again_once_per_tick(
    own_database: tuple[Settings, asyncpg.Connection], agent_id: str
) -> None:
    settings, pg = own_database
    schema = settings.schema_for(agent_id)
    db = agno_db(settings.database_url, schema)
    await seed_sessions(db, agent_id, USER, 2, prefix=f"{agent_id}-old")
    await seed_sessions(db, agent_id, OTHER, 2)
    await db.close()
    await _done(settings, ("purge_user_sessions", {"user_id": USER, "agent_id": agent_id}))
    db = agno_db(settings.database_url, schema)
    await seed_sessions(db, agent_id, USER, 2, prefix=f"{agent_id}-back")  # written back
    await db.close()

    s = settings.model_copy(update={"resweep_schedule": "*/2 * *", "resweep_erase": True})  # every 2 s
    await run_workers_for(s, 5.5)

    async with Producer(s) as producer:
        sweeps = await producer.jobs(kind="resweep", limit=100)
    assert len(sweeps) >= 2 and all(j["requested_by"] == "cron" for j in sweeps), sweeps
    assert len({j["job_id"].rsplit(":", 1)[0] for j in sweeps}) == len(sweeps)  # one job per tick
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = $1', USER) == 0
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = $1', OTHER) == 2
    origins = [r["origin"] for r in await pg.fetch("SELECT origin FROM sessionctl.receipts ORDER BY id")]
    assert origins[0] == "request" and origins[1:] == ["resweep"], origins  # erased again once, not per tick
