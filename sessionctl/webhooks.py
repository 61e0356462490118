"""Completion webhooks of the DSR service: which callback URLs are allowed, the body (never a raw
user id), the signature, and delivering the ones owed (``sessionctl.webhook_deliveries``: durable,
retried with backoff until a 2xx or ``SESSIONCTL_WEBHOOK_GIVE_UP_HOURS``).

Signature: ``X-Sessionctl-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``,
as Stripe signs its webhooks; a receiver checks it with :func:`verify` (or the same three lines)
and rejects a ``t`` too far from its clock. Delivery is at least once: a receiver deduplicates on
``(job_id, request_id)``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from sessionctl.errors import InvalidRequest

HEADER = "X-Sessionctl-Signature"
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


def sign(secret: bytes, body: bytes, t: int | None = None) -> str:
    """The ``X-Sessionctl-Signature`` header value of this body."""
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: bytes, header: str, body: bytes, *, tolerance_s: int = 300, now: float | None = None) -> bool:
    """Does the header sign this body, within ``tolerance_s`` of now? (For receivers and tests.)"""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    want = hmac.new(secret, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, given)


def body_for(
    request: dict[str, Any], job_id: str, kind: str, status: str, result: dict[str, Any] | None, error: Any
) -> dict[str, Any]:
    """The JSON a callback gets: what happened to the request, counts, the receipt — no raw id."""
    event = f"{request['kind']}.{ {'succeeded': 'completed', 'dry_run': 'dry_run'}.get(status, 'failed') }"
    out: dict[str, Any] = {
        "event": event,
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


async def post(client: httpx.AsyncClient, url: str, body: bytes, secret: bytes) -> dict[str, Any]:
    """One attempt: its outcome (``ok`` on a 2xx), for the delivery's record. Redirects are not
    followed (a redirect could lead outside the allowed hosts)."""
    started = time.time()
    attempt: dict[str, Any] = {"at": round(started, 3)}
    try:
        resp = await client.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", HEADER: sign(secret, body)},
            follow_redirects=False,
        )
        attempt["status_code"] = resp.status_code
        attempt["ok"] = 200 <= resp.status_code < 300
    except httpx.HTTPError as exc:
        attempt["ok"] = False
        attempt["error"] = type(exc).__name__
    attempt["ms"] = round((time.time() - started) * 1000, 1)
    return attempt
