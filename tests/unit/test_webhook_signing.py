"""The webhook signatures as receivers check them: by Stripe's and Standard Webhooks' own
libraries, and by the standard-library snippets in docs/dsr-service.md (run here as written); one
signature per secret; the Standard Webhooks secret format refused at startup in one line."""

from __future__ import annotations

import base64
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks.webhooks as sw
import stripe
from pydantic import SecretStr, ValidationError

from sessionctl import webhooks
from sessionctl.config import Settings

BODY = b'{"event":"erasure.completed","event_id":"evt_0123","sessions_deleted":3}'
STRIPE_A, STRIPE_B = "whsec_stripe_style_secret_a", "another-secret-b"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "dsr-service.md"


def _standard_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _stripe_ok(secret: str, header: str, body: bytes = BODY) -> bool:
    try:
        return bool(stripe.WebhookSignature.verify_header(body.decode(), header, secret, 300))
    except stripe.SignatureVerificationError:
        return False


def _standard_ok(secret: str, headers: dict[str, str], body: bytes = BODY) -> bool:
    try:
        sw.Webhook(secret).verify(body, headers)
    except sw.WebhookVerificationError:
        return False
    return True


def _doc_snippets() -> dict[str, Any]:
    """The verification functions of docs/dsr-service.md, executed as a receiver would paste them."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    scope: dict[str, Any] = {}
    for block in blocks:
        if "def verify_stripe" in block or "def verify_standard" in block:
            exec(block, scope)  # noqa: S102 - the documentation's own code, run as written
    assert {"verify_stripe", "verify_standard"} <= set(scope)
    return scope


def test_the_stripe_scheme_is_accepted_by_stripes_verifier_with_any_of_its_secrets() -> None:
    header = webhooks.sign([STRIPE_A.encode(), STRIPE_B.encode()], BODY)
    assert header.count(",v1=") == 2
    assert _stripe_ok(STRIPE_A, header) and _stripe_ok(STRIPE_B, header)
    assert not _stripe_ok("a third secret", header)
    assert not _stripe_ok(STRIPE_A, header, BODY + b" ")  # the body as received, byte for byte
    single = webhooks.sign(STRIPE_A.encode(), BODY)
    assert _stripe_ok(STRIPE_A, single) and not _stripe_ok(STRIPE_B, single)
    assert webhooks.verify(STRIPE_B.encode(), header, BODY) and not webhooks.verify(b"x", header, BODY)


def test_the_standard_scheme_is_accepted_by_the_standard_webhooks_library_with_any_of_its_secrets() -> None:
    a, b = _standard_secret(), _standard_secret()
    keys = [webhooks.standard_key(a), webhooks.standard_key(b)]
    headers = webhooks.signed_headers("standard", keys, "evt_abc", BODY)
    assert headers["webhook-id"] == "evt_abc" and len(headers["webhook-signature"].split(" ")) == 2
    assert all(sig.startswith("v1,") for sig in headers["webhook-signature"].split(" "))
    assert _standard_ok(a, headers) and _standard_ok(b, headers)
    assert not _standard_ok(_standard_secret(), headers)
    assert not _standard_ok(a, {**headers, "webhook-id": "evt_other"})  # the id is signed too
    assert not _standard_ok(a, headers, BODY + b" ")


def test_each_scheme_carries_the_event_id_in_its_header() -> None:
    stripe_headers = webhooks.signed_headers("stripe", [b"k"], "evt_1", BODY, t=int(time.time()))
    assert stripe_headers[webhooks.EVENT_ID_HEADER] == "evt_1" and webhooks.HEADER in stripe_headers
    assert "webhook-id" not in stripe_headers
    standard = webhooks.signed_headers("standard", [b"k" * 24], "evt_2", BODY)
    assert standard["webhook-id"] == "evt_2" and webhooks.HEADER not in standard
    assert re.fullmatch(r"evt_[0-9a-f]{32}", webhooks.new_event_id())
    assert webhooks.new_event_id() != webhooks.new_event_id()


def test_the_documented_standard_library_snippets_verify_both_schemes() -> None:
    docs = _doc_snippets()
    secret = _standard_secret()
    headers = webhooks.signed_headers("standard", [webhooks.standard_key(secret)], "evt_9", BODY)
    assert docs["verify_standard"](secret, headers, BODY)
    assert not docs["verify_standard"](_standard_secret(), headers, BODY)
    assert not docs["verify_standard"](secret, headers, BODY + b"x")
    stale = webhooks.signed_headers(
        "standard", [webhooks.standard_key(secret)], "evt_9", BODY, t=int(time.time()) - 600
    )
    assert not docs["verify_standard"](secret, stale, BODY)
    header = webhooks.sign([STRIPE_A.encode(), STRIPE_B.encode()], BODY)
    assert docs["verify_stripe"](STRIPE_A, header, BODY) and docs["verify_stripe"](STRIPE_B, header, BODY)
    assert not docs["verify_stripe"]("wrong", header, BODY)
    assert not docs["verify_stripe"](STRIPE_A, webhooks.sign(STRIPE_A.encode(), BODY, t=int(time.time()) - 600), BODY)


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("not-prefixed-" + "a" * 40, "must start with whsec_"),
        ("whsec_***not base64***", "not base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "is 5 bytes"),
    ],
)
def test_a_standard_secret_that_is_not_whsec_base64_is_refused_in_one_line(secret: str, why: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(webhook_scheme="standard", webhook_secrets=f"{_standard_secret()},{secret}")
    (error,) = caught.value.errors(include_input=False, include_url=False)
    message = str(error["msg"])
    assert why in message and "secret 2" in message and "\n" not in message
    assert secret not in message  # never the secret itself


def test_unpadded_base64_is_taken_as_the_libraries_take_it() -> None:
    key = os.urandom(32)
    unpadded = "whsec_" + base64.b64encode(key).decode().rstrip("=")
    assert webhooks.standard_key(unpadded) == key == sw.Webhook(unpadded)._whsecret


def test_every_configured_secret_signs_once_in_order() -> None:
    a, b = _standard_secret(), _standard_secret()
    s = Settings(webhook_scheme="standard", webhook_secrets=SecretStr(f" {a} ,,{b}"), webhook_secret=SecretStr(a))
    assert s.webhook_secret_values == [a, b]
    assert s.webhook_keys() == [webhooks.standard_key(a), webhooks.standard_key(b)]
    legacy = Settings(webhook_secret=SecretStr("only-one"))
    assert legacy.webhook_scheme == "stripe" and legacy.webhook_keys() == [b"only-one"]
    assert Settings().webhook_keys() == []
