"""The DSR service's rules that need no service: callback hosts, webhook signatures and bodies,
due dates, token scopes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from sessionctl import ledger, tokens, webhooks
from sessionctl.errors import InvalidRequest

ALLOWED = "hooks.example.com, 127.0.0.1:8901"


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/dsr",
        "https://hooks.example.com:8443/dsr",  # a bare host allows any port
        "http://127.0.0.1:8901/cb",
        "https://HOOKS.example.com/dsr",
    ],
)
def test_callbacks_on_allowed_hosts_pass(url: str) -> None:
    assert webhooks.check_callback(url, ALLOWED) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:8902/cb", "not on SESSIONCTL_WEBHOOK_ALLOWED_HOSTS"),  # the port named differs
        ("http://127.0.0.1/cb", "not on SESSIONCTL_WEBHOOK_ALLOWED_HOSTS"),
        ("http://169.254.169.254/latest", "not on SESSIONCTL_WEBHOOK_ALLOWED_HOSTS"),
        ("https://hooks.example.com.evil.net/x", "not on SESSIONCTL_WEBHOOK_ALLOWED_HOSTS"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("ftp://hooks.example.com/x", "http:// or https://"),
        ("hooks.example.com/x", "http:// or https://"),
        ("http://[::1/x", "not a valid URL"),
        ("http://hooks.example.com:99999/x", "not a valid URL"),
    ],
)
def test_other_callbacks_are_refused(url: str, why: str) -> None:
    with pytest.raises(InvalidRequest, match=why):
        webhooks.check_callback(url, ALLOWED)
    with pytest.raises(InvalidRequest):
        webhooks.check_callback(url, "")  # nothing allowed: no callbacks at all


def test_a_signature_verifies_only_with_its_secret_its_body_and_a_recent_time() -> None:
    body = b'{"event":"erasure.completed"}'
    header = webhooks.sign(b"s3cret", body, t=1_700_000_000)
    t, v1 = header.split(",")
    assert t == "t=1700000000" and len(v1) == len("v1=") + 64
    assert webhooks.verify(b"s3cret", header, body, now=1_700_000_100)
    assert not webhooks.verify(b"other", header, body, now=1_700_000_100)
    assert not webhooks.verify(b"s3cret", header, body + b" ", now=1_700_000_100)
    assert not webhooks.verify(b"s3cret", header, body, now=1_700_000_000 + 301)  # replayed later
    assert not webhooks.verify(b"s3cret", "garbage", body)


def test_a_webhook_body_has_counts_and_hmacs_never_a_raw_id() -> None:
    request = {"kind": "erasure", "request_id": "dsr_1", "request_ref": "T-1", "user_hmac": "ab" * 16, "receipt_id": 9}
    result = {"sessions_deleted": 3, "remaining": 0, "user_id": "raw@example.com", "agents": {"a": {}}}
    body = webhooks.body_for(request, "job-1", "purge_user_sessions", "succeeded", result, None)
    assert body["event"] == "erasure.completed" and body["sessions_deleted"] == 3 and body["receipt_id"] == 9
    assert "raw@example.com" not in json.dumps(body)  # only the listed counts leave
    failed = webhooks.body_for(
        {**request, "receipt_id": None}, "job-1", "purge_user_sessions", "failed", None, {"type": "X", "message": "m"}
    )
    assert failed["event"] == "erasure.failed" and failed["error"] == {"type": "X", "message": "m"}
    assert "receipt_id" not in failed


def test_backoff_doubles_to_an_hour() -> None:
    assert [webhooks.backoff_s(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert webhooks.backoff_s(30) == 3600


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (datetime(2026, 1, 15, 9, tzinfo=UTC), datetime(2026, 2, 15, 9, tzinfo=UTC)),
        (datetime(2026, 1, 31, 9, tzinfo=UTC), datetime(2026, 2, 28, 9, tzinfo=UTC)),  # the month's last day
        (datetime(2028, 1, 31, 9, tzinfo=UTC), datetime(2028, 2, 29, 9, tzinfo=UTC)),  # a leap year
        (datetime(2026, 12, 20, 9, tzinfo=UTC), datetime(2027, 1, 20, 9, tzinfo=UTC)),
    ],
)
def test_a_request_is_due_one_calendar_month_later(received: datetime, due: datetime) -> None:
    assert ledger.due_date(received, None) == due


def test_a_deadline_in_days_when_configured() -> None:
    assert ledger.due_date(datetime(2026, 1, 31, tzinfo=UTC), 30) == datetime(2026, 3, 2, tzinfo=UTC)


def test_tokens_are_random_and_scopes_and_names_checked() -> None:
    a, b = tokens.new_token(), tokens.new_token()
    assert a != b and a.startswith("sct_") and len(a) > 40
    assert tokens.token_hash(a) != a and len(tokens.token_hash(a)) == 64
    assert tokens.parse_scopes("erase, read") == ["read", "erase"]
    for bad in ("", "admin", "read,write"):
        with pytest.raises(ValueError, match="scopes"):
            tokens.parse_scopes(bad)
    assert tokens.check_name("transcend-prod") == "transcend-prod"
    with pytest.raises(ValueError, match="token name"):
        tokens.check_name("bad name; drop")
