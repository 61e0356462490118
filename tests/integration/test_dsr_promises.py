"""The rest of the service's promises, on real Postgres, Redis, ``create_app`` and real workers:
webhook hosts checked again at delivery; the OpenAPI spec behind a setting, declaring what it
should; errors without server paths; GDPR art. 12(3) extensions; a retried job settles its request;
one list of job states; one report per worker, taken back on a graceful stop."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from sessionctl import __version__
from sessionctl.api.app import create_app
from sessionctl.cli.health import worker_check
from sessionctl.config import Settings
from sessionctl.ledger import add_months
from sessionctl.producer import Producer
from sessionctl.worker.settings import create
from tests.agno_seed import seed
from tests.conftest import run_worker
from tests.service_helpers import auth, dsr_service, make_token, running_worker, serving, until

USER = "petra.promise@example.com"
AGENT = "agent-promise"


@pytest.fixture
async def service(own_database: tuple[Settings, asyncpg.Connection]) -> AsyncIterator[dict[str, Any]]:
    async with dsr_service(*own_database) as svc:
        yield svc


async def test_a_host_removed_from_the_allowed_list_receives_nothing_more(service: dict[str, Any]) -> None:
    s, client, conn, receiver = service["settings"], service["client"], service["conn"], service["receiver"]
    await seed(s.database_url, s.schema_for(AGENT), AGENT, USER, 1)
    ask = {"user_id": USER, "callback_url": service["hook"]}
    accepted = (await client.post("/v1/erasures", headers=auth(service["tokens"]["all"]), json=ask)).json()
    removed = s.model_copy(update={"webhook_allowed_hosts": "hooks.example.com"})  # the operator took it off
    async with running_worker(removed):
        await until(
            lambda: conn.fetchval("SELECT gave_up_at IS NOT NULL FROM sessionctl.webhook_deliveries"), timeout=30
        )
        await asyncio.sleep(0.5)
    assert receiver.got == []
    job = (await client.get(f"/v1/jobs/{accepted['job_id']}", headers=auth(service["tokens"]["all"]))).json()
    (attempt,) = job["webhooks"][0]["attempts"]
    assert (
        attempt["ok"] is False
        and "not sent" in attempt["error"]
        and "SESSIONCTL_WEBHOOK_ALLOWED_HOSTS" in attempt["error"]
    )


async def test_the_openapi_spec_is_off_by_default_and_declares_what_it_should(
    own_database: tuple[Settings, asyncpg.Connection],
) -> None:
    base, conn = own_database
    token = await make_token(conn, "reader", ["read"])
    for mode, anonymous in (("off", 404), ("token", 401), ("public", 200)):
        async with (
            serving(create_app(base.model_copy(update={"openapi": mode}))) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            assert (await client.get("/openapi.json")).status_code == anonymous, mode
            viewers = {p: (await client.get(p)).status_code for p in ("/docs", "/redoc")}
            assert viewers == ({"/docs": 200, "/redoc": 200} if mode == "public" else {"/docs": 404, "/redoc": 404})
            if mode == "token":
                spec = (await client.get("/openapi.json", headers=auth(token))).json()
    assert spec["info"]["version"] == __version__
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, model in (("/v1/erasures", "ErasureIn"), ("/v1/exports", "ExportIn")):
        post = spec["paths"][path]["post"]
        assert {"401", "403", "409", "422"} <= set(post["responses"]) and post["security"] == [{"HTTPBearer": []}]
        body = post["requestBody"]["content"]["application/json"]["schema"]
        assert (
            body == {"$ref": f"#/components/schemas/{model}"}
            and "user_id" in spec["components"]["schemas"][model]["properties"]
        )
    assert {"erasure.completed", "erasure.failed", "export.completed"} <= set(spec["webhooks"])
    body = spec["components"]["schemas"]["WebhookBody"]["properties"]
    assert {"complete", "remains", "late", "user_hmac"} <= set(body)


async def test_no_error_shows_a_server_path(own_database: tuple[Settings, asyncpg.Connection], tmp_path: Path) -> None:
    base, conn = own_database
    token = await make_token(conn, "eraser", ["erase"])
    # the database through a unix socket, as the embedded Postgres is reached: a path in the DSN
    sockets = tmp_path / "pg-socket-dir"
    sockets.mkdir()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5432)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    server = await asyncio.start_unix_server(relay, path=str(sockets / ".s.PGSQL.5432"))
    database = base.database_url.rsplit("/", 1)[1]
    socketed = base.model_copy(update={"database_url": f"postgresql://postgres@/{database}?host={sockets}"})
    try:
        async with serving(create_app(socketed)) as url, httpx.AsyncClient(base_url=url) as client:
            resp = await client.post("/v1/erasures", headers=auth(token), json={"user_id": USER, "agent_id": "nope"})
    finally:
        server.close()
    assert resp.status_code == 422 and "nope" in resp.json()["detail"], resp.text
    assert str(tmp_path) not in resp.text and "pg-socket-dir" not in resp.text, resp.text


async def test_extensions_follow_article_12_3_and_a_late_completion_is_marked_everywhere(
    service: dict[str, Any], worker_env: dict[str, str]
) -> None:
    s, client, receiver = service["settings"], service["client"], service["receiver"]
    token = auth(service["tokens"]["all"])
    await seed(s.database_url, s.schema_for(AGENT), AGENT, USER, 1)
    late = (
        await client.post(
            "/v1/erasures",
            headers=token,
            json={
                "user_id": USER,
                "received_at": (datetime.now(UTC) - timedelta(days=60)).isoformat(),
                "callback_url": service["hook"],
            },
        )
    ).json()
    fresh = (await client.post("/v1/erasures", headers=token, json={"user_id": "someone", "dry_run": False})).json()
    first_due = datetime.fromisoformat(fresh["due_at"])

    def ask(request_id: str, until: datetime, reason: str = "complex request; the person was told") -> Any:
        return client.post(
            f"/v1/requests/{request_id}/extend", headers=token, json={"until": until.isoformat(), "reason": reason}
        )

    overdue = await ask(late["request_id"], datetime.now(UTC) + timedelta(days=30))
    assert overdue.status_code == 422 and "overdue" in overdue.json()["detail"]
    too_far = await ask(fresh["request_id"], add_months(first_due, 2) + timedelta(days=1))
    assert too_far.status_code == 422 and "two months" in too_far.json()["detail"]
    year_9999 = await ask(fresh["request_id"], datetime(9999, 12, 31, tzinfo=UTC))
    assert year_9999.status_code == 422
    extended = await ask(fresh["request_id"], add_months(first_due, 2))
    assert extended.status_code == 200, extended.text
    corrected = await client.post(
        f"/v1/requests/{fresh['request_id']}/correct",
        headers=token,
        json={"until": (first_due + timedelta(days=10)).isoformat(), "reason": "extended by mistake"},
    )
    assert corrected.status_code == 200, corrected.text
    row = corrected.json()
    assert datetime.fromisoformat(row["first_due_at"]) == first_due  # the original due date is kept
    assert [e["kind"] for e in row["extensions"]] == ["extension", "correction"]
    assert row["extensions"][0]["reason"].startswith("complex") and row["extensions"][0]["by"] == "officer"
    assert datetime.fromisoformat(row["due_at"]) == first_due + timedelta(days=10)

    async with running_worker(s):  # the request 60 days old completes: late
        await until(lambda: receiver.got, timeout=30)
    assert receiver.json_bodies()[0]["late"] is True
    done = (await client.get(f"/v1/requests/{late['request_id']}", headers=token)).json()
    assert done["status"] == "completed" and done["late"] is True
    env = {**worker_env, "DATABASE_URL": s.database_url, "SESSIONCTL_QUEUE": s.queue_name}
    listed = subprocess.run(
        [sys.executable, "-m", "sessionctl.cli", "requests"], env=env, capture_output=True, text=True, timeout=60
    )
    line = next(x for x in listed.stdout.splitlines() if x.startswith(late["request_id"]))
    assert "LATE" in line, listed.stdout
    assert "extended x2" in next(x for x in listed.stdout.splitlines() if x.startswith(fresh["request_id"]))


async def test_a_retried_job_settles_its_request(service: dict[str, Any], worker_env: dict[str, str]) -> None:
    s, client, conn, receiver = service["settings"], service["client"], service["conn"], service["receiver"]
    schema = s.schema_for(AGENT)
    await seed(s.database_url, schema, AGENT, USER, 2)
    ask = {"user_id": USER, "agent_id": AGENT, "callback_url": service["hook"]}
    first = (await client.post("/v1/erasures", headers=auth(service["tokens"]["all"]), json=ask)).json()
    await conn.execute(f'ALTER TABLE "{schema}".agno_sessions RENAME TO agno_sessions_away')  # the job fails for good
    async with running_worker(s):
        await until(lambda: receiver.got, timeout=30)
    assert receiver.json_bodies()[0]["event"] == "erasure.failed"
    await conn.execute(f'ALTER TABLE "{schema}".agno_sessions_away RENAME TO agno_sessions')
    env = {**worker_env, "DATABASE_URL": s.database_url, "SESSIONCTL_QUEUE": s.queue_name}
    retried = subprocess.run(
        [sys.executable, "-m", "sessionctl.cli", "retry", first["job_id"], "--user", "-", "--json"],
        env=env,
        input=USER + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert retried.returncode == 0, retried.stderr
    async with running_worker(s):
        await until(lambda: len(receiver.got) == 2, timeout=30)
    assert receiver.json_bodies()[1]["event"] == "erasure.completed"
    row = (await client.get(f"/v1/requests/{first['request_id']}", headers=auth(service["tokens"]["all"]))).json()
    assert row["status"] == "completed" and row["job_ids"] == [first["job_id"], json.loads(retried.stdout)["job_id"]]


async def test_one_list_of_job_states_for_the_cli_the_api_and_the_index(
    service: dict[str, Any], worker_env: dict[str, str]
) -> None:
    s, client = service["settings"], service["client"]
    audit = auth(service["tokens"]["audit"])
    await seed(s.database_url, s.schema_for(AGENT), AGENT, USER, 1)
    async with Producer(s) as producer:
        ok = await producer.purge_user_sessions(agent_id=AGENT, user_id=USER)
        dry = await producer.purge_user_sessions(agent_id=AGENT, user_id="x", dry_run=True)
        bad = await producer.purge_user_sessions(agent_id="missing", user_id=USER, check_agent=False)
        await run_worker(s)
    for status, want in (
        ("succeeded", {ok.job_id}),
        ("dry_run", {dry.job_id}),
        ("failed", {bad.job_id}),
        ("ended", {ok.job_id, dry.job_id, bad.job_id}),
        ("queued", set()),
    ):
        got = {j["job_id"] for j in (await client.get(f"/v1/jobs?status={status}", headers=audit)).json()["jobs"]}
        assert got == want, status
    assert (await client.get("/v1/jobs?status=complete", headers=audit)).status_code == 422
    env = {**worker_env, "DATABASE_URL": s.database_url, "SESSIONCTL_QUEUE": s.queue_name}
    cli = subprocess.run(
        [sys.executable, "-m", "sessionctl.cli", "jobs", "--status", "succeeded", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0 and [j["job_id"] for j in json.loads(cli.stdout)] == [ok.job_id], cli.stderr
    unknown = subprocess.run(
        [sys.executable, "-m", "sessionctl.cli", "jobs", "--status", "complete"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1, unknown.stderr
    assert "invalid value for '--status': 'complete' is not one of 'queued', 'running', 'retrying'" in unknown.stderr


async def test_each_worker_reports_on_its_own_and_a_graceful_stop_takes_it_back(settings: Settings) -> None:
    workers = [create(settings, poll_delay=0.05, handle_signals=False) for _ in range(2)]
    tasks = [asyncio.create_task(w.main()) for w in workers]
    try:
        async with Producer(settings) as producer:
            redis = await producer.redis()
            report = await until(lambda: _live(redis, settings, 2), timeout=20)
            assert report["ok"] and len(set(report["workers"])) == 2 and "2 workers" in report["detail"]
            await workers[0].close()  # a graceful stop
            tasks[0].cancel()
            report = await until(lambda: _live(redis, settings, 1), timeout=5)
            await workers[1].close()
            tasks[1].cancel()
            gone = await worker_check(redis, settings)
            assert gone["ok"] is False and "no worker has reported" in gone["detail"]
            assert await producer.check_worker() is not None  # a CLI would say at once that no worker serves
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _live(redis: Any, settings: Settings, n: int) -> dict[str, Any] | None:
    report = await worker_check(redis, settings)
    return report if len(report.get("workers", [])) == n else None
