"""Every job kind, declared once: its name, the request it takes (validated at every boundary and
again when the job starts), the procedure that does it, how long one try may run, the result it
stores, and whether ``sessionctl retry`` may ask for it again. The producer, the worker, ``retry``,
the CLI's ``--kind`` and the API's filters read this table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from pydantic import BaseModel

from sessionctl.config import Settings
from sessionctl.jobs import bulk, expire, export, purge, resweep
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.models import (
    EXPORT_SESSIONS,
    PURGE_EXPIRED_SESSIONS,
    PURGE_USER_SESSIONS,
    PURGE_USERS,
    RESWEEP,
    BulkPurgeRequest,
    BulkPurgeResult,
    ExportRequest,
    ExportResult,
    PurgeRequest,
    PurgeResult,
    ResweepRequest,
    ResweepResult,
    RetentionRequest,
    RetentionResult,
)


@dataclass(frozen=True, slots=True)
class JobKind:
    name: str
    request: type[BaseModel]
    result: type[BaseModel]
    procedure: Callable[[JobContext, Any], Awaitable[BaseModel]]
    timeout: Callable[[Settings], int]  # seconds one try may run
    # `sessionctl retry` asks for it again: one user's request, the user given again (a bulk
    # request keeps no user ids; a retention run or a re-sweep is simply run again)
    retry: bool = False
    # it may serve a data-subject request (sessionctl.ledger): the ledger is settled when it ends
    serves_requests: bool = False


_PURGE_TIMEOUT = attrgetter("purge_timeout")

KINDS: dict[str, JobKind] = {
    k.name: k
    for k in (
        JobKind(
            PURGE_USER_SESSIONS,
            PurgeRequest,
            PurgeResult,
            purge.purge_user_sessions,
            _PURGE_TIMEOUT,
            retry=True,
            serves_requests=True,
        ),
        JobKind(
            EXPORT_SESSIONS,
            ExportRequest,
            ExportResult,
            export.export_sessions,
            attrgetter("export_timeout"),
            retry=True,
            serves_requests=True,
        ),
        JobKind(PURGE_USERS, BulkPurgeRequest, BulkPurgeResult, bulk.purge_users, _PURGE_TIMEOUT),
        JobKind(
            PURGE_EXPIRED_SESSIONS,
            RetentionRequest,
            RetentionResult,
            expire.purge_expired_sessions,
            _PURGE_TIMEOUT,
        ),
        JobKind(RESWEEP, ResweepRequest, ResweepResult, resweep.resweep, _PURGE_TIMEOUT),
    )
}
NAMES: tuple[str, ...] = tuple(KINDS)


def kind_of(name: str) -> JobKind:
    """The kind of this name; :class:`~sessionctl.errors.InvalidRequest` naming the kinds otherwise."""
    from sessionctl.errors import InvalidRequest

    found = KINDS.get(name)
    if found is None:
        raise InvalidRequest(f"unknown job kind {name!r}: one of {', '.join(NAMES)}")
    return found
