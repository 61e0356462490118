"""``sessionctl doctor``: per agent schema, the indexes sessionctl's queries need and table sizes;
``--create-indexes`` builds the missing ones concurrently (never blocking the agents' writes)."""

from __future__ import annotations

from typing import Any

from sessionctl import store
from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.errors import AgentNotFound


async def diagnose(settings: Settings, *, agent_id: str | None = None, create: bool = False) -> dict[str, Any]:
    dbs = Databases(pool_size=1)
    report: dict[str, Any] = {"schemas": {}, "created": [], "missing": 0}
    try:
        async with dbs.connect(settings.dsn) as conn:
            if agent_id is not None:
                schema = settings.schema_for(agent_id)
                if await store.read_layout(conn, schema) is None:
                    raise AgentNotFound(f"agent {agent_id} has no session storage (schema {schema})")
                schemas = [schema]
            else:
                schemas = await store.discover_agent_schemas(conn)
            for schema in schemas:
                indexes = []
                for spec in store.NEEDED_INDEXES:
                    status = await store.index_status(conn, schema, spec)
                    if not status["present"] and create:
                        await store.create_index(conn, schema, spec)
                        report["created"].append(f"{schema}.{spec.name}")
                        status = await store.index_status(conn, schema, spec)
                        status["created"] = True
                    if not status["present"]:
                        report["missing"] += 1
                    indexes.append(status)
                report["schemas"][schema] = {"indexes": indexes, "tables": await store.table_sizes(conn, schema)}
    finally:
        await dbs.close()
    return report
