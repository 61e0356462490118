"""``sessionctl receipts``: the receipts that say a user was erased (the independent recount,
``sessionctl verify``, is :func:`sessionctl.jobs.person.verify_user`)."""

from __future__ import annotations

from typing import Any

from sessionctl.config import Settings
from sessionctl.databases import Databases
from sessionctl.identifiers import validate_user_id
from sessionctl.privacy import user_hmac
from sessionctl.store import receipts


async def find_receipts(settings: Settings, user_id: str) -> tuple[str, list[dict[str, Any]]]:
    """The user's durable erasure receipts (``sessionctl receipts``), found by HMAC: (hmac, rows)."""
    validate_user_id(user_id)
    hmac = user_hmac(settings.hash_key_bytes, user_id)
    dbs = Databases(pool_size=1)
    try:
        async with dbs.connect(settings.dsn) as conn:
            return hmac, await receipts.find(conn, hmac)
    finally:
        await dbs.close()
