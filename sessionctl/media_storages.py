"""Offloaded media: the objects (images, audio, video, files) Agno's ``MediaStorage`` keeps for runs,
deleted when the sessions that uploaded them are erased.

Agno keeps only a reference in the run (``media_reference``: storage key, backend, bucket, region,
and the session that uploaded it). Once the session rows are gone nothing points at the object any
more, so sessionctl reads the references in the same statement that deletes the rows and, in the
same transaction, notes each key in ``sessionctl.media_pending`` of that database. After the
commit the objects are deleted through Agno's own storage classes (built from
``SESSIONCTL_MEDIA_STORAGES``) and their pending rows removed; a key that could not be deleted
stays pending and is retried — by this job before it reports success (its receipt is written only
once its keys are gone), and by its next try. References to a storage sessionctl was not given
roll the batch back (:class:`~sessionctl.errors.MediaStorageNotConfigured`): the rows stay, so the
keys are never lost.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from sessionctl import metrics
from sessionctl.errors import InvalidRequest, MediaStorageNotConfigured
from sessionctl.logs import get_logger
from sessionctl.privacy import user_hmac
from sessionctl.store import media_refs as media_sql

log = get_logger("sessionctl.media_storages")
DELETES_AT_ONCE = 8  # object deletes in flight per batch (each its own request to the storage)


@dataclass(frozen=True, slots=True)
class Storage:
    """One configured storage: its label (the spec without credentials) and Agno's object."""

    label: str
    agno: Any  # agno.media.storage.MediaStorage (sync) or AsyncMediaStorage

    def key_of_session(self, key: str, session_id: str) -> bool:
        """Is ``key`` one this storage minted for an object of ``session_id``, by Agno's key layout
        (``agno/utils/media_offload.py``: ``<prefix><session id[:120]>-<media id>-<hash><ext>``,
        sanitized)? A reference planted in a run (run JSON is user-controlled) naming another
        session's key is not."""
        prefix = str(getattr(self.agno, "prefix", "") or "")
        return key.startswith(prefix + session_key_prefix(session_id))

    def owns(self, ref: dict[str, Any]) -> bool:
        """Agno's own rule: the backend that minted this reference (backend, bucket, region)."""
        from agno.media.reference import MediaReference
        from agno.utils.media_offload import reference_matches_storage

        try:
            reference = MediaReference.from_dict(ref)
        except Exception:  # not a reference Agno wrote
            return False
        return bool(reference_matches_storage(reference, self.agno))

    async def delete(self, key: str) -> bool:
        """True when the object is gone (Agno's ``delete`` contract: idempotent)."""
        from agno.media.storage.base import AsyncMediaStorage

        try:
            if isinstance(self.agno, AsyncMediaStorage):
                return bool(await self.agno.delete(key))
            return bool(await asyncio.to_thread(self.agno.delete, key))
        except Exception as exc:  # a storage error is a failed delete: the key stays pending
            log.warning("media.delete_failed", storage=self.label, error_type=type(exc).__name__)
            return False


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
SESSION_KEY_CHARS = 120  # agno.utils.media_offload._MAX_SESSION_KEY_CHARS


def session_key_prefix(session_id: str) -> str:
    """How every storage key Agno 3.1.10 mints for an object of this session begins: the session id
    (its first 120 characters) and ``-``, sanitized as ``agno.media.storage.utils`` does (every
    character outside ``[A-Za-z0-9._-]`` an underscore, leading dots and underscores dropped)."""
    return _UNSAFE.sub("_", session_id[:SESSION_KEY_CHARS] + "-").lstrip("._")


def parse_storages(spec: str) -> list[Storage]:
    """``SESSIONCTL_MEDIA_STORAGES``: comma-separated ``local:///dir``, ``s3://bucket?region=…&endpoint_url=…``,
    ``gcs://bucket?project=…`` — each built with Agno's own class."""
    out = []
    for item in (part.strip() for part in spec.split(",")):
        if item:
            out.append(_storage(item))
    return out


def _storage(item: str) -> Storage:
    parts = urlsplit(item)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    scheme = parts.scheme.lower()
    try:
        if scheme == "local":
            from agno.media.storage import LocalMediaStorage

            path = unquote(parts.path)
            if not path.startswith("/"):
                raise InvalidRequest(f"media storage {item!r}: a local storage needs an absolute path (local:///dir)")
            return Storage(f"local://{path}", LocalMediaStorage(base_path=path))
        if scheme == "s3":
            from agno.media.storage import S3MediaStorage

            bucket = parts.netloc
            storage = S3MediaStorage(bucket, region=query.get("region"), endpoint_url=query.get("endpoint_url"))
            return Storage(f"s3://{bucket}", storage)
        if scheme == "gcs":
            from agno.media.storage import GCSMediaStorage

            bucket = parts.netloc
            return Storage(f"gcs://{bucket}", GCSMediaStorage(bucket, project=query.get("project")))
    except ImportError as exc:
        raise InvalidRequest(f"media storage {scheme}://: {exc.name} is not installed (pip install it)") from None
    raise InvalidRequest(f"media storage {item!r}: expected local:///dir, s3://bucket or gcs://bucket")


@dataclass(slots=True)
class MediaSink:
    """One job's media: keys noted inside each delete's transaction, deleted after its commit."""

    storages: list[Storage]
    hash_key: bytes
    job_id: str
    deleted: int = 0
    left: int = 0  # referenced objects not deleted: not the erased session's own (another's key, or shared)
    # (pending id, storage, key) noted by the open transaction of each connection (walkers delete
    # on several connections at once: one's commit must never release another's keys)
    _noted: dict[int, list[tuple[int, str, str]]] = field(default_factory=dict)

    def storage(self, label: str) -> Storage | None:
        return next((s for s in self.storages if s.label == label), None)

    async def collect(self, conn: asyncpg.Connection, refs: list[dict[str, Any]], shared: set[str]) -> None:
        """Inside the delete's transaction: note every key the deleted sessions uploaded, or raise
        (rolling the batch back) when one is in a storage sessionctl was not given. A key is the
        deleted session's only when Agno's key layout names that session *and* no run of another
        session references it (``shared``; ids like ``s1`` and ``s1-x`` share a prefix): any other
        is left in its storage, and counted in ``left``."""
        rows: dict[tuple[str, str], tuple[str, str, str, str]] = {}
        unknown: set[str] = set()
        foreign: set[str] = set()
        for r in refs:
            ref = r["ref"]
            owner = next((s for s in self.storages if s.owns(ref)), None)
            if owner is None:
                unknown.add(f"{ref.get('storage_backend')}://{ref.get('bucket') or ''}")
                continue
            key = str(ref["storage_key"])
            if key in shared or not owner.key_of_session(key, str(r["s"])):
                foreign.add(key)
                continue
            # one object is often referenced several times (the input image and the message carrying it)
            rows[(owner.label, key)] = (owner.label, key, user_hmac(self.hash_key, str(r["u"] or "")), r["s"])
        if unknown:
            raise MediaStorageNotConfigured(
                f"the sessions to erase point at offloaded media in {', '.join(sorted(unknown))}, which sessionctl was"
                " not given: add it to SESSIONCTL_MEDIA_STORAGES; this batch was rolled back, nothing of it deleted"
            )
        noted = await media_sql.add_pending(conn, self.job_id, list(rows.values()))
        self._noted.setdefault(id(conn), []).extend(noted)
        if foreign:
            self.left += len(foreign)
            log.warning("media.left", job_id=self.job_id, objects=len(foreign), reason="not the erased session's own")

    async def committed(self, conn: asyncpg.Connection) -> None:
        """After the commit: delete the objects this connection's transaction noted; what fails
        stays pending."""
        noted = self._noted.pop(id(conn), [])
        if noted:
            await self._delete(conn, noted)

    def rolled_back(self, conn: asyncpg.Connection) -> None:
        self._noted.pop(id(conn), None)

    async def retry_pending(self, conn: asyncpg.Connection, hmacs: list[str]) -> int:
        """The keys still pending in this database that this job noted (in this try or an earlier
        one) or that any job noted for these users (a failed erasure asked again): try them again;
        how many remain."""
        if not await media_sql.exists(conn):
            return 0
        pending = await media_sql.pending_of(conn, self.job_id, hmacs)
        if pending:
            await self._delete(conn, pending)
        return await media_sql.count_of(conn, self.job_id, hmacs)

    async def retry_stale(self, conn: asyncpg.Connection, older_than_s: int, limit: int = 10_000) -> int:
        """Keys any job left pending this long (a job lost with Redis, say): how many are gone now."""
        before = self.deleted
        stale = await media_sql.stale_pending(conn, older_than_s, limit)
        if stale:
            await self._delete(conn, stale)
        return self.deleted - before

    async def _delete(self, conn: asyncpg.Connection, items: list[tuple[int, str, str]]) -> None:
        """Delete the objects (up to ``DELETES_AT_ONCE`` requests in flight); forget the keys of
        those gone, count an attempt on the others."""
        limit = asyncio.Semaphore(DELETES_AT_ONCE)

        async def one(label: str, key: str) -> bool:
            storage = self.storage(label)
            if storage is None:  # noted under a storage this worker is no longer given
                return False
            async with limit:
                return await storage.delete(key)

        done = await asyncio.gather(*(one(label, key) for _, label, key in items))
        gone = [pid for (pid, _, _), ok in zip(items, done, strict=True) if ok]
        failed = [pid for (pid, _, _), ok in zip(items, done, strict=True) if not ok]
        await media_sql.settle(conn, gone, failed)
        self.deleted += len(gone)
        metrics.MEDIA_DELETED.inc(len(gone))
        metrics.MEDIA_PENDING.inc(len(failed))
        if failed:
            log.warning("media.pending", job_id=self.job_id, failed=len(failed), deleted=len(gone))
