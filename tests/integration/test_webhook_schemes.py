"""Completion webhooks verified by the receivers' own libraries, end to end on real Redis, Postgres
and a real worker: Stripe's verifier (scheme ``stripe``), Standard Webhooks' (scheme ``standard``),
two secrets at once (rotation), one event id across a retry and a resend, resend refused to another
caller, a signed test event — over the API and the CLI."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import standardwebhooks.webhooks as sw
import stripe
from pydantic import SecretStr

from sessionctl import webhooks
from sessionctl.config import Settings
from sessionctl.store import migrations
from tests.agno_seed import seed
from tests.service_helpers import SECRET, auth, dsr_service, running_worker, until

USER = "webhook-person@example.com"
SECOND = "whsec-second-secret-for-rotation"


def _standard_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _stripe_ok(secret: str, got: dict[str, Any]) -> bool:
    try:
        header = got["headers"][webhooks.HEADER.lower()]
        return bool(stripe.WebhookSignature.verify_header(got["body"], header, secret, 300))
    except stripe.SignatureVerificationError:
        return False


def _standard_ok(secret: str, got: dict[str, Any]) -> bool:
    try:
        sw.Webhook(secret).verify(got["body"], got["headers"])
    except sw.WebhookVerificationError:
        return False
    return True


@pytest.fixture
async def service(own_database: tuple[Settings, asyncpg.Connection]) -> AsyncIterator[dict[str, Any]]:
    async with dsr_service(*own_database) as svc:
        yield svc


async def _dry_run_with_callback(svc: dict[str, Any], agent_id: str) -> dict[str, Any]:
    """A dry-run erasure asking for a webhook (quick: counts only); what the API accepted."""
    s = svc["settings"]
    await seed(s.database_url, s.schema_for(agent_id), agent_id, USER, 1)
    resp = await svc["client"].post(
        "/v1/erasures",
        headers=auth(svc["tokens"]["all"]),
        json={"user_id": USER, "agent_id": agent_id, "dry_run": True, "callback_url": svc["hook"]},
    )
    assert resp.status_code == 202, resp.text
    return dict(resp.json())


async def _one_delivery(svc: dict[str, Any], settings: Settings, agent_id: str) -> dict[str, Any]:
    """Run a dry run with a callback through a worker with ``settings``; what the receiver got."""
    receiver = svc["receiver"]
    await _dry_run_with_callback(svc, agent_id)
    async with running_worker(settings):
        await until(lambda: receiver.got, timeout=30)
    (got,) = receiver.got
    return dict(got)


async def test_stripes_own_verifier_accepts_a_real_delivery(service: dict[str, Any], agent_id: str) -> None:
    got = await _one_delivery(service, service["settings"], agent_id)
    assert _stripe_ok(SECRET, got)
    assert not _stripe_ok("not-the-secret", got)
    body = json.loads(got["body"])
    assert body["event"] == "erasure.dry_run" and body["event_id"].startswith("evt_")
    assert got["headers"][webhooks.EVENT_ID_HEADER.lower()] == body["event_id"]
    assert "webhook-signature" not in got["headers"]


async def test_the_standard_webhooks_library_accepts_a_real_delivery(service: dict[str, Any], agent_id: str) -> None:
    secret = _standard_secret()
    standard = service["settings"].model_copy(
        update={"webhook_scheme": "standard", "webhook_secret": None, "webhook_secrets": SecretStr(secret)}
    )
    got = await _one_delivery(service, standard, agent_id)
    assert _standard_ok(secret, got)
    assert not _standard_ok(_standard_secret(), got)
    body = json.loads(got["body"])
    assert got["headers"]["webhook-id"] == body["event_id"] and body["event_id"].startswith("evt_")
    assert webhooks.HEADER.lower() not in got["headers"]


@pytest.mark.parametrize("scheme", ["stripe", "standard"])
async def test_with_two_secrets_each_verifier_accepts_either_secret_alone(
    service: dict[str, Any], agent_id: str, scheme: str
) -> None:
    old, new = (SECRET, SECOND) if scheme == "stripe" else (_standard_secret(), _standard_secret())
    rotating = service["settings"].model_copy(
        update={"webhook_scheme": scheme, "webhook_secret": SecretStr(old), "webhook_secrets": SecretStr(new)}
    )
    got = await _one_delivery(service, rotating, agent_id)
    ok = _stripe_ok if scheme == "stripe" else _standard_ok
    assert ok(old, got) and ok(new, got)
    assert not ok("whsec-a-third-one" if scheme == "stripe" else _standard_secret(), got)


async def _deliveries(client: httpx.AsyncClient, token: str, job_id: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/v1/jobs/{job_id}", headers=auth(token))
    assert resp.status_code == 200, resp.text
    return list(resp.json()["webhooks"])


async def test_one_event_id_across_a_retry_and_a_resend(service: dict[str, Any], agent_id: str) -> None:
    s, client, receiver, token = service["settings"], service["client"], service["receiver"], service["tokens"]["all"]
    receiver.answers = [500]  # refused once, then accepted
    accepted = await _dry_run_with_callback(service, agent_id)
    async with running_worker(s):
        await until(lambda: len(receiver.got) == 2, timeout=30)
        (hook,) = await until(lambda: _delivered(client, token, accepted["job_id"]), timeout=30)
        resp = await client.post(f"/v1/webhooks/{hook['id']}/resend", headers=auth(token))
        assert resp.status_code == 200, resp.text
        assert resp.json()["event_id"] == hook["event_id"] and resp.json()["delivery_id"] == hook["id"]
        await until(lambda: len(receiver.got) == 3, timeout=30)
        (after,) = await until(lambda: _delivered(client, token, accepted["job_id"]), timeout=30)
    bodies = [g["body"] for g in receiver.got]
    assert bodies[0] == bodies[1] == bodies[2]  # the same body, byte for byte
    ids = {g["headers"][webhooks.EVENT_ID_HEADER.lower()] for g in receiver.got}
    assert ids == {hook["event_id"]} == {json.loads(bodies[0])["event_id"]}
    assert [a.get("status_code") for a in after["attempts"]] == [500, 200, 200]  # the attempts list grew
    assert all(_stripe_ok(SECRET, g) for g in receiver.got)


async def _delivered(client: httpx.AsyncClient, token: str, job_id: str) -> list[dict[str, Any]] | None:
    hooks = await _deliveries(client, token, job_id)
    return hooks if hooks and hooks[0]["delivered_at"] else None


async def test_a_resend_by_another_caller_is_404_and_sends_nothing(service: dict[str, Any], agent_id: str) -> None:
    s, client, receiver, conn = service["settings"], service["client"], service["receiver"], service["conn"]
    accepted = await _dry_run_with_callback(service, agent_id)
    async with running_worker(s):
        (hook,) = await until(lambda: _delivered(client, service["tokens"]["all"], accepted["job_id"]), timeout=30)
        for who in ("other", "read"):  # another platform; a read-only token that did not make it
            resp = await client.post(f"/v1/webhooks/{hook['id']}/resend", headers=auth(service["tokens"][who]))
            assert resp.status_code == 404, (who, resp.text)
            assert "event_id" not in resp.text
        missing = await client.post("/v1/webhooks/999999/resend", headers=auth(service["tokens"]["audit"]))
        assert missing.status_code == 404 and missing.json()["detail"] == resp.json()["detail"]  # the same answer
        assert (await client.post(f"/v1/webhooks/{hook['id']}/resend")).status_code == 401
        await asyncio.sleep(2.5)  # a round of deliveries passes
        assert len(receiver.got) == 1
        delivered = await conn.fetchval(
            "SELECT delivered_at FROM sessionctl.webhook_deliveries WHERE id = $1", hook["id"]
        )
        assert delivered is not None  # untouched
        audit = await client.post(f"/v1/webhooks/{hook['id']}/resend", headers=auth(service["tokens"]["audit"]))
        assert audit.status_code == 200 and audit.json()["event_id"] == hook["event_id"]
        await until(lambda: len(receiver.got) == 2, timeout=30)


async def test_the_test_event_arrives_signed_and_its_attempt_is_answered(service: dict[str, Any]) -> None:
    client, receiver, tokens = service["client"], service["receiver"], service["tokens"]
    resp = await client.post("/v1/webhooks/test", headers=auth(tokens["all"]), json={"url": service["hook"]})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["ok"] is True and answer["status_code"] == 200 and answer["ms"] >= 0
    (got,) = receiver.got  # sent at once, no worker running
    body = json.loads(got["body"])
    assert body["event"] == "test" and body["event_id"] == answer["event_id"]
    assert _stripe_ok(SECRET, got) and got["headers"][webhooks.EVENT_ID_HEADER.lower()] == answer["event_id"]

    receiver.answers = [503]
    refused = (
        await client.post("/v1/webhooks/test", headers=auth(tokens["all"]), json={"url": service["hook"]})
    ).json()
    assert refused["ok"] is False and refused["status_code"] == 503
    outside = await client.post("/v1/webhooks/test", headers=auth(tokens["all"]), json={"url": "http://example.com/h"})
    assert outside.status_code == 422 and "SESSIONCTL_WEBHOOK_ALLOWED_HOSTS" in outside.text
    read_only = await client.post("/v1/webhooks/test", headers=auth(tokens["read"]), json={"url": service["hook"]})
    assert read_only.status_code == 403
    assert len(receiver.got) == 2  # neither the host not allowed nor the read-only token sent anything


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sessionctl.cli", *args, env=env, stdout=-1, stderr=-1
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_lists_resends_and_tests_with_the_standard_scheme(
    service: dict[str, Any], agent_id: str, worker_env: dict[str, str]
) -> None:
    s, client, receiver = service["settings"], service["client"], service["receiver"]
    secret = _standard_secret()
    standard = s.model_copy(
        update={"webhook_scheme": "standard", "webhook_secret": None, "webhook_secrets": SecretStr(secret)}
    )
    env = {
        **worker_env,
        "DATABASE_URL": s.database_url,
        "SESSIONCTL_WEBHOOK_SCHEME": "standard",
        "SESSIONCTL_WEBHOOK_SECRETS": secret,
        "SESSIONCTL_WEBHOOK_ALLOWED_HOSTS": s.webhook_allowed_hosts,
    }
    accepted = await _dry_run_with_callback(service, agent_id)
    async with running_worker(standard):
        await until(lambda: _delivered(client, service["tokens"]["all"], accepted["job_id"]), timeout=30)
        code, out, _ = await _cli(env, "webhooks", "list", "--job", accepted["job_id"], "--json")
        assert code == 0, out
        (listed,) = json.loads(out)
        assert listed["state"] == "delivered" and "url" not in listed
        code, out, err = await _cli(env, "webhooks", "resend", str(listed["id"]))
        assert code == 0 and listed["event_id"] in out, err
        await until(lambda: len(receiver.got) == 2, timeout=30)
    assert {g["headers"]["webhook-id"] for g in receiver.got} == {listed["event_id"]}
    assert all(_standard_ok(secret, g) for g in receiver.got)

    code, out, err = await _cli(env, "webhooks", "test", "--url", service["hook"])
    assert code == 0 and " ok " in out, (out, err)
    assert json.loads(receiver.got[-1]["body"])["event"] == "test" and _standard_ok(secret, receiver.got[-1])
    code, _, err = await _cli(env, "webhooks", "resend", "424242")
    assert code == 2 and err.startswith("error: no webhook delivery 424242")
    bad = {**env, "SESSIONCTL_WEBHOOK_SECRETS": "not-a-whsec-secret"}
    code, _, err = await _cli(bad, "webhooks", "test", "--url", service["hook"])
    assert code == 2 and "must start with whsec_" in err and "not-a-whsec-secret" not in err
    assert len(err.strip().splitlines()) == 1


async def test_migration_8_gives_existing_deliveries_an_event_id_in_column_and_body(
    own_database: tuple[Settings, asyncpg.Connection],
) -> None:
    _, conn = own_database
    await conn.execute("CREATE SCHEMA sessionctl")
    for _, sql in [m for m in migrations.MIGRATIONS if m[0] <= 7]:
        await conn.execute(sql)
    await conn.execute(
        "INSERT INTO sessionctl.dsr_requests (request_id, kind, user_hmac, target, received_at, due_at, first_due_at)"
        " VALUES ('dsr_old', 'erasure', 'h', '*', now(), now(), now())"
    )
    await conn.execute(
        "INSERT INTO sessionctl.webhook_deliveries (request_id, job_id, url, body) VALUES"
        " ('dsr_old', 'j1', 'http://x', '{\"event\": \"erasure.completed\"}'),"
        " ('dsr_old', 'j2', 'http://x', '{\"event\": \"erasure.failed\"}')"
    )
    await conn.execute(
        "CREATE TABLE sessionctl.schema_migrations (version integer PRIMARY KEY, applied_at timestamptz DEFAULT now());"
        " INSERT INTO sessionctl.schema_migrations (version) SELECT generate_series(1, 7)"
    )
    await migrations.migrate(conn)
    rows = await conn.fetch("SELECT event_id, body FROM sessionctl.webhook_deliveries ORDER BY id")
    ids = [r["event_id"] for r in rows]
    assert all(i.startswith("evt_") and len(i) == 36 for i in ids) and len(set(ids)) == 2
    assert [json.loads(r["body"])["event_id"] for r in rows] == ids
