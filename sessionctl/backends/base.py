"""What every declared store does for an erasure, a count, an access export and a re-sweep
(:class:`Backend`), and whom it is done for (:class:`Person`).

A backend is opened for one job and closed after it. Opening checks that the store is reachable and
that what the deployment file names exists — a table, a collection, a file — and creates nothing:
Agno's own classes create what is missing, and a mistyped name would then recount 0, a false "done".
Client libraries are synchronous; each backend runs its calls on a thread of its own, in order."""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from sessionctl.errors import ExtraMissing

T = TypeVar("T")
CHUNK = 500  # owner ids per filter (a bulk erasure names up to 10,000)


@dataclass(slots=True)
class Person:
    """Whom a job is about: their ids (never logged) and, collected before anything is deleted, the
    ids of their runs — AgentOS keeps a run's event stream under the run's id, not the person's."""

    users: list[str]
    run_ids: set[str] = field(default_factory=set)


class Backend(ABC):
    """One declared store, for one job."""

    recounts: ClassVar[bool] = True  # can count a person's items: an erasure there proves itself
    lists_owners: ClassVar[bool] = True  # the re-sweep can list whose items it holds
    holds_runs: ClassVar[bool] = False  # a session database: knows the person's run ids
    by_runs: ClassVar[bool] = False  # finds a person's items through their run ids only
    expires: ClassVar[bool] = False  # keeps a time per item: a retention policy may clean it by age
    # where Agno keeps no owner sessionctl can read, or the backend keeps deleted data: what that
    # means (docs, receipts)
    exemption: str | None = None

    def __init__(self, decl: Any) -> None:
        self.decl = decl
        self.label: str = decl.label
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"sessionctl-{decl.kind}")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on this backend's thread (client libraries are synchronous)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def open(self) -> None:
        """Connect and check that the declared table, collection or file exists (creating nothing):
        :class:`~sessionctl.errors.StoreMisdeclared`, or :class:`~sessionctl.errors.StoreUnreachable`."""
        await self.call(self._open)

    async def close(self) -> None:
        try:
            await self.call(self._close)
        finally:
            self._thread.shutdown(wait=False)

    async def count(self, person: Person) -> int:
        """The person's items here (all of ``person.users`` together)."""
        return await self.call(self._count, person)

    async def erase(self, person: Person) -> int:
        """Delete the person's items (for good: files rewritten where the backend keeps deleted data
        around); how many there were."""
        return await self.call(self._erase, person)

    async def rows(self, user: str) -> AsyncIterator[dict[str, Any]]:
        """The person's items, as JSON-ready dicts (an access export); vectors left out."""
        for row in await self.call(self._rows, user):
            yield row

    async def owners(self) -> list[tuple[str, int]]:
        """Every owner id with how many items it has (the re-sweep HMACs them at once)."""
        return await self.call(self._owners)

    async def expire(self, cutoff: int, *, dry_run: bool, keep: list[str] | None = None) -> tuple[int, int]:
        """Items older than ``cutoff`` (epoch seconds, by their own time), none of the users of
        ``keep`` (under a legal hold: kept, and not counted as left): (deleted — in a dry run, that
        would be —, left after)."""
        return await self.call(self._expire, cutoff, dry_run, list(keep or ()))

    def _expire(self, cutoff: int, dry_run: bool, keep: list[str]) -> tuple[int, int]:
        raise NotImplementedError

    async def run_ids(self, users: list[str]) -> set[str]:
        """The ids of the users' runs this store holds (a session database; nothing elsewhere)."""
        return set()

    @abstractmethod
    def _open(self) -> None: ...

    def _close(self) -> None:
        return None

    @abstractmethod
    def _count(self, person: Person) -> int: ...

    @abstractmethod
    def _erase(self, person: Person) -> int: ...

    @abstractmethod
    def _rows(self, user: str) -> list[dict[str, Any]]: ...

    def _owners(self) -> list[tuple[str, int]]:
        raise NotImplementedError


def chunks(users: list[str], size: int = CHUNK) -> Iterable[list[str]]:
    for i in range(0, len(users), size):
        yield users[i : i + size]


def needs(module: str, label: str, extra: str) -> Any:
    """Import a store's client library, or :class:`~sessionctl.errors.ExtraMissing` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExtraMissing(
            f'{label}: the {extra} store needs the {module} package: pip install "sessionctl[{extra}]"'
        ) from None


def jsonable(value: Any) -> Any:
    """A value as an export line holds it: JSON text decoded where it is a JSON object or array."""
    if isinstance(value, bytes | bytearray):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
