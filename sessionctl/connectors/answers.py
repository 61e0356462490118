"""Answering a DSR platform once its request has ended: when the last ledger request it became ends
(:func:`note_if_ended`, in the settling job's transaction), its outcome is summed up — ``completed``
(and whether every erasure was ``complete``), ``on_hold``, or ``failed`` — and an answer is noted
in ``sessionctl.webhook_deliveries`` (kind = the platform). A worker delivers it
(:func:`deliver`): durable, retried with backoff like a webhook, the same event id every time."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from sessionctl.config import Settings
from sessionctl.connectors import ketch, transcend
from sessionctl.connectors.replies import open_reply
from sessionctl.errors import SessionctlError
from sessionctl.export_files import check_manifest, open_records, read_manifest, verify_file
from sessionctl.store import connector_requests, export_registry

PLATFORMS = ("transcend", "ketch")


def summary(kind: str, children: list[Any], error: Any) -> tuple[str, dict[str, Any]]:
    """(status, outcome) of a platform request whose ledger requests have all ended."""
    statuses = {c["status"] for c in children}
    status = "on_hold" if "on_hold" in statuses else "failed" if "open" in statuses else "completed"
    outcome: dict[str, Any] = {
        "status": status,
        "kind": kind,
        "requests": [c["request_id"] for c in children],
        "user_hmacs": [c["user_hmac"] for c in children],
        "receipts": [c["receipt_id"] for c in children if c["receipt_id"] is not None],
        "held": sum(1 for c in children if c["status"] == "on_hold"),
    }
    if kind == "erasure" and status == "completed":
        outcome["complete"] = all(bool(c["complete"]) for c in children)
        outcome["remains"] = _remains(children)
    if status == "failed" and isinstance(error, dict):
        outcome["error"] = {"type": str(error.get("type", "Error")), "message": str(error.get("message", ""))[:500]}
    return status, outcome


def _remains(children: list[Any]) -> dict[str, int]:
    """What is left of the person, store by store, summed over their user ids."""
    remains: dict[str, int] = {}
    for c in children:
        for store, rows in (_json(c["remains"]) or {}).items():
            remains[store] = remains.get(store, 0) + int(rows)
    return remains


async def note_if_ended(conn: asyncpg.Connection, settings: Settings, connector_id: str, error: Any) -> int:
    """The platform request's answer, noted once every ledger request it became has ended (a failed
    one counts as ended: the platform hears of the failure). Answers noted (0 or 1)."""
    row = await connector_requests.lock_unsettled(conn, connector_id)
    if row is None:
        return 0
    children = await connector_requests.children(conn, connector_id)
    if not children or any(c["status"] == "open" and c["last_job_status"] != "failed" for c in children):
        return 0
    status, outcome = summary(row["kind"], children, error)
    if row["status"] == "failed" and status == "failed":
        return 0  # told already; a retried part that fails again changes nothing
    await connector_requests.close(conn, connector_id, status, outcome)
    body = {"connector_request_id": connector_id, **outcome}
    return int(
        await connector_requests.add_answer(conn, connector_id, children[0]["request_id"], row["platform"], body)
    )


async def note_at_filing(conn: asyncpg.Connection, connector_id: str, platform: str, kind: str, status: str) -> int:
    """The answer to a pulled request that ended as it was filed (``on_hold``, ``not_found``): no
    response carried it, so it is delivered like any other."""
    body = {"connector_request_id": connector_id, "status": status, "kind": kind, "requests": []}
    return int(await connector_requests.add_answer(conn, connector_id, None, platform, body))


Connect = Callable[[], Any]


async def deliver(client: httpx.AsyncClient, settings: Settings, connect: Connect, d: dict[str, Any]) -> dict[str, Any]:
    """One attempt at answering the platform (an attempt record, ``ok`` when it took it)."""
    started = time.time()
    outcome = d["body"] if isinstance(d["body"], dict) else json.loads(d["body"])
    connector_id = str(outcome["connector_request_id"])
    exported = outcome["kind"] == "export" and outcome["status"] == "completed"
    async with connect() as conn:
        row = await connector_requests.get(conn, connector_id)
        found = await export_registry.latest_of_requests(conn, outcome["requests"]) if exported else []
    reply = None if row is None else open_reply(settings, connector_id, row["reply"])
    if reply is None:
        return {"at": round(started, 3), "ok": False, "error": "not sent: the answer's credentials do not open"}
    if exported and len(found) < len(outcome["requests"]):  # expired or erased before it could be sent
        gone = {"type": "ExportGone", "message": "the access export is no longer kept (expired or erased): ask again"}
        outcome = {**outcome, "status": "failed", "error": gone}
    paths = [(str(f["user_hmac"]), Path(str(f["path"]))) for f in found]
    records = _records(settings, paths)
    try:
        if d["kind"] == "transcend":
            sent = await transcend.answer(client, settings, reply, outcome, records, event_id=d.get("event_id"))
        else:
            sent = await ketch.answer(client, settings, reply, outcome, records, event_id=d.get("event_id"))
    except httpx.HTTPError as exc:
        sent = {"ok": False, "error": type(exc).__name__}
    except (SessionctlError, OSError) as exc:  # an export that does not verify or cannot be read
        sent = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    if str(sent.get("error", "")).startswith("not sent"):
        sent["final"] = True  # a callback host no longer allowed: asking again cannot help
    return {"at": round(started, 3), **sent, "ms": round((time.time() - started) * 1000, 1)}


def _records(settings: Settings, paths: list[tuple[str, Path]]) -> Callable[[], dict[str, list[dict[str, Any]]]]:
    """The exports' records per person (HMAC), read when asked, each file checked against its
    manifest first (an edited file is never handed out)."""

    def load() -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for person, path in paths:
            manifest = read_manifest(path)
            if manifest is None:
                raise FileNotFoundError(f"the export {path.name} has no manifest")
            check_manifest(settings.hash_key_bytes, manifest, path.name)
            verify_file(settings.hash_key_bytes, path, manifest)
            with open_records(path) as records:
                out.setdefault(person, []).extend(records)
        return out

    return load


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
