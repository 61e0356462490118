"""``sessionctl verify`` and ``receipts``: an independent recount of a user's rows — is the user
really gone? — and the receipts that say so."""

from __future__ import annotations

from typing import Any

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.errors import AgentNotFound, InsufficientPrivilege
from sessionctl.identifiers import validate_user_id
from sessionctl.privacy import user_hmac
from sessionctl.store import access, receipts
from sessionctl.store import media as media_sql


async def verify_user(settings: Settings, user_id: str, *, agent_id: str | None = None) -> dict[str, Any]:
    """Count the user's rows in every table with a ``user_id`` column of the agent schema(s) —
    sessions, runs, memories, learnings, traces, evals, approvals, … — and in Agno's shared
    tool-result payloads; across all agents also in every PgVector table and AgentOS login table of
    the database. Our own SQL, independent of receipts and of Agno's client."""
    validate_user_id(user_id)
    tables: dict[str, dict[str, int]] = {}
    dbs = Databases(pool_size=1)
    try:
        async with dbs.connect(settings.dsn) as conn:
            if agent_id is not None:
                schema = settings.schema_for(agent_id)
                if not await store.schema_exists(conn, schema):
                    raise AgentNotFound(f"agent {agent_id} has no session storage: schema {schema} does not exist")
                schemas = [schema]
            else:
                schemas = await store.discover_agent_schemas(conn)
            shared = []
            if agent_id is None:  # the deployment's knowledge vectors and login records too
                shared = [
                    t
                    for t in await store.find_shared_tables(conn)
                    if not (t.kind == store.VECTOR and t.schema in schemas)  # counted with their agent
                ]
            needs = [access.Need(s, t, access.READ) for s in schemas for t in await store.user_keyed_tables(conn, s)]
            needs += access.shared_needs(shared, dry_run=True)
            needs.append(access.Need("fs", "agno_fs", access.READ))  # Agno's shared payloads, where it exists
            found = [p for p in await access.problems(conn, needs) if p != "fs.agno_fs: does not exist"]
            if found:
                who = await access.role(conn)
                raise InsufficientPrivilege(
                    f"role {who} cannot count every row of the user ({'; '.join(found[:6])}): a count it cannot see"
                    f" proves nothing — ALTER ROLE {who} BYPASSRLS where row-level security hides rows, and run"
                    f" `sessionctl grants --role {who}`"
                )
            for schema in schemas:
                tables[schema] = {
                    t: await store.count_user_rows(conn, schema, t, user_id)
                    for t in await store.user_keyed_tables(conn, schema)
                }
            left = await store.count_shared(conn, shared, [user_id])
            for t in shared:
                tables.setdefault(t.schema, {})[t.table] = left[t.label]
            pending = await media_sql.count_of_user(conn, user_hmac(settings.hash_key_bytes, user_id))
            if pending:  # objects of erased sessions a storage has not deleted yet
                tables["sessionctl"] = {"media_pending": pending}
            payloads = await store.count_user_payloads(conn, user_id)
            if payloads is not None:
                tables["fs"] = {"agno_fs": payloads}
    finally:
        await dbs.close()
    return {
        "user_hmac": user_hmac(settings.hash_key_bytes, user_id),
        "tables": tables,
        "total": sum(n for t in tables.values() for n in t.values()),
    }


async def find_receipts(settings: Settings, user_id: str) -> tuple[str, list[dict[str, Any]]]:
    """The user's durable erasure receipts (``sessionctl receipts``), found by HMAC: (hmac, rows)."""
    validate_user_id(user_id)
    hmac = user_hmac(settings.hash_key_bytes, user_id)
    dbs = Databases(pool_size=1)
    try:
        async with dbs.connect(settings.dsn) as conn:
            return hmac, await receipts.find(conn, hmac)
    finally:
        await dbs.close()
