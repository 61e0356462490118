"""API tokens of the DSR service (``sessionctl.api_tokens``): their SHA-256 only, with scopes; names
are never reused."""

from __future__ import annotations

from typing import Any

import asyncpg


async def create_token(conn: asyncpg.Connection, name: str, token_hash: str, scopes: list[str]) -> bool:
    """``False`` when a token of that name exists (revoked or not: names are never reused)."""
    status = await conn.execute(
        "INSERT INTO sessionctl.api_tokens (name, token_hash, scopes) VALUES ($1, $2, $3)"
        " ON CONFLICT (name) DO NOTHING",
        name,
        token_hash,
        scopes,
    )
    return bool(status.endswith(" 1"))


async def find_token(conn: asyncpg.Connection, token_hash: str) -> asyncpg.Record | None:
    """The live token with this hash (its name and scopes), if any."""
    return await conn.fetchrow(
        "SELECT name, token_hash, scopes FROM sessionctl.api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        token_hash,
    )


async def list_tokens(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT name, scopes, created_at, revoked_at FROM sessionctl.api_tokens ORDER BY created_at, name"
    )
    return [dict(r) for r in rows]


async def revoke_token(conn: asyncpg.Connection, name: str) -> bool:
    status = await conn.execute(
        "UPDATE sessionctl.api_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL", name
    )
    return bool(status.endswith(" 1"))
