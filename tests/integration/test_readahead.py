"""An export's pages read ahead on spare connections (sessionctl/jobs/readahead.py), on real Postgres: the
same lines in the same order as one page at a time, never a duplicate or a gap under concurrent
writes, no connection a job waits for, nothing left running after a failure."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from typing import Any

import asyncpg
import pytest

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.errors import DatabaseUnavailable
from sessionctl.identifiers import Dsn
from sessionctl.jobs.export import _lines
from sessionctl.jobs.export_stores import envelope as _envelope
from sessionctl.jobs.readahead import PageReader
from sessionctl.jobs.targets import Target
from tests.agno_seed import agno_db, clone_sessions, seed_sessions

USER = "mara@example.com"


async def _target(settings: Settings, pg: asyncpg.Connection, agent_id: str, n: int) -> Target:
    """Mara's ``n`` sessions (cloned from an Agno-written one) beside another user's."""
    schema = settings.schema_for(agent_id)
    db = agno_db(settings.database_url, schema)
    await seed_sessions(db, agent_id, USER, 1)
    await seed_sessions(db, agent_id, "someone-else", 1)
    await db.close()
    await clone_sessions(pg, schema, f"{agent_id}-{USER}-s0", USER, n - 1, "c")
    await clone_sessions(pg, schema, f"{agent_id}-someone-else-s0", "someone-else", 300, "o")
    await store.init_connection(pg)
    layout = await store.read_layout(pg, schema)
    assert layout is not None
    return Target(agent_id, Dsn.parse(settings.database_url), layout)


async def _read(
    dbs: Databases, target: Target, *, limit: int, readers: int, render: Any = _lines
) -> tuple[list[bytes], list[int], int]:
    """Every line, the size of every page, and how many pages were read ahead."""
    out: list[bytes] = []
    sizes: list[int] = []
    pages = PageReader(
        dbs,
        target,
        store.Window(user_id=USER),
        envelope=_envelope(target),
        limit=limit,
        readers=readers,
        render=render,
    )
    async with pages:
        while (lines := await pages.next()) is not None:
            out += lines
            sizes.append(len(lines))
    return out, sizes, pages.read_ahead


def _keys(lines: list[bytes]) -> list[tuple[int, str]]:
    return [(s["created_at"], s["session_id"]) for s in (json.loads(x)["session"] for x in lines)]


async def test_pages_read_ahead_are_the_pages_one_reader_reads_line_for_line(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    target = await _target(settings, pg, agent_id, 1_050)
    dbs = Databases(pool_size=4)
    try:
        one, one_sizes, one_ahead = await _read(dbs, target, limit=100, readers=1)
        two, two_sizes, two_ahead = await _read(dbs, target, limit=100, readers=2)
        three, _, three_ahead = await _read(dbs, target, limit=100, readers=3)
        assert dbs._leases[target.dsn] == 0  # every connection back in the pool
    finally:
        await dbs.close()
    assert len(one) == 1_050 and one == two == three  # byte for byte, in order
    keys = _keys(one)
    assert keys == sorted(keys) and len(set(keys)) == 1_050
    assert one_sizes == two_sizes == [100] * 10 + [50]
    assert one_ahead == 0
    assert two_ahead >= 1 and three_ahead >= 1  # (how many depends on the probes' cost: see below)


async def test_pages_stop_probing_for_their_end_when_it_costs_as_much_as_the_page(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an index for the window's order a probe scans what its page scans: the reader then
    reads one page at a time (same lines), rather than doubling the database's work."""
    target = await _target(settings, pg, agent_id, 1_000)
    real = store.export_page_end
    probes = 0

    async def slow_probe(*a: Any, **kw: Any) -> Any:
        nonlocal probes
        probes += 1
        await asyncio.sleep(0.05)  # far more than rendering a page of 50 takes
        return await real(*a, **kw)

    dbs = Databases(pool_size=4)
    try:
        expected, _, _ = await _read(dbs, target, limit=50, readers=1)
        assert probes == 0  # one reader never probes
        monkeypatch.setattr(store, "export_page_end", slow_probe)
        pages = PageReader(
            dbs, target, store.Window(user_id=USER), envelope=_envelope(target), limit=50, readers=2, render=_lines
        )
        lines: list[bytes] = []
        async with pages:
            while (page := await pages.next()) is not None:
                lines += page
    finally:
        await dbs.close()
    assert lines == expected
    # Two dear probes in a row turn probing off, not counting a connection's first probe (which
    # plans it too): of the 20 pages, those on the first few connections and the page started
    # meanwhile probed
    assert not pages.probing and probes <= 8


async def test_with_no_spare_connection_the_writer_reads_every_page_itself(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    target = await _target(settings, pg, agent_id, 250)
    dbs = Databases(pool_size=1)  # the page the writer waits for holds the only connection
    try:
        lines, sizes, ahead = await asyncio.wait_for(_read(dbs, target, limit=40, readers=4), 30)
    finally:
        await dbs.close()
    assert len(lines) == 250 and sizes == [40] * 6 + [10]
    assert ahead == 0


async def test_writes_committed_while_pages_are_read_never_duplicate_or_skip_a_session_that_stayed(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a page's probe for its end and its rendering — and while pages ahead are under
    way — another connection commits deletes and inserts inside that page and the next: every key
    exported once, in order, and every session present throughout exported."""
    target = await _target(settings, pg, agent_id, 600)
    schema = target.layout.schema
    rows = await pg.fetch(
        f'SELECT created_at, session_id FROM "{schema}".agno_sessions WHERE user_id = $1 ORDER BY 1, 2', USER
    )
    before = [(int(r[0]), str(r[1])) for r in rows]
    deleted: set[str] = set()
    writer = await asyncpg.connect(settings.database_url)
    lock = asyncio.Lock()  # pages are read at once; the writer is one connection
    real = store.export_lines

    async def churn_then_read(conn: Any, layout: Any, window: Any, **kw: Any) -> Any:
        start, end = kw["after"], kw["upto"]
        inside = [k for k in before if (start is None or k > start) and (end is None or k <= end)]
        first = before.index(inside[0]) if inside else len(before)
        # two of this page and two of the next; three more sessions than go: a page read in a
        # later snapshot than its probe's would overflow its end
        doomed = [before[i][1] for i in (first + 1, first + 3, first + 60, first + 61) if i < len(before)]
        async with lock:
            deleted.update(doomed)
            await writer.execute(f'DELETE FROM "{schema}".agno_sessions WHERE session_id = ANY($1::text[])', doomed)
            for at, sid in inside[5:8]:  # sorts right after a session of this page
                await writer.execute(
                    f'INSERT INTO "{schema}".agno_sessions (session_id, session_type, user_id, created_at)'
                    " VALUES ($1, 'agent', $2, $3) ON CONFLICT DO NOTHING",
                    f"{sid}-new",
                    USER,
                    at,
                )
        await asyncio.sleep(0.005)  # let the pages ahead probe meanwhile
        return await real(conn, layout, window, **kw)

    monkeypatch.setattr(store, "export_lines", churn_then_read)
    dbs = Databases(pool_size=4)
    try:
        lines, _, ahead = await _read(dbs, target, limit=50, readers=3)
    finally:
        await dbs.close()
        await writer.close()
    assert ahead > 0 and deleted
    keys = _keys(lines)
    assert keys == sorted(keys) and len(set(keys)) == len(keys)  # in order, no duplicate
    assert {k for k in before if k[1] not in deleted} <= set(keys)  # no gap
    assert {k for k in keys if k[1] in deleted}  # deleted after its page's snapshot: still exported


class _Boom(RuntimeError):
    pass


async def test_a_failing_page_fails_the_read_and_leaves_no_page_running_nor_connection_held(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    target = await _target(settings, pg, agent_id, 400)
    started = 0
    finished = 0

    async def render(conn: Any, t: Target, rows: list[Any]) -> list[bytes]:
        nonlocal started, finished
        started += 1
        if started == 3:
            raise _Boom("page 3")
        await asyncio.sleep(0.05)
        finished += 1
        return await _lines(conn, t, rows)

    dbs = Databases(pool_size=4)
    try:
        with pytest.raises(_Boom):
            await _read(dbs, target, limit=50, readers=3, render=render)
        assert dbs._leases[target.dsn] == 0
        running = [t for t in asyncio.all_tasks() if "PageReader._read" in repr(t.get_coro())]
        assert running == []
    finally:
        await dbs.close()
    assert finished <= 3  # the pages after the failure were cancelled, not read to the end


async def test_a_cancelled_export_gives_every_connection_back(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    target = await _target(settings, pg, agent_id, 400)
    gate = asyncio.Event()

    async def slow(conn: Any, t: Target, rows: list[Any]) -> list[bytes]:
        gate.set()
        await asyncio.sleep(30)
        return []

    dbs = Databases(pool_size=4)
    try:
        reading = asyncio.create_task(_read(dbs, target, limit=50, readers=3, render=slow))
        await asyncio.wait_for(gate.wait(), 10)
        await asyncio.sleep(0.2)  # pages ahead under way too
        assert dbs._leases[target.dsn] >= 2
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        assert dbs._leases[target.dsn] == 0
    finally:
        await dbs.close()


async def test_losing_the_database_on_a_page_read_ahead_is_an_outage_the_job_retries(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    """A page read ahead holds a spare connection, outside the writer's own: losing it must still
    raise DatabaseUnavailable (retried), not a raw driver error (which fails the job for good)."""
    target = await _target(settings, pg, agent_id, 300)
    admin = await asyncpg.connect(settings.database_url)
    killed: list[int] = []

    async def kill_after_the_first_page(conn: Any, t: Target, rows: list[Any]) -> list[bytes]:
        if rows and rows[0]["session_id"] != f"{agent_id}-{USER}-s0":  # page 2 on: read ahead
            killed.append(conn.get_server_pid())
            await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        return await _lines(conn, t, rows)

    dbs = Databases(pool_size=4)
    try:
        with pytest.raises(DatabaseUnavailable):
            await _read(dbs, target, limit=50, readers=2, render=kill_after_the_first_page)
        assert killed and dbs._leases[target.dsn] == 0
    finally:
        await dbs.close()
        await admin.close()


@pytest.mark.parametrize("readers", [1, 2])
async def test_sessions_without_a_creation_time_are_exported_last_in_session_id_order(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, readers: int
) -> None:
    target = await _target(settings, pg, agent_id, 60)
    schema = target.layout.schema
    await pg.execute(f'ALTER TABLE "{schema}".agno_sessions ALTER COLUMN created_at DROP NOT NULL')
    nulls = await pg.fetch(
        f'UPDATE "{schema}".agno_sessions SET created_at = NULL WHERE user_id = $1'
        f' AND session_id IN (SELECT session_id FROM "{schema}".agno_sessions WHERE user_id = $1'
        " ORDER BY session_id DESC LIMIT 35) RETURNING session_id",
        USER,
    )
    layout = await store.read_layout(pg, schema)
    assert layout is not None and layout.created_at_nullable
    target = Target(target.label, target.dsn, layout)
    dbs = Databases(pool_size=4)
    try:
        lines, sizes, _ = await _read(dbs, target, limit=10, readers=readers)
    finally:
        await dbs.close()
    sessions = [json.loads(x)["session"] for x in lines]
    assert len(sessions) == 60 and sizes == [10, 10, 5, 10, 10, 10, 5]  # a walk of their own
    dated = [(s["created_at"], s["session_id"]) for s in sessions[:25]]
    assert dated == sorted(dated) and None not in {c for c, _ in dated}
    assert [s["session_id"] for s in sessions[25:]] == sorted(r["session_id"] for r in nulls)
    assert all(s["created_at"] is None for s in sessions[25:])


async def test_sessions_without_a_creation_time_in_a_table_inheriting_from_agno_sessions_are_exported(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    """A child table may drop NOT NULL where its parent keeps it (a partition may not)."""
    target = await _target(settings, pg, agent_id, 30)
    schema = target.layout.schema
    assert not target.layout.created_at_nullable
    await pg.execute(f'CREATE TABLE "{schema}".old_sessions () INHERITS ("{schema}".agno_sessions)')
    await pg.execute(f'ALTER TABLE "{schema}".old_sessions ALTER COLUMN created_at DROP NOT NULL')
    await pg.execute(
        f'INSERT INTO "{schema}".old_sessions (session_id, session_type, user_id, created_at)'
        " SELECT 'old-' || g, 'agent', $1, NULL FROM generate_series(1, 7) g",
        USER,
    )
    layout = await store.read_layout(pg, schema)
    assert layout is not None and layout.created_at_nullable
    dbs = Databases(pool_size=4)
    try:
        lines, _, _ = await _read(dbs, Target(target.label, target.dsn, layout), limit=10, readers=2)
    finally:
        await dbs.close()
    ids = [json.loads(x)["session"]["session_id"] for x in lines]
    assert len(ids) == 37 and ids[30:] == sorted(f"old-{g}" for g in range(1, 8))


@pytest.mark.parametrize("readers", [1, 2, 3])
async def test_an_export_holds_at_most_readers_plus_two_pages(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, readers: int
) -> None:
    """Pages read and not yet written, while the writer is slow: the pages read or awaited, the
    one waiting for its write and the one being written — never more."""
    target = await _target(settings, pg, agent_id, 400)
    alive = peak = 0

    async def render(conn: Any, t: Target, rows: list[Any]) -> list[bytes]:
        nonlocal alive, peak
        lines = await _lines(conn, t, rows)
        alive += 1
        peak = max(peak, alive)
        return lines

    dbs = Databases(pool_size=4)
    try:
        pages = PageReader(
            dbs,
            target,
            store.Window(user_id=USER),
            envelope=_envelope(target),
            limit=20,
            readers=readers,
            render=render,
        )

        async def write() -> None:  # slow, and beside the reads, as export's thread is
            nonlocal alive
            await asyncio.sleep(0.03)
            alive -= 1

        writing: asyncio.Task[None] | None = None
        async with pages:
            while (await pages.next()) is not None:  # as sessionctl/jobs/export.py's _write does
                if writing is not None:
                    await writing
                writing = asyncio.create_task(write())
        assert writing is not None
        await writing
    finally:
        await dbs.close()
    # the pages read or awaited, the one waiting for its write, the one being written
    assert readers + 1 <= peak <= readers + 2


async def test_exports_cancelled_at_any_moment_give_back_every_connection(
    settings: Settings, pg: asyncpg.Connection, agent_id: str
) -> None:
    target = await _target(settings, pg, agent_id, 300)
    rng = random.Random(7)
    dbs = Databases(pool_size=3)
    try:
        for _ in range(60):
            reading = asyncio.create_task(_read(dbs, target, limit=25, readers=3))
            await asyncio.sleep(rng.uniform(0, 0.03))
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            assert dbs._leases.get(target.dsn, 0) == 0 and dbs._waiting.get(target.dsn, 0) == 0
        lines, _, _ = await _read(dbs, target, limit=25, readers=3)
        assert len(lines) == 300  # the pool still works
    finally:
        await dbs.close()
