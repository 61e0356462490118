"""A resolver of a team's own (say, reading DSNs from a secrets manager), for the plug-in test."""

from __future__ import annotations

from sessionctl.config import Settings
from sessionctl.resolvers import Location


class VaultResolver:
    name = "vault"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.asked: list[str] = []

    async def resolve(self, agent_id: str) -> Location | None:
        self.asked.append(agent_id)
        if not agent_id.startswith("vault-"):
            return None  # not mine: the next resolver answers
        return Location(agent_id, self.settings.dsn, "vault_" + agent_id[6:].replace("-", "_"), source="vault")

    async def known_agents(self) -> list[str]:
        return ["vault-one"]
