"""Who is calling: a bearer token (``Authorization: Bearer sct_…``) looked up by its SHA-256, with
its scopes. No token or an unknown one: 401; a token without the scope: 403. A token never appears
in a log or an error. A token sees the requests and jobs it made; one with the ``audit`` scope
sees every request and job (but never an export's content)."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPBearer

from sessionctl.store import api_tokens
from sessionctl.tokens import token_hash

CACHE_S = 5.0  # a revoked token stops working within this many seconds


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    scopes: tuple[str, ...]

    @property
    def audit(self) -> bool:
        """Sees every request and job, not only its own."""
        return "audit" in self.scopes

    @property
    def owner(self) -> str | None:
        """The token whose requests this caller sees (``None``: every token's, with ``audit``)."""
        return None if self.audit else self.name


class Tokens:
    """Tokens by hash, each answer cached for a few seconds (one lookup per token per 5 s)."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self.connect = connect
        self._cache: dict[str, tuple[float, Caller | None]] = {}

    async def caller(self, token: str) -> Caller | None:
        digest = token_hash(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self.connect() as conn:
            row = await api_tokens.find_token(conn, digest)
        who = None
        if row is not None and hmac.compare_digest(str(row["token_hash"]), digest):
            who = Caller(str(row["name"]), tuple(row["scopes"]))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + CACHE_S, who)
        return who


def bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class Bearer(HTTPBearer):
    """A FastAPI dependency: the caller, who must hold ``scope`` (``None``: any valid token). Itself
    the spec's bearer scheme (``HTTPBearer``), so resolving it is one dependency, not two: every
    request behind a token resolves it."""

    def __init__(self, scope: str | None) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="HTTPBearer",
            description="an API token: sessionctl token create --name NAME --scopes …",
        )
        self.scope = scope

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        token = bearer(request)
        tokens: Tokens = request.app.state.tokens
        who = None if token is None else await tokens.caller(token)
        if who is None:
            raise HTTPException(
                401,
                "a valid bearer token is required (sessionctl token create)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if self.scope is not None and self.scope not in who.scopes:
            raise HTTPException(403, f"this token lacks the {self.scope!r} scope")
        return who


def need(scope: str | None) -> Bearer:
    """The dependency of a route that takes a caller holding ``scope`` (``None``: any valid token)."""
    return Bearer(scope)


# The callers the routes take, by the scope they must hold.
Anyone = Annotated[Caller, Security(need(None))]
Reader = Annotated[Caller, Security(need("read"))]
Eraser = Annotated[Caller, Security(need("erase"))]
Exporter = Annotated[Caller, Security(need("export"))]
# What every route behind a token may answer besides its own, for the spec.
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no token, or a token that is not valid here"},
    403: {"description": "the token lacks the scope"},
}
