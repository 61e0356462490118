"""``sessionctl doctor``: per agent schema, the indexes sessionctl's queries need, table sizes, and
whether this role can do and prove an erasure there (grants, row-level security); whether the
receipts schema is ready. ``--create-indexes`` builds the missing indexes concurrently (never
blocking the agents' writes). Also ``sessionctl grants`` (the minimal grants of a worker role) and
``sessionctl migrate`` (the receipts schema, created by an administrator)."""

from __future__ import annotations

from typing import Any

import asyncpg

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.errors import AgentNotFound, SessionctlError
from sessionctl.store import access, migrations


async def _schemas(conn: asyncpg.Connection, settings: Settings, agent_id: str | None) -> list[str]:
    if agent_id is None:
        return await store.discover_agent_schemas(conn)
    schema = settings.schema_for(agent_id)
    if await store.read_layout(conn, schema) is None:
        raise AgentNotFound(f"agent {agent_id} has no session storage (schema {schema})")
    return [schema]


async def _needs(conn: asyncpg.Connection, schema: str, scope: str) -> list[access.Need]:
    """What a worker needs in this schema: a purge with memories, or with ``scope="all"`` every
    user-keyed table and the user's shared files too."""
    layout = await store.read_layout(conn, schema)
    if layout is None:
        return []
    tables = await store.user_keyed_tables(conn, schema) if scope == "all" else []
    needs = access.erasure_needs(layout, memories=True, scope=scope, user_tables=tables, shared_files=scope == "all")
    if scope == "all":  # PgVector tables kept in the agent's own schema
        vectors = [t for t in await store.find_shared_tables(conn, [schema]) if t.kind == store.VECTOR]
        needs += access.shared_needs(vectors)
    return needs


async def _shared_needs(conn: asyncpg.Connection, schemas: list[str]) -> list[access.Need]:
    """An all-agents erasure of scope "all": the vector and authz tables outside the agent schemas."""
    found = await store.find_shared_tables(conn)
    return access.shared_needs([t for t in found if not (t.kind == store.VECTOR and t.schema in schemas)])


async def diagnose(settings: Settings, *, agent_id: str | None = None, create: bool = False) -> dict[str, Any]:
    dbs = Databases(pool_size=1)
    report: dict[str, Any] = {"schemas": {}, "created": [], "missing": 0, "access_problems": 0}
    try:
        async with dbs.connect(settings.dsn) as conn:
            report["role"] = await access.role(conn)
            report["database"] = settings.dsn.where
            report["read_only"] = await access.read_only(conn)
            report["receipts"] = await _receipts(conn)
            schemas = await _schemas(conn, settings, agent_id)
            if agent_id is None:  # what `purge --all-agents --scope all` also needs
                report["stores_access_scope_all"] = await access.problems(conn, await _shared_needs(conn, schemas))
            for schema in schemas:
                indexes = []
                for spec in store.NEEDED_INDEXES:
                    if not await store.index_applies(conn, schema, spec):
                        continue
                    status = await store.index_status(conn, schema, spec)
                    if not status["present"] and create:
                        await store.create_index(conn, schema, spec)
                        report["created"].append(f"{schema}.{spec.name}")
                        status = await store.index_status(conn, schema, spec)
                        status["created"] = True
                    if not status["present"]:
                        report["missing"] += 1
                    indexes.append(status)
                purge = await access.problems(conn, await _needs(conn, schema, "sessions"))
                everything = await access.problems(conn, await _needs(conn, schema, "all"))
                report["access_problems"] += len(purge)
                report["schemas"][schema] = {
                    "indexes": indexes,
                    "tables": await store.table_sizes(conn, schema),
                    "access": purge,
                    "access_scope_all": [p for p in everything if p not in purge],
                }
    finally:
        await dbs.close()
    report["declared_stores"] = await declared_stores(settings) if agent_id is None else []
    report["ok"] = (
        all(s["ok"] for s in report["declared_stores"])
        and bool(report["schemas"])
        and not report["missing"]
        and not report["access_problems"]
        and not report["read_only"]
        and report["receipts"]["ok"]
    )
    return report


async def declared_stores(settings: Settings) -> list[dict[str, Any]]:
    """Each store of the deployment file, opened as an erasure opens it: reachable, and what it
    names exists (nothing is created)."""
    from sessionctl import deployment
    from sessionctl.backends import backend_for

    try:
        declared = deployment.load(settings.config_file)
    except SessionctlError as exc:
        return [{"store": "SESSIONCTL_CONFIG", "ok": False, "detail": str(exc)}]
    out = []
    for decl in declared.stores:
        backend = backend_for(decl)
        try:
            await backend.open()
            note = f"; note: {backend.exemption}" if backend.exemption else ""
            out.append({"store": backend.label, "ok": True, "detail": f"reachable, and what it names exists{note}"})
        except SessionctlError as exc:
            out.append({"store": backend.label, "ok": False, "detail": str(exc).removeprefix(f"{backend.label}: ")})
        finally:
            await backend.close()
    return out


async def _receipts(conn: asyncpg.Connection) -> dict[str, Any]:
    version = await migrations.version(conn)
    if version is None:
        return {"ok": False, "detail": "this role may not read sessionctl.schema_migrations"}
    if version < migrations.LATEST:
        state = "missing" if version == 0 else f"at version {version} of {migrations.LATEST}"
        return {"ok": False, "detail": f"the receipts schema is {state}: run `sessionctl migrate` as an administrator"}
    found = await access.receipt_problems(conn)
    if found:
        return {"ok": False, "detail": "; ".join(found)}
    return {"ok": True, "detail": f"version {version}, writable by this role"}


async def grants(settings: Settings, role: str, *, agent_id: str | None = None, scope: str = "all") -> list[str]:
    """The SQL an administrator runs to give ``role`` what a worker needs (and nothing more) in
    the agent schema(s) of DATABASE_URL's database, with notes on what grants cannot give."""
    dbs = Databases(pool_size=1)
    try:
        async with dbs.connect(settings.dsn) as conn:
            needs: list[access.Need] = []
            schemas = await _schemas(conn, settings, agent_id)
            for schema in schemas:
                needs += await _needs(conn, schema, scope)
            if scope == "all" and agent_id is None:
                needs += await _shared_needs(conn, schemas)
            version = await migrations.version(conn)
            ready = version is not None and version >= migrations.LATEST
            lines = access.grant_statements(role, settings.dsn.database, needs, receipts=ready)
            rls = await access.rls_enabled(conn, needs)
    finally:
        await dbs.close()
    notes = ["-- sessionctl: the minimal grants of a worker role (run as an administrator or the tables' owner)"]
    if not ready:
        notes.append(
            "-- the receipts schema does not exist yet, or is older than this sessionctl: run `sessionctl migrate`"
            " (as a role with CREATE on the database), then `sessionctl grants` again for its grants"
        )
    if rls:
        notes.append(
            f"-- row-level security is enabled on {', '.join(rls)}: a worker must see every row it proves gone,"
            f" so it also needs: ALTER ROLE {role} BYPASSRLS; (or run it as the tables' owner, without FORCE)"
        )
    notes.append("-- `sessionctl doctor --create-indexes` must run as the tables' owner (CREATE INDEX needs ownership)")
    return [*notes, *lines]


async def migrate(settings: Settings) -> int:
    """Create or upgrade the receipts schema; its version after."""
    dbs = Databases(pool_size=1)
    try:
        async with dbs.connect(settings.dsn) as conn:
            return await migrations.migrate(conn)
    finally:
        await dbs.close()
