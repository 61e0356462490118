"""Export files: where they may go, how they are written (atomically, 0600), and how they are read.

Record format ``sessionctl-export/1`` (JSON Lines, UTF-8, optionally gzip or zstd compressed,
written at exactly the requested name): one line per session, in ``created_at, session_id`` order
per agent::

    {"v": 1, "agent": "<agent id or schema>", "schema": "ag_…", "session": {<every column of
     agno_sessions as Agno stores it>, "runs": [<run dicts: agno_runs.run_data merged over any 2.x
     runs blob, in Agno's order>]}}

Beside it, ``<name>.manifest.json``: format, counts per agent and in total, time window, byte size
and sha256 of the file as written, the user as HMAC, job id, timestamps, and ``mac``: an HMAC of
all of that under the operator's key (:func:`sessionctl.privacy.manifest_mac`), checked by import
and by export-then-erase — an edited file or manifest does not verify.

A file is written to a hidden ``.<name>.<tag>.partial`` in the target directory (mode 0600),
flushed and fsynced, then *linked* to its final name (which fails if the name exists: nothing is
ever overwritten) — the manifest first, then the data — and the directory fsynced. A crash leaves at
most a ``.partial`` file, which the retried job replaces.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import hmac
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from sessionctl.errors import ExportMismatch, ExportWriteFailed, InvalidRequest, SessionctlError, StorageFull
from sessionctl.privacy import manifest_mac

FORMAT = "sessionctl-export/1"
FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
Compression = Literal["none", "gz", "zst"]
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def validate_name(name: str) -> str:
    """A plain file name inside the export directory: no path, no '..', no hidden or reserved name."""
    if not isinstance(name, str) or not name:
        raise InvalidRequest("export name is empty: pass --out NAME (a file name inside EXPORT_DIR)")
    if "/" in name or "\\" in name or name in (".", "..") or ".." in name:
        raise InvalidRequest("export name must be a plain file name inside EXPORT_DIR: no '/', no '..'")
    if not _NAME_RE.fullmatch(name):
        raise InvalidRequest(
            "export name may use letters, digits, '.', '_' and '-' (at most 200, not starting with '.')"
        )
    if name.endswith((MANIFEST_SUFFIX, ".partial")):
        raise InvalidRequest(f"export name must not end in {MANIFEST_SUFFIX} or .partial")
    return name


def target_paths(directory: Path, name: str) -> tuple[Path, Path]:
    """(data file, manifest) for ``name`` in ``directory``; refuses symlinks that would escape it."""
    validate_name(name)
    root = directory.resolve()
    data, manifest = root / name, root / (name + MANIFEST_SUFFIX)
    for p in (data, manifest):
        if p.is_symlink() or p.resolve().parent != root:
            raise InvalidRequest(f"export name {name!r} is a symlink or leaves EXPORT_DIR: refused")
    return data, manifest


def ensure_directory(directory: Path) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not directory.is_dir():
        raise InvalidRequest(f"EXPORT_DIR {directory} is not a directory")
    return directory.resolve()


class _Sink(io.RawIOBase):
    """Counts and hashes the bytes that reach the file (after compression)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.fh.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)


@dataclass(frozen=True, slots=True)
class Written:
    path: Path
    manifest_path: Path
    size: int
    sha256: str
    manifest: dict[str, Any]


class AtomicExport:
    """Write JSON lines to ``.<name>.<tag>.partial``; :meth:`commit` makes them ``name``."""

    def __init__(self, directory: Path, name: str, compression: Compression, tag: str) -> None:
        self.final, self.manifest_path = target_paths(directory, name)
        self.partial = self.final.with_name(f".{name}.{tag}.partial")
        self.partial_manifest = self.final.with_name(f".{name}.{tag}.manifest.partial")
        for p in (self.partial, self.partial_manifest):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()  # what an earlier, killed try of the same job left
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        self._fh = os.fdopen(fd, "wb", buffering=1 << 20)
        self._sink = _Sink(self._fh)
        self._stream: Any  # a writer of uncompressed bytes that ends in the sink
        if compression == "gz":
            self._stream = gzip.GzipFile(fileobj=self._sink, mode="wb", compresslevel=6, mtime=0)
        elif compression == "zst":
            import zstandard

            self._stream = zstandard.ZstdCompressor(level=3).stream_writer(self._sink, closefd=False)  # type: ignore[arg-type]
        else:
            self._stream = self._sink
        self._done = False

    def write_records(self, records: list[dict[str, Any]]) -> None:
        self.write_lines([dumps_line(record) for record in records])

    def write_lines(self, lines: list[bytes]) -> None:
        self._stream.write(b"".join(lines))

    def commit(self, manifest: dict[str, Any], key: bytes) -> Written:
        """Finish the file, then publish the manifest (authenticated with ``key``) and the data
        under their final names."""
        if self._stream is not self._sink:
            self._stream.close()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        manifest = {**manifest, "bytes": self._sink.size, "sha256": self._sink.sha.hexdigest()}
        manifest["mac"] = manifest_mac(key, manifest)
        fd = os.open(self.partial_manifest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as mf:
            mf.write(json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
            mf.flush()
            os.fsync(mf.fileno())
        try:
            os.link(self.partial_manifest, self.manifest_path)  # fails if it exists: never overwrite
            os.link(self.partial, self.final)
        except FileExistsError as exc:
            self.abort()
            raise InvalidRequest(
                f"export {self.final.name!r} already exists in EXPORT_DIR: choose another --out name"
            ) from exc
        for p in (self.partial, self.partial_manifest):
            p.unlink()
        _fsync_dir(self.final.parent)
        self._done = True
        return Written(self.final, self.manifest_path, self._sink.size, self._sink.sha.hexdigest(), manifest)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._fh.close()
        for p in (self.partial, self.partial_manifest):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dumps_line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str).encode() + b"\n"


def file_sha256(path: Path) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


@contextlib.contextmanager
def open_records(path: Path) -> Iterator[Iterator[dict[str, Any]]]:
    """The records of an export file, whatever its compression (read from its magic bytes)."""
    fh = path.open("rb")
    try:
        head = fh.read(4)
        fh.seek(0)
        stream: Any
        if head[:2] == _GZIP_MAGIC:
            stream = gzip.GzipFile(fileobj=fh, mode="rb")
        elif head == _ZSTD_MAGIC:
            import zstandard

            stream = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(fh))
        else:
            stream = fh
        yield (json.loads(line) for line in stream if line.strip())
    finally:
        fh.close()


def read_manifest(path: Path) -> dict[str, Any] | None:
    mpath = path.with_name(path.name + MANIFEST_SUFFIX)
    if not mpath.exists():
        return None
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ExportMismatch(f"{mpath.name} is not a manifest (not JSON): nothing done") from None
    if not isinstance(data, dict):
        raise ExportMismatch(f"{mpath.name} is not a manifest (not a JSON object): nothing done")
    return data


def check_manifest(key: bytes, manifest: dict[str, Any], name: str) -> None:
    """The manifest was written by sessionctl under this key, and not changed since."""
    mac = manifest.get("mac")
    if not isinstance(mac, str):
        raise ExportMismatch(
            f"{name}: its manifest is not authenticated (no mac: written by an older sessionctl, or edited);"
            " nothing done — import it with --no-verify only if you trust the file"
        )
    if not hmac.compare_digest(mac, manifest_mac(key, manifest)):
        raise ExportMismatch(
            f"{name}: its manifest does not authenticate under SESSIONCTL_HASH_KEY (edited, or written under"
            " another key); nothing done"
        )


def verify_file(key: bytes, path: Path, manifest: dict[str, Any]) -> None:
    """The file is the one the authenticated manifest describes (size and sha256)."""
    check_manifest(key, manifest, path.name)
    sha, size = file_sha256(path)
    if sha != manifest.get("sha256") or size != manifest.get("bytes"):
        raise ExportMismatch(f"{path.name}: its checksum or size does not match its manifest (changed after writing)")


def storage_error(exc: OSError, directory: Path) -> SessionctlError:
    """Our error for a failed write into the export directory: what happened, where, what to do."""
    reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(
            f"{reason.lower()} writing the export in {directory} (the worker's SESSIONCTL_EXPORT_DIR): free space"
            " there or point SESSIONCTL_EXPORT_DIR at a larger disk; the partial file was removed"
        )
    return ExportWriteFailed(
        f"cannot write the export in {directory} (the worker's SESSIONCTL_EXPORT_DIR): {reason.lower()};"
        " fix the directory's permissions or mount, or point SESSIONCTL_EXPORT_DIR elsewhere"
    )
