"""Legal holds (``sessionctl.legal_holds``): people, as HMACs, who must not be erased while a hold
is in place — placed and released by an operator (CLI or API), every hold and release kept. While
a hold is in place it also keeps the person's id sealed under the operator's key (``subject``), so
retention can leave them out; releasing it destroys that. Every statement on that table is here."""

from __future__ import annotations

import asyncpg

from sessionctl.errors import PersonOnHold
from sessionctl.privacy import seal_subject, unseal_subject

HOLD_COLUMNS = "id, user_hmac, reason, placed_by, placed_at, released_at, released_by"


def seal(key: bytes, user_hmac: str, user_id: str) -> bytes:
    """The person's id as a hold keeps it: sealed under the operator's key, bound to their hold
    (``hold:<user_hmac>``), so it opens for that hold only and only with ``SESSIONCTL_HASH_KEY``."""
    return seal_subject(key, f"hold:{user_hmac}", user_id)


def unseal(key: bytes, user_hmac: str, sealed: bytes) -> str | None:
    """The id :func:`seal` sealed; ``None`` when it does not open (another key, altered)."""
    return unseal_subject(key, f"hold:{user_hmac}", sealed)


async def place(
    conn: asyncpg.Connection, user_hmac: str, subject: bytes, reason: str, by: str
) -> tuple[asyncpg.Record, bool]:
    """The person's active hold: placed now with their sealed id ``subject``, or the one already in
    place (``False``: kept, its sealed id renewed — placing again mends a hold retention cannot read)."""
    row = await conn.fetchrow(
        "INSERT INTO sessionctl.legal_holds (user_hmac, subject, reason, placed_by) VALUES ($1, $2, $3, $4)"
        f" ON CONFLICT (user_hmac) WHERE released_at IS NULL DO NOTHING RETURNING {HOLD_COLUMNS}",
        user_hmac,
        subject,
        reason,
        by,
    )
    if row is not None:
        return row, True
    kept = await conn.fetchrow(
        "UPDATE sessionctl.legal_holds SET subject = $2 WHERE user_hmac = $1 AND released_at IS NULL"
        f" RETURNING {HOLD_COLUMNS}",
        user_hmac,
        subject,
    )
    if kept is None:  # released between the two statements: place it anew
        return await place(conn, user_hmac, subject, reason, by)
    return kept, False


async def release(conn: asyncpg.Connection, user_hmac: str, by: str) -> asyncpg.Record | None:
    """Release the person's active hold, destroying their sealed id; ``None`` when there is none."""
    return await conn.fetchrow(
        "UPDATE sessionctl.legal_holds SET released_at = now(), released_by = $2, subject = NULL"
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


async def held_user_ids(conn: asyncpg.Connection, key: bytes) -> list[str]:
    """The ids of every person under an active hold, unsealed with ``key``: what retention leaves
    out. A hold whose id is missing or does not open under this key raises :class:`PersonOnHold` —
    retention must not run blind to a hold. A database without the holds table has no hold."""
    try:
        holds = await conn.fetch(
            "SELECT id, user_hmac, subject FROM sessionctl.legal_holds WHERE released_at IS NULL ORDER BY id"
        )
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return []
    ids: set[str] = set()
    for h in holds:
        user_id = None if h["subject"] is None else unseal(key, h["user_hmac"], bytes(h["subject"]))
        if user_id is None:
            raise PersonOnHold(
                f"hold {h['id']} keeps no id this SESSIONCTL_HASH_KEY opens, so retention cannot leave its person"
                " out: nothing was deleted; place it again with `sessionctl hold place` (same person and key)"
            )
        ids.add(user_id)
    return sorted(ids)


async def listing(conn: asyncpg.Connection, *, include_released: bool, limit: int) -> list[asyncpg.Record]:
    where = "" if include_released else " WHERE released_at IS NULL"
    return list(
        await conn.fetch(f"SELECT {HOLD_COLUMNS} FROM sessionctl.legal_holds{where} ORDER BY id DESC LIMIT $1", limit)
    )
