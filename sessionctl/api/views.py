"""How the ledger's rows read in the API: dates as ISO 8601, JSON decoded, the callback URL and the
sealed id never shown."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def request_out(row: Any) -> dict[str, Any]:
    d = dict(row)
    d.pop("callback_url", None)  # where the callback goes is the operator's, not every reader's
    d.pop("subject", None)
    now = datetime.now(UTC)
    d["overdue"] = d["status"] == "open" and row["due_at"] < now
    for k in ("received_at", "first_due_at", "due_at", "completed_at", "created_at", "job_added_at"):
        if d.get(k) is not None:
            d[k] = d[k].isoformat()
    for k in ("options", "extensions", "remains"):
        if isinstance(d.get(k), str):
            d[k] = json.loads(d[k])
    d["job_ids"] = list(d["job_ids"])
    return d


def delivery_out(row: Any) -> dict[str, Any]:
    d = dict(row)
    for k in ("delivered_at", "gave_up_at", "next_at", "created_at"):
        if d.get(k) is not None:
            d[k] = d[k].isoformat()
    if isinstance(d.get("attempts"), str):
        d["attempts"] = json.loads(d["attempts"])
    d.pop("url", None)
    return d
