"""Qdrant (``agno.vectordb.qdrant.Qdrant``): a point's owner is its top-level ``user_id`` payload
key (null: shared). Counted exactly and deleted with a payload filter. Local mode (``path``) is
tested here: it locks its folder against a second client (an agent holding it makes the store
unreachable until it lets go), loads every point into memory and filters without payload indexes.
A Qdrant server (``url``, ``host``) speaks the same client API and is not tested here."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from sessionctl.backends.base import Backend, Person, chunks, needs
from sessionctl.errors import StoreMisdeclared, StoreUnreachable

PAGE = 256


class QdrantBackend(Backend):
    def _open(self) -> None:
        qdrant = needs("qdrant_client", self.label, "qdrant")
        self.models = needs("qdrant_client.models", self.label, "qdrant")
        d = self.decl
        if d.path is not None:
            if not (Path(d.path) / "meta.json").is_file():  # the client would create an empty store there
                raise StoreMisdeclared(f"{self.label}: no Qdrant local storage at {d.path} (sessionctl creates none)")
            kwargs: dict[str, Any] = {"path": d.path}
        else:
            kwargs = {"url": d.url, "host": d.host, "port": d.port, "https": d.https, "prefix": d.prefix}
            kwargs |= {"timeout": d.timeout, "api_key": d.api_key.get_secret_value() if d.api_key else None}
        try:
            self.client = qdrant.QdrantClient(**{k: v for k, v in kwargs.items() if v is not None})
            exists = self.client.collection_exists(d.collection)
        except RuntimeError as exc:
            if "already accessed" in str(exc):
                raise StoreUnreachable(
                    f"{self.label}: the Qdrant folder {d.path} is held by another client (local mode allows one):"
                    " close it (the agent's Qdrant.close()) or serve the collection from a Qdrant server"
                ) from None
            raise StoreUnreachable(f"{self.label}: Qdrant did not answer ({type(exc).__name__})") from None
        except Exception as exc:  # the client raises httpx/grpc errors of its own
            raise StoreUnreachable(f"{self.label}: Qdrant did not answer ({type(exc).__name__})") from None
        if not exists:
            raise StoreMisdeclared(f"{self.label}: no collection {d.collection!r} there (sessionctl creates none)")

    def _close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    def _filter(self, users: list[str]) -> Any:
        m = self.models
        match = m.MatchValue(value=users[0]) if len(users) == 1 else m.MatchAny(any=users)
        return m.Filter(must=[m.FieldCondition(key="user_id", match=match)])

    def _count(self, person: Person) -> int:
        return sum(
            int(self.client.count(self.decl.collection, count_filter=self._filter(part), exact=True).count)
            for part in chunks(person.users)
        )

    def _erase(self, person: Person) -> int:
        found = self._count(person)
        for part in chunks(person.users) if found else ():
            self.client.delete(
                self.decl.collection, points_selector=self.models.FilterSelector(filter=self._filter(part)), wait=True
            )
        return found

    def _scroll(self, flt: Any, payload: Any = True) -> list[Any]:
        out: list[Any] = []
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.decl.collection, scroll_filter=flt, limit=PAGE, offset=offset, with_payload=payload,
                with_vectors=False,
            )  # fmt: skip
            out.extend(points)
            if offset is None:
                return out

    def _rows(self, user: str) -> list[dict[str, Any]]:
        return [{"id": str(p.id), "chunk": p.payload} for p in self._scroll(self._filter([user]))]

    def _owners(self) -> list[tuple[str, int]]:
        points = self._scroll(None, self.models.PayloadSelectorInclude(include=["user_id"]))
        owners = Counter((p.payload or {}).get("user_id") for p in points)
        return [(str(k), n) for k, n in owners.items() if k is not None]
