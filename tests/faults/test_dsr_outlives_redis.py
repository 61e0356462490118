"""A request outlives Redis: four erasures accepted over HTTP (202) wait in the queue when Redis
loses its state — restarted empty, as after a restart without persistence or a failover to an
empty replica. Nobody sends them again; a worker finds their jobs vanished, enqueues them again
from the ledger (the person's id sealed there until the request completes), and every request
reaches its receipt. Real Postgres, a redis-server of the test's own, ``create_app`` and a worker."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from sessionctl import ledger
from sessionctl.config import Settings
from tests.agno_seed import seed
from tests.embedded_services import free_port, redis_server
from tests.service_helpers import auth, dsr_service, running_worker, until

PEOPLE = [f"person-{i}@example.com" for i in range(4)]


async def test_accepted_requests_reach_their_receipts_after_redis_lost_everything(
    own_database: tuple[Settings, asyncpg.Connection], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "REQUEUE_AFTER_S", 1.0)  # not 15 s: the test waits for it
    base, conn = own_database
    port = free_port()
    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    first = redis_server(port, tmp_path / "before", "--appendonly", "no")
    s0 = base.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    agent = "agent-durable"
    for who in [*PEOPLE, "bystander"]:
        await seed(s0.database_url, s0.schema_for(agent), agent, who, 2)
    async with dsr_service(s0, conn) as svc:
        s, client, receiver = svc["settings"], svc["client"], svc["receiver"]
        token = auth(svc["tokens"]["all"])
        accepted = []
        for i, who in enumerate(PEOPLE):
            ask = {"user_id": who, "request_ref": f"T-{i}", "callback_url": svc["hook"]}
            resp = await client.post("/v1/erasures", headers=token, json=ask)
            assert resp.status_code == 202 and resp.json()["status"] == "queued", resp.text
            accepted.append(resp.json())

        # Redis loses everything: the test's redis-server is killed and started again, empty
        first.kill()
        first.wait()
        fresh = redis_server(port, tmp_path / "after", "--appendonly", "no")
        try:
            async with running_worker(s):
                await until(lambda: len(receiver.got) >= len(PEOPLE), timeout=90, every=0.3)
        finally:
            fresh.kill()
            fresh.wait()
    events = sorted((b["request_ref"], b["event"], b["complete"]) for b in receiver.json_bodies())
    assert events == [(f"T-{i}", "erasure.completed", True) for i in range(4)]
    rows = await conn.fetch("SELECT request_id, status, job_ids, subject, receipt_id FROM sessionctl.dsr_requests")
    assert {r["request_id"] for r in rows} == {a["request_id"] for a in accepted}
    for r in rows:
        assert r["status"] == "completed" and r["receipt_id"] is not None and r["subject"] is None
        assert len(r["job_ids"]) == 2  # the vanished job, and the one enqueued again from the ledger
    schema = s0.schema_for(agent)
    assert await conn.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = ANY($1)', PEOPLE) == 0
    assert await conn.fetchval(f"SELECT count(*) FROM \"{schema}\".agno_sessions WHERE user_id = 'bystander'") == 2
    assert await conn.fetchval("SELECT count(DISTINCT user_hmac) FROM sessionctl.receipts") == 4
