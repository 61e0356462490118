"""What one erasure erases in each agent schema (:class:`Spec`), and the check before the first
delete that the role may do it and prove it (:func:`check_access`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sessionctl import store
from sessionctl.jobs import preflight
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.models import PURGE_USER_SESSIONS
from sessionctl.jobs.targets import Target
from sessionctl.store import access

# Rounds of "delete until empty, then recount" before a still-growing user is handed back to the
# queue as a retryable ErasureIncomplete (a writer racing the purge).
MAX_ROUNDS = 5


@dataclass(frozen=True, slots=True)
class Spec:
    """What one purge erases in each schema: these users' sessions (and more, by scope)."""

    users: list[str]
    dry_run: bool = False
    memories: bool = False
    scope: str = "sessions"  # "all": every user-keyed table (store.USER_STORES)
    shared_files: bool = False  # all agents: also the user's files in the database-wide fs.agno_fs
    kind: str = PURGE_USER_SESSIONS  # the job kind its metrics are labelled with
    # (database, "schema.table") the purge itself recounted to 0 at its end: the final recount of
    # the person (sessionctl/jobs/person.py) need not count them again
    proven: set[tuple[str, str]] = field(default_factory=set)

    def prove(self, target: Target, *tables: str) -> None:
        self.proven.update((target.dsn.where, f"{target.layout.schema}.{t}") for t in tables)


async def check_access(ctx: JobContext, spec: Spec, targets: list[Target]) -> None:
    """Before the first delete, in every target: the role sees every row it will count and may
    delete what it must; the receipt can be written (sessionctl/jobs/preflight.py)."""

    def needs(layout: store.Layout, tables: list[str]) -> list[access.Need]:
        return access.erasure_needs(
            layout,
            memories=spec.memories,
            scope=spec.scope,
            user_tables=tables,
            shared_files=spec.shared_files,
            dry_run=spec.dry_run,
        )

    await preflight.check(
        ctx,
        targets,
        needs,
        writes=not spec.dry_run,
        receipt=not spec.dry_run,
        user_tables=spec.scope == "all",
        shared=spec.scope == "all" and spec.shared_files,
        what="a dry run" if spec.dry_run else "this erasure",
        nothing="Nothing was counted" if spec.dry_run else "Nothing was deleted",
    )
