"""Where each agent's sessions live: resolvers tried in order, answers cached with a TTL.

- ``static``: one ``DATABASE_URL`` and the schema naming rule (always last; the default);
- ``map``: a TOML file (``SESSIONCTL_AGENT_MAP``) mapping agent ids or globs to a DSN (``${VAR}``
  references are read from the environment, so no secret sits in the file), and optionally a
  schema, a team flag, ``session_storage = false``::

      [agents."3f2c-11aa"]
      dsn = "postgresql://${PG_USER}:${PG_PASSWORD}@db-eu:5432/agents"
      [agents."support-*"]
      dsn = "postgresql://${PG_USER}:${PG_PASSWORD}@db-us:5432/agents"
      team = true
      [agents."legacy-bot"]
      session_storage = false

- ``xpander``: the xpander platform, as the SDK asks it (``GET {base}/agents/{id}`` and
  ``GET {base}/agents/{id}/db`` with ``x-api-key``; ``XPANDER_API_KEY``, ``XPANDER_ORGANIZATION_ID``,
  ``XPANDER_BASE_URL``). Its answers map onto the SDK's contract: framework not Agno →
  ``NotImplementedError``; session storage off → ``LookupError``; no usable URI → ``ValueError``;
  platform unreachable → :class:`PlatformUnavailable` (retryable: the job retries, never succeeds).
- your own: ``SESSIONCTL_RESOLVERS=map,mypkg.secrets:VaultResolver,static`` — a class taking the
  ``Settings``, with ``name``, ``async resolve(agent_id) -> Location | None`` (``None``: not mine, ask
  the next) and ``async known_agents() -> list[str]``.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import re
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sessionctl.config import Settings
from sessionctl.errors import (
    AgentNotFound,
    InvalidConnectionURI,
    InvalidRequest,
    NotAgnoStorage,
    PlatformUnavailable,
)
from sessionctl.identifiers import Dsn, schema_for_agent, validate_agent_id, validate_schema


@dataclass(frozen=True, slots=True)
class Location:
    agent_id: str
    dsn: Dsn
    schema: str
    team: bool = False
    source: str = "static"


class Resolver(Protocol):
    name: str

    async def resolve(self, agent_id: str) -> Location | None: ...

    async def known_agents(self) -> list[str]: ...


class StaticResolver:
    name = "static"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def resolve(self, agent_id: str) -> Location:
        return Location(agent_id, self.settings.dsn, self.settings.schema_for(agent_id), source="static")

    async def known_agents(self) -> list[str]:
        return []


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: str, where: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise InvalidConnectionURI(f"{where}: environment variable {name} is not set")
        return os.environ[name]

    return _VAR.sub(sub, value)


class MapFileResolver:
    name = "map"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        path = settings.agent_map
        if not path:
            raise InvalidRequest("the map resolver needs SESSIONCTL_AGENT_MAP (a TOML file)")
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidRequest(f"agent map {path} cannot be read: {type(exc).__name__}") from None
        agents = data.get("agents", {})
        if not isinstance(agents, dict):
            raise InvalidRequest(f'agent map {path}: [agents."<id or glob>"] tables expected')
        self.entries: dict[str, dict[str, Any]] = agents

    def _entry(self, agent_id: str) -> tuple[str, dict[str, Any]] | None:
        if agent_id in self.entries:
            return agent_id, self.entries[agent_id]
        for pattern, entry in self.entries.items():
            if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(agent_id, pattern):
                return pattern, entry
        return None

    async def resolve(self, agent_id: str) -> Location | None:
        found = self._entry(agent_id)
        if found is None:
            return None
        key, entry = found
        if entry.get("session_storage", True) is False:
            raise AgentNotFound(f"agent {agent_id} has no session storage (agent map entry {key!r})")
        dsn = Dsn.parse(_expand(str(entry["dsn"]), f"agent map entry {key!r}")) if "dsn" in entry else self.settings.dsn
        schema = validate_schema(str(entry["schema"])) if "schema" in entry else self.settings.schema_for(agent_id)
        return Location(agent_id, dsn, schema, team=bool(entry.get("team", False)), source="map")

    async def known_agents(self) -> list[str]:
        return [k for k in self.entries if not any(c in k for c in "*?[")]

    def dsns(self) -> list[Dsn]:
        out = []
        for key, entry in self.entries.items():
            if "dsn" in entry and entry.get("session_storage", True) is not False:
                out.append(Dsn.parse(_expand(str(entry["dsn"]), f"agent map entry {key!r}")))
        return out


class XpanderResolver:
    name = "xpander"

    def __init__(self, settings: Settings) -> None:
        if not settings.xpander_api_key:
            raise InvalidRequest("the xpander resolver needs XPANDER_API_KEY")
        self.settings = settings
        base = settings.xpander_base_url.rstrip("/")
        if "agent-controller" in base or "9016" in base:  # as the SDK builds the URL
            base = f"{base}/{settings.xpander_organization_id}"
        self.base = base
        self.calls = 0  # for tests and metrics: requests made to the platform

    async def _get(self, path: str) -> Any:
        import httpx

        self.calls += 1
        headers = {"x-api-key": self.settings.xpander_api_key or ""}
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(self.base + path, headers=headers)
        except httpx.HTTPError as exc:
            name = type(exc).__name__
            raise PlatformUnavailable(f"xpander platform unreachable ({name})") from None
        if response.status_code == 404:
            return None
        if response.status_code >= 500 or response.status_code == 429:
            raise PlatformUnavailable(f"xpander platform answered {response.status_code}")
        if response.status_code >= 400:
            code = response.status_code
            raise InvalidRequest(f"xpander platform refused the request ({code}): check XPANDER_API_KEY")
        return response.json()

    async def resolve(self, agent_id: str) -> Location | None:
        agent = await self._get(f"/agents/{agent_id}")
        if agent is None:
            return None  # not an agent of this organization: ask the next resolver
        framework = str(agent.get("framework") or "").lower()
        if framework != "agno":
            raise NotAgnoStorage(f"agent {agent_id} is not backed by Agno storage (framework {framework or 'unset'!r})")
        settings_ = agent.get("agno_settings") or {}
        if settings_.get("session_storage") is False:
            raise AgentNotFound(f"agent {agent_id} has session storage turned off on the xpander platform")
        conn = await self._get(f"/agents/{agent_id}/db")
        uri = ((conn or {}).get("connection_uri") or {}).get("uri")
        if not uri:
            raise InvalidConnectionURI(f"agent {agent_id}: the xpander platform returned no connection URI")
        return Location(
            agent_id,
            Dsn.parse(str(uri)),
            self.settings.schema_for(agent_id),
            team=bool(settings_.get("coordinate_mode", False)),
            source="xpander",
        )

    async def known_agents(self) -> list[str]:
        listed = await self._get("/agents/list")
        items = listed.get("items", listed) if isinstance(listed, dict) else listed
        out = []
        for item in items or []:
            aid = item.get("id") if isinstance(item, dict) else item
            try:
                out.append(validate_agent_id(str(aid)))
            except InvalidRequest:
                continue
        return out


class ResolverChain:
    """Tries resolvers in order; caches each agent's answer for ``ttl`` seconds."""

    def __init__(self, resolvers: list[Any], ttl: float) -> None:
        self.resolvers = resolvers
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Location]] = {}

    async def resolve(self, agent_id: str) -> Location:
        validate_agent_id(agent_id)
        hit = self._cache.get(agent_id)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        for resolver in self.resolvers:
            location: Location | None = await resolver.resolve(agent_id)
            if location is not None:
                self._cache[agent_id] = (time.monotonic(), location)
                return location
        raise AgentNotFound(f"agent {agent_id}: no resolver knows it (SESSIONCTL_RESOLVERS)")

    def cached(self, agent_id: str) -> Location | None:
        hit = self._cache.get(agent_id)
        return hit[1] if hit is not None else None

    async def known_agents(self) -> list[str]:
        seen: dict[str, None] = {}
        for resolver in self.resolvers:
            for aid in await resolver.known_agents():
                seen.setdefault(aid, None)
        return list(seen)

    def databases(self) -> list[Dsn]:
        """Every database the resolvers point at (for discovering agent schemas)."""
        out: dict[Dsn, None] = {}
        for resolver in self.resolvers:
            if isinstance(resolver, StaticResolver):
                out.setdefault(resolver.settings.dsn, None)
            elif isinstance(resolver, MapFileResolver):
                for d in resolver.dsns():
                    out.setdefault(d, None)
        for _, loc in self._cache.values():
            out.setdefault(loc.dsn, None)
        return list(out)


def build_chain(settings: Settings) -> ResolverChain:
    names = [n.strip() for n in settings.resolvers.split(",") if n.strip()] if settings.resolvers else []
    if not names:
        names = (["map"] if settings.agent_map else []) + (["xpander"] if settings.xpander_api_key else []) + ["static"]
    resolvers: list[Any] = []
    for name in names:
        if name == "static":
            resolvers.append(StaticResolver(settings))
        elif name == "map":
            resolvers.append(MapFileResolver(settings))
        elif name == "xpander":
            resolvers.append(XpanderResolver(settings))
        elif ":" in name:
            module, _, cls = name.partition(":")
            try:
                resolvers.append(getattr(importlib.import_module(module), cls)(settings))
            except (ImportError, AttributeError) as exc:
                why = type(exc).__name__
                raise InvalidRequest(f"SESSIONCTL_RESOLVERS: cannot load {name!r} ({why})") from None
        else:
            raise InvalidRequest(
                f"SESSIONCTL_RESOLVERS: unknown resolver {name!r} (static, map, xpander, module:Class)"
            )
    return ResolverChain(resolvers, settings.resolver_ttl)


__all__ = ["Location", "PlatformUnavailable", "ResolverChain", "build_chain", "schema_for_agent"]
