"""The deployment file: every store validated at start, every problem one line naming the store and
the key (never a value), unsupported kinds refused by name, secrets from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionctl import deployment
from sessionctl.backends import base
from sessionctl.errors import ExtraMissing, StoreMisdeclared


def _load(tmp_path: Path, text: str) -> deployment.Deployment:
    f = tmp_path / "deployment.toml"
    f.write_text(text, encoding="utf-8")
    return deployment.load(str(f))


def test_every_kind_loads_with_agnos_own_keyword_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_URL", "mysql+pymysql://u:s3cret@db/agno")
    found = _load(
        tmp_path,
        """
[[stores]]
kind = "lancedb"
uri = "/data/lancedb"
table_name = "knowledge"
[[stores]]
kind = "qdrant"
path = "/data/qdrant"
collection = "kb"
[[stores]]
kind = "chroma"
path = "/data/chroma"
collection = "kb-eu"
[[stores]]
kind = "sqlite"
db_file = "/data/agno.db"
memory_table = "mems"
[[stores]]
kind = "mysql"
db_url = { env = "MY_URL" }
[[stores]]
kind = "redis"
name = "sessions-eu"
db_url = "redis://r:6379/2"
[[stores]]
kind = "agentfs"
root = "/data/fs"
templates = ["radar/{user_id}"]
[[stores]]
kind = "agentos_events"
redis_url = "redis://r:6379/3"
""",
    )
    assert found.labels() == [
        "lancedb:knowledge", "qdrant:kb", "chroma:kb-eu", "sqlite:agno.db", "mysql:ai", "redis:sessions-eu",
        "agentfs:fs", "agentos_events:agno:os:events",
    ]  # fmt: skip
    mysql = found.stores[4]
    assert mysql.db_url.get_secret_value().endswith("@db/agno") and "s3cret" not in repr(mysql)
    assert found.stores[3].tables() == {"memory_table": "mems"}
    assert deployment.load(None).stores == ()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[[stores]]\nkind = "pinecone"\n', "kind 'pinecone' is not supported by this sessionctl"),
        ('[[stores]]\nkind = "lancdb"\n', "unknown kind 'lancdb' (one of lancedb, qdrant"),
        ('[[stores]]\nuri = "x"\n', "stores[0]: no kind"),
        ('[[stores]]\nkind = "lancedb"\nuri = "/x"\n', "stores[0] (lancedb): table_name: Field required"),
        ('[[stores]]\nkind = "qdrant"\ncollection = "kb"\napi = 1\n', "stores[0] (qdrant): api: unknown key"),
        ('[[stores]]\nkind = "mysql"\ndb_url = { env = "NOT_SET_X" }\n', "names the environment variable NOT_SET_X"),
        ('[[stores]]\nkind = "mysql"\ndb_url = { file = "x" }\n', 'db_url must be a value or { env = "VARIABLE" }'),
        ('[[stores]]\nkind = "sqlite"\n', "a sqlite store takes db_file or db_url"),
        ('[[stores]]\nkind = "sqlite"\ndb_file = "/a"\nsessions = "x"\n', "unknown key(s) sessions"),
        ('[stores]\nkind = "sqlite"\n', "stores must be [[stores]] tables"),
        ("[[stores]\n", "not TOML"),
        ('[agents]\nx = 1\n', "unknown section(s) agents"),
        (
            '[[stores]]\nkind = "redis"\ndb_url = "redis://a"\n[[stores]]\nkind = "redis"\ndb_url = "redis://b"\n',
            "two stores are named redis:agno: give each a name",
        ),
    ],
)
def test_a_malformed_file_is_one_line_naming_the_store_and_the_key(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(StoreMisdeclared) as caught:
        _load(tmp_path, text)
    message = str(caught.value)
    assert says in message and "\n" not in message and message.startswith("SESSIONCTL_CONFIG "), message


def test_a_secret_never_shows_in_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_URL", "mysql+pymysql://u:s3cret@db/agno")
    with pytest.raises(StoreMisdeclared) as caught:
        _load(tmp_path, '[[stores]]\nkind = "mysql"\ndb_url = { env = "MY_URL" }\ndb_schema = 5\n')
    assert "s3cret" not in str(caught.value) and "db_schema" in str(caught.value)


def test_a_missing_client_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def missing(name: str, *a: object) -> object:
        if name == "lancedb":
            raise ImportError(name)
        return real(name, *a)

    monkeypatch.setattr(importlib, "import_module", missing)
    says = r'lancedb:kb: the lancedb store needs the lancedb package: pip install "sessionctl\[lancedb\]"'
    with pytest.raises(ExtraMissing, match=says):
        base.needs("lancedb", "lancedb:kb", "lancedb")


def test_chromas_collection_of_a_person_is_agnos_own(tmp_path: Path) -> None:
    from agno.vectordb.chroma import ChromaDb
    from chromadb.config import Settings

    from sessionctl.backends.chroma import collection_for
    from tests.agno_stores import TinyEmbedder

    for base_name in ("kb", "x" * 500):
        agno = ChromaDb(
            collection=base_name,
            path=str(tmp_path),
            persistent_client=True,
            embedder=TinyEmbedder(),
            settings=Settings(anonymized_telemetry=False),
        )
        for user in ("alice", "Ålice", "", "o'brien"):
            assert collection_for(base_name, user) == agno._collection_name_for(user)


def test_lancedb_filters_quote_any_id_exactly() -> None:
    from sessionctl.backends.lancedb import owner_filter

    assert owner_filter(["o'brien"]) == "user_id = 'o''brien'"
    assert owner_filter(["a", "b\\'c"]) == "user_id IN ('a', 'b\\''c')"


def test_a_template_must_name_the_person_and_nothing_else() -> None:
    from sessionctl.backends.agentfs import check_templates, resolved

    check_templates("agentfs:fs", ["radar/{user_id}"])
    for bad in ("radar", "{agent_id}/{user_id}"):
        with pytest.raises(StoreMisdeclared, match=r"must hold \{user_id\} and no other placeholder"):
            check_templates("agentfs:fs", [bad])
    assert resolved("radar/{user_id}", "Bob.Smith") == "radar/%42ob.%53mith"  # Agno's own encoding
    assert resolved("radar/{user_id}", "a/b") is None  # an id Agno refuses there: it never wrote one


def test_a_redis_scan_pattern_takes_an_id_literally() -> None:
    from sessionctl.backends.redis_stores import _glob_literal

    assert _glob_literal("agno:jobs:idem:u5:a*b?[:") == "agno:jobs:idem:u5:a\\*b\\?\\[:"
