"""Retention policy: how long each agent keeps sessions, from one TOML file.

::

    # SESSIONCTL_RETENTION_FILE=/etc/sessionctl/retention.toml
    [default]
    max_age_days = 90               # by last update, falling back to creation time
    export_before_delete = false    # true: write expiring sessions to EXPORT_DIR first

    [default.session_types]         # optional, per session type (agent, team, workflow)
    team = 30

    [agents."3f2c-11aa"]            # an agent id, a schema name, or a glob ("support-*")
    max_age_days = 30
    export_before_delete = true

    [agents."ai"]
    keep = true                     # never clean this one

    [default.items]                 # beyond sessions, each by its own time, in every agent schema
    memories = 365                  # agno_memories (last update, else creation)
    traces = 30                     # agno_traces, with their spans
    evals = 180                     # agno_eval_runs

    [stores."sqlite:agno.db"]       # a store of the deployment file (SESSIONCTL_CONFIG), by its label:
    max_age_days = 90               # its sessions (with their runs) and memories; its files by mtime

An agent without a matching entry follows ``[default]``; without ``[default]``, it is not cleaned.
The first matching entry wins (exact id or schema before globs). A vector store or an event stream
keeps no time per item: naming one under ``[stores]`` is refused (event streams expire on their own).
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sessionctl.errors import InvalidRequest

DAY = 86_400


Days = Annotated[int, Field(ge=1, le=36_500)]
# What an agent schema keeps beyond sessions that a policy may clean by age (store.expiry holds how).
Item = Literal["memories", "traces", "evals"]


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_age_days: Days | None = None
    session_types: dict[str, int] = Field(default_factory=dict)
    export_before_delete: bool = False
    keep: bool = False
    items: dict[Item, Days] = Field(default_factory=dict)


class StoreRule(BaseModel):
    """A declared store's items older than ``max_age_days`` (by their own time)."""

    model_config = ConfigDict(extra="forbid")

    max_age_days: Days


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: Rule | None = None
    agents: dict[str, Rule] = Field(default_factory=dict)
    stores: dict[str, StoreRule] = Field(default_factory=dict)

    def rule_for(self, label: str, schema: str, template: str = "ag_{agent}") -> tuple[str, Rule] | None:
        """(which entry, the rule) for an agent, or None when it is not to be cleaned. Keys are agent
        ids (compared through the schema naming rule, so discovered schemas match too), schema
        names, or globs of either."""

        def as_schema(key: str) -> str:
            return template.format(agent=key.replace("-", "_"), agent_id=key)

        for key, rule in self.agents.items():
            if (not any(c in key for c in "*?[") and schema in (key, as_schema(key))) or key == label:
                return (f"agents.{key}", rule) if not rule.keep else None
        for pattern, rule in self.agents.items():
            if any(c in pattern for c in "*?[") and any(
                fnmatch.fnmatchcase(name, p) for name in (label, schema) for p in (pattern, as_schema(pattern))
            ):
                return (f"agents.{pattern}", rule) if not rule.keep else None
        if self.default is not None and not self.default.keep:
            return "default", self.default
        return None


@dataclass(frozen=True, slots=True)
class Bucket:
    """Sessions older than ``cutoff`` (epoch seconds), of these types (or of all but ``exclude``)."""

    cutoff: int
    types: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None

    def describe(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff, "types": self.types, "exclude_types": self.exclude}


def buckets(rule: Rule, as_of: int) -> list[Bucket]:
    """The (cutoff, session types) pairs a rule asks to clean at ``as_of``."""
    out = [Bucket(as_of - days * DAY, types=(t,)) for t, days in sorted(rule.session_types.items())]
    if rule.max_age_days is not None:
        typed = tuple(sorted(rule.session_types))
        out.append(Bucket(as_of - rule.max_age_days * DAY, exclude=typed or None))
    return out


def load_policy(path: str | None) -> Policy:
    if not path:
        raise InvalidRequest("no retention policy: set SESSIONCTL_RETENTION_FILE to a TOML policy file")
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidRequest(f"retention policy file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidRequest(f"retention policy file {path} cannot be read: {exc}") from None
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise InvalidRequest(f"retention policy file {path}: {where}: {first.get('msg')}") from None


def parse_schedule(spec: str) -> dict[str, set[int] | None]:
    """``"M H"`` (or ``"S M H"``) with ``*``, ``*/n``, lists and ranges — for arq's ``cron``."""
    fields = spec.split()
    if len(fields) not in (2, 3):
        raise InvalidRequest(
            "SESSIONCTL_RETENTION_SCHEDULE must be 'minute hour' (or 'second minute hour'), e.g. '17 3'"
        )
    names = ["minute", "hour"] if len(fields) == 2 else ["second", "minute", "hour"]
    limits = {"second": 60, "minute": 60, "hour": 24}
    out: dict[str, set[int] | None] = {}
    for name, field in zip(names, fields, strict=True):
        out[name] = _field(field, limits[name], name)
    if len(fields) == 2:
        out["second"] = {0}
    return out


def _field(field: str, limit: int, name: str) -> set[int] | None:
    if field == "*":
        return None
    values: set[int] = set()
    for part in field.split(","):
        step = 1
        if "/" in part:
            part, _, s = part.partition("/")
            if not s.isdigit() or int(s) == 0:
                raise InvalidRequest(f"retention schedule: bad step in {name} field {field!r}")
            step = int(s)
        if part == "*":
            lo, hi = 0, limit - 1
        elif "-" in part:
            a, _, b = part.partition("-")
            if not (a.isdigit() and b.isdigit()):
                raise InvalidRequest(f"retention schedule: bad range in {name} field {field!r}")
            lo, hi = int(a), int(b)
        elif part.isdigit():
            lo = hi = int(part)
        else:
            raise InvalidRequest(f"retention schedule: bad {name} field {field!r}")
        if not 0 <= lo <= hi < limit:
            raise InvalidRequest(f"retention schedule: {name} values must be within 0-{limit - 1}")
        values.update(range(lo, hi + 1, step))
    return values


async def preview(settings: Any) -> tuple[int, list[dict[str, Any]]]:
    """The effective policy per agent schema of ``DATABASE_URL``'s database, and what it would
    delete now (``sessionctl retention show``): the time it was computed for, one row a schema."""
    import time

    from sessionctl import store
    from sessionctl.databases import Databases
    from sessionctl.store import expiry, legal_holds

    policy = load_policy(settings.retention_file)
    now = int(time.time())
    rows: list[dict[str, Any]] = []
    dbs = Databases(pool_size=1)
    try:
        async with dbs.connect(settings.dsn) as conn:
            keep = await legal_holds.held_user_ids(conn, settings.hash_key_bytes)  # left out, as a run does
            for schema in await store.discover_agent_schemas(conn):
                layout = await store.read_layout(conn, schema)
                match = policy.rule_for(schema, schema, settings.schema_template)
                if layout is None or match is None or await store.session_table_problems(conn, schema):
                    rows.append({"schema": schema, "policy": None, "would_delete": 0, "buckets": []})
                    continue
                entry, rule = match
                bs = []
                for b in buckets(rule, now):
                    types, exclude = list(b.types) if b.types else None, list(b.exclude or ()) or None
                    n = await store.count_expired(conn, layout, b.cutoff, types, exclude, keep)
                    bs.append({**b.describe(), "would_delete": n})
                items = {}
                for item, days in sorted(rule.items.items()):
                    items[item] = await expiry.count_expired_items(conn, layout, item, now - days * DAY, keep)
                rows.append(
                    {
                        "schema": schema,
                        "policy": entry,
                        "max_age_days": rule.max_age_days,
                        "session_types": rule.session_types,
                        "export_before_delete": rule.export_before_delete,
                        "would_delete": sum(x["would_delete"] for x in bs),
                        "buckets": bs,
                        "items": items,
                    }
                )
    finally:
        await dbs.close()
    return now, rows + await _store_rows(settings, policy, now, keep)


async def _store_rows(settings: Any, policy: Policy, now: int, keep: list[str]) -> list[dict[str, Any]]:
    """The declared stores the policy names, with what their items older than the cutoff are (none
    of the people of ``keep``, under a legal hold)."""
    from sessionctl import deployment
    from sessionctl.backends import opened

    if not policy.stores:
        return []
    declared = deployment.load(settings.config_file)
    chosen = [s for s in declared.stores if s.label in policy.stores]
    missing = sorted(set(policy.stores) - {s.label for s in chosen})
    if missing:
        names = ", ".join(missing)
        raise InvalidRequest(f"the retention policy names store(s) {names} the deployment file does not declare")
    rows = []
    async with opened(deployment.Deployment(stores=tuple(chosen))) as backends:
        for b in backends:
            days = policy.stores[b.label].max_age_days
            n = (await b.expire(now - days * DAY, dry_run=True, keep=keep))[0] if b.expires else 0
            rows.append(
                {"schema": b.label, "policy": f"stores.{b.label}", "max_age_days": days, "session_types": {},
                 "export_before_delete": False, "would_delete": n, "buckets": []}
            )  # fmt: skip
    return rows
