"""The SQL of a purge batch, on real Postgres: owner-checked, atomic, keyed on what it deleted."""

from __future__ import annotations

import itertools
import json

import asyncpg
import pytest

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.identifiers import quote_ident
from tests.agno_seed import add_payloads, agno_db, ensure_payload_table, seed, seed_sessions


async def test_a_session_that_changed_owner_after_the_snapshot_is_neither_deleted_nor_stripped(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    schema = settings.schema_for(agent_id)
    await ensure_payload_table(pg)
    ids = await seed(settings.database_url, schema, agent_id, "alice", 4, extras=True)
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
    ids = await seed(settings.database_url, schema, agent_id, "zed", 25, runs=0)
    layout = await store.read_layout(pg, schema)
    assert layout is not None
    await store.snapshot_user_session_ids(pg, layout, ["zed"])
    seen: list[str] = []
    after = None
    while page := await store.next_snapshot_ids(pg, after, 7):
        seen.extend(page)
        after = page[-1]
    assert seen == sorted(ids)


async def _indexed_schema(settings: Settings, pg: asyncpg.Connection, agent_id: str) -> tuple[store.Layout, list[str]]:
    """Alice's 7 sessions and Bob's 3, created at the same instants (ties broken by id), indexed."""
    schema = settings.schema_for(agent_id)
    db = agno_db(settings.database_url, schema)
    alice = await seed_sessions(db, agent_id, "alice", 7, base_ts=1_700_000_000)
    await seed_sessions(db, agent_id, "bob", 3, base_ts=1_700_000_000)
    await db.close()
    await store.create_index(pg, schema, store.NEEDED_INDEXES[0])
    await store.init_connection(pg)
    layout = await store.read_layout(pg, schema)
    assert layout is not None and layout.user_index and layout.runs_cascade
    return layout, alice


async def _walk(pg: asyncpg.Connection, layout: store.Layout, user: str, size: int) -> list[tuple[int, int]]:
    batches = []
    after: store.SessionKey | None = None
    while True:
        outcome, after = await store.delete_user_range(pg, layout, user, after, size)
        if after is None:
            assert outcome.counts.sessions == 0
            return batches
        batches.append((outcome.counts.sessions, outcome.counts.runs))


@pytest.mark.parametrize("track_counts", ["on", "off"])
async def test_range_batches_walk_the_users_index_and_count_the_runs_the_cascade_deletes(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, track_counts: str
) -> None:
    layout, _ = await _indexed_schema(settings, pg, agent_id)
    # runs go by Agno's ON DELETE CASCADE and are counted from this transaction's delete counter;
    # without statistics counters they are deleted and counted by our own statement instead
    await pg.execute(f"SET track_counts = {track_counts}")
    assert await _walk(pg, layout, "alice", 3) == [(3, 6), (3, 6), (1, 2)]
    schema = quote_ident(layout.schema)
    assert await store.count_user_sessions(pg, layout, ["alice"]) == 0
    assert await pg.fetchval(f"SELECT count(*) FROM {schema}.agno_runs WHERE user_id = 'alice'") == 0
    assert await store.count_user_sessions(pg, layout, ["bob"]) == 3
    assert await pg.fetchval(f"SELECT count(*) FROM {schema}.agno_runs WHERE user_id = 'bob'") == 6


async def test_a_range_batch_never_deletes_a_session_that_is_not_the_users(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    layout, alice = await _indexed_schema(settings, pg, agent_id)
    outcome, after = await store.delete_user_range(pg, layout, "alice", None, 2)
    assert outcome.counts.sessions == 2 and after is not None
    # the cursor is where the walk stopped: the next batch starts right after it, in index order
    assert after == (1_700_000_001, sorted(alice)[1])
    outcome, after = await store.delete_user_range(pg, layout, "nobody", None, 100)
    assert (outcome.counts.sessions, after) == (0, None)
    assert await store.count_sessions_per_user(pg, layout, ["alice", "bob"]) == {"alice": 5, "bob": 3}


@pytest.mark.parametrize("how", ["replica-role", "trigger-disabled", "runs-partitioned"])
async def test_runs_go_and_are_counted_when_the_cascade_would_not_do_it(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, how: str
) -> None:
    """Runs are left to Agno's ON DELETE CASCADE only where it fires and its count can be read:
    not under session_replication_role=replica, not with the trigger disabled, not for a
    partitioned runs table (whose deletes are counted on its partitions)."""
    layout, _ = await _indexed_schema(settings, pg, agent_id)
    schema = quote_ident(layout.schema)
    if how == "replica-role":
        await pg.execute("SET session_replication_role = replica")
    elif how == "trigger-disabled":
        await pg.execute(f"ALTER TABLE {schema}.agno_sessions DISABLE TRIGGER ALL")
    else:
        await pg.execute(
            f"ALTER TABLE {schema}.agno_runs RENAME TO runs_flat;"
            f" CREATE TABLE {schema}.agno_runs (LIKE {schema}.runs_flat INCLUDING DEFAULTS) PARTITION BY LIST (run_type);"
            f" CREATE TABLE {schema}.agno_runs_all PARTITION OF {schema}.agno_runs DEFAULT;"
            f" ALTER TABLE {schema}.agno_runs ADD FOREIGN KEY (session_id)"
            f"  REFERENCES {schema}.agno_sessions (session_id) ON DELETE CASCADE;"
            f" INSERT INTO {schema}.agno_runs SELECT * FROM {schema}.runs_flat; DROP TABLE {schema}.runs_flat"
        )
    layout = await store.read_layout(pg, layout.schema)
    assert layout is not None
    assert layout.runs_cascade == {"replica-role": "O", "trigger-disabled": "D", "runs-partitioned": ""}[how]
    try:
        assert await _walk(pg, layout, "alice", 3) == [(3, 6), (3, 6), (1, 2)]
        assert (await store.delete_all_of_users(pg, layout, ["bob"])).counts.runs == 6
    finally:
        await pg.execute("RESET session_replication_role")
    assert await pg.fetchval(f"SELECT count(*) FROM {schema}.agno_runs") == 0


async def test_sessions_without_a_creation_time_are_purged_too(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    """A range walk cannot place a NULL created_at (Agno declares NOT NULL; a hand-made table may
    not): the walk stops there and the recount's next round takes them."""
    from sessionctl.producer import Producer
    from tests.conftest import run_worker

    layout, alice = await _indexed_schema(settings, pg, agent_id)
    schema = quote_ident(layout.schema)
    await pg.execute(f"ALTER TABLE {schema}.agno_sessions ALTER COLUMN created_at DROP NOT NULL")
    await pg.execute(f"UPDATE {schema}.agno_sessions SET created_at = NULL WHERE session_id = ANY($1)", alice[:5])
    small = settings.model_copy(update={"batch_size": 3})  # the first range holds both kinds
    async with Producer(small) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id="alice")
        await run_worker(small)
        state = await producer.status(enq.job_id)
    assert state.status == "succeeded", state.error
    assert state.result is not None and (state.result["sessions_deleted"], state.result["remaining"]) == (7, 0)
    assert await store.count_sessions_per_user(pg, layout, ["alice", "bob"]) == {"bob": 3}


async def _keys(pg: asyncpg.Connection, layout: store.Layout, user: str) -> list[store.SessionKey]:
    rows = await pg.fetch(
        f"SELECT created_at, session_id FROM {quote_ident(layout.schema)}.agno_sessions WHERE user_id = $1"
        " ORDER BY created_at, session_id",
        user,
    )
    return [(r["created_at"], r["session_id"]) for r in rows]


async def test_split_keys_cut_a_users_index_range_into_slices_that_walk_every_session_once(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    """Parallel walkers each take a slice [start, stop) of the user's index range: together the
    slices hold each of the user's sessions exactly once, and nobody else's."""
    layout, _ = await _indexed_schema(settings, pg, agent_id)
    order = await _keys(pg, layout, "alice")
    assert len(order) == 7
    cuts = await store.split_keys(pg, layout, "alice", 7, 3)
    assert cuts == [order[2], order[4]]  # offsets 7*1//3 and 7*2//3
    assert await store.split_keys(pg, layout, "alice", 7, 1) == []
    assert await store.split_keys(pg, layout, "alice", 20, 3) == [order[6]]  # fewer than counted: fewer cuts

    bounds: list[store.SessionKey | None] = [None, *cuts, None]
    walked = []
    for start, stop in itertools.pairwise(bounds):
        after: store.SessionKey | None = None
        while True:
            outcome, after = await store.delete_user_range(pg, layout, "alice", after, 2, start=start, stop=stop)
            walked.append(outcome.counts.sessions)
            if after is None:
                break
    # [None, order[2]) holds 2, [order[2], order[4]) 2, [order[4], None) 3 (a batch of 2, then 1)
    assert [n for n in walked if n] == [2, 2, 2, 1]
    assert await store.count_sessions_per_user(pg, layout, ["alice", "bob"]) == {"bob": 3}


async def test_a_cut_is_never_placed_at_a_session_without_a_creation_time(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    """NULL created_at sorts last and compares as unknown: a slice bounded by it would be empty."""
    layout, _ = await _indexed_schema(settings, pg, agent_id)
    order = await _keys(pg, layout, "alice")
    schema = quote_ident(layout.schema)
    await pg.execute(f"ALTER TABLE {schema}.agno_sessions ALTER COLUMN created_at DROP NOT NULL")
    await pg.execute(
        f"UPDATE {schema}.agno_sessions SET created_at = NULL WHERE session_id = ANY($1)", [k[1] for k in order[3:]]
    )
    assert await store.split_keys(pg, layout, "alice", 7, 2) == []  # offset 3 is the first NULL
    assert await store.split_keys(pg, layout, "alice", 7, 3) == [order[2]]  # offsets 2 and 4


async def test_a_partitioned_sessions_table_is_never_walked_by_tuple_id(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    """Tuple ids repeat across partitions: a range deleted by tuple id would take rows of other
    partitions (other slices' rows, and more than the batch). A partitioned agno_sessions takes
    the snapshot path, keyed by session id, even with the index."""
    from sessionctl.producer import Producer
    from tests.conftest import run_worker

    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, "bob", 3, runs=0)
    q = quote_ident(schema)
    await pg.execute(
        f"DROP TABLE IF EXISTS {q}.agno_runs CASCADE;"
        f" ALTER TABLE {q}.agno_sessions RENAME TO flat;"
        f" CREATE TABLE {q}.agno_sessions (LIKE {q}.flat INCLUDING DEFAULTS) PARTITION BY HASH (session_id);"
        f" ALTER TABLE {q}.agno_sessions ADD PRIMARY KEY (session_id);"
        + "".join(
            f" CREATE TABLE {q}.p{i} PARTITION OF {q}.agno_sessions FOR VALUES WITH (MODULUS 4, REMAINDER {i});"
            for i in range(4)
        )
        + f" INSERT INTO {q}.agno_sessions SELECT * FROM {q}.flat; DROP TABLE {q}.flat;"
        f" INSERT INTO {q}.agno_sessions (session_id, session_type, user_id, created_at, updated_at)"
        "  SELECT 's' || g, 'agent', 'alice', 1700000000 + g, 0 FROM generate_series(1, 2000) g;"
        f" CREATE INDEX ON {q}.agno_sessions (user_id, created_at, session_id)"
    )
    layout = await store.read_layout(pg, schema)
    assert layout is not None and not layout.user_index
    small = settings.model_copy(update={"batch_size": 50, "purge_walkers": 2})
    async with Producer(small) as producer:
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id="alice")
        await run_worker(small)
        state = await producer.status(enq.job_id)
    assert state.status == "succeeded", state.error
    r = state.result
    assert r is not None and (r["sessions_deleted"], r["remaining"]) == (2000, 0)
    assert r["agents"][agent_id]["batches"] == 40  # batches of exactly 50
    assert await store.count_sessions_per_user(pg, layout, ["alice", "bob"]) == {"bob": 3}


async def test_a_bulk_erasures_receipts_are_written_once_whichever_try_writes_them(pg: asyncpg.Connection) -> None:
    """The first try writes one receipt per user; a try after a crash finds its own and writes none
    twice; receipts of another erasure under that job id fail the job (never a receipt skipped)."""
    import uuid
    from datetime import UTC, datetime

    from sessionctl.errors import ReceiptConflict
    from sessionctl.store import migrations, receipts

    await migrations.migrate(pg)
    job_id = f"test:purge_users:{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    shared = {
        "job_id": job_id,
        "kind": "purge_users",
        "target": "agent-r",
        "agents": {"agent-r": "ag_agent_r"},
        "started_at": now,
        "finished_at": now,
        "requested_by": "ops",
        "scope": "sessions",
        "stores": {},
        "origin": "request",
        "complete": True,
    }
    sessions = {f"hmac-{i}": i for i in range(50)}
    for _ in range(2):  # the job's try, then a try after a crash that had written them
        await receipts.record_many(pg, shared=shared, sessions=sessions, schemas_checked=1, enqueued_at=now)
    written = await pg.fetch("SELECT user_hmac, counts FROM sessionctl.receipts WHERE job_id = $1", job_id)
    assert len(written) == 50 and {r["user_hmac"] for r in written} == set(sessions)
    assert all(json.loads(r["counts"])["sessions"] == sessions[r["user_hmac"]] for r in written)
    with pytest.raises(ReceiptConflict):  # the same job id, another erasure (another target)
        await receipts.record_many(
            pg, shared={**shared, "target": "agent-s"}, sessions=sessions, schemas_checked=1, enqueued_at=now
        )
