"""What each platform is told, by outcome: the calls to Transcend's Sombra and Ketch's status
events (no raw id anywhere; a "completed" only for an erasure that is complete)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from sessionctl.config import Settings
from sessionctl.connectors import answers, ketch, transcend


def _outcome(kind: str, status: str, **more: Any) -> dict[str, Any]:
    return {"connector_request_id": "con_1", "kind": kind, "status": status, **more}


def _none() -> dict[str, list[dict[str, Any]]]:
    raise AssertionError("records are read only for an access request")


@pytest.fixture
def settings() -> Settings:
    return Settings(database_url="postgresql://u@h/db", transcend_inline_max_bytes=1000)


def test_transcend_hears_an_empty_put_only_for_a_complete_erasure(settings: Settings) -> None:
    assert transcend.calls(settings, _outcome("erasure", "completed", complete=True), _none) == [
        ("PUT", "/v1/data-silo", {})
    ]
    ((method, path, body),) = transcend.calls(
        settings, _outcome("erasure", "completed", complete=False, remains={"lancedb:kb": 3}), _none
    )
    assert (method, path, body["status"]) == ("PUT", "/v1/data-silo", "ACTION_REQUIRED") and "lancedb:kb=3" in body[
        "message"
    ]
    ((_, _, held),) = transcend.calls(settings, _outcome("erasure", "on_hold"), _none)
    assert held["status"] == "SKIPPED_DUE_TO_EXCEPTION"
    ((_, _, failed),) = transcend.calls(
        settings, _outcome("export", "failed", error={"type": "StoreUnreachable", "message": "m"}), _none
    )
    assert failed["profileStatus"] == "ERROR" and "StoreUnreachable" in failed["message"]


def test_transcend_access_is_one_post_when_small_and_pages_when_large(settings: Settings) -> None:
    small = transcend.calls(settings, _outcome("export", "completed"), lambda: {"h1": [{"v": 1}]})
    assert small == [
        (
            "POST",
            "/v1/data-silo",
            {"profiles": [{"profileId": "h1", "profileData": {"records": [{"v": 1}]}}], "status": "READY"},
        )
    ]
    many = {"h1": [{"text": "x" * 400, "n": i} for i in range(10)]}
    pages = transcend.calls(
        settings.model_copy(update={"transcend_inline_max_bytes": 1000}), _outcome("export", "completed"), lambda: many
    )
    assert all(p[:2] == ("POST", "/v1/datapoint-chunked") for p in pages)
    assert [p[2]["isLastPage"] for p in pages] == [False] * (len(pages) - 1) + [True]
    assert sorted(r["n"] for p in pages for r in p[2]["data"]) == list(range(10))


def test_ketch_never_hears_completed_for_an_erasure_that_is_not_complete() -> None:
    assert ketch.event(_outcome("erasure", "completed", complete=True), _none)["status"] == "completed"
    partial = ketch.event(_outcome("erasure", "completed", complete=False, remains={"x": 1}), _none)
    assert partial["status"] == "in_progress" and "x=1" in partial["resultMessage"]
    assert ketch.event(_outcome("erasure", "on_hold"), _none)["status"] == "denied"
    assert ketch.event(_outcome("erasure", "failed", error={"type": "E"}), _none)["status"] == "in_progress"
    access = ketch.event(_outcome("export", "completed"), lambda: {"h1": [{"v": 1}]})
    (doc,) = access["results"]
    assert json.loads(base64.b64decode(doc["data"])) == {"profiles": {"h1": [{"v": 1}]}}


def test_a_platform_request_ends_on_hold_failed_or_completed_by_its_parts() -> None:
    def child(status: str, **more: Any) -> dict[str, Any]:
        base = {"request_id": "r", "user_hmac": "h", "receipt_id": 1, "complete": True, "remains": {}, "job_ids": ["j"]}
        return {**base, "status": status, **more}

    assert answers.summary("erasure", [child("completed"), child("completed")], None)[0] == "completed"
    assert answers.summary("erasure", [child("completed"), child("on_hold")], None)[0] == "on_hold"
    status, outcome = answers.summary("erasure", [child("completed"), child("open")], {"type": "E", "message": "m"})
    assert status == "failed" and outcome["error"]["type"] == "E"
    _, mixed = answers.summary(
        "erasure", [child("completed"), child("completed", complete=False, remains='{"s": 2}')], None
    )
    assert mixed["complete"] is False and mixed["remains"] == {"s": 2}
