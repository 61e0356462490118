"""Transcend's pull mode (``SESSIONCTL_TRANSCEND_DATA_SILO_ID``): instead of taking webhooks, a worker
asks Sombra every ``SESSIONCTL_TRANSCEND_PULL_SECONDS`` for the data silo's pending requests —
``GET {SOMBRA}/v1/data-silo/{id}/pending-requests/{ERASURE|ACCESS}`` → ``{"items": [{identifier,
nonce, …}]}`` — and files each one it has not filed yet (by its nonce), exactly as a webhook would
be filed; the answer goes back the same way (``PUT``/``POST /v1/data-silo`` with the nonce). Nothing
needs to accept inbound traffic."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from sessionctl.config import Settings
from sessionctl.connectors import filing, identity
from sessionctl.connectors.filing import Enqueue, PlatformRequest
from sessionctl.connectors.sombra import SombraKeys
from sessionctl.logs import get_logger

log = get_logger("sessionctl.connectors")
ACTIONS = {"ERASURE": "erasure", "ACCESS": "export"}
PAGE = 100  # items filed per action and round


def enabled(settings: Settings) -> bool:
    return bool(settings.transcend_data_silo_id and settings.transcend_sombra_url and settings.transcend_api_key)


async def pull_round(
    client: httpx.AsyncClient, settings: Settings, connect: Callable[[], Any], enqueue: Enqueue
) -> int:
    """Fetch the pending requests of each action once; how many were filed now."""
    filed = 0
    headers = SombraKeys(settings).headers()
    for action, kind in ACTIONS.items():
        url = (
            f"{settings.transcend_sombra_url}/v1/data-silo/{settings.transcend_data_silo_id}/pending-requests/{action}"
        )
        resp = await client.get(url, headers=headers, follow_redirects=False)
        if resp.status_code != 200:
            log.warning("transcend.pull_refused", action=action, status_code=resp.status_code)
            continue
        page = resp.json()
        items = page.get("items") if isinstance(page, dict) else None
        if not isinstance(items, list):
            log.warning("transcend.pull_unreadable", action=action)
            continue
        for item in items[:PAGE]:
            try:
                filed += await _file_item(settings, connect, enqueue, kind, item)
            except Exception as exc:
                log.warning("transcend.pull_item_refused", action=action, error_type=type(exc).__name__)
    return filed


async def _file_item(
    settings: Settings, connect: Callable[[], Any], enqueue: Enqueue, kind: str, item: dict[str, Any]
) -> int:
    if not isinstance(item, dict):
        return 0
    identifier, nonce = item.get("identifier"), item.get("nonce")
    if not isinstance(identifier, str) or not identifier or not isinstance(nonce, str) or not nonce:
        return 0
    nonce_key = hashlib.sha256(nonce.encode()).hexdigest()
    ref = item.get("requestId") or item.get("id")
    req = PlatformRequest(
        platform="transcend",
        kind=kind,
        platform_ref=str(ref)[:200] if ref else f"nonce:{nonce_key[:32]}",
        replay_key=f"nonce:{nonce_key}",
        identifier=identifier,
        identifier_type=str(item.get("type") or "coreIdentifier"),
        reply={"nonce": nonce},
        received_at=datetime.now(UTC),
        answer_later=True,
    )
    async with connect() as conn:
        if await filing.seen(conn, req) is not None or await filing.filed_before(conn, req) is not None:
            return 0
    req.user_ids = await identity.user_ids(settings, identifier, req.identifier_type)
    async with connect() as conn:
        return int((await filing.file(conn, settings, req, enqueue)).new)
