"""Is the person gone? The final recount of every store ``verify`` checks — every Agno schema of
every database the resolvers know, the vector and authz tables, Agno's shared payloads, the media
keys still pending deletion, the export files still kept — whatever scope an erasure was asked for.
An erasure is ``complete`` exactly when this finds nothing of the person; otherwise it says what
remains, store by store."""

from __future__ import annotations

from typing import Any

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.errors import AgentNotFound, InsufficientPrivilege
from sessionctl.identifiers import validate_user_id
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.declared import counts_of
from sessionctl.jobs.models import Completeness
from sessionctl.privacy import user_hmac
from sessionctl.store import access
from sessionctl.store.person import Tally, agno_schemas, count_person

UNREADABLE = -1  # in ``remains``: a store this role cannot count (no SELECT, or row-level security)


async def tally_person(
    ctx: JobContext, users: list[str], *, exports: bool = True, proven: set[tuple[str, str]] | None = None
) -> dict[str, Tally]:
    """The people's rows in every database the resolvers know, by database (its ``where``);
    ``exports``: their export files still kept too; ``proven``: (database, ``schema.table``) an
    erasure recounted to 0 a moment ago, not counted again."""
    dsns = {d.target: d for d in [ctx.settings.dsn, *ctx.chain().databases()]}
    hmacs = ctx.hmacs(users)
    out: dict[str, Tally] = {}
    for dsn in dsns.values():
        async with ctx.databases.connect(dsn) as conn:
            schemas = await agno_schemas(conn)
            known = {label for where, label in proven or () if where == dsn.where}
            out[dsn.where] = await count_person(conn, users, hmacs, schemas=schemas, exports=exports, skip=known)
    return out


async def completeness(
    ctx: JobContext,
    users: list[str],
    *,
    proven: set[tuple[str, str]] | None = None,
    declared: dict[str, int] | None = None,
) -> Completeness:
    """After an erasure: is every one of ``users`` gone from every store, and if not, what remains
    (``schema.table`` → rows; led by the database when the deployment spans several). The person's
    export files are not counted here: the erasure deletes them in the transaction that writes its
    receipt (:func:`sessionctl.jobs.common.write_receipt`). The stores the erasure itself recounted to 0 at
    its end (``proven``) are taken as counted; ``declared``: what the erasure's recount left in the
    stores of the deployment file (``-1``: a store that cannot recount)."""
    tallies = await tally_person(ctx, users, exports=False, proven=proven)
    many = len(tallies) > 1
    remains: dict[str, int] = {}
    for where, tally in tallies.items():
        prefix = f"{where}/" if many else ""
        remains.update({prefix + k: n for k, n in tally.rows.items() if n})
        remains.update({prefix + k: UNREADABLE for k in tally.unreadable})
    remains.update({k: n for k, n in (declared or {}).items() if n})
    return Completeness(complete=not remains, remains=dict(sorted(remains.items())))


async def verify_user(settings: Settings, user_id: str, *, agent_id: str | None = None) -> dict[str, Any]:
    """``sessionctl verify``: the user's rows in every store (one agent schema with ``agent_id``),
    counted with our own SQL, independent of receipts and of Agno's client. A store the role cannot
    read refuses the whole count: a count it cannot see proves nothing."""
    validate_user_id(user_id)
    hmac = user_hmac(settings.hash_key_bytes, user_id)
    dbs = Databases(pool_size=1)
    try:
        ctx = JobContext(settings=settings, databases=dbs, hash_key=settings.hash_key_bytes, job_id="verify")
        declared: dict[str, int] = {}
        if agent_id is None:
            tallies = await tally_person(ctx, [user_id])
            declared = await counts_of(ctx, [user_id])
        else:
            schema = settings.schema_for(agent_id)
            async with dbs.connect(settings.dsn) as conn:
                if not await store.schema_exists(conn, schema):
                    raise AgentNotFound(f"agent {agent_id} has no session storage: schema {schema} does not exist")
                tally = await count_person(conn, [user_id], [hmac], schemas=[schema], shared=False)
            tallies = {settings.dsn.where: tally}
        unreadable = [f"{k}: {why}" for t in tallies.values() for k, why in t.unreadable.items()]
        if unreadable:
            async with dbs.connect(settings.dsn) as conn:
                who = await access.role(conn)
            raise InsufficientPrivilege(
                f"role {who} cannot count every row of the user ({'; '.join(unreadable[:6])}): a count it cannot see"
                f" proves nothing — ALTER ROLE {who} BYPASSRLS where row-level security hides rows, and run"
                f" `sessionctl grants --role {who}`"
            )
    finally:
        await dbs.close()
    many = len(tallies) > 1
    tables: dict[str, dict[str, int]] = {}
    for where, tally in tallies.items():
        for label, n in tally.rows.items():
            schema, _, table = label.partition(".")
            tables.setdefault(f"{where}/{schema}" if many else schema, {})[table] = n
    for label, n in declared.items():  # the deployment file's stores, by their label
        tables[label] = {"items": n}
    counts = [n for t in tables.values() for n in t.values()]
    # a store that cannot recount (-1) counts as found: nothing proves the person gone from it
    return {"user_hmac": hmac, "tables": tables, "total": sum(n if n >= 0 else 1 for n in counts)}
