"""Errors say what happened and what to do, in one line, and quote no foreign text."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

from arq.worker import JobExecutionFailed

from sessionctl import export_files
from sessionctl.errors import ExportWriteFailed, InternalError, StorageFull, TransientError, describe, unexpected
from sessionctl.privacy import manifest_mac


class _DriverError(Exception):
    sqlstate = "22007"


def test_arqs_own_endings_are_said_as_what_to_do() -> None:
    gave_up = describe(JobExecutionFailed("max 5 retries exceeded"))
    assert gave_up["type"] == "JobExecutionFailed" and "started 5 times and never finished" in gave_up["message"]
    assert "ask again" in describe(asyncio.CancelledError())["message"]
    assert "timeout" in describe(TimeoutError())["message"]


def test_a_foreign_error_leaves_only_its_class_and_sqlstate() -> None:
    exc = _DriverError("invalid input syntax for type bigint: 'alice@example.com'")
    assert unexpected(exc) == "unexpected _DriverError (SQLSTATE 22007); see the worker log"
    assert "alice" not in describe(exc)["message"]
    assert describe(InternalError("x"))["message"] == "x"


def test_a_full_disk_is_transient_and_says_where(tmp_path: Path) -> None:
    full = export_files.storage_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert isinstance(full, StorageFull) and isinstance(full, TransientError)
    assert str(full).startswith(f"no space left on device writing the export in {tmp_path}")
    denied = export_files.storage_error(OSError(errno.EACCES, "Permission denied"), tmp_path)
    assert isinstance(denied, ExportWriteFailed) and "permission denied" in str(denied)


def test_a_manifest_mac_covers_every_field_and_the_key() -> None:
    manifest = {"file": "a.jsonl", "sha256": "ab" * 32, "bytes": 10, "sessions": 2}
    mac = manifest_mac(b"k1", manifest)
    assert mac == manifest_mac(b"k1", {**manifest, "mac": "ignored"})
    assert mac != manifest_mac(b"k2", manifest)
    assert mac != manifest_mac(b"k1", {**manifest, "bytes": 11})
