"""LanceDB (``agno.vectordb.lancedb.LanceDb``): a chunk's owner is its ``user_id`` column (NULL:
shared). Counted and deleted with a predicate (LanceDB filters; no scan of the vectors). A delete
only marks rows deleted — they stay in the data files and in older versions of the table — so an
erasure then rewrites the files that held them and drops the old versions
(``materialize_deletions_threshold=0``: every fragment with a deleted row is rewritten)."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from sessionctl.backends.base import Backend, Person, chunks, needs
from sessionctl.errors import StoreMisdeclared, StoreUnreachable

_REMOTE = ("db://", "s3://", "s3+ddb://", "gs://", "az://", "memory://")


def literal(value: str) -> str:
    """A string literal of LanceDB's SQL filter: single quotes doubled, nothing else escaped
    (backslashes are literal; Agno quotes the same way)."""
    return "'" + value.replace("'", "''") + "'"


def owner_filter(users: list[str]) -> str:
    if len(users) == 1:
        return f"user_id = {literal(users[0])}"
    return f"user_id IN ({', '.join(literal(u) for u in users)})"


class LanceDbBackend(Backend):
    def _open(self) -> None:
        lancedb = needs("lancedb", self.label, "lancedb")
        uri = self.decl.uri
        if not uri.startswith(_REMOTE) and not Path(uri).is_dir():
            raise StoreMisdeclared(f"{self.label}: no LanceDB database at {uri} (sessionctl never creates one)")
        key = self.decl.api_key.get_secret_value() if self.decl.api_key else None
        try:
            self.db = lancedb.connect(uri, api_key=key) if key else lancedb.connect(uri)
            names = self._table_names()
        except (OSError, RuntimeError) as exc:
            raise StoreUnreachable(f"{self.label}: LanceDB at {uri} did not answer ({type(exc).__name__})") from None
        if self.decl.table_name not in names:
            raise StoreMisdeclared(
                f"{self.label}: table {self.decl.table_name!r} does not exist in {uri} (sessionctl never creates one)"
            )
        self.table = self.db.open_table(self.decl.table_name)
        if uri.startswith(_REMOTE):
            self.exemption = (
                "LanceDB on object storage or Cloud: the delete is what sessionctl does there; the rows leave the"
                " files when the table is compacted and its old versions cleaned up"
            )
        if "user_id" not in self.table.schema.names:
            raise StoreMisdeclared(
                f"{self.label}: table {self.decl.table_name!r} has no user_id column (written before Agno 3, every"
                " chunk shared): no chunk has an owner to erase by; re-ingest it with Agno 3, or remove the store"
            )

    def _table_names(self) -> set[str]:
        names: set[str] = set()
        token = None
        while True:  # list_tables pages (table_names() is deprecated and may stop early)
            page = self.db.list_tables(page_token=token) if token else self.db.list_tables()
            names.update(page.tables)
            token = getattr(page, "page_token", None)
            if not token:
                return names

    def _count(self, person: Person) -> int:
        return sum(int(self.table.count_rows(owner_filter(part))) for part in chunks(person.users))

    def _erase(self, person: Person) -> int:
        found = self._count(person)
        for part in chunks(person.users) if found else ():
            self.table.delete(owner_filter(part))
        if not self.decl.uri.startswith(_REMOTE):
            self._rewrite()  # on every try: one that failed after its delete left the rows in the files
        return found

    def _rewrite(self) -> None:
        """Rewrite the fragments that hold deleted rows, then drop every older version: before this
        the rows are still in the files (and a checkout of an old version reads them)."""
        needs("lance", self.label, "lancedb")  # pylance: the dataset's own compaction
        dataset = self.table.to_lance()
        committed = _data_files(dataset)
        if any(f.deletion_file() is not None for f in dataset.get_fragments()):
            dataset.optimize.compact_files(materialize_deletions_threshold=0.0)
        self.table.checkout_latest()  # a handle on an old version would keep its files
        with warnings.catch_warnings():  # "removes every version except the latest": what an erasure wants
            warnings.filterwarnings("ignore", message=r"optimize\(cleanup_older_than=0\)", category=UserWarning)
            self.table.optimize(cleanup_older_than=timedelta(0))
        # The cleanup keeps files it cannot tell from a writer's work in progress. The files some
        # committed version referred to are not that: those no version refers to any more go.
        live = _data_files(self.table.to_lance(), every_version=False)
        data = Path(self.decl.uri) / f"{self.decl.table_name}.lance" / "data"
        for name in committed - live:
            if "/" not in name and name.endswith(".lance"):
                (data / name).unlink(missing_ok=True)

    def _rows(self, user: str) -> list[dict[str, Any]]:
        found = (
            self.table.search().where(owner_filter([user])).select(["id", "payload", "user_id"]).limit(None).to_list()
        )
        return [{"id": r["id"], "chunk": _payload(r["payload"]), "user_id": r["user_id"]} for r in found]

    def _owners(self) -> list[tuple[str, int]]:
        owners = self.table.search().select(["user_id"]).limit(None).to_arrow()["user_id"].to_pylist()
        return [(str(k), n) for k, n in Counter(owners).items() if k is not None]


def _data_files(dataset: Any, every_version: bool = True) -> set[str]:
    """The data files the dataset's current version (or every version it keeps) refers to."""
    versions = [v["version"] for v in dataset.versions()] if every_version else [None]
    files: set[str] = set()
    for version in versions:
        ds = dataset if version is None else dataset.checkout_version(version)
        files |= {d.path for f in ds.get_fragments() for d in f.data_files()}
    return files


def _payload(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text
