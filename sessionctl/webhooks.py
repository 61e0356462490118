"""Completion webhooks of the DSR service: which callback URLs are allowed, the body (never a raw
user id), the signatures, and delivering the ones owed (``sessionctl.webhook_deliveries``: durable,
retried with backoff until a 2xx or ``SESSIONCTL_WEBHOOK_GIVE_UP_HOURS``).

Two schemes (``SESSIONCTL_WEBHOOK_SCHEME``), each checked by receivers with their own libraries:

- ``stripe`` (the default): ``X-Sessionctl-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
  "<t>.<body>")>``, exactly as Stripe signs (``stripe.WebhookSignature.verify_header`` accepts it),
  and the event id in ``X-Sessionctl-Event-Id``;
- ``standard``: `Standard Webhooks <https://www.standardwebhooks.com>`_ — ``webhook-id`` (the event
  id), ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256(key,
  "<id>.<timestamp>.<body>")>``, the key being the base64 after ``whsec_`` in the secret.

Every secret configured signs every delivery (one ``v1`` each), so a secret is rotated without a
gap. Delivery is at least once: a receiver drops a repeat by its ``event_id`` (the same across
retries and resends).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from sessionctl.errors import InvalidRequest

HEADER = "X-Sessionctl-Signature"
EVENT_ID_HEADER = "X-Sessionctl-Event-Id"
STANDARD_PREFIX = "whsec_"
# What a result says of an erasure or an export: counts only (results never hold a raw user id).
_COUNTS = (
    "sessions_deleted",
    "runs_deleted",
    "memories_deleted",
    "late_sessions",
    "schemas_checked",
    "sessions",
    "bytes",
    "stores",
    "would_delete",
    "erased_sessions",
)


def check_callback(url: str, allowed_hosts: str) -> str:
    """The URL, if it may be called back: http(s), no credentials in it, its host (and port, when the
    entry names one) on ``SESSIONCTL_WEBHOOK_ALLOWED_HOSTS``. Anything else is refused at intake —
    the service never calls into a network the operator did not name."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidRequest("callback_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("callback_url must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("callback_url must not carry credentials")
    host = parts.hostname.lower()
    for entry in (e.strip().lower() for e in allowed_hosts.split(",")):
        if not entry:
            continue
        name, _, want = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if name == host and (not want or (port or (443 if parts.scheme == "https" else 80)) == int(want)):
            return url
    raise InvalidRequest(
        f"callback host {host}{'' if port is None else f':{port}'} is not on SESSIONCTL_WEBHOOK_ALLOWED_HOSTS:"
        " add it there (host or host:port), or leave callback_url out"
    )


def new_event_id() -> str:
    """A delivery's event id, made once when it is noted: the same across its retries and resends."""
    return "evt_" + secrets.token_hex(16)


def sign(secret: bytes | Sequence[bytes], body: bytes, t: int | None = None) -> str:
    """The ``X-Sessionctl-Signature`` header value of this body: one ``v1`` per secret, as Stripe
    writes a header signed with several secrets (its verifier accepts any one that matches)."""
    t = int(time.time()) if t is None else t
    keys = [secret] if isinstance(secret, bytes) else list(secret)
    macs = (hmac.new(key, str(t).encode() + b"." + body, hashlib.sha256).hexdigest() for key in keys)
    return f"t={t}," + ",".join(f"v1={mac}" for mac in macs)


def verify(secret: bytes, header: str, body: bytes, *, tolerance_s: int = 300, now: float | None = None) -> bool:
    """Does the header sign this body with this secret (any of its ``v1``), within ``tolerance_s``
    of now? (For receivers and tests.)"""
    try:
        fields = [part.split("=", 1) for part in header.split(",")]
        (t,) = [int(v) for k, v in fields if k == "t"]
        given = [v for k, v in fields if k == "v1"]
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    want = hmac.new(secret, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(want, g) for g in given)


def standard_key(secret: str) -> bytes:
    """The key of a Standard Webhooks secret (``whsec_`` + base64 of at least 24 bytes); a
    ``ValueError`` saying what is wrong otherwise (never the secret itself)."""
    if not secret.startswith(STANDARD_PREFIX):
        raise ValueError("must start with whsec_ (whsec_ + base64 of a random key of 24 to 64 bytes)")
    try:
        encoded = secret[len(STANDARD_PREFIX) :]
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)  # padding optional, as the libraries
    except ValueError:
        raise ValueError("must be whsec_ + base64 of the key: the part after whsec_ is not base64") from None
    if len(key) < 24:
        raise ValueError(f"its key is {len(key)} bytes: use at least 24 (whsec_ + base64 of 24 to 64 random bytes)")
    return key


def sign_standard(keys: Sequence[bytes], event_id: str, t: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64>`` per key, space-separated."""
    signed = f"{event_id}.{t}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()).decode() for k in keys)


def signed_headers(
    scheme: str, keys: Sequence[bytes], event_id: str, body: bytes, t: int | None = None
) -> dict[str, str]:
    """Every header of one attempt: the content type, the event id and the signatures of
    ``scheme`` (``stripe`` or ``standard``), one per key."""
    t = int(time.time()) if t is None else t
    if scheme == "standard":
        return {
            "Content-Type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(t),
            "webhook-signature": sign_standard(keys, event_id, t, body),
        }
    return {"Content-Type": "application/json", EVENT_ID_HEADER: event_id, HEADER: sign(keys, body, t)}


def probe_body(event_id: str) -> dict[str, Any]:
    """The body of a test event (``sessionctl webhooks test``): what a receiver needs to check its
    verification, and nothing about anyone."""
    return {"event": "test", "event_id": event_id, "sent_at": int(time.time())}


def body_for(
    request: dict[str, Any], job_id: str, kind: str, status: str, result: dict[str, Any] | None, error: Any
) -> dict[str, Any]:
    """The JSON a callback gets: what happened to the request, counts, the receipt — no raw id."""
    ended = {"succeeded": "completed", "dry_run": "dry_run", "on_hold": "on_hold"}.get(status, "failed")
    event = f"{request['kind']}.{ended}"
    out: dict[str, Any] = {
        "event": event,
        "event_id": new_event_id(),
        "job_id": job_id,
        "request_id": request["request_id"],
        "request_ref": request["request_ref"],
        "kind": kind,
        "status": status,
        "user_hmac": request["user_hmac"],
    }
    for key in _COUNTS:
        if result and result.get(key) is not None:
            out[key] = result[key]
    out["remaining"] = (result or {}).get("remaining")
    if request["kind"] == "erasure" and status == "succeeded":
        # whether the person is gone from every store (the final recount), whatever scope was asked
        remains = request.get("remains")
        out["complete"] = request.get("complete")
        out["remains"] = (json.loads(remains) if isinstance(remains, str) else remains) or {}
    if status == "succeeded":
        out["late"] = request.get("late")
    if request.get("receipt_id") is not None:
        out["receipt_id"] = request["receipt_id"]
    if error:
        out["error"] = {"type": str(error.get("type", "Error")), "message": str(error.get("message", ""))}
    return out


def backoff_s(tries: int) -> float:
    """Seconds before the next attempt after ``tries`` failed ones: 1, 2, 4 … capped at an hour."""
    return float(min(3600, 2 ** max(0, tries - 1)))


async def post(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """One attempt with these (signed) headers: its outcome (``ok`` on a 2xx), for the delivery's
    record. Redirects are not followed (a redirect could lead outside the allowed hosts)."""
    started = time.time()
    attempt: dict[str, Any] = {"at": round(started, 3)}
    try:
        resp = await client.post(
            url,
            content=body,
            headers=headers,
            follow_redirects=False,
        )
        attempt["status_code"] = resp.status_code
        attempt["ok"] = 200 <= resp.status_code < 300
    except httpx.HTTPError as exc:
        attempt["ok"] = False
        attempt["error"] = type(exc).__name__
    attempt["ms"] = round((time.time() - started) * 1000, 1)
    return attempt


async def send_probe(url: str, scheme: str, keys: Sequence[bytes], timeout: float) -> dict[str, Any]:
    """A test event to ``url`` (already checked against the allowed hosts), signed and sent now,
    not queued: the attempt (``status_code``, ``ok``, ``ms``) and its ``event_id``."""
    event_id = new_event_id()
    body = json.dumps(probe_body(event_id)).encode()
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), trust_env=False) as client:
        attempt = await post(client, url, body, signed_headers(scheme, keys, event_id, body))
    return {"event_id": event_id, **attempt}
