"""Which agent schemas a job works on: one agent, or every Agno session store of the database."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.context import JobContext
from sessionctl import store
from sessionctl.agents import AgentHandle
from sessionctl.identifiers import Dsn
from sessionctl.logs import get_logger

log = get_logger("sessionctl.targets")


@dataclass(frozen=True, slots=True)
class Target:
    label: str  # the agent id, or the schema name for agents found by discovery
    dsn: Dsn
    layout: store.Layout


async def resolve_targets(ctx: JobContext, agent_id: str | None, all_agents: bool) -> list[Target]:
    """The agent schemas to work on. An unknown agent raises AgentNotFound (permanent)."""
    if agent_id is not None:
        handle = AgentHandle(agent_id, settings=ctx.settings, databases=ctx.databases)
        return [Target(agent_id, handle.dsn, await handle.layout())]
    assert all_agents
    dsn = ctx.settings.dsn
    out: list[Target] = []
    async with ctx.databases.connect(dsn) as conn:
        for schema in await store.discover_agent_schemas(conn):
            layout = await store.read_layout(conn, schema)
            if layout is None or await store.session_table_problems(conn, schema):
                # a table that merely shares the name cannot hold Agno sessions
                log.warning("job.skip_schema", schema=schema, reason="not an Agno session table")
                continue
            out.append(Target(schema, dsn, layout))
    return out
