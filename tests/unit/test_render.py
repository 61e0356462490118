"""What a stranger reads: each kind of result rendered on a terminal."""

from __future__ import annotations

import pytest

from sessionctl.cli import render
from sessionctl.jobstate import JobState


def test_a_purge_result_reads_as_its_proof(capsys: pytest.CaptureFixture[str]) -> None:
    state = JobState(
        job_id="purge_user_sessions:abc:1",
        status="succeeded",
        attempt=1,
        result={
            "kind": "purge_user_sessions",
            "user_hmac": "h" * 32,
            "target": "demo-agent",
            "dry_run": False,
            "sessions_deleted": 20,
            "runs_deleted": 40,
            "memories_deleted": 0,
            "late_sessions": 0,
            "remaining": 0,
            "agents": {"demo-agent": {"sessions_deleted": 20, "runs_deleted": 40}},
            "finished_at": "2026-12-02T00:00:00+00:00",
        },
    )
    render.job_state(state)
    out = capsys.readouterr().out
    assert "status    succeeded (attempt 1)" in out and "remaining 0" in out
    assert "deleted   sessions=20 runs=40 memories=0 late=0" in out and "demo-agent: sessions=20, runs=40" in out


def test_a_failure_shows_its_type_and_message(capsys: pytest.CaptureFixture[str]) -> None:
    state = JobState(
        job_id="j", status="failed", attempt=1, error={"type": "InsufficientPrivilege", "message": "role w cannot"}
    )
    render.job_state(state)
    assert "error     InsufficientPrivilege: role w cannot" in capsys.readouterr().out


def test_jobs_listing_counts_what_it_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    row = {
        "job_id": "j1", "kind": "purge_user_sessions", "state": "failed", "target": "a", "attempt": 2,
        "enqueued_at": 0, "finished_at": None, "summary": None, "error_type": "JobLost", "error": "gone",
    }
    render.jobs([row], malformed=2)
    captured = capsys.readouterr()
    assert "failed    purge_user_sessions  j1  target=a attempt=2 JobLost: gone" in captured.out
    assert "1 job(s); 2 unreadable index entries skipped" in captured.err
