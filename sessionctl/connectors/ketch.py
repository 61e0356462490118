"""Ketch's DSR forwarder contract (``dsr/v1``, github.com/ketch-com/ketch-forwarder): Ketch POSTs a
``DeleteRequest`` or ``AccessRequest`` with the shared secret in ``Authorization``; sessionctl
answers ``200`` with a ``DeleteResponse``/``AccessResponse`` at once (``in_progress``; ``denied``
for a person under a legal hold; ``completed``/``no_match`` when the identity mapping knows nobody),
and later POSTs a ``DeleteStatusEvent``/``AccessStatusEvent`` to each of the request's callbacks
(each callback's host must be on ``SESSIONCTL_WEBHOOK_ALLOWED_HOSTS``, checked at intake and again
before every attempt):

- erased from every store: ``completed`` / ``executed``; erased but not ``complete``:
  ``in_progress`` with a message naming what remains (never a "completed" that is not true);
- an access export: ``completed`` with the records as one embedded JSON document (base64, as
  Ketch's Document object) while within Ketch's 1 MB, else ``in_progress`` with a message;
- a legal hold: ``denied``; a failure: ``in_progress`` with the error's one line (Ketch marks a
  request failed when no final status comes)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from sessionctl import webhooks
from sessionctl.config import Settings
from sessionctl.errors import SessionctlError

KINDS = {"DeleteRequest": "erasure", "AccessRequest": "export"}
EVENTS = {"erasure": "DeleteStatusEvent", "export": "AccessStatusEvent"}
RESPONSES = {"erasure": "DeleteResponse", "export": "AccessResponse"}
MAX_DOCUMENT = 1_000_000  # Ketch: "the total response data across all callbacks is limited to 1MB"
Records = Callable[[], dict[str, list[dict[str, Any]]]]
# headers a callback may not set: where the request goes and how it is framed are sessionctl's
HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-type"})
Text = Field(min_length=1, max_length=500)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Metadata(_Open):
    uid: str = Field(min_length=1, max_length=200)
    tenant: str | None = Field(None, max_length=200)


class Identity(_Open):
    identitySpace: str = Field(min_length=1, max_length=200)
    identityFormat: Literal["raw", "md5", "sha1"] = "raw"
    identityValue: str = Field(min_length=1, max_length=1000)


class Callback(_Open):
    url: str = Field(min_length=1, max_length=2000)
    headers: dict[str, str] = Field(default_factory=dict)


class Request(_Open):
    identities: list[Identity] = Field(min_length=1, max_length=50)
    callbacks: list[Callback] = Field(default_factory=list, max_length=10)
    submittedTimestamp: int | None = Field(None, ge=0, le=253_402_300_799)


class DsrRequest(_Open):
    apiVersion: Literal["dsr/v1"]
    kind: str = Field(min_length=1, max_length=64)
    metadata: Metadata
    request: Request


def check_callbacks(request: DsrRequest, allowed_hosts: str) -> None:
    """Every callback URL is one the operator allowed (else the request is refused, nothing recorded)."""
    for cb in request.request.callbacks:
        webhooks.check_callback(cb.url, allowed_hosts)


def response(kind: str, metadata: Metadata, status: str, *, connector_id: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, **extra}
    if connector_id is not None:
        body["requestID"] = connector_id
    return {
        "apiVersion": "dsr/v1",
        "kind": RESPONSES[kind],
        "metadata": metadata.model_dump(exclude_none=True),
        "response": body,
    }


def event(outcome: dict[str, Any], records: Records) -> dict[str, Any]:
    """The status event that tells Ketch how the request ended."""
    status = outcome["status"]
    cid = outcome["connector_request_id"]
    if status == "on_hold":
        return {"status": "denied", "resultMessage": "the person is under a legal hold: not (fully) erased"}
    if status == "not_found":
        return {"status": "completed", "reason": "no_match", "requestID": cid}
    if status == "failed":
        error = outcome.get("error") or {}
        return {"status": "in_progress", "resultMessage": f"sessionctl {cid} failed: {error.get('type', 'Error')}"}
    if outcome["kind"] == "erasure":
        if outcome.get("complete"):
            return {"status": "completed", "reason": "executed", "requestID": cid}
        left = ", ".join(f"{k}={v}" for k, v in sorted((outcome.get("remains") or {}).items()))
        return {"status": "in_progress", "resultMessage": f"sessionctl {cid}: not erased from every store ({left})"}
    data = json.dumps({"profiles": records()}).encode()
    if len(data) > MAX_DOCUMENT:
        return {
            "status": "in_progress",
            "resultMessage": f"sessionctl {cid}: the export is larger than Ketch's 1 MB; an operator hands it over",
        }
    document = {"data": base64.b64encode(data).decode(), "headers": {"Content-Type": "application/json"}}
    return {"status": "completed", "reason": "executed", "requestID": cid, "results": [document]}


async def answer(
    client: httpx.AsyncClient,
    settings: Settings,
    reply: dict[str, Any],
    outcome: dict[str, Any],
    records: Records,
    *,
    event_id: str | None,
) -> dict[str, Any]:
    """POST the status event to every callback; ``ok`` when each took it."""
    body = {
        "apiVersion": "dsr/v1",
        "kind": EVENTS[outcome["kind"]],
        "metadata": reply["metadata"],
        "event": event(outcome, records),
    }
    content = json.dumps(body).encode()
    codes = []
    for cb in reply.get("callbacks") or []:
        try:
            webhooks.check_callback(cb["url"], settings.webhook_allowed_hosts)
        except SessionctlError as exc:
            return {"ok": False, "error": f"not sent: {exc}"}
        given = {k: v for k, v in (cb.get("headers") or {}).items() if k.lower() not in HOP_HEADERS}
        headers = {**given, "Content-Type": "application/json"}
        if event_id:
            headers["X-Sessionctl-Event-Id"] = event_id
        resp = await client.post(cb["url"], content=content, headers=headers, follow_redirects=False)
        codes.append(resp.status_code)
        if not 200 <= resp.status_code < 300:
            return {"ok": False, "status_code": resp.status_code}
    return {"ok": True, "status_code": codes[-1] if codes else None}
