"""Transcend's contract (server webhook integration, https://docs.transcend.io): what its webhook
carries, and how sessionctl answers Sombra when the request has ended.

- an erasure: ``PUT {SOMBRA}/v1/data-silo`` — an empty body when the person is gone from every store
  (Sombra reads the profile from the nonce; ``profiles`` is deprecated in Transcend's reference);
  ``status: ACTION_REQUIRED`` with a message naming what remains when it was not ``complete``;
  ``status: SKIPPED_DUE_TO_EXCEPTION`` for a person under a legal hold;
- an access request: ``POST {SOMBRA}/v1/data-silo`` with ``profiles: [{profileId, profileData}]``
  (one profile per user id, named by its HMAC) and ``status: READY`` — or, above
  ``SESSIONCTL_TRANSCEND_INLINE_MAX_BYTES``, pages of ``POST {SOMBRA}/v1/datapoint-chunked``;
- a failure: ``PUT {SOMBRA}/v1/data-silo`` with ``profileStatus: ERROR`` and the error's one line.

Every call carries ``authorization: Bearer <API key>``, ``x-sombra-authorization`` for a self-hosted
Sombra, and the request's ``x-transcend-nonce``. The Sombra URL is the operator's setting: nothing a
request carries can change where an answer goes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from sessionctl.config import Settings

KINDS = {"ERASURE": "erasure", "ACCESS": "export"}
PAGE_BYTES = 1_000_000  # a datapoint-chunked page
Records = Callable[[], dict[str, list[dict[str, Any]]]]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # Transcend sends more than sessionctl reads


class RequestInfo(_Open):
    id: str = Field(min_length=1, max_length=200)


class Extras(_Open):
    request: RequestInfo


class Webhook(_Open):
    """The body of Transcend's webhook, as far as sessionctl reads it (the person comes from the
    signed token, never from here)."""

    type: str = Field(min_length=1, max_length=64)
    extras: Extras


def headers(settings: Settings, nonce: str, event_id: str | None) -> dict[str, str]:
    out = {"content-type": "application/json", "accept": "application/json", "x-transcend-nonce": nonce}
    if settings.transcend_api_key is not None:
        out["authorization"] = f"Bearer {settings.transcend_api_key.get_secret_value()}"
    if settings.transcend_sombra_api_key is not None:
        out["x-sombra-authorization"] = f"Bearer {settings.transcend_sombra_api_key.get_secret_value()}"
    if event_id:
        out["x-sessionctl-event-id"] = event_id
    return out


def calls(settings: Settings, outcome: dict[str, Any], records: Records) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, body) of each call that answers this outcome, in order."""
    status, cid = outcome["status"], outcome["connector_request_id"]
    if status == "on_hold":
        return [("PUT", "/v1/data-silo", {"status": "SKIPPED_DUE_TO_EXCEPTION", "message": _held(outcome)})]
    if status == "failed":  # the error's type only: its text stays in sessionctl (the request shows it)
        error = outcome.get("error") or {}
        message = f"sessionctl {cid} failed ({error.get('type', 'Error')}): see this request in sessionctl"
        return [("PUT", "/v1/data-silo", {"profileStatus": "ERROR", "message": message})]
    if status == "not_found":  # nobody here by this identifier: nothing to erase, nothing to give
        if outcome["kind"] == "erasure":
            return [("PUT", "/v1/data-silo", {})]
        return [("POST", "/v1/data-silo", {"profiles": [], "status": "READY"})]
    if outcome["kind"] == "erasure":
        if outcome.get("complete"):
            return [("PUT", "/v1/data-silo", {})]
        left = ", ".join(f"{k}={v}" for k, v in sorted((outcome.get("remains") or {}).items()))
        message = (
            f"sessionctl {outcome['connector_request_id']}: erased, but not from every store ({left or 'unknown'})"
        )
        return [("PUT", "/v1/data-silo", {"status": "ACTION_REQUIRED", "message": message[:1000]})]
    return _access_calls(settings, records())


def _held(outcome: dict[str, Any]) -> str:
    """What a hold stopped: the whole person, or some of their user ids (the others were erased)."""
    held, ids = int(outcome.get("held") or 0), len(outcome.get("requests") or [])
    if 0 < held < ids:
        return f"{held} of the person's {ids} user ids are under a legal hold in sessionctl: those were not erased"
    return "the person is under a legal hold in sessionctl: nothing was erased"


def _access_calls(settings: Settings, people: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str, dict[str, Any]]]:
    profiles = [{"profileId": person, "profileData": {"records": recs}} for person, recs in people.items()]
    body = {"profiles": profiles, "status": "READY"}
    if len(json.dumps(body)) <= settings.transcend_inline_max_bytes:
        return [("POST", "/v1/data-silo", body)]
    pages: list[list[dict[str, Any]]] = [[]]
    size = 0
    for person, recs in people.items():
        for rec in recs:
            item = {"profile": person, **rec}
            n = len(json.dumps(item))
            if pages[-1] and size + n > PAGE_BYTES:
                pages.append([])
                size = 0
            pages[-1].append(item)
            size += n
    return [
        (
            "POST",
            "/v1/datapoint-chunked",
            {
                "fileId": f"sessionctl page {i + 1}",
                "dataPointName": "sessionctl",
                "data": page,
                "isLastPage": i == len(pages) - 1,
            },
        )
        for i, page in enumerate(pages)
    ]


async def answer(
    client: httpx.AsyncClient,
    settings: Settings,
    reply: dict[str, Any],
    outcome: dict[str, Any],
    records: Records,
    *,
    event_id: str | None,
) -> dict[str, Any]:
    """Make the calls; ``ok`` when Sombra took every one (a 409 — the request is no longer
    modifiable in Transcend — counts as taken: asking again cannot change it)."""
    if not settings.transcend_sombra_url:
        return {"ok": False, "error": "SESSIONCTL_TRANSCEND_SOMBRA_URL unset"}
    base = settings.transcend_sombra_url
    sent = []
    for method, path, body in calls(settings, outcome, records):
        resp = await client.request(
            method,
            base + path,
            content=json.dumps(body).encode(),
            headers=headers(settings, str(reply["nonce"]), event_id),
            follow_redirects=False,
        )
        sent.append(f"{method} {path} {resp.status_code}")
        if not (200 <= resp.status_code < 300 or resp.status_code == 409):
            return {"ok": False, "status_code": resp.status_code, "calls": sent}
    return {"ok": True, "status_code": 200, "calls": sent}
