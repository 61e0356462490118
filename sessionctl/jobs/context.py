"""What a job gets from the worker that runs it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.media_storages import MediaSink
from sessionctl.privacy import user_hasher
from sessionctl.resolvers import ResolverChain, build_chain


class Progress(Protocol):
    """Where a job reports how far it is (the worker publishes it in Redis, throttled)."""

    async def update(self, *, processed: int, total: int | None, agent: str | None, force: bool = False) -> None: ...


class NoProgress:
    async def update(self, *, processed: int, total: int | None, agent: str | None, force: bool = False) -> None:
        return None


@dataclass(slots=True)
class JobContext:
    settings: Settings
    databases: Databases
    hash_key: bytes
    job_id: str
    job_try: int = 1
    progress: Progress = field(default_factory=NoProgress)
    resolvers: ResolverChain | None = None  # None: the static resolver (DATABASE_URL + naming rule)
    enqueued_at: datetime | None = None  # when the producer enqueued this job (arq's enqueue_time)
    media: MediaSink | None = (
        None  # the job's offloaded media (sessionctl.media_storages); None: no references expected
    )
    # enqueue an erasure (a PurgeRequest payload, origin "resweep"); its job id (the worker's producer)
    enqueue_erasure: Callable[[dict[str, Any]], Awaitable[str]] | None = None
    # the users' HMACs, computed once per job: a bulk erasure asks for 10,000 of them at each step
    _hmacs: dict[str, str] = field(default_factory=dict, repr=False)

    def hmacs(self, users: list[str]) -> list[str]:
        """The HMAC of each of these user ids (:func:`sessionctl.privacy.user_hmac`), in order."""
        known = self._hmacs
        missing = [u for u in users if u not in known]
        if missing:
            digest = user_hasher(self.hash_key)
            known.update((u, digest(u)) for u in missing)
        return [known[u] for u in users]

    def chain(self) -> ResolverChain:
        if self.resolvers is None:
            self.resolvers = build_chain(self.settings)
        return self.resolvers
