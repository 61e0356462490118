"""Per-agent connection resolution: a map file over two databases, the xpander platform (a fake
platform server on loopback that answers the SDK's endpoints), the TTL cache, platform outages."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from sessionctl.config import Settings
from sessionctl.errors import AgentNotFound, InvalidConnectionURI, NotAgnoStorage
from sessionctl.producer import Producer
from sessionctl.resolvers import PlatformUnavailable, build_chain
from tests.agno_seed import agno_db, seed, seed_sessions
from tests.conftest import PG_ADMIN_URL, run_worker

USER = "pia-2f@example.com"
SESSIONCTL = [sys.executable, "-m", "sessionctl.cli"]


class FakePlatform:
    """Answers GET /agents/{id}, /agents/{id}/db and /agents/list like the xpander platform."""

    def __init__(self, agents: dict[str, dict]) -> None:
        self.agents = agents
        self.calls: Counter[str] = Counter()
        self.keys: set[str] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> FakePlatform:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        path = head.split(" ", 2)[1]
        for line in head.split("\r\n")[1:]:
            if line.lower().startswith("x-api-key:"):
                self.keys.add(line.split(":", 1)[1].strip())
        self.calls[path] += 1
        status, body = 404, {"detail": "not found"}
        parts = path.strip("/").split("/")
        if parts == ["agents", "list"]:
            status, body = 200, [{"id": a} for a in self.agents]
        elif len(parts) >= 2 and parts[0] == "agents" and parts[1] in self.agents:
            agent = self.agents[parts[1]]
            if len(parts) == 2:
                status, body = 200, {k: v for k, v in agent.items() if k != "uri"}
            elif parts[2:] == ["db"]:
                status, body = 200, {"connection_uri": {"uri": agent.get("uri")}}
        data = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def second_database() -> AsyncIterator[str]:
    name = f"sessionctl_test_b_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def test_map_file_over_two_databases_a_purge_of_all_agents_reaches_both(
    settings: Settings, second_database: str, agent_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = f"{agent_id}-here", f"{agent_id}-there"
    monkeypatch.setenv("TEST_DB_B_NAME", second_database.rsplit("/", 1)[1])
    amap = tmp_path / "agents.toml"
    amap.write_text(
        f'[agents."{there}"]\ndsn = "{second_database.rsplit("/", 1)[0]}/${{TEST_DB_B_NAME}}"\nteam = true\n'
        f'[agents."{agent_id}-gone"]\nsession_storage = false\n'
    )
    s = settings.model_copy(update={"agent_map": str(amap)})
    for aid, url in ((here, settings.database_url), (there, second_database)):
        db = agno_db(url, s.schema_for(aid))
        await seed_sessions(db, aid, USER, 4)
        await seed_sessions(db, aid, "keep", 1)
        await db.close()

    chain = build_chain(s)
    loc = await chain.resolve(there)
    assert loc.source == "map" and loc.team and loc.dsn.database == second_database.rsplit("/", 1)[1]
    with pytest.raises(LookupError):
        await chain.resolve(f"{agent_id}-gone")
    assert (await chain.resolve(here)).source == "static"

    async with Producer(s) as producer:
        one = await producer.purge_user_sessions(agent_id=there, user_id=USER)  # resolved to database b
        every = await producer.purge_user_sessions(all_agents=True, user_id=USER)
        await run_worker(s)
        one_state, all_state = await producer.status(one.job_id), await producer.status(every.job_id)
    assert one_state.status == "succeeded" and one_state.result["sessions_deleted"] == 4
    assert all_state.status == "succeeded" and all_state.result["remaining"] == 0
    for url, aid in ((settings.database_url, here), (second_database, there)):
        c = await asyncpg.connect(url)
        left = await c.fetch(f'SELECT user_id, count(*) AS n FROM "{s.schema_for(aid)}".agno_sessions GROUP BY 1')
        await c.close()
        assert {r["user_id"]: r["n"] for r in left} == {"keep": 1}, aid

    missing_var = tmp_path / "bad.toml"
    missing_var.write_text('[agents."x"]\ndsn = "postgresql://u:${NOT_SET_ANYWHERE}@h/db"\n')
    with pytest.raises(InvalidConnectionURI, match="NOT_SET_ANYWHERE is not set"):
        await build_chain(s.model_copy(update={"agent_map": str(missing_var)})).resolve("x")


async def test_xpander_platform_answers_map_onto_the_sdk_contract(settings: Settings, agent_id: str) -> None:
    ok, team = f"{agent_id}-ok", f"{agent_id}-team"
    platform = await FakePlatform(
        {
            ok: {
                "id": ok,
                "framework": "agno",
                "agno_settings": {"session_storage": True},
                "uri": settings.database_url,
            },
            team: {
                "id": team,
                "framework": "agno",
                "agno_settings": {"coordinate_mode": True},
                "uri": settings.database_url.replace("postgresql://", "postgresql+psycopg://"),
            },
            "lc": {"id": "lc", "framework": "langchain", "uri": settings.database_url},
            "off": {"id": "off", "framework": "agno", "agno_settings": {"session_storage": False}},
            "nouri": {"id": "nouri", "framework": "agno", "agno_settings": {}},
        }
    ).start()
    s = settings.model_copy(
        update={
            "xpander_api_key": "xp-key",
            "xpander_base_url": f"http://127.0.0.1:{platform.port}",
            "resolver_ttl": 60,
        }
    )
    chain = build_chain(s)
    try:
        loc = await chain.resolve(ok)
        assert (loc.source, loc.team, loc.schema) == ("xpander", False, s.schema_for(ok))
        assert (await chain.resolve(team)).team is True  # team sessions: session_type 'team'
        with pytest.raises(NotImplementedError) as e1:
            await chain.resolve("lc")
        assert isinstance(e1.value, NotAgnoStorage)
        with pytest.raises(LookupError) as e2:
            await chain.resolve("off")
        assert isinstance(e2.value, AgentNotFound)
        with pytest.raises(ValueError, match="no connection URI"):
            await chain.resolve("nouri")
        assert (await chain.resolve("not-on-the-platform")).source == "static"  # 404: the next resolver
        assert platform.keys == {"xp-key"}
        assert set(await chain.known_agents()) >= {ok, team, "lc", "off", "nouri"}
    finally:
        await platform.stop()


async def test_ttl_cache_and_platform_outage(settings: Settings, pg: asyncpg.Connection, agent_id: str) -> None:
    await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 2)
    platform = await FakePlatform(
        {agent_id: {"framework": "agno", "agno_settings": {}, "uri": settings.database_url}}
    ).start()
    s = settings.model_copy(
        update={
            "xpander_api_key": "k",
            "xpander_base_url": f"http://127.0.0.1:{platform.port}",
            "resolver_ttl": 60,
            "retry_base_delay": 0.02,
            "max_tries": 3,
        }
    )
    from sessionctl.worker.settings import create as create_worker

    async with Producer(s) as producer:
        first = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, check_agent=False)
        second = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, memories=True, check_agent=False)
        w = create_worker(s, burst=True, poll_delay=0, max_jobs=1)
        await w.main()
        await w.close()
        assert (await producer.status(first.job_id)).status == "succeeded"
        assert (await producer.status(second.job_id)).status == "succeeded"
        # two jobs within the TTL, one worker: the platform was asked once
        assert platform.calls[f"/agents/{agent_id}"] == 1 and platform.calls[f"/agents/{agent_id}/db"] == 1

        await platform.stop()  # the platform goes away
        down = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, dry_run=True, check_agent=False)
        w2 = await run_worker(s)
        state = await producer.status(down.job_id)
    assert w2.jobs_retried == 2 and state.status == "failed"  # retried, then failed: never a success
    assert state.error["type"] == "PlatformUnavailable"
    assert issubclass(PlatformUnavailable, Exception)


def test_agents_command_lists_where_each_agent_lives(
    settings: Settings, worker_env: dict[str, str], agent_id: str, tmp_path: Path
) -> None:
    async def seed_once() -> None:
        await seed(settings.database_url, settings.schema_for(agent_id), agent_id, USER, 3)

    asyncio.run(seed_once())
    env = {**worker_env, "DATABASE_URL": settings.database_url.replace("postgres@", "postgres:hunter2@")}
    res = subprocess.run([*SESSIONCTL, "agents", "--json"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = {r["schema"]: r for r in json.loads(res.stdout)}
    mine = rows[settings.schema_for(agent_id)]
    assert mine["sessions"] == 3 and ":***@" in mine["database"] and "hunter2" not in res.stdout


async def test_two_databases_told_apart_only_by_the_query_are_both_purged_and_both_counted(
    settings: Settings, second_database: str, tmp_path: Path
) -> None:
    base = settings.database_url.rsplit("/", 1)[0]
    first_db = settings.database_url.rsplit("/", 1)[1]
    second_db = second_database.rsplit("/", 1)[1]
    user = f"q-{uuid.uuid4().hex[:6]}"
    amap = tmp_path / "agents.toml"
    amap.write_text(
        f'[agents."eu-bot"]\ndsn = "{base}?dbname={first_db}"\nschema = "ai_shared"\n'
        f'[agents."us-bot"]\ndsn = "{base}?dbname={second_db}"\nschema = "ai_shared"\n'
    )
    s = settings.model_copy(update={"agent_map": str(amap)})
    for url, n in ((settings.database_url, 3), (second_database, 2)):
        await seed(url, "ai_shared", "x", user, n, prefix=f"{user}-{n}")
    async with Producer(s) as producer:
        enq = await producer.purge_user_sessions(all_agents=True, user_id=user, requested_by="t")
        await run_worker(s)
        state = await producer.status(enq.job_id)
    assert state.status == "succeeded", state
    assert state.result["sessions_deleted"] == 5  # 3 + 2: neither database skipped, neither count lost
    assert state.result["agents"]["eu-bot"]["sessions_deleted"] == 3
    assert state.result["agents"]["us-bot"]["sessions_deleted"] == 2
    for url in (settings.database_url, second_database):
        c = await asyncpg.connect(url)
        assert await c.fetchval("SELECT count(*) FROM ai_shared.agno_sessions WHERE user_id = $1", user) == 0
        await c.close()
    c = await asyncpg.connect(settings.database_url)
    counts = await c.fetchval("SELECT counts FROM sessionctl.receipts WHERE job_id = $1", enq.job_id)
    await c.close()
    assert '"sessions": 5' in counts


async def test_a_resolver_of_your_own_plugs_in(settings: Settings) -> None:
    s = settings.model_copy(update={"resolvers": "tests.plugin_resolver:VaultResolver,static"})
    chain = build_chain(s)
    loc = await chain.resolve("vault-one")
    assert (loc.source, loc.schema) == ("vault", "vault_one")
    assert (await chain.resolve("other-agent")).source == "static"  # None from the plug-in: next one
    assert await chain.known_agents() == ["vault-one"]
    with pytest.raises(ValueError, match="cannot load"):
        build_chain(settings.model_copy(update={"resolvers": "no.such.module:Nope"}))
