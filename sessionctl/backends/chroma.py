"""Chroma (``agno.vectordb.chroma.ChromaDb`` with a persistent client): Agno keeps each owner's
chunks in a collection of their own, ``<collection>__<md5(user id)[:16]>``, and stores the id
nowhere. A person is found by computing that name from their id (Agno's rule, held equal to Agno's
own code by a test), erased by deleting their collection. The re-sweep cannot list owners here: a
hash names them, not an id (:attr:`ChromaBackend.exemption`).

Deleting a collection leaves its text in free pages of ``chroma.sqlite3`` and its vector segment
folder on disk (chroma-core/chroma#5259): the erasure removes the folders of the collection's
segments and compacts the file (``VACUUM``)."""

from __future__ import annotations

import re
import shutil
import sqlite3
from hashlib import md5
from pathlib import Path
from typing import Any

from sessionctl.backends.base import Backend, Person, needs
from sessionctl.errors import StoreMisdeclared, StoreUnreachable

MAX_NAME, SUFFIX = 512, 2 + 16  # Chroma's longest collection name; "__" + md5[:16]
_SEGMENT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # a segment's folder
PAGE = 1000


def collection_for(base: str, user_id: str) -> str:
    """The collection Agno keeps ``user_id``'s chunks in (``ChromaDb._collection_name_for``)."""
    if len(base) + SUFFIX > MAX_NAME:
        digest = md5(base.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]
        keep = MAX_NAME - SUFFIX - len(digest) - 1
        base = f"{base[:keep]}_{digest}"
    return f"{base}__{md5(user_id.encode('utf-8'), usedforsecurity=False).hexdigest()[:16]}"


class ChromaBackend(Backend):
    lists_owners = False
    exemption = (
        "Agno names a person's Chroma collection by an MD5 prefix of their id and keeps no id: the person is"
        " found from their id, but the re-sweep cannot list whose collections these are"
    )

    def _open(self) -> None:
        chromadb = needs("chromadb", self.label, "chroma")
        config = needs("chromadb.config", self.label, "chroma")
        self.errors = needs("chromadb.errors", self.label, "chroma")
        self.file = Path(self.decl.path) / "chroma.sqlite3"
        if not self.file.is_file():
            raise StoreMisdeclared(f"{self.label}: no Chroma database at {self.decl.path} (sessionctl creates none)")
        try:
            self.client = chromadb.PersistentClient(
                path=self.decl.path, settings=config.Settings(anonymized_telemetry=False)
            )
        except ValueError as exc:  # another client of this process holds the path with other settings
            raise StoreUnreachable(f"{self.label}: Chroma at {self.decl.path} refused a client ({exc})") from None
        if self._get(self.decl.collection) is None:
            raise StoreMisdeclared(
                f"{self.label}: collection {self.decl.collection!r} does not exist (sessionctl never creates one)"
            )

    def _close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None and hasattr(client, "close"):
            client.close()

    def _get(self, name: str) -> Any:
        try:
            return self.client.get_collection(name)
        except (self.errors.NotFoundError, ValueError):
            return None

    def _count(self, person: Person) -> int:
        found = (self._get(collection_for(self.decl.collection, u)) for u in person.users)
        return sum(int(c.count()) for c in found if c is not None)

    def _erase(self, person: Person) -> int:
        n = 0
        for user in person.users:
            name = collection_for(self.decl.collection, user)
            found = self._get(name)
            if found is not None:
                n += int(found.count())
                self.client.delete_collection(name)
        self._scrub(deleted=n > 0)  # on every try: one that failed after its delete left data on disk
        return n

    def _scrub(self, *, deleted: bool) -> None:
        """What Chroma leaves of deleted collections: the folders of segments no collection has any
        more (their vectors), and their text in ``chroma.sqlite3`` — in free pages, or in pages
        still in use — compacted away when this try deleted, or free pages remain from one before."""
        with sqlite3.connect(f"file:{self.file}?mode=ro", uri=True) as db:
            known = {str(r[0]) for r in db.execute("SELECT id FROM segments")}
            free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
        for entry in Path(self.decl.path).iterdir():
            if entry.is_dir() and _SEGMENT.fullmatch(entry.name) and entry.name not in known:
                shutil.rmtree(entry, ignore_errors=True)
        if deleted or free:
            with sqlite3.connect(self.file) as db:
                db.execute("VACUUM")

    def _rows(self, user: str) -> list[dict[str, Any]]:
        found = self._get(collection_for(self.decl.collection, user))
        out: list[dict[str, Any]] = []
        while found is not None:
            page = found.get(include=["documents", "metadatas"], limit=PAGE, offset=len(out))
            docs, metas = page["documents"] or [], page["metadatas"] or []
            out += [{"id": i, "document": d, "metadata": m} for i, d, m in zip(page["ids"], docs, metas, strict=False)]
            if len(page["ids"]) < PAGE:
                break
        return out
