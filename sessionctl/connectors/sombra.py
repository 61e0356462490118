"""Transcend's Sombra tokens: the ``x-sombra-token`` of a webhook is an ES384 JWT signed by the
customer's Sombra, verified with the public key Sombra serves at
``{SOMBRA_URL}/public-keys/sombra-general-signing-key`` — fetched once, kept, and fetched again when
a token does not verify under it (Sombra rotated its key; at most once per ``REFETCH_S``). The
audience must be the organization's; a token must carry an expiry (``exp``) and be within it; the
person's identifier is the token's ``value`` claim (signed: the body's copy is never trusted)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from sessionctl.config import Settings
from sessionctl.errors import PlatformNotAuthenticated as TokenRefused
from sessionctl.errors import PlatformUnavailable

KEY_PATH = "/public-keys/sombra-general-signing-key"
REFETCH_S = 30.0
LEEWAY_S = 30  # clocks a little apart


@dataclass(frozen=True, slots=True)
class Verified:
    identifier: str
    claims: dict[str, Any]

    @property
    def replay_key(self) -> str | None:
        jti = self.claims.get("jti")
        return None if jti is None else f"jti:{jti}"


class SombraKeys:
    """Sombra's public signing key, cached; fetched again when a token fails under the cached one."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.transport = transport
        self._key: bytes | None = None
        self._fetched_at = 0.0

    def headers(self) -> dict[str, str]:
        """What authenticates sessionctl to Sombra: the data silo's API key, and a self-hosted
        Sombra's internal key."""
        s = self.settings
        out = {}
        if s.transcend_api_key is not None:
            out["authorization"] = f"Bearer {s.transcend_api_key.get_secret_value()}"
        if s.transcend_sombra_api_key is not None:
            out["x-sombra-authorization"] = f"Bearer {s.transcend_sombra_api_key.get_secret_value()}"
        return out

    async def _fetch(self) -> bytes:
        url = f"{self.settings.transcend_sombra_url}{KEY_PATH}"
        try:
            async with httpx.AsyncClient(timeout=10.0, trust_env=False, transport=self.transport) as client:
                resp = await client.get(url, headers=self.headers())
        except httpx.HTTPError as exc:
            raise PlatformUnavailable(
                f"Sombra is unreachable at SESSIONCTL_TRANSCEND_SOMBRA_URL ({type(exc).__name__}): its key cannot be"
                " fetched"
            ) from None
        if resp.status_code != 200:
            raise PlatformUnavailable(
                f"Sombra answered HTTP {resp.status_code} for its public key: check SESSIONCTL_TRANSCEND_SOMBRA_URL"
                " and SESSIONCTL_TRANSCEND_API_KEY"
            )
        self._key, self._fetched_at = resp.content, time.monotonic()
        return resp.content

    async def verify(self, token: str | None) -> Verified:
        if not token:
            raise TokenRefused("x-sombra-token is missing")
        key = self._key or await self._fetch()
        try:
            return self._decode(token, key)
        except jwt.InvalidSignatureError:
            if time.monotonic() - self._fetched_at < REFETCH_S:
                raise TokenRefused("x-sombra-token's signature does not verify") from None
        try:
            return self._decode(token, await self._fetch())  # Sombra may have a new key
        except jwt.InvalidSignatureError:
            raise TokenRefused("x-sombra-token's signature does not verify") from None

    def _decode(self, token: str, key: bytes) -> Verified:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["ES384"],
                audience=self.settings.transcend_audience,
                leeway=LEEWAY_S,
                options={"require": ["value", "exp"]},
            )
        except jwt.InvalidSignatureError:
            raise
        except jwt.ExpiredSignatureError:
            raise TokenRefused("x-sombra-token has expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRefused(f"x-sombra-token has no {exc.claim} claim") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused("x-sombra-token is for another audience (SESSIONCTL_TRANSCEND_AUDIENCE)") from None
        except (jwt.PyJWTError, ValueError) as exc:
            raise TokenRefused(f"x-sombra-token is not a valid Sombra token ({type(exc).__name__})") from None
        value = claims.get("value")
        if not isinstance(value, str) or not value:
            raise TokenRefused("x-sombra-token carries no identifier (its value claim)")
        return Verified(value, claims)
