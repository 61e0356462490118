"""What may leave the process about a user: an HMAC of their id, never the id itself."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable


def user_hmac(key: bytes, user_id: str) -> str:
    """A keyed, stable pseudonym of a user id (hex, 128 bits): safe for logs, results and receipts."""
    return hmac.new(key, b"user\x00" + user_id.encode(), hashlib.sha256).hexdigest()[:32]


def user_hasher(key: bytes) -> Callable[[str], str]:
    """:func:`user_hmac` under one key, for many ids: the keyed state is prepared once and copied
    per id (a re-sweep hashes every distinct key of a store)."""
    base = hmac.new(key, b"user\x00", hashlib.sha256)

    def digest(user_id: str) -> str:
        h = base.copy()
        h.update(user_id.encode())
        return h.hexdigest()[:32]

    return digest


def request_digest(key: bytes, *parts: str) -> str:
    """A keyed digest of a request's identity (kind, agents, user, options), for job ids."""
    joined = "\x00".join(parts).encode()
    return hmac.new(key, b"job\x00" + joined, hashlib.sha256).hexdigest()[:24]


def manifest_mac(key: bytes, manifest: dict[str, object]) -> str:
    """The HMAC of an export manifest (every field but ``mac``, canonical JSON). The manifest holds
    the data file's sha256, so the MAC authenticates the file too: an edited file or manifest —
    checksum recomputed or not — no longer verifies without the operator's key."""
    body = {k: v for k, v in manifest.items() if k != "mac"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hmac.new(key, b"manifest\x00" + canonical, hashlib.sha256).hexdigest()
