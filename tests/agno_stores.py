"""A person's data in every store Agno writes outside its Postgres schemas, written through Agno's own
classes the way an agent writes it: vector databases (LanceDB, Qdrant's local mode, Chroma's
persistent client), session databases (SqliteDb, MySQLDb, RedisDb), AgentFS's local files and
AgentOS's run event streams. Embeddings come from a fixed fake embedder (no model, no network)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agno.knowledge.document import Document
from agno.knowledge.embedder.base import Embedder


@dataclass
class TinyEmbedder(Embedder):
    """Three numbers per text: enough for every vector store to take the chunk."""

    dimensions: int | None = 3

    def get_embedding(self, text: str) -> list[float]:
        return [float(len(text) % 97), 1.0, 0.5]

    def get_embedding_and_usage(self, text: str) -> tuple[list[float], None]:
        return self.get_embedding(text), None


def chunks(vdb: Any, owners: dict[str | None, int], tag: str = "kb") -> None:
    """``n`` chunks of each owner (None: shared), inserted as Agno's knowledge inserts them."""
    for user, n in owners.items():
        docs = [
            Document(content=f"{tag} chunk {i} of {user or 'everyone'}", name=f"doc-{user}", content_id=f"c-{user}")
            for i in range(n)
        ]
        vdb.insert(f"hash-{tag}-{user}", docs, user_id=user)


def seed_lancedb(folder: Path, owners: dict[str | None, int], table: str = "knowledge") -> None:
    from agno.vectordb.lancedb import LanceDb

    chunks(LanceDb(uri=str(folder), table_name=table, embedder=TinyEmbedder()), owners)


def seed_qdrant(folder: Path, owners: dict[str | None, int], collection: str = "knowledge") -> None:
    from agno.vectordb.qdrant import Qdrant

    vdb = Qdrant(collection=collection, path=str(folder), embedder=TinyEmbedder())
    vdb.create()
    chunks(vdb, owners)
    vdb.close()  # local mode locks its folder


def seed_chroma(folder: Path, owners: dict[str | None, int], collection: str = "knowledge") -> None:
    from agno.vectordb.chroma import ChromaDb
    from chromadb.config import Settings

    vdb = ChromaDb(
        collection=collection,
        path=str(folder),
        persistent_client=True,
        embedder=TinyEmbedder(),
        settings=Settings(anonymized_telemetry=False),  # one Settings per path and process
    )
    vdb.create()
    chunks(vdb, owners)


def seed_sessions(db: Any, label: str, users: list[str], runs: int = 2) -> list[str]:
    """A session with ``runs`` runs and a memory per user, through Agno's sync API; the run ids."""
    from agno.db.schemas.memory import UserMemory
    from agno.run.agent import RunOutput
    from agno.run.base import RunStatus
    from agno.session import AgentSession

    at = int(time.time()) - 100
    run_ids = []
    for user in users:
        sid = f"{label}-{user}-s0"
        session = AgentSession(
            session_id=sid, agent_id="agent1", user_id=user, session_data={"session_name": f"chat of {user}"},
            created_at=at, updated_at=at,
        )  # fmt: skip
        assert db.upsert_session(session) is not None
        for r in range(runs):
            run = RunOutput(
                run_id=f"{sid}-r{r}", agent_id="agent1", session_id=sid, user_id=user,
                content=f"answer {r} for {user}", status=RunStatus.completed, created_at=at,
            )  # fmt: skip
            db.upsert_run(run, session_id=sid, user_id=user, run_index=r)
            run_ids.append(run.run_id)
        db.upsert_user_memory(
            UserMemory(memory=f"{user} likes tea", memory_id=f"{label}-{user}-m0", user_id=user, agent_id="agent1")
        )
    return run_ids


def seed_sqlite_files(db: Any, users: list[str]) -> None:
    """AgentFS in the SqliteDb file: each user's partition, and an offloaded tool result of theirs."""
    from agno.fs import FileSystem

    notes = FileSystem(db=db, namespace="notes")
    for i, user in enumerate(users):
        notes.resolve(user_id=user).write("todo.md", f"notes of {user}")
        db.upsert_tool_result(
            {
                "result_id": f"tr-{user}", "namespace": f"tool-results/s{i}", "path": "r.txt",
                "session_id": f"sq-{user}-s0", "run_id": f"sq-{user}-s0-r0", "tool_call_id": "c1", "tool_name": "t",
                "args_hash": "h", "content_type": "text/plain", "size_bytes": 3, "line_count": 1, "preview": "p",
                "user_id": user, "created_at": 1, "expires_at": None,
            }
        )  # fmt: skip
        FileSystem(db=db, namespace=f"tool-results/s{i}").write("r.txt", f"payload of {user}")
        FileSystem(db=db, namespace="radar/{user_id}").resolve(user_id=user).write("a.md", f"radar of {user}")


def seed_agentfs(root: Path, users: list[str], template: str = "radar/{user_id}") -> None:
    """AgentFS's local files: a user-scoped namespace and a templated one, per user."""
    from agno.fs import FileSystem
    from agno.fs.local import LocalFileSystem

    backend = LocalFileSystem(root)
    for user in users:
        FileSystem(backend=backend, namespace="notes", user_scoped=True).resolve(user_id=user).write(
            "todo.md", f"notes of {user}"
        )
        FileSystem(backend=backend, namespace=template).resolve(user_id=user).write("a.md", f"radar of {user}")
    FileSystem(backend=backend, namespace="notes").write("shared.md", "for everyone")


def seed_event_streams(redis_url: str, run_ids: list[str], prefix: str = "agno:os:events:") -> None:
    """AgentOS's event stream of each run, as a running agent leaves it."""
    import redis.asyncio as aioredis
    from agno.os.event_streams import RedisEventStream
    from agno.run.agent import RunContentEvent
    from agno.run.base import RunStatus

    async def go() -> None:
        client = aioredis.from_url(redis_url)
        stream = RedisEventStream(client, key_prefix=prefix)
        for run_id in run_ids:
            await stream.register_run(run_id)
            await stream.set_run_status(run_id, RunStatus.running)
            await stream.add_event(run_id, RunContentEvent(run_id=run_id, content=f"streamed {run_id}"))
            await stream.complete_run(run_id, RunStatus.completed)
        await stream.aclose()
        await client.aclose()

    asyncio.run(go())


@dataclass
class EveryStore:
    """Every store above, seeded for ``users``, and the deployment file that declares them."""

    config: Path
    run_ids: dict[str, list[str]]  # per user: the runs whose event streams AgentOS keeps
    folders: dict[str, Path]
    prefix: str  # RedisDb's db_prefix
    mysql_db: str


def every_store(tmp: Path, mysql: tuple[str, str], redis_url: str, users: list[str]) -> EveryStore:
    """LanceDB, Qdrant and Chroma with 3 chunks per user and 1 shared; a SqliteDb file (sessions,
    runs, memories, AgentFS partitions, tool results), a MySQLDb database and a RedisDb prefix with
    a session of 2 runs and a memory per user; AgentFS local files; an event stream per run of the
    RedisDb sessions. All through Agno's classes."""
    from agno.db.mysql import MySQLDb
    from agno.db.redis import RedisDb
    from agno.db.sqlite import SqliteDb

    tag = uuid.uuid4().hex[:12]  # unique per run: tmp folder names repeat, and the Redis is shared
    folders = {k: tmp / k for k in ("lancedb", "qdrant", "chroma", "agentfs")}
    for f in folders.values():
        f.mkdir()
    owners: dict[str | None, int] = {u: 3 for u in users} | {None: 1}
    seed_lancedb(folders["lancedb"], owners)
    seed_qdrant(folders["qdrant"], owners)
    seed_chroma(folders["chroma"], owners)
    sqlite = tmp / "agno.db"
    sdb = SqliteDb(db_file=str(sqlite))
    seed_sessions(sdb, "sq", users)
    seed_sqlite_files(sdb, users)
    mysql_url, mysql_db = mysql
    seed_sessions(MySQLDb(db_url=mysql_url, db_schema=mysql_db), "my", users)
    prefix = f"agno_{tag}"
    runs = seed_sessions(RedisDb(db_url=redis_url, db_prefix=prefix), "rd", users)
    seed_agentfs(folders["agentfs"], users)
    events = f"{prefix}:os:events:"
    seed_event_streams(redis_url, runs, prefix=events)
    config = tmp / "deployment.toml"
    config.write_text(
        f"""
[[stores]]
kind = "lancedb"
uri = "{folders["lancedb"]}"
table_name = "knowledge"

[[stores]]
kind = "qdrant"
path = "{folders["qdrant"]}"
collection = "knowledge"

[[stores]]
kind = "chroma"
path = "{folders["chroma"]}"
collection = "knowledge"

[[stores]]
kind = "sqlite"
db_file = "{sqlite}"
templates = ["radar/{{user_id}}"]

[[stores]]
kind = "mysql"
db_url = {{ env = "SCT_TEST_MYSQL_URL" }}
db_schema = "{mysql_db}"

[[stores]]
kind = "redis"
db_url = "{redis_url}"
db_prefix = "{prefix}"

[[stores]]
kind = "agentfs"
root = "{folders["agentfs"]}"
templates = ["radar/{{user_id}}"]

[[stores]]
kind = "agentos_events"
redis_url = "{redis_url}"
key_prefix = "{events}"
""",
        encoding="utf-8",
    )
    by_user = {u: [r for r in runs if f"-{u}-s0-" in r] for u in users}
    return EveryStore(config, by_user, folders, prefix, mysql_db)
