"""The audit's rows without a database: CSV cells a spreadsheet cannot run, extensions counted
apart from corrections, times to the second in UTC, text escaped before times are kept whole."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sessionctl.api import audit

T0 = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)


def _row(**more: Any) -> dict[str, Any]:
    base = {
        "request_id": "dsr_1",
        "request_ref": "T-1",
        "kind": "erasure",
        "user_hmac": "a" * 32,
        "received_at": T0,
        "first_due_at": T0 + timedelta(days=31),
        "due_at": T0 + timedelta(days=40),
        "extensions": json.dumps([{"kind": "extension"}, {"kind": "correction"}, {"kind": "extension"}]),
        "completed_at": None,
        "late": None,
        "status": "open",
        "last_job_status": "failed",
        "complete": None,
    }
    return {**base, **more}


def test_a_csv_row_is_inert_in_a_spreadsheet_and_to_the_second() -> None:
    for formula in ('=HYPERLINK("http://evil/")', "+1", "-1", "@SUM(A1)", "\tx"):
        assert audit.csv_row(_row(request_ref=formula))[1] == "'" + formula
    row = audit.csv_row(_row())
    assert row[1] == "T-1" and row[4] == "2026-12-07T01:02:03Z"
    assert row[7] == "2"  # two extensions; the correction is not one
    assert row[10] == "failed" and row[11] == "" and row[9] == ""


def test_times_read_to_the_second_in_utc_and_text_is_escaped_first() -> None:
    assert audit.when(T0) == "2026-12-07 01:02:03 UTC"
    assert audit.when(1_700_000_000_000) == audit.when(1_700_000_000) == "2023-11-14 22:13:20 UTC"
    marked = str(audit.nowrap_times("<b>x</b> at 2026-12-07 01:02:03 UTC"))
    assert "<b>" not in marked and "&lt;b&gt;" in marked
    assert '<span class="nowrap">2026-12-07 01:02:03 UTC</span>' in marked


def test_a_certificate_carries_the_receipts_exemptions_and_what_remains() -> None:
    receipt = {
        "id": 7,
        "agents": {"a": {"schema": "ag_a", "sessions": 2, "runs": 4, "late_sessions": 0}},
        "counts": {"sessions": 2, "runs": 4},
        "stores": {"lancedb:kb": 3},
        "exemptions": {"chroma:kb": "per-user collections named by a hash of the id"},
    }
    row = _row(
        status="completed",
        completed_at=T0,
        late=False,
        complete=False,
        remains='{"x": 1}',
        target="*",
        options='{"scope": "all"}',
    )
    cert = audit.certificate(row, [receipt])
    assert cert["complete"] is False and cert["remains"] == {"x": 1} and cert["receipt_ids"] == [7]
    assert cert["exemptions"] == receipt["exemptions"] and cert["scope"] == "all"
    assert [(s["store"], s["what"], s["rows"]) for s in cert["by_store"]] == [
        ("ag_a", "runs", 4),
        ("ag_a", "sessions", 2),
        ("lancedb:kb", "items", 3),
    ]
