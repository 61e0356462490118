"""Media belongs to its session: a run's JSON is the user's to write, so a reference planted in one
user's run that names another session's object never makes that user's erasure delete the object
— by Agno's key layout (the session id leads the key) and because another session's run still
references it (ids like ``s1`` and ``s1-x`` share a prefix). Real Postgres, Agno's own offload path
into its local storage, a real worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg

from sessionctl import media_storages
from sessionctl.config import Settings
from sessionctl.producer import Producer
from tests.agno_seed import agno_db, seed_media_session
from tests.conftest import run_worker

USER, OTHER = "mallory", "victim"


async def _plant(pg: asyncpg.Connection, schema: str, session_id: str, ref: dict[str, Any]) -> None:
    """Write a reference into the user's own run, as a user could through the content of a message
    (the run JSON is theirs): a copy of another object's reference, under their own session id."""
    planted = {**ref, "session_id": session_id}
    await pg.execute(
        f"UPDATE \"{schema}\".agno_runs SET run_data = jsonb_set(run_data, '{{files}}',"
        " jsonb_build_array(jsonb_build_object('media_reference', $2::jsonb))) WHERE session_id = $1",
        session_id,
        json.dumps(planted),
    )


async def _ref_of(pg: asyncpg.Connection, schema: str, session_id: str) -> dict[str, Any]:
    raw = await pg.fetchval(
        f"SELECT jsonb_path_query_first(run_data, 'strict $.** ? (exists(@.media_reference)).media_reference')"
        f' FROM "{schema}".agno_runs WHERE session_id = $1',
        session_id,
    )
    return dict(json.loads(raw))


async def _erase(settings: Settings, user: str) -> Any:
    async with Producer(settings) as producer:
        enq = await producer.purge_user_sessions(user_id=user, all_agents=True)
        await run_worker(settings)
        return await producer.status(enq.job_id)


async def test_a_planted_reference_to_another_users_object_never_deletes_it(
    own_database: tuple[Settings, asyncpg.Connection], agent_id: str, tmp_path: Path
) -> None:
    from agno.media.storage import LocalMediaStorage

    base, pg = own_database
    storage = LocalMediaStorage(base_path=str(tmp_path / "media"))
    s = base.model_copy(update={"media_storages": f"local://{tmp_path / 'media'}"})
    schema = s.schema_for(agent_id)
    db = agno_db(s.database_url, schema)
    mine = await seed_media_session(db, storage, agent_id=agent_id, user_id=USER, session_id="s1", images=1)
    decoy = await seed_media_session(db, storage, agent_id=agent_id, user_id=USER, session_id="s9", images=1)
    # the victim's sessions: one whose id the attacker's shares as a prefix (s1-x), one apart
    prefixed = await seed_media_session(db, storage, agent_id=agent_id, user_id=OTHER, session_id="s1-x", images=1)
    apart = await seed_media_session(db, storage, agent_id=agent_id, user_id=OTHER, session_id="v-2", images=1)
    await db.close()
    assert prefixed[0].startswith("s1-x-") and media_storages.session_key_prefix("s1") == "s1-"
    await _plant(pg, schema, "s1", await _ref_of(pg, schema, "s1-x"))  # matches s1's key layout, but is s1-x's
    await _plant(pg, schema, "s9", await _ref_of(pg, schema, "v-2"))  # another session's key outright

    state = await _erase(s, USER)
    assert state.status == "succeeded", state
    assert storage.exists(prefixed[0]) and storage.exists(apart[0])  # the victim's objects stay
    assert state.result["stores"]["media objects left (not the session's own)"] == 2
    # the attacker's own objects: s1's went with its run (the planted copy replaced the run's files,
    # its image reference remains), s9's too
    assert not storage.exists(mine[0]) and not storage.exists(decoy[0])
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = $1', OTHER) == 2

    # the victim's own erasure then deletes the victim's objects
    again = await _erase(s, OTHER)
    assert again.status == "succeeded", again
    assert not storage.exists(prefixed[0]) and not storage.exists(apart[0])


def test_the_session_key_prefix_is_agnos_own_rule() -> None:
    """The prefix sessionctl expects is what Agno 3.1.10 builds (``build_storage_key`` over the
    session-scoped media id): a change of Agno's layout fails here first."""
    from agno.media.storage.utils import build_storage_key

    for sid in ("s1", "a/b c", "._lead", "ünï", "x" * 130, "s1-x"):
        key = build_storage_key(f"{sid[:120]}-m1-0123456789abcdef", prefix="agno/media/", mime_type="image/png")
        assert key.startswith("agno/media/" + media_storages.session_key_prefix(sid)), (sid, key)
