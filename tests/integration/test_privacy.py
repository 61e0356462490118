"""Every log line of full runs — success, dry run, permanent and transient failures — carries the
user's HMAC, never the raw user id, session content or a DSN password."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from sessionctl.config import Settings
from sessionctl.privacy import user_hmac
from sessionctl.producer import Producer
from tests.agno_seed import agno_db, seed, seed_sessions
from tests.conftest import HASH_KEY, PG_ADMIN_URL, _host_port, run_worker
from tests.proxy import CuttableProxy

USER = "ivy.sensitive+1@example.com"


async def test_logs_of_full_runs_hold_no_personal_data_or_secrets(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"export_dir": str(tmp_path / "exports")})
    db = agno_db(settings.database_url, settings.schema_for(agent_id))
    await seed_sessions(db, agent_id, USER, 4, extras=True)  # content: "answer 0 for <user>"
    await db.close()
    proxy = await CuttableProxy(*_host_port(PG_ADMIN_URL)).start()
    proxy.cut()
    down = settings.model_copy(
        update={
            "database_url": f"postgresql://postgres:s3cret-pw@127.0.0.1:{proxy.port}/x",
            "max_tries": 2,
            "retry_base_delay": 0.01,
        }
    )
    async with Producer(settings) as producer:
        await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, dry_run=True)
        await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, memories=True)
        await producer.purge_user_sessions(agent_id="missing-agent", user_id=USER, check_agent=False)
        await producer.export_sessions(agent_id=agent_id, user_id=USER, out="dsar.jsonl.gz", compress="gz")
        await run_worker(settings)
        await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 2, prefix="again")
        await producer.export_sessions(agent_id=agent_id, user_id=USER, out="dsar2.jsonl", then_purge=True)
        await producer.export_sessions(agent_id="missing-agent", user_id=USER, out="x.jsonl", check_agent=False)
        await run_worker(settings)
    async with Producer(down) as producer:
        await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, check_agent=False)
        await run_worker(down)
    await proxy.close()

    out, err = capfd.readouterr()
    logs = out + err
    assert "purge.done" in logs and "job.failed" in logs and "job.retry" in logs  # the paths ran
    assert "export.written" in logs and "export.erased" in logs
    assert user_hmac(HASH_KEY.encode(), USER) in logs
    for secret in (USER, "ivy.sensitive", "answer 0 for", "s3cret-pw", HASH_KEY):
        assert secret not in logs, secret
