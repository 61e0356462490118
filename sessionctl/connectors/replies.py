"""How to answer a platform's request — a Transcend nonce, Ketch's callbacks and their credentials —
sealed under the operator's key (AES-256-GCM, bound to the platform request's id): the ledger keeps
it, only a worker with ``SESSIONCTL_HASH_KEY`` opens it, no log ever shows it."""

from __future__ import annotations

import json
from typing import Any

from sessionctl.config import Settings
from sessionctl.privacy import seal_subject, unseal_subject


def seal_reply(settings: Settings, connector_id: str, reply: dict[str, Any]) -> bytes:
    return seal_subject(settings.hash_key_bytes, connector_id, json.dumps(reply))


def open_reply(settings: Settings, connector_id: str, sealed: bytes | None) -> dict[str, Any] | None:
    text = None if sealed is None else unseal_subject(settings.hash_key_bytes, connector_id, bytes(sealed))
    return None if text is None else dict(json.loads(text))
