"""The rounds of a purge — delete, recount, delete what arrived meanwhile — on a fake store that
records every call: late writes are caught and counted, a writer that never stops fails the try
(retried) instead of a success, and a success always rests on a recount of 0."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import sessionctl.jobs.schema_purge as purge
from sessionctl import store
from sessionctl.config import Settings
from sessionctl.errors import ErasureIncomplete
from sessionctl.identifiers import Dsn
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.spec import MAX_ROUNDS, Spec
from sessionctl.jobs.targets import Target
from sessionctl.logs import get_logger
from sessionctl.store.catalog import Layout

USER = "u-1"


class FakeStore:
    """The store calls a purge round makes, over an in-memory list of the user's session ids.
    ``arrivals[n]``: sessions a writer adds right after the n-th delete."""

    def __init__(self, sessions: int, arrivals: dict[int, int] | None = None) -> None:
        self.ids = [f"s{i}" for i in range(sessions)]
        self.arrivals = arrivals or {}
        self.deletes = 0
        self.calls: list[str] = []
        self.next = sessions

    def __getattr__(self, name: str) -> Any:
        return getattr(store, name)  # types and helpers the purge reads off the store

    async def some_user_session_ids(self, conn: Any, layout: Layout, users: list[str], limit: int) -> list[str]:
        self.calls.append("some")
        return self.ids[:limit]

    async def delete_user_sessions(self, conn: Any, layout: Layout, users: list[str], ids: list[str]) -> Any:
        self.calls.append(f"delete:{len(ids)}")
        gone = [i for i in ids if i in self.ids]
        self.ids = [i for i in self.ids if i not in ids]
        self.deletes += 1
        for _ in range(self.arrivals.get(self.deletes, 0)):
            self.ids.append(f"s{self.next}")
            self.next += 1
        out = store.BatchOutcome()
        out.counts.sessions = len(gone)
        out.per_user = {USER: len(gone)} if gone else {}
        return out

    async def count_user_sessions(self, conn: Any, layout: Layout, users: Any) -> int:
        self.calls.append("count")
        return len(self.ids)


class _Databases:
    @contextlib.asynccontextmanager
    async def connect(self, dsn: Any) -> AsyncIterator[object]:
        yield object()


def _run(fake: FakeStore, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(purge, "store", fake)
    settings = Settings(hash_key="k", batch_size=100)
    ctx = JobContext(settings=settings, databases=_Databases(), hash_key=b"k", job_id="j")  # type: ignore[arg-type]
    layout = Layout(schema="ag_a", tables=frozenset({"agno_sessions"}), legacy_runs_column=False, payload_table=False)
    target = Target("a", Dsn.parse("postgresql://x@h/d"), layout)
    return purge.purge_schema(ctx, Spec([USER]), target, get_logger("test"))


async def test_late_sessions_are_caught_by_the_recount_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStore(5, arrivals={1: 2})
    res, per_user = await _run(fake, monkeypatch)
    assert fake.calls == ["some", "delete:5", "count", "some", "delete:2", "count"]
    assert res.sessions_deleted == 7 and res.late_sessions == 2 and res.remaining == 0
    assert per_user == {USER: 7}


async def test_a_writer_that_never_stops_fails_the_try_instead_of_a_success(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStore(1, arrivals={n: 1 for n in range(1, 50)})
    with pytest.raises(ErasureIncomplete, match="remain after 5 rounds"):
        await _run(fake, monkeypatch)
    assert fake.calls.count("count") == MAX_ROUNDS  # every round ended in a recount


async def test_nothing_to_delete_is_proved_by_a_count_of_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeStore(0)
    res, _ = await _run(fake, monkeypatch)
    assert fake.calls == ["some", "count"] and res.sessions_deleted == 0 and res.remaining == 0
