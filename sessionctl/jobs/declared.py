"""A person's data in the stores the deployment file declares (:mod:`sessionctl.deployment`,
:mod:`sessionctl.backends`), for everything that covers "all": an erasure of scope ``all`` at every
agent (the DSR service's default), ``verify``, the access export, the re-sweep.

An erasure opens every declared store before it deletes anything anywhere — one unreachable or
misdeclared fails the job with nothing deleted — and collects the person's run ids (AgentOS's event
streams are keyed by run) from every session database while the runs still exist. It erases the
event streams first, then, after the Postgres schemas, every other store, each recounted: a store
where the person remains fails the try (retried), and the final recount of the person
(:func:`sessionctl.jobs.person.completeness`) counts every store again."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sessionctl import deployment, store
from sessionctl.backends import Backend, Person, opened
from sessionctl.errors import ErasureIncomplete
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.targets import Target

UNCOUNTABLE = -1  # in ``remains``: a store that cannot recount the person (complete is then false)


@dataclass(slots=True)
class Declared:
    """The declared stores of one job, opened; whom the job is about."""

    backends: list[Backend]
    person: Person
    erased: dict[str, int] = field(default_factory=dict)
    proven: set[str] = field(default_factory=set)  # recounted to 0 right after their erasure

    async def collect_runs(self, ctx: JobContext, targets: list[Target]) -> None:
        """The person's run ids, from every agent schema and every declared session database —
        only where a declared store is found by run (AgentOS's event streams)."""
        if not any(b.by_runs for b in self.backends):
            return
        for t in targets:
            async with ctx.databases.connect(t.dsn) as conn:
                self.person.run_ids |= await store.run_ids_of(conn, t.layout, self.person.users)
        for b in self.backends:
            if b.holds_runs:
                self.person.run_ids |= await b.run_ids(self.person.users)

    async def erase(self, *, by_runs: bool, dry_run: bool) -> dict[str, int]:
        """Erase the person from the stores found by run (``by_runs``: first, while their runs exist)
        or from every other one; items per store (in a dry run: that would be). Each store is
        recounted after: the person still there raises :class:`~sessionctl.errors.ErasureIncomplete`."""
        out: dict[str, int] = {}
        for b in self.backends:
            if b.by_runs != by_runs:
                continue
            if dry_run:
                out[b.label] = await b.count(self.person)
                continue
            out[b.label] = await b.erase(self.person)
            if b.recounts and await b.count(self.person):
                raise ErasureIncomplete(f"items of the user remain in {b.label} after its erasure")
            if b.recounts and not by_runs:  # a stream may come back while its run finishes: counted again
                self.proven.add(b.label)
        self.erased.update(out)
        return out

    async def remains(self) -> dict[str, int]:
        """What is left of the person in each store (a store that cannot recount: -1); the stores
        this job recounted to 0 right after erasing them are not counted twice."""
        out: dict[str, int] = {}
        for b in self.backends:
            if b.label in self.proven:
                continue
            n = await b.count(self.person) if b.recounts else UNCOUNTABLE
            if n:
                out[b.label] = n
        return out


@contextlib.asynccontextmanager
async def declared_stores(ctx: JobContext, users: list[str], *, everything: bool) -> AsyncIterator[Declared | None]:
    """The declared stores, opened and checked, for a job that covers the person everywhere
    (``everything``: scope ``all`` at every agent); ``None`` for any other job, or without a
    deployment file."""
    if not everything:
        yield None
        return
    declared = deployment.load(ctx.settings.config_file)
    if not declared.stores:
        yield None
        return
    async with opened(declared) as backends:
        yield Declared(backends, Person(list(users)))


async def counts_of(ctx: JobContext, users: list[str]) -> dict[str, int]:
    """The people's items in every declared store (``verify``; event streams found through their
    runs in every agent schema); a store that cannot recount: -1."""
    from sessionctl.jobs.targets import resolve_targets

    async with declared_stores(ctx, users, everything=True) as found:
        if found is None:
            return {}
        await found.collect_runs(ctx, await resolve_targets(ctx, None, True))
        return {b.label: await b.count(found.person) if b.recounts else UNCOUNTABLE for b in found.backends}
