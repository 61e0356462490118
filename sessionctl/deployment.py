"""The deployment file (``SESSIONCTL_CONFIG``, TOML): the stores outside Agno's Postgres schemas
that hold a person's data — Agno's vector databases, its other session databases, AgentFS's local
files, AgentOS's event streams — one ``[[stores]]`` table each, with ``kind`` from :data:`KINDS`
and the keyword arguments of Agno's own class for it, as the agent's code writes them::

    [[stores]]
    kind = "lancedb"                 # agno.vectordb.lancedb.LanceDb(uri=…, table_name=…)
    uri = "/data/lancedb"
    table_name = "knowledge"

    [[stores]]
    kind = "mysql"                   # agno.db.mysql.MySQLDb(db_url=…, db_schema=…)
    db_url = { env = "AGNO_MYSQL_URL" }

A secret is an environment reference (``{ env = "VAR" }``), read when the file is loaded and never
logged. A kind sessionctl cannot erase (Pinecone, Firestore…) is refused by name: a declared store
is never skipped."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError

from sessionctl.errors import StoreMisdeclared

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TABLE_KWARG = re.compile(r"[a-z_]+_table")

# Agno stores sessionctl cannot erase yet: declaring one is an error that says so, never a skip.
UNSUPPORTED: dict[str, str] = {
    k: "no client of it runs here to test against"
    for k in (
        "pinecone",
        "weaviate",
        "milvus",
        "mongodb",
        "firestore",
        "dynamodb",
        "gcs_json",
        "json",
        "clickhouse",
        "singlestore",
        "surrealdb",
        "couchbase",
        "cassandra",
        "elasticsearch",
        "opensearch",
        "upstash",
        "lightrag",
        "valkey",
    )
} | {
    "redis_vectors": "Agno's RedisDb vector store needs RediSearch, which this machine's Redis lacks",
    "in_memory": "Agno's InMemoryDb keeps nothing after its process ends: nothing to erase from outside it",
}


class _Store(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    extra_name: ClassVar[str | None] = None  # the sessionctl extra its client library comes with

    kind: str
    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:@/-]+$")

    @property
    def label(self) -> str:
        """How receipts, results and ``verify`` name the store: ``<kind>:<name>``."""
        return f"{self.kind}:{self.name or self.default_name()}"

    def default_name(self) -> str:
        raise NotImplementedError


class LanceDbStore(_Store):
    """``agno.vectordb.lancedb.LanceDb``: a chunk's owner is its ``user_id`` column."""

    extra_name: ClassVar[str | None] = "lancedb"
    kind: Literal["lancedb"]
    uri: str
    table_name: str = Field(min_length=1)
    api_key: SecretStr | None = None

    def default_name(self) -> str:
        return self.table_name


class QdrantStore(_Store):
    """``agno.vectordb.qdrant.Qdrant``: a point's owner is its ``user_id`` payload key."""

    extra_name: ClassVar[str | None] = "qdrant"
    kind: Literal["qdrant"]
    collection: str = Field(min_length=1)
    path: str | None = None  # local mode (a folder): tested here; a server (url, host) speaks the same API
    url: str | None = None
    host: str | None = None
    port: int = 6333
    https: bool | None = None
    api_key: SecretStr | None = None
    prefix: str | None = None
    timeout: int | None = None

    def default_name(self) -> str:
        return self.collection


class ChromaStore(_Store):
    """``agno.vectordb.chroma.ChromaDb(persistent_client=True)``: a person's chunks are a collection
    of their own, named by a hash of their id (Agno keeps no id)."""

    extra_name: ClassVar[str | None] = "chroma"
    kind: Literal["chroma"]
    collection: str = Field(min_length=3)
    path: str

    def default_name(self) -> str:
        return self.collection


class _SqlStore(_Store):
    """Agno's SQL session databases: the table names of Agno's class, where the agent set its own
    (``session_table``, ``memory_table``…)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def tables(self) -> dict[str, str]:
        """The ``*_table`` keyword arguments given (Agno's defaults otherwise)."""
        extra = self.model_extra or {}
        bad = [k for k in extra if not _TABLE_KWARG.fullmatch(k) or not isinstance(extra[k], str)]
        if bad:
            raise StoreMisdeclared(f"unknown key(s) {', '.join(sorted(bad))} (Agno's *_table arguments only)")
        return {k: str(v) for k, v in extra.items()}


class SqliteStore(_SqlStore):
    """``agno.db.sqlite.SqliteDb(db_file=… | db_url=…)``."""

    kind: Literal["sqlite"]
    db_file: str | None = None
    db_url: str | None = None
    templates: list[str] = Field(default_factory=list)  # AgentFS namespaces with {user_id} in this file

    def default_name(self) -> str:
        return Path(self.file()).name

    def file(self) -> str:
        if (self.db_file is None) == (self.db_url is None):
            raise StoreMisdeclared("a sqlite store takes db_file or db_url (sqlite:///path), one of them")
        if self.db_file is not None:
            return self.db_file
        url = str(self.db_url)
        if not url.startswith("sqlite:///"):
            raise StoreMisdeclared(f"a sqlite store's db_url must be sqlite:///path, not {url.split(':', 1)[0]}:…")
        return url.removeprefix("sqlite:///")


class MySqlStore(_SqlStore):
    """``agno.db.mysql.MySQLDb(db_url=…, db_schema=…)``: its tables are in the MySQL database
    ``db_schema`` (``ai`` by default), not the one the URL names."""

    extra_name: ClassVar[str | None] = "mysql"
    kind: Literal["mysql"]
    db_url: SecretStr
    db_schema: str = "ai"

    def default_name(self) -> str:
        return self.db_schema


class RedisSessionStore(_Store):
    """``agno.db.redis.RedisDb(db_url=…, db_prefix=…)``: sessions, runs, memories as JSON strings
    under ``<prefix>:<table>:<id>``, found through its ``index:user_id`` sets."""

    kind: Literal["redis"]
    db_url: SecretStr
    db_prefix: str = "agno"

    def default_name(self) -> str:
        return self.db_prefix


class AgentFsStore(_Store):
    """AgentFS's ``LocalFileSystem(root)``: a person's files are a directory per namespace
    (``<namespace>%%<encoded user id>``); ``templates``: namespaces with ``{user_id}`` in them."""

    kind: Literal["agentfs"]
    root: str
    templates: list[str] = Field(default_factory=list)

    def default_name(self) -> str:
        return Path(self.root).name or self.root


class EventStreamStore(_Store):
    """AgentOS's run event streams in Redis (``RedisEventStream``): keyed by run, found through the
    person's run ids."""

    kind: Literal["agentos_events"]
    redis_url: SecretStr
    key_prefix: str = "agno:os:events:"

    def default_name(self) -> str:
        return self.key_prefix.rstrip(":")


StoreDecl = Annotated[
    LanceDbStore | QdrantStore | ChromaStore | SqliteStore | MySqlStore | RedisSessionStore | AgentFsStore
    | EventStreamStore,
    Field(discriminator="kind"),
]
KINDS: tuple[str, ...] = (
    "lancedb",
    "qdrant",
    "chroma",
    "sqlite",
    "mysql",
    "redis",
    "agentfs",
    "agentos_events",
)
_STORES = TypeAdapter(list[StoreDecl])


class Deployment(BaseModel):
    """What the deployment file declares."""

    stores: tuple[Any, ...] = ()  # StoreDecl each

    def labels(self) -> list[str]:
        return [s.label for s in self.stores]


def load(path: str | None) -> Deployment:
    """The deployment file at ``path`` (``None``: no file, no declared store), validated whole:
    every error names the store (its position, kind and name) and the key, never a value."""
    if not path:
        return Deployment()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise StoreMisdeclared(f"SESSIONCTL_CONFIG {path}: cannot read it ({why})") from None
    except tomllib.TOMLDecodeError as exc:
        raise StoreMisdeclared(f"SESSIONCTL_CONFIG {path}: not TOML ({exc})") from None
    unknown = sorted(set(data) - {"stores"})
    if unknown:
        raise StoreMisdeclared(f"SESSIONCTL_CONFIG {path}: unknown section(s) {', '.join(unknown)} (only [[stores]])")
    raw = data.get("stores", [])
    if not isinstance(raw, list) or not all(isinstance(s, dict) for s in raw):
        raise StoreMisdeclared(f"SESSIONCTL_CONFIG {path}: stores must be [[stores]] tables")
    stores = [_resolve(s, f"SESSIONCTL_CONFIG {path}: {_where(i, s)}") for i, s in enumerate(raw)]
    try:
        parsed = _STORES.validate_python(stores)
    except ValidationError as exc:
        raise StoreMisdeclared(f"SESSIONCTL_CONFIG {path}: {_first_problem(exc, raw)}") from None
    for i, s in enumerate(parsed):
        try:
            if isinstance(s, SqliteStore | MySqlStore):
                s.tables()
            if isinstance(s, SqliteStore):
                s.file()
        except StoreMisdeclared as exc:
            raise StoreMisdeclared(f"SESSIONCTL_CONFIG {path}: {_where(i, raw[i])}: {exc}") from None
    labels = [s.label for s in parsed]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise StoreMisdeclared(f"SESSIONCTL_CONFIG {path}: two stores are named {', '.join(twice)}: give each a name")
    return Deployment(stores=tuple(parsed))


def _where(i: int, store: dict[str, Any]) -> str:
    kind, name = store.get("kind"), store.get("name")
    return f"stores[{i}]" + (f" ({kind}{' ' + str(name) if name else ''})" if isinstance(kind, str) else "")


def _resolve(store: dict[str, Any], where: str) -> dict[str, Any]:
    """The store's table with every ``{ env = "VAR" }`` replaced by the variable's value; a kind
    that is not supported refused by name."""
    kind = store.get("kind")
    if not isinstance(kind, str):
        raise StoreMisdeclared(f"{where}: no kind (one of {', '.join(KINDS)})")
    if kind in UNSUPPORTED:
        raise StoreMisdeclared(
            f"{where}: kind {kind!r} is not supported by this sessionctl ({UNSUPPORTED[kind]}): its data would"
            " stay; erase it with its own tools and remove it from the file, or ask for support"
        )
    if kind not in KINDS:
        raise StoreMisdeclared(f"{where}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    out: dict[str, Any] = {}
    for key, value in store.items():
        if isinstance(value, dict):
            if set(value) != {"env"} or not isinstance(value["env"], str) or not _ENV_NAME.fullmatch(value["env"]):
                raise StoreMisdeclared(f'{where}: {key} must be a value or {{ env = "VARIABLE" }}')
            if value["env"] not in os.environ:
                raise StoreMisdeclared(f"{where}: {key} names the environment variable {value['env']}, not set")
            value = os.environ[value["env"]]
        out[key] = value
    return out


def _first_problem(exc: ValidationError, raw: list[dict[str, Any]]) -> str:
    """One line about the first problem: the store and the key, never the value (a secret)."""
    err = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    loc = list(err.get("loc", ()))
    index = loc[0] if loc and isinstance(loc[0], int) else None
    where = _where(index, raw[index]) if index is not None and index < len(raw) else "stores"
    keys = [str(x) for x in loc[1:] if not isinstance(x, int) and str(x) not in KINDS]
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (not a keyword argument sessionctl reads for this kind)"
    return f"{where}: {'.'.join(keys) or 'store'}: {msg}"
