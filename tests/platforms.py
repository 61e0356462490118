"""Stand-ins of the DSR platforms, run by a test on 127.0.0.1 with real cryptography: a Sombra
(Transcend's gateway) that serves its ES384 public key, signs webhook tokens with the private key,
lists pending requests for pull mode and records every answer; Ketch's callbacks are a
:class:`~tests.service_helpers.Receiver`."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.service_helpers import Receiver

AUDIENCE = "acme-org"
API_KEY = "transcend-api-key-for-tests"


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class Sombra(Receiver):
    """Transcend's Sombra gateway: ``GET /public-keys/sombra-general-signing-key`` serves the current
    public key; ``GET /v1/data-silo/<id>/pending-requests/<ACTION>`` lists ``pending``; every other
    request is recorded (as :class:`Receiver` does) and answered with ``answers`` (then 200)."""

    key: ec.EllipticCurvePrivateKey = field(default_factory=new_key)
    pending: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    key_fetches: int = 0

    def token(self, value: str, *, audience: str = AUDIENCE, ttl: float = 300, key: Any = None, **claims: Any) -> str:
        """A webhook's ``x-sombra-token``: ES384, the identifier in ``value``, a fresh ``jti``."""
        now = int(time.time())
        payload = {
            "value": value,
            "aud": audience,
            "iat": now,
            "exp": now + int(ttl),
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(payload, key or self.key, algorithm="ES384")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            if path == "/public-keys/sombra-general-signing-key":
                self.key_fetches += 1
                await _answer(send, 200, public_pem(self.key), b"application/x-pem-file")
                return
            if "/pending-requests/" in path:
                action = path.rsplit("/", 1)[1]
                body = json.dumps({"items": self.pending.get(action, [])}).encode()
                await _answer(send, 200, body, b"application/json")
                return
        await super().__call__(scope, receive, send)

    def answers_to(self, path: str) -> list[dict[str, Any]]:
        return [g for g in self.got if g["path"] == path]


async def _answer(send: Any, status: int, body: bytes, kind: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": body})


def transcend_body(kind: str, request_id: str) -> dict[str, Any]:
    """A Transcend webhook body as its examples show (the person is in the token, not trusted here)."""
    return {
        "type": kind,
        "coreIdentifier": {"value": "not-trusted"},
        "extras": {
            "profile": {"identifier": "not-trusted", "type": "email"},
            "request": {
                "id": request_id,
                "link": f"https://app.transcend.io/privacy-requests/incoming-requests/{request_id}",
            },
        },
    }


def ketch_body(kind: str, uid: str, email: str, callback: str) -> dict[str, Any]:
    """A Ketch ``dsr/v1`` request as its forwarder documents it."""
    return {
        "apiVersion": "dsr/v1",
        "kind": kind,
        "metadata": {"uid": uid, "tenant": "acme"},
        "request": {
            "controller": "acme",
            "property": "acme.io",
            "environment": "production",
            "regulation": "gdpr",
            "jurisdiction": "eugdpr",
            "identities": [{"identitySpace": "email", "identityFormat": "raw", "identityValue": email}],
            "callbacks": [{"url": callback, "headers": {"Authorization": "ketch-callback-secret"}}],
            "subject": {"email": email, "firstName": "Jane", "lastName": "Doe"},
            "submittedTimestamp": int(time.time()) - 60,
            "dueTimestamp": int(time.time()) + 30 * 86400,
        },
    }
