"""Legal holds, checked by every erasure before anything is deleted: a person under hold
(``sessionctl hold place``) is not erased — the job fails with
:class:`~sessionctl.errors.PersonOnHold` and the request it served ends ``on_hold``. Retention
reads the held people's ids (:func:`held_user_ids`) and leaves everything of theirs in place."""

from __future__ import annotations

import asyncpg

from sessionctl.errors import PersonOnHold
from sessionctl.jobs.context import JobContext
from sessionctl.store import legal_holds


async def refuse_held(ctx: JobContext, user_ids: list[str]) -> None:
    """Raise :class:`PersonOnHold` when any of these people is under a legal hold (a database
    without sessionctl's holds table has no hold)."""
    hmacs = ctx.hmacs(user_ids)
    try:
        async with ctx.databases.connect(ctx.settings.dsn) as conn:
            held = await legal_holds.active(conn, hmacs)
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return
    if held:
        who = "the person is" if len(user_ids) == 1 else f"{len(held)} of the {len(user_ids)} people are"
        raise PersonOnHold(
            f"{who} under a legal hold (hold {', '.join(str(h['id']) for h in held)}): nothing was erased;"
            " release it first with `sessionctl hold release --user -` if the hold has ended"
        )


async def held_user_ids(ctx: JobContext) -> list[str]:
    """The ids of every person under an active legal hold, unsealed: what retention leaves out.
    A hold whose id does not open under this ``SESSIONCTL_HASH_KEY`` stops the run
    (:class:`PersonOnHold`, nothing deleted); a database without the holds table has no hold."""
    async with ctx.databases.connect(ctx.settings.dsn) as conn:
        return await legal_holds.held_user_ids(conn, ctx.hash_key)
