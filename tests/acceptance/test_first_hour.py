"""The first hour of a new user, run as they would run it (the real CLI in a subprocess) and read
as they would read it: no silent waits, names that can be used as printed, plain output."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg

from sessionctl.config import Settings
from sessionctl.identifiers import Dsn
from tests.conftest import PG_ADMIN_URL

SESSIONCTL = [sys.executable, "-m", "sessionctl.cli"]


def _cli(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SESSIONCTL, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _wait_for_worker(env: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "worker reported" in _cli(env, "health").stdout:
            return
        time.sleep(0.3)
    raise AssertionError("the worker never reported")


def test_purge_wait_without_a_worker_says_so_at_once_and_times_out(worker_env: dict[str, str]) -> None:
    agent = f"lonely-{uuid.uuid4().hex[:8]}"
    assert _cli(worker_env, "demo", "seed", "--agent", agent, "--users", "1", "--sessions", "2").returncode == 0
    started = time.monotonic()
    done = _cli(worker_env, "purge", "--agent", agent, "--user", "-", "--wait", "--timeout", "2", stdin="demo-user-1\n")
    assert time.monotonic() - started < 30
    assert done.returncode == 1, done
    first = done.stderr.splitlines()[0]
    queue = worker_env["SESSIONCTL_QUEUE"]
    assert first.startswith(f"job {queue}:purge_user_sessions:") and "waiting up to 2 s" in first, done.stderr
    assert "no worker has reported for queue" in done.stderr and "sessionctl worker" in done.stderr
    assert "not finished yet" in done.stdout


def test_a_worker_configured_for_another_database_is_named_before_the_job_fails(
    settings: Settings, worker_env: dict[str, str]
) -> None:
    elsewhere = {**worker_env, "DATABASE_URL": PG_ADMIN_URL}  # the worker started "on defaults"
    worker = subprocess.Popen([*SESSIONCTL, "worker"], env=elsewhere, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_worker(worker_env)
        agent = f"mismatch-{uuid.uuid4().hex[:8]}"
        assert _cli(worker_env, "demo", "seed", "--agent", agent, "--users", "1", "--sessions", "1").returncode == 0
        done = _cli(worker_env, "purge", "--agent", agent, "--user", "-", "--wait", "--timeout", "30", stdin="demo-user-1\n")
    finally:
        worker.terminate()
        worker.wait(30)
    assert "a worker serving queue" in done.stderr and "DATABASE_URL (" in done.stderr, done.stderr
    assert settings.dsn.database in done.stderr
    assert done.returncode == 1 and "AgentNotFound" in done.stdout, done.stdout
    assert f"in {Dsn.parse(PG_ADMIN_URL).where} does not exist" in done.stdout  # the worker's database, named


async def test_what_agents_lists_is_what_agent_takes_and_the_output_reads_plainly(
    settings: Settings, pg: asyncpg.Connection, worker_env: dict[str, str], tmp_path: Path
) -> None:
    worker_env = {**worker_env, "SESSIONCTL_EXPORT_DIR": str(tmp_path)}
    agent = f"plain-{uuid.uuid4().hex[:8]}"
    unnamed = f"unnamed-{uuid.uuid4().hex[:8]}"
    for a in (agent, unnamed):
        assert _cli(worker_env, "demo", "seed", "--agent", a, "--users", "2", "--sessions", "3").returncode == 0
    await pg.execute(f'UPDATE "{settings.schema_for(unnamed)}".agno_sessions SET agent_id = NULL')
    listed = _cli(worker_env, "agents")
    assert listed.returncode == 0 and "the first column is what --agent takes" in listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert agent in names, listed.stdout  # as it was created (its sessions record it), not plain_…
    guessed = next(line for line in listed.stdout.splitlines() if settings.schema_for(unnamed) in line)
    assert guessed.startswith(unnamed.replace("-", "_") + " * "), guessed  # the schema's name is all there is
    assert "* read back from the schema name only" in listed.stderr, listed.stderr
    name = agent
    sessions = _cli(worker_env, "sessions", "--agent", name, "--user", "-", stdin="demo-user-1\n")
    assert sessions.returncode == 0 and "3 session(s)" in sessions.stderr, sessions
    assert " created 20" in sessions.stdout and "Z " in sessions.stdout  # a time, not epoch seconds

    doctor = _cli(worker_env, "doctor", "--agent", name)
    assert f"{settings.schema_for(agent)}: agno_sessions 6 rows" in doctor.stdout, doctor.stdout

    worker = subprocess.Popen([*SESSIONCTL, "worker"], env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_worker(worker_env)
        health = _cli(worker_env, "health")
        dry = _cli(worker_env, "purge", "--agent", name, "--user", "-", "--dry-run", "--wait", stdin="demo-user-1\n")
        jobs = _cli(worker_env, "jobs", "--limit", "1")
        empty = _cli(worker_env, "export", "--agent", name, "--user", "-", "--out", "nobody.jsonl", "--wait", stdin="nobody\n")
    finally:
        worker.terminate()
        worker.wait(30)
    assert "ok   worker: 1 worker reported" in health.stdout, health.stdout
    assert f"serving {settings.dsn.where} (sessionctl" in health.stdout, health.stdout
    assert dry.returncode == 0 and "would delete" in dry.stdout
    assert "would_delete_sessions=3" in jobs.stdout and "sessions_deleted" not in jobs.stdout, jobs.stdout
    assert empty.returncode == 0 and "no session matched" in empty.stdout, empty.stdout


def test_an_unset_hash_key_is_one_plain_line_once(worker_env: dict[str, str]) -> None:
    env = {k: v for k, v in worker_env.items() if k != "SESSIONCTL_HASH_KEY"}
    done = _cli(env, "receipts", "--user", "-", stdin="someone\n")
    warnings = [line for line in done.stderr.splitlines() if "SESSIONCTL_HASH_KEY" in line]
    assert done.returncode == 0 and len(warnings) == 1, done.stderr
    assert warnings[0].startswith("warning: SESSIONCTL_HASH_KEY is not set") and ".py" not in done.stderr


def test_doctor_on_a_database_without_agents_says_so(worker_env: dict[str, str]) -> None:
    name = f"sessionctl_empty_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        env = {**worker_env, "DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name}
        done = _cli(env, "doctor")
        token = _cli(env, "token", "create", "--name", "first", "--scopes", "read")
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    assert done.returncode == 1 and "no Agno agent schema in" in done.stdout, done
    # a token before `sessionctl migrate`: one line that says what to run
    assert token.returncode == 2 and token.stderr.count("\n") == 1, token.stderr
    assert "schema does not exist" in token.stderr and "run `sessionctl migrate` there" in token.stderr


async def test_an_export_is_downloaded_from_a_service_started_elsewhere_without_setting_export_dir(
    settings: Settings, pg: asyncpg.Connection, worker_env: dict[str, str], tmp_path: Path, agent_id: str
) -> None:
    """The worker and `serve` started in different directories, SESSIONCTL_EXPORT_DIR unset: both
    use the state directory's exports (absolute), so the file the worker wrote is downloaded."""
    import httpx

    from tests.conftest import HASH_KEY
    from tests.service_helpers import make_token, serve_process

    state = tmp_path / "state"
    env = {k: v for k, v in worker_env.items() if k != "SESSIONCTL_EXPORT_DIR"} | {"SESSIONCTL_STATE_DIR": str(state)}
    (tmp_path / "w").mkdir(), (tmp_path / "s").mkdir()
    assert _cli(env, "demo", "seed", "--agent", agent_id, "--users", "1", "--sessions", "2").returncode == 0
    token = {"Authorization": "Bearer " + await make_token(pg, f"x-{uuid.uuid4().hex[:8]}", ["export", "read"])}
    worker = subprocess.Popen(
        [*SESSIONCTL, "worker"], env=env, cwd=tmp_path / "w", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with serve_process(settings, HASH_KEY, cwd=tmp_path / "s", SESSIONCTL_STATE_DIR=str(state)) as base:
            async with httpx.AsyncClient(base_url=base, headers=token, timeout=30) as client:
                asked = await client.post("/v1/exports", json={"user_id": "demo-user-1", "agent_id": agent_id})
                assert asked.status_code == 202, asked.text
                job = asked.json()["job_id"]
                deadline = time.monotonic() + 60
                while (await client.get(f"/v1/jobs/{job}")).json()["status"] != "succeeded":
                    assert time.monotonic() < deadline, (await client.get(f"/v1/jobs/{job}")).json()
                    await asyncio.sleep(0.3)
                got = await client.get(f"/v1/exports/{job}/file")
    finally:
        worker.terminate()
        worker.wait(30)
    assert got.status_code == 200 and got.content.count(b'"session"') == 2, got.text[:300]
    name = got.headers["content-disposition"].split('filename="')[1].rstrip('"')
    assert (state / "exports" / name).is_file()  # in the state directory's exports
    assert not any((tmp_path / d / "exports").exists() for d in ("w", "s"))


def test_a_malformed_deployment_file_or_a_missing_store_is_one_line(worker_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "deployment.toml"
    config.write_text('[[stores]]\nkind = "lancedb"\nuri = "/nowhere"\n', encoding="utf-8")
    env = {**worker_env, "SESSIONCTL_CONFIG": str(config)}
    worker = _cli(env, "worker", "--burst")
    assert worker.returncode == 2 and worker.stderr.count("\n") == 1, worker.stderr
    assert f"error: SESSIONCTL_CONFIG {config}: stores[0] (lancedb): table_name: Field required" in worker.stderr
    config.write_text('[[stores]]\nkind = "lancedb"\nuri = "/nowhere"\ntable_name = "kb"\n', encoding="utf-8")
    doctor = _cli(env, "doctor")
    assert doctor.returncode == 1 and "FAIL lancedb:kb: no LanceDB database at /nowhere (sessionctl never creates one)" in doctor.stdout
    verify = _cli(env, "verify", "--user", "-", stdin="someone\n")
    assert verify.returncode == 2 and verify.stderr.count("\n") == 1, verify.stderr
    assert "no LanceDB database at /nowhere" in verify.stderr
