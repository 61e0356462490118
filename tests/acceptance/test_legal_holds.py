"""Legal holds as an operator uses them: `sessionctl hold place|list|release` over stdin, and every
erasure refusing a person under hold before anything is deleted (the job fails with one line;
released, the same erasure goes through)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import asyncpg

from sessionctl.config import Settings
from sessionctl.privacy import user_hmac
from tests.agno_seed import seed
from tests.conftest import HASH_KEY

SESSIONCTL = [sys.executable, "-m", "sessionctl.cli"]


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SESSIONCTL, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


async def test_a_person_under_hold_is_not_erased_until_the_hold_is_released(
    settings: Settings, pg: asyncpg.Connection, agent_id: str, worker_env: dict[str, str]
) -> None:
    user = f"held.person+{uuid.uuid4().hex[:6]}@example.com"
    person = user_hmac(HASH_KEY.encode(), user)
    schema = settings.schema_for(agent_id)
    await seed(settings.database_url, schema, agent_id, user, 2)
    assert run(worker_env, "migrate").returncode == 0

    placed = run(worker_env, "hold", "place", "--user", "-", "--reason", "matter 2026-114", stdin=user)
    assert placed.returncode == 0, placed.stderr
    assert f"placed on user {person}" in placed.stdout and user not in placed.stdout
    again = run(worker_env, "hold", "place", "--user", "-", "--reason", "again", stdin=user)
    assert "already in place" in again.stdout
    listed = json.loads(run(worker_env, "hold", "list", "--json").stdout)
    (mine,) = [h for h in listed if h["user_hmac"] == person]
    assert mine["reason"] == "matter 2026-114" and mine["released_at"] is None

    enq = run(worker_env, "purge", "--agent", agent_id, "--user", "-", "--json", stdin=user)
    assert enq.returncode == 0, enq.stderr
    job = json.loads(enq.stdout)["job_id"]
    burst = run(worker_env, "worker", "--burst")  # a burst with a failed job exits 1
    assert "PersonOnHold" in burst.stderr and user not in burst.stderr + burst.stdout
    st = run(worker_env, "status", job)
    assert st.returncode == 1 and "PersonOnHold" in st.stdout + st.stderr and "legal hold" in st.stdout + st.stderr
    assert user not in st.stdout + st.stderr
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = $1', user) == 2

    released = run(worker_env, "hold", "release", "--user", "-", stdin=user)
    assert released.returncode == 0 and "released" in released.stdout
    assert run(worker_env, "hold", "release", "--user", "-", stdin=user).returncode == 2  # nothing left to release
    enq = run(worker_env, "purge", "--agent", agent_id, "--user", "-", "--json", stdin=user)
    job = json.loads(enq.stdout)["job_id"]
    assert run(worker_env, "worker", "--burst").returncode == 0
    assert json.loads(run(worker_env, "status", job, "--json").stdout)["status"] == "succeeded"
    assert await pg.fetchval(f'SELECT count(*) FROM "{schema}".agno_sessions WHERE user_id = $1', user) == 0
