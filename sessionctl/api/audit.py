"""What an audit reads, built from the ledger: a request's timeline (received, due, every extension,
each job and try, completion, each webhook or platform answer with its answer), the certificate of
an erasure, the ledger as CSV rows. Times are UTC to the second; people are HMACs; counts are
labelled, never a Python dict."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

REVERIFY = "printf '%s' \"$USER_ID\" | sessionctl verify --user - --all-agents"
CSV_COLUMNS = (
    "request_id",
    "ref",
    "kind",
    "person_hmac",
    "received_at",
    "first_due_at",
    "due_at",
    "extensions",
    "completed_at",
    "late",
    "outcome",
    "complete",
)


def when(value: datetime | int | float | str | None) -> str:
    """``YYYY-MM-DD HH:MM:SS UTC`` (epoch seconds or milliseconds, ISO text and datetimes alike)."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    elif isinstance(value, int | float):
        value = datetime.fromtimestamp(value / 1000 if value > 1e11 else value, UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def label(key: str) -> str:
    """A count's name as a person reads it (``sessions_deleted`` → ``sessions deleted``)."""
    return key.replace("_", " ")


def shown(value: Any) -> Any:
    """A value of a result as a person reads it (``True`` → ``yes``)."""
    return {True: "yes", False: "no", None: ""}.get(value, value) if isinstance(value, bool | None) else value


TIMES = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


def nowrap_times(text: str) -> Markup:
    """Text with each time in it kept on one line."""
    safe = str(escape(text))  # escaped first: only the spans added here are markup
    return Markup(TIMES.sub(lambda m: f'<span class="nowrap">{m.group(0)}</span>', safe))  # noqa: S704


def decoded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def outcome(row: Any) -> str:
    """How the request stands: its status, or ``failed`` while open after a job failed for good."""
    if row["status"] == "open" and row["last_job_status"] == "failed":
        return "failed"
    return str(row["status"])


def inert(cell: str) -> str:
    """A text cell a spreadsheet shows as text: one it would read as a formula gets a leading ``'``."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


def csv_row(row: Any) -> list[str]:
    complete = row["complete"]
    return [
        row["request_id"],
        inert(row["request_ref"] or ""),
        row["kind"],
        row["user_hmac"],
        iso(row["received_at"]),
        iso(row["first_due_at"]),
        iso(row["due_at"]),
        str(sum(1 for e in decoded(row["extensions"]) or [] if e.get("kind") == "extension")),
        iso(row["completed_at"]),
        "" if row["late"] is None else str(bool(row["late"])).lower(),
        outcome(row),
        "" if complete is None else str(bool(complete)).lower(),
    ]


def _event(at: Any, event: str, text: str, **more: Any) -> dict[str, Any]:
    return {"at": when(at), "sort": when(at) or "9", "event": event, "text": text, **more}


def timeline(row: Any, jobs: list[dict[str, Any]], deliveries: list[Any]) -> list[dict[str, Any]]:
    """Every dated thing that happened to the request, oldest first."""
    out = [_event(row["received_at"], "received", f"received ({row['kind']}, by {row['token_name'] or 'the CLI'})")]
    out.append(_event(row["first_due_at"], "due", "first due date (one calendar month, art. 12(3))"))
    for e in decoded(row["extensions"]) or []:
        text = (
            f"{e['kind']}: due {when(e.get('from'))} → {when(e.get('until'))}, by {e.get('by') or '?'}: {e['reason']}"
        )
        out.append(_event(e.get("at"), e["kind"], text))
    for j in jobs:
        tries = f", {j['attempt']} tr{'y' if j.get('attempt') == 1 else 'ies'}" if j.get("attempt") else ""
        ended = f" → {j['state']}" + (f" ({j['error_type']})" if j.get("error_type") else "")
        out.append(_event(j.get("enqueued_at"), "job", f"job {j['job_id']} enqueued{tries}{ended}", job_id=j["job_id"]))
    if row["completed_at"] is not None:
        closing = "on_hold" if row["status"] == "on_hold" else "completed"
        lateness = {True: " — LATE", False: " — on time"}.get(row["late"], "")
        out.append(_event(row["completed_at"], closing, f"{row['status']}{lateness}"))
    for d in deliveries:
        for a in decoded(d["attempts"]) or []:
            said = a.get("status_code") or a.get("error") or "no answer"
            what = "webhook" if d["kind"] == "webhook" else f"{d['kind']} answer"
            text = f"{what} {d['event_id']}: {'delivered' if a.get('ok') else 'failed'} ({said})"
            out.append(_event(a.get("at"), "delivery", text, delivery_id=d["id"]))
    return sorted(out, key=lambda e: e["sort"])


def store_counts(receipts: list[Any]) -> list[tuple[str, int]]:
    """What the receipts say was erased, in total: rows of each kind over every agent schema
    (sessions, runs, memories…), items of each other store (:func:`by_store`, summed)."""
    totals: dict[str, int] = {}
    for where, what, n in by_store(receipts):
        key = where if what == "items" else what
        totals[key] = totals.get(key, 0) + n
    return sorted(totals.items())


def by_store(receipts: list[Any]) -> list[tuple[str, str, int]]:
    """What the receipts say was erased, as (store, what, rows): each agent schema's sessions, runs,
    memories…, then every other store (declared stores, vectors, media, exports), summed over the
    request's receipts; zeros left out."""
    totals: dict[tuple[str, str], int] = {}
    for r in receipts:
        for label, counts in (decoded(r["agents"]) or {}).items():
            where = str(counts.get("schema") or label) if isinstance(counts, dict) else str(label)
            for what, n in counts.items() if isinstance(counts, dict) else ():
                if what not in ("schema", "tables", "late_sessions") and isinstance(n, int) and n:
                    totals[(where, what)] = totals.get((where, what), 0) + n
        for store, n in (decoded(r["stores"]) or {}).items():
            if isinstance(n, int) and n:
                totals[(store, "items")] = totals.get((store, "items"), 0) + n
    return [(where, what, n) for (where, what), n in sorted(totals.items())]


def certificate(row: Any, receipts: list[Any]) -> dict[str, Any]:
    """The facts a certificate of erasure states (``GET /v1/requests/{id}/certificate`` and the page)."""
    remains = decoded(row["remains"]) or {}
    return {
        "request_id": row["request_id"],
        "ref": row["request_ref"],
        "person_hmac": row["user_hmac"],
        "received_at": iso(row["received_at"]),
        "first_due_at": iso(row["first_due_at"]),
        "due_at": iso(row["due_at"]),
        "completed_at": iso(row["completed_at"]),
        "late": row["late"],
        "complete": row["complete"],
        "remains": remains,
        "target": row["target"],
        "scope": (decoded(row["options"]) or {}).get("scope"),
        "stores": dict(store_counts(receipts)),
        "by_store": [{"store": w, "what": k, "rows": n} for w, k, n in by_store(receipts)],
        "receipt_ids": [int(r["id"]) for r in receipts],
        "exemptions": {k: v for r in receipts for k, v in (decoded(r["exemptions"]) or {}).items()},
        "reverify": REVERIFY,
    }


def request_view(row: Any, now: datetime) -> dict[str, Any]:
    """A ledger row as the pages show it: days left, overdue, extensions decoded, the outcome."""
    d = dict(row)
    d["days_left"] = (row["due_at"] - now).total_seconds() / 86400
    d["overdue"] = row["status"] == "open" and row["due_at"] < now
    d["extensions"] = list(decoded(row["extensions"]) or [])
    d["outcome"] = outcome(row)
    return d
