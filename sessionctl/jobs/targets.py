"""Which agent schemas a job works on: one agent, or every Agno session store of the database."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from sessionctl import store
from sessionctl.agents import AgentHandle
from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.errors import AgentNotFound, InvalidRequest, NotAgnoStorage
from sessionctl.identifiers import Dsn, agent_for_schema
from sessionctl.jobs.context import JobContext
from sessionctl.logs import get_logger

log = get_logger("sessionctl.targets")


@dataclass(frozen=True, slots=True)
class Target:
    label: str  # the agent id, or the schema name for agents found by discovery
    dsn: Dsn
    layout: store.Layout


async def resolve_targets(ctx: JobContext, agent_id: str | None, all_agents: bool) -> list[Target]:
    """The agent schemas to work on. An unknown agent raises AgentNotFound (permanent).

    *All agents*: every agent the resolvers know of (map entries, the platform's listing), plus the
    agent schemas discovered in every database they point at; each (database, schema) once.
    """
    chain = ctx.chain()
    if agent_id is not None:
        handle = await AgentHandle.resolve(agent_id, settings=ctx.settings, databases=ctx.databases, chain=chain)
        return [Target(agent_id, handle.dsn, await handle.layout())]
    assert all_agents
    named: list[Target] = []
    seen: set[tuple[tuple[str, str, int, str], str]] = set()  # (database as connected to, schema)
    for aid in await chain.known_agents():
        try:
            handle = await AgentHandle.resolve(aid, settings=ctx.settings, databases=ctx.databases, chain=chain)
            layout = await handle.layout()
        except (AgentNotFound, NotAgnoStorage):
            continue  # known, but holding no Agno sessions: nothing of the user can be there
        key = (handle.dsn.target, handle.schema)
        if key not in seen:
            seen.add(key)
            named.append(Target(aid, handle.dsn, layout))
    discovered: list[tuple[Dsn, store.Layout]] = []
    databases = {d.target: d for d in chain.databases()}
    for dsn in databases.values():
        async with ctx.databases.connect(dsn) as conn:
            schemas = [s for s in await store.discover_agent_schemas(conn) if (dsn.target, s) not in seen]
            layouts = await store.read_layouts(conn, schemas)  # every schema at once
            problems = await store.session_tables_problems(conn, schemas)
            for schema in schemas:
                found = layouts.get(schema)
                if found is None or problems[schema]:
                    # a table that merely shares the name cannot hold Agno sessions
                    log.warning("job.skip_schema", schema=schema, reason="not an Agno session table")
                    continue
                seen.add((dsn.target, schema))
                discovered.append((dsn, found))
    one_database = len({t.dsn.target for t in named} | {d.target for d, _ in discovered}) <= 1
    out = list(named)
    labels = {t.label for t in out}
    for dsn, layout in discovered:
        label = layout.schema if one_database else f"{dsn.where}/{layout.schema}"
        base, n = label, 1
        while label in labels:  # results and receipts are keyed by label: never let two collide
            n += 1
            label = f"{base}#{n}"
        labels.add(label)
        out.append(Target(label, dsn, layout))
    return out


async def overview(settings: Settings) -> list[dict[str, Any]]:
    """Every agent sessionctl can see (``sessionctl agents``): where it resolves to (password
    hidden), team or not, how many sessions it holds, and which resolver said so."""
    dbs = Databases(pool_size=1)
    rows = []
    try:
        ctx = JobContext(settings=settings, databases=dbs, hash_key=b"", job_id="agents")
        chain = ctx.chain()
        for t in await resolve_targets(ctx, None, True):
            async with dbs.connect(t.dsn) as conn:
                n = await store.count_sessions(conn, t.layout)
                recorded = await store.recorded_agent_ids(conn, t.layout)
            loc = chain.cached(t.label)
            agent, agent_from = _agent_name(settings, t, known=loc is not None, recorded=recorded)
            rows.append(
                {
                    "agent": agent,
                    "agent_from": agent_from,
                    "label": t.label,
                    "database": t.dsn.redacted,
                    "schema": t.layout.schema,
                    "team": loc.team if loc else None,
                    "source": loc.source if loc else "discovered",
                    "sessions": n,
                }
            )
    finally:
        await dbs.close()
    return rows


def _agent_name(settings: Settings, target: Target, *, known: bool, recorded: list[str]) -> tuple[str | None, str]:
    """What ``--agent`` takes for a target, and where that came from: the id a resolver knows it by
    (``resolver``); the one id its sessions record, as the agent was created, where the naming rule
    maps it to this schema (``sessions``: ``big-agent``, not ``big_agent``); else only the schema's
    name read back through the rule (``schema``: an id that reaches it, perhaps not the agent's own
    spelling), or ``None`` (``--all-agents`` only)."""
    if known:
        return target.label, "resolver"
    schema = target.layout.schema
    if len(recorded) == 1:
        with contextlib.suppress(InvalidRequest):
            if settings.schema_for(recorded[0]) == schema:
                return recorded[0], "sessions"
    return agent_for_schema(schema, settings.schema_template), "schema"
