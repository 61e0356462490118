"""The DSR service end to end on real Redis, Postgres and a real worker: HTTP intake → worker →
signed webhook to a local receiver → ledger row completed → receipt found; auth and bad input;
callbacks outside the allowed hosts; a receiver that fails twice; a worker killed mid-delivery."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from sessionctl import metrics, webhooks
from sessionctl.api.app import create_app
from sessionctl.config import Settings
from tests.agno_seed import seed
from tests.conftest import HASH_KEY
from tests.service_helpers import SECRET, auth, dsr_service, running_worker, serving, until

USER = "Jane.Doe+dsr@example.com"  # opaque: never normalised, never echoed


@pytest.fixture
async def service(own_database: tuple[Settings, asyncpg.Connection]) -> AsyncIterator[dict[str, Any]]:
    """The API over a database of this test's own, a callback receiver, tokens of each kind; no
    worker yet (a test starts one when it wants the jobs run)."""
    async with dsr_service(*own_database) as svc:
        yield svc


async def _job(client: httpx.AsyncClient, token: str, job_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/jobs/{job_id}", headers=auth(token))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def test_an_erasure_over_http_ends_in_a_signed_webhook_a_completed_request_and_a_receipt(
    service: dict[str, Any], agent_id: str
) -> None:
    s, client, receiver, token = service["settings"], service["client"], service["receiver"], service["tokens"]["all"]
    await seed(s.database_url, s.schema_for(agent_id), agent_id, USER, 3)
    await seed(s.database_url, s.schema_for(agent_id), agent_id, "someone-else", 2)
    resp = await client.post(
        "/v1/erasures",
        headers=auth(token),
        json={"user_id": USER, "agent_id": agent_id, "request_ref": "TICKET-1", "callback_url": service["hook"]},
    )
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    assert (
        accepted["collapsed"] is False and accepted["status"] == "queued" and accepted["request_id"].startswith("dsr_")
    )
    due = datetime.fromisoformat(accepted["due_at"])
    assert timedelta(days=27) < due - datetime.now(UTC) < timedelta(days=32)  # one calendar month

    async with running_worker(s):
        await until(lambda: receiver.got, timeout=30)
        await asyncio.sleep(0.3)  # a second delivery would have come by now
    assert len(receiver.got) == 1
    got = receiver.got[0]
    assert webhooks.verify(SECRET.encode(), got["headers"][webhooks.HEADER.lower()], got["body"])
    assert not webhooks.verify(b"another secret", got["headers"][webhooks.HEADER.lower()], got["body"])
    assert USER.encode() not in got["body"] and USER.lower().encode() not in got["body"].lower()
    body = json.loads(got["body"])
    assert body["event"] == "erasure.completed" and body["job_id"] == accepted["job_id"]
    assert body["request_id"] == accepted["request_id"] and body["request_ref"] == "TICKET-1"
    assert body["sessions_deleted"] == 3 and body["remaining"] == 0 and isinstance(body["receipt_id"], int)

    ledger = (await client.get("/v1/requests", headers=auth(token))).json()["requests"]
    (row,) = [r for r in ledger if r["request_id"] == accepted["request_id"]]
    assert row["status"] == "completed" and row["receipt_id"] == body["receipt_id"] and row["completed_at"]
    assert row["job_ids"] == [accepted["job_id"]] and "callback_url" not in row

    found = (await client.post("/v1/receipts/search", headers=auth(token), json={"user_id": USER})).json()
    assert [r["job_id"] for r in found["receipts"]] == [accepted["job_id"]]
    assert USER not in json.dumps(found)
    job = await _job(client, token, accepted["job_id"])
    assert job["status"] == "succeeded" and job["result"]["sessions_deleted"] == 3
    (hook,) = job["webhooks"]
    assert hook["delivered_at"] and [a["ok"] for a in hook["attempts"]] == [True] and "url" not in hook

    # the same ticket again: the same request, no new job
    again = await client.post(
        "/v1/erasures", headers=auth(token), json={"user_id": USER, "agent_id": agent_id, "request_ref": "TICKET-1"}
    )
    assert again.status_code == 202 and again.json()["request_id"] == accepted["request_id"]
    assert again.json()["collapsed"] is True
    other = await client.post(
        "/v1/erasures", headers=auth(token), json={"user_id": "x", "agent_id": agent_id, "request_ref": "TICKET-1"}
    )
    assert other.status_code == 409 and "differs in user" in other.text  # a ticket never switches person


async def test_tokens_scopes_and_bad_input_are_refused_and_nothing_is_enqueued(
    service: dict[str, Any], agent_id: str
) -> None:
    s, client, conn = service["settings"], service["client"], service["conn"]
    await seed(s.database_url, s.schema_for(agent_id), agent_id, USER, 1)
    body = {"user_id": USER, "agent_id": agent_id}
    assert (await client.post("/v1/erasures", json=body)).status_code == 401
    resp = await client.post("/v1/erasures", json=body, headers=auth("sct_not-a-token"))
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
    assert (await client.post("/v1/erasures", json=body, headers=auth(service["tokens"]["read"]))).status_code == 403
    assert (await client.get("/v1/requests", headers=auth(service["tokens"]["read"]))).status_code == 200
    assert (await client.get("/v1/requests")).status_code == 401

    token = auth(service["tokens"]["all"])
    bad = [
        {"user_id": USER, "agent_id": agent_id, "all_agents": True},  # two targets
        {"user_id": "", "agent_id": agent_id},
        {"user_id": "x" * 5000, "agent_id": agent_id},
        {"user_id": USER, "agent_id": "no-such-agent"},
        {"user_id": USER, "agent_id": agent_id, "scope": "everything"},
        {"user_id": USER, "agent_id": agent_id, "surprise": 1},
        {"user_id": USER, "agent_id": agent_id, "callback_url": "http://169.254.169.254/latest/meta-data"},
        {"user_id": USER, "agent_id": agent_id, "callback_url": "http://10.0.0.5:8080/hook"},
        {"user_id": USER, "agent_id": agent_id, "callback_url": "ftp://127.0.0.1/x"},
        {"user_id": USER, "agent_id": agent_id, "received_at": "2999-01-01T00:00:00Z"},
    ]
    for b in bad:
        resp = await client.post("/v1/erasures", json=b, headers=token)
        assert resp.status_code == 422, (b, resp.text)
        assert USER not in resp.text
    assert (
        "not on SESSIONCTL_WEBHOOK_ALLOWED_HOSTS"
        in (await client.post("/v1/erasures", json=bad[6], headers=token)).text
    )
    # the token is checked before the body is read: a stranger learns nothing of what a body must hold
    assert (await client.post("/v1/erasures", json=bad[5])).status_code == 401
    raw = json.dumps(body).encode()
    for content_type, what in (("text/plain", "send the body as JSON"), (None, "send the body as JSON")):
        headers = token if content_type is None else {**token, "content-type": content_type}
        resp = await client.post("/v1/erasures", content=raw, headers=headers)
        assert resp.status_code == 422 and what in resp.text, (content_type, resp.text)
    torn = await client.post("/v1/exports", content=raw[:-3], headers={**token, "content-type": "application/json"})
    assert torn.status_code == 422 and torn.json()["detail"][0]["type"] == "json_invalid" and USER not in torn.text
    plus = await client.post(
        "/v1/erasures", content=json.dumps(bad[0]).encode(), headers={**token, "content-type": "application/ld+json"}
    )
    assert plus.status_code == 422 and plus.json()["detail"][0]["loc"] == ["body"]  # read as JSON, then refused
    assert await conn.fetchval("SELECT count(*) FROM sessionctl.dsr_requests") == 0
    redis = await (await _producer_redis(s))
    try:
        assert await redis.zcard(s.queue_name) == 0  # nothing enqueued
    finally:
        await redis.aclose()


async def _producer_redis(s: Settings) -> Any:
    from redis.asyncio import Redis

    async def connect() -> Any:
        return Redis.from_url(s.redis_url)

    return connect()


async def test_a_receiver_that_fails_twice_gets_the_webhook_once_and_every_attempt_is_recorded(
    service: dict[str, Any], agent_id: str
) -> None:
    s, client, receiver, token = service["settings"], service["client"], service["receiver"], service["tokens"]["all"]
    receiver.answers = [500, 503]
    await seed(s.database_url, s.schema_for(agent_id), agent_id, USER, 2)
    accepted = (
        await client.post(
            "/v1/erasures",
            headers=auth(token),
            json={"user_id": USER, "agent_id": agent_id, "dry_run": True, "callback_url": service["hook"]},
        )
    ).json()
    async with running_worker(s):
        job = await until(lambda: _delivered(client, token, accepted["job_id"]), timeout=40, every=0.3)
    assert len(receiver.got) == 3  # two refused, one accepted: delivered once
    (hook,) = job["webhooks"]
    assert [a["ok"] for a in hook["attempts"]] == [False, False, True]
    assert [a.get("status_code") for a in hook["attempts"]] == [500, 503, 200]
    bodies = receiver.json_bodies()
    assert bodies[0] == bodies[2] and bodies[2]["event"] == "erasure.dry_run"
    assert bodies[2]["would_delete"]["sessions"] == 2
    request = (await client.get("/v1/requests", headers=auth(token))).json()["requests"][0]
    assert request["status"] == "dry_run"


async def _delivered(client: httpx.AsyncClient, token: str, job_id: str) -> dict[str, Any] | None:
    job = await _job(client, token, job_id)
    return job if job["webhooks"] and job["webhooks"][0]["delivered_at"] else None


async def test_a_webhook_whose_worker_is_killed_mid_delivery_is_delivered_after_a_restart(
    service: dict[str, Any], agent_id: str, worker_env: dict[str, str], tmp_path: Any
) -> None:
    s, client, receiver, token = service["settings"], service["client"], service["receiver"], service["tokens"]["all"]
    receiver.hang = 20  # the first delivery never gets its answer in time
    await seed(s.database_url, s.schema_for(agent_id), agent_id, USER, 1)
    env = {
        **worker_env,
        "DATABASE_URL": s.database_url,
        "SESSIONCTL_QUEUE": s.queue_name,
        "SESSIONCTL_HASH_KEY": HASH_KEY,
        "SESSIONCTL_WEBHOOK_SECRET": SECRET,
        "SESSIONCTL_WEBHOOK_ALLOWED_HOSTS": s.webhook_allowed_hosts,
        "SESSIONCTL_WEBHOOK_TIMEOUT": "30",  # this worker would wait for the hung receiver
    }
    accepted = (
        await client.post(
            "/v1/erasures",
            headers=auth(token),
            json={"user_id": USER, "agent_id": agent_id, "callback_url": service["hook"]},
        )
    ).json()
    log = (tmp_path / "w1.log").open("w")
    w1 = subprocess.Popen([sys.executable, "-m", "sessionctl.cli", "worker"], env=env, stdout=log, stderr=log)
    try:
        await until(lambda: receiver.got, timeout=60)  # mid-delivery: the receiver holds the request
        os.kill(w1.pid, signal.SIGKILL)
        w1.wait(10)
    finally:
        if w1.poll() is None:
            w1.kill()
    job = await _job(client, token, accepted["job_id"])
    assert job["status"] == "succeeded" and not job["webhooks"][0]["delivered_at"]  # owed, not lost
    env["SESSIONCTL_WEBHOOK_TIMEOUT"] = "1"  # its claim outlived the first worker by 2 x 1 + 1 s
    w2 = subprocess.Popen([sys.executable, "-m", "sessionctl.cli", "worker"], env=env, stdout=log, stderr=log)
    try:
        job = await until(lambda: _delivered(client, token, accepted["job_id"]), timeout=90, every=0.5)
    finally:
        w2.terminate()
        w2.wait(20)
    assert len(receiver.got) == 2 and receiver.json_bodies()[0] == receiver.json_bodies()[1]
    assert [a["ok"] for a in job["webhooks"][0]["attempts"]] == [True]  # the killed attempt left no record
    request = (await client.get("/v1/requests", headers=auth(token))).json()["requests"][0]
    assert request["status"] == "completed"


async def test_a_failed_job_leaves_its_request_open_and_asking_again_serves_it_with_a_new_job(
    service: dict[str, Any], agent_id: str
) -> None:
    s, client, receiver, conn = service["settings"], service["client"], service["receiver"], service["conn"]
    token = service["tokens"]["all"]
    schema = s.schema_for(agent_id)
    await seed(s.database_url, schema, agent_id, USER, 2)
    ask = {"user_id": USER, "agent_id": agent_id, "request_ref": "TICKET-9", "callback_url": service["hook"]}
    first = (await client.post("/v1/erasures", headers=auth(token), json=ask)).json()
    await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')  # the agent is gone before a worker runs the job
    async with running_worker(s):
        await until(lambda: receiver.got, timeout=30)
        await until(lambda: metrics.REQUESTS_OPEN._value.get() == 1)  # the worker's gauge: one open request
    failed = receiver.json_bodies()[0]
    assert failed["event"] == "erasure.failed" and failed["error"]["type"] and "receipt_id" not in failed
    row = (await client.get("/v1/requests?open=true", headers=auth(token))).json()["requests"][0]
    assert row["status"] == "open" and row["last_job_status"] == "failed"  # no receipt: not complete

    await seed(s.database_url, schema, agent_id, USER, 2)
    second = (await client.post("/v1/erasures", headers=auth(token), json=ask)).json()
    assert second["request_id"] == first["request_id"] and second["job_id"] != first["job_id"]
    async with running_worker(s):
        await until(lambda: len(receiver.got) == 2, timeout=30)
    done = receiver.json_bodies()[1]
    assert done["event"] == "erasure.completed" and done["sessions_deleted"] == 2 and done["receipt_id"]
    row = (await client.get("/v1/requests", headers=auth(token))).json()["requests"][0]
    assert row["status"] == "completed" and row["job_ids"] == [first["job_id"], second["job_id"]]


async def test_tokens_and_the_ledger_from_the_command_line(service: dict[str, Any], worker_env: dict[str, str]) -> None:
    s, client, conn = service["settings"], service["client"], service["conn"]
    env = {**worker_env, "DATABASE_URL": s.database_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sessionctl.cli", *args], env=env, capture_output=True, text=True, check=False
        )

    made = cli("token", "create", "--name", "ops", "--scopes", "read")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("sct_") and token not in made.stderr
    assert (await client.get("/v1/requests", headers=auth(token))).status_code == 200
    again = cli("token", "create", "--name", "ops")
    assert again.returncode == 2 and "exists already" in again.stderr
    assert cli("token", "create", "--name", "x", "--scopes", "root").returncode == 2
    listed = json.loads(cli("token", "list", "--json").stdout)
    assert {t["name"] for t in listed} == {"officer", "auditor", "other-platform", "privacy-office", "ops"}
    assert token not in json.dumps(listed)
    stored = await conn.fetchval("SELECT token_hash FROM sessionctl.api_tokens WHERE name = 'ops'")
    assert stored != token and token not in json.dumps(listed)
    assert cli("token", "revoke", "ops").returncode == 0
    assert cli("token", "revoke", "ops").returncode == 2
    fresh = create_app(s)  # another instance of the service: no cached answer
    async with serving(fresh) as url, httpx.AsyncClient(base_url=url) as other:
        assert (await other.get("/v1/requests", headers=auth(token))).status_code == 401

    received = datetime.now(UTC) - timedelta(days=45)
    for rid, when in (("dsr_late", received), ("dsr_fresh", datetime.now(UTC))):
        await conn.execute(
            "INSERT INTO sessionctl.dsr_requests (request_id, kind, user_hmac, target, received_at, first_due_at,"
            " due_at, token_name) VALUES ($1, 'erasure', $2, '*', $3::timestamptz,"
            " $3::timestamptz + interval '1 month', $3::timestamptz + interval '1 month', 'officer')",
            rid,
            "a" * 32,
            when,
        )
    overdue = json.loads(cli("requests", "--overdue", "--json").stdout)
    assert [r["request_id"] for r in overdue] == ["dsr_late"] and overdue[0]["overdue"] is True
    assert {r["request_id"] for r in json.loads(cli("requests", "--open", "--json").stdout)} == {
        "dsr_late",
        "dsr_fresh",
    }
    text = cli("requests", "--open")
    assert "OVERDUE by" in text.stdout and "d left" in text.stdout
    overdue_too_late = await client.post(
        "/v1/requests/dsr_late/extend",
        headers=auth(service["tokens"]["all"]),
        json={"until": (datetime.now(UTC) + timedelta(days=30)).isoformat(), "reason": "complex request, user told"},
    )
    assert overdue_too_late.status_code == 422  # an overdue request stays overdue (art. 12(3))
    assert [r["request_id"] for r in json.loads(cli("requests", "--overdue", "--json").stdout)] == ["dsr_late"]
    extended = await client.post(
        "/v1/requests/dsr_fresh/extend",
        headers=auth(service["tokens"]["all"]),
        json={"until": (datetime.now(UTC) + timedelta(days=50)).isoformat(), "reason": "complex request, user told"},
    )
    assert extended.status_code == 200 and extended.json()["extensions"][-1]["reason"] == "complex request, user told"
    earlier = await client.post(
        "/v1/requests/dsr_fresh/extend",
        headers=auth(service["tokens"]["all"]),
        json={"until": datetime.now(UTC).isoformat(), "reason": "shorten"},
    )
    assert earlier.status_code == 422  # never earlier than due


async def test_an_export_over_http_is_downloaded_by_a_caller_allowed_to_export(
    service: dict[str, Any], agent_id: str
) -> None:
    s, client, receiver = service["settings"], service["client"], service["receiver"]
    everything, reader = auth(service["tokens"]["all"]), auth(service["tokens"]["read"])
    await seed(s.database_url, s.schema_for(agent_id), agent_id, USER, 3)
    await seed(s.database_url, s.schema_for(agent_id), agent_id, "someone-else", 2)
    ask = {"user_id": USER, "agent_id": agent_id, "compress": "gz", "callback_url": service["hook"]}
    assert (await client.post("/v1/exports", headers=reader, json=ask)).status_code == 403
    accepted = (await client.post("/v1/exports", headers=everything, json=ask)).json()
    async with running_worker(s):
        await until(lambda: receiver.got, timeout=30)
    body = receiver.json_bodies()[0]
    assert body["event"] == "export.completed" and body["sessions"] == 3 and "receipt_id" not in body
    assert body["stores"][f"{s.schema_for(agent_id)}.agno_sessions"] == 3
    assert (await client.get(f"/v1/exports/{accepted['job_id']}/file", headers=reader)).status_code == 403
    resp = await client.get(f"/v1/exports/{accepted['job_id']}/file", headers=everything)
    assert resp.status_code == 200 and resp.headers["content-disposition"].endswith(f'{accepted["request_id"]}.1.jsonl.gz"')
    import gzip

    lines = [json.loads(x) for x in gzip.decompress(resp.content).splitlines() if x.strip()]
    sessions = [x["session"] for x in lines if "session" in x]
    assert len(sessions) == 3 and all(x["user_id"] == USER for x in sessions)  # the user's own data, to them
    assert (await client.get("/v1/exports/not-a-job/file", headers=everything)).status_code == 404
    row = (await client.get("/v1/requests", headers=everything)).json()["requests"][0]
    assert row["kind"] == "export" and row["status"] == "completed"
