"""What may leave the process about a user: an HMAC of their id, never the id itself."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from typing import Any


def user_hmac(key: bytes, user_id: str) -> str:
    """A keyed, stable pseudonym of a user id (hex, 128 bits): safe for logs, results and receipts."""
    return hmac.digest(key, b"user\x00" + user_id.encode(), "sha256").hex()[:32]


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
    return hmac.digest(key, b"job\x00" + joined, "sha256").hex()[:24]


def manifest_mac(key: bytes, manifest: dict[str, object]) -> str:
    """The HMAC of an export manifest (every field but ``mac``, canonical JSON). The manifest holds
    the data file's sha256, so the MAC authenticates the file too: an edited file or manifest —
    checksum recomputed or not — no longer verifies without the operator's key."""
    body = {k: v for k, v in manifest.items() if k != "mac"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hmac.new(key, b"manifest\x00" + canonical, hashlib.sha256).hexdigest()


_SEALED_V1 = b"\x01"


def _subject_key(key: bytes) -> bytes:
    return hmac.new(key, b"sessionctl request subject\x00", hashlib.sha256).digest()


@functools.lru_cache(maxsize=8)
def _sealer(key: bytes) -> Any:
    """The AES-GCM cipher of the subject key derived from ``key``, made once per key (every request
    taken in seals its subject)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(_subject_key(key))


def seal_subject(key: bytes, request_id: str, user_id: str) -> bytes:
    """The user id of an open data-subject request, encrypted (AES-256-GCM under a key derived from
    ``SESSIONCTL_HASH_KEY``, bound to the request id) so the ledger can run the request again after
    Redis lost its job — and only the operator's key reads it. Destroyed when the request closes."""
    nonce = secrets.token_bytes(12)
    return bytes(_SEALED_V1 + nonce + _sealer(key).encrypt(nonce, user_id.encode(), request_id.encode()))


def unseal_subject(key: bytes, request_id: str, sealed: bytes) -> str | None:
    """The user id :func:`seal_subject` sealed for this request; ``None`` when it does not open
    (another key, another request, altered)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not sealed.startswith(_SEALED_V1) or len(sealed) < 1 + 12 + 16:
        return None
    nonce, box = sealed[1:13], sealed[13:]
    try:
        return AESGCM(_subject_key(key)).decrypt(nonce, box, request_id.encode()).decode()
    except (InvalidTag, UnicodeDecodeError):
        return None
