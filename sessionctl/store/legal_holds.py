"""Legal holds (``sessionctl.legal_holds``): people, as HMACs, who must not be erased while a hold
is in place — placed and released by an operator (CLI or API), every hold and release kept. Every
statement on that table is here."""

from __future__ import annotations

import asyncpg

HOLD_COLUMNS = "id, user_hmac, reason, placed_by, placed_at, released_at, released_by"


async def place(conn: asyncpg.Connection, user_hmac: str, reason: str, by: str) -> tuple[asyncpg.Record, bool]:
    """The person's active hold: placed now, or the one already in place (``False``)."""
    row = await conn.fetchrow(
        "INSERT INTO sessionctl.legal_holds (user_hmac, reason, placed_by) VALUES ($1, $2, $3)"
        f" ON CONFLICT (user_hmac) WHERE released_at IS NULL DO NOTHING RETURNING {HOLD_COLUMNS}",
        user_hmac,
        reason,
        by,
    )
    if row is not None:
        return row, True
    held = await active(conn, [user_hmac])
    return held[0], False


async def release(conn: asyncpg.Connection, user_hmac: str, by: str) -> asyncpg.Record | None:
    """Release the person's active hold; ``None`` when there is none."""
    return await conn.fetchrow(
        "UPDATE sessionctl.legal_holds SET released_at = now(), released_by = $2"
        f" WHERE user_hmac = $1 AND released_at IS NULL RETURNING {HOLD_COLUMNS}",
        user_hmac,
        by,
    )


async def active(conn: asyncpg.Connection, hmacs: list[str]) -> list[asyncpg.Record]:
    """The active holds of these people."""
    return list(
        await conn.fetch(
            f"SELECT {HOLD_COLUMNS} FROM sessionctl.legal_holds WHERE user_hmac = ANY($1::text[])"
            " AND released_at IS NULL ORDER BY id",
            hmacs,
        )
    )


async def listing(conn: asyncpg.Connection, *, include_released: bool, limit: int) -> list[asyncpg.Record]:
    where = "" if include_released else " WHERE released_at IS NULL"
    return list(
        await conn.fetch(f"SELECT {HOLD_COLUMNS} FROM sessionctl.legal_holds{where} ORDER BY id DESC LIMIT $1", limit)
    )
