"""The one exception hierarchy of sessionctl.

::

    SessionctlError                      base; str(e) is safe to show and to log (no personal data)
    ├── PermanentError                   the job fails at once, no retry
    │   ├── InvalidRequest (ValueError)          bad input: empty user id, unsafe agent id, …
    │   ├── InvalidConnectionURI (ValueError)    a DSN that cannot be parsed or is not Postgres
    │   ├── AgentNotFound (LookupError)          the agent has no session storage (no schema/table)
    │   ├── NotAgnoStorage (NotImplementedError) the schema is not Agno's session layout
    │   ├── AgnoNotInstalled (ImportError)       Agno or its Postgres extras are missing
    │   ├── DatabaseRefused                      wrong database, role or password in DATABASE_URL
    │   ├── DatabaseReadOnly                     DATABASE_URL points at a replica or a read-only database
    │   ├── InsufficientPrivilege (PermissionError)  the role cannot see or change every row it must prove gone
    │   ├── ReceiptConflict                      a receipt under this job id belongs to another erasure
    │   ├── ExportWriteFailed                    the export file could not be written (permissions, read-only disk)
    │   ├── InternalError                        an unexpected error (a bug); its text stays in the worker
    │   ├── ExportMismatch                       an export does not verify: nothing is erased
    │   ├── ExportWithdrawn                      the person was erased while their export ran: not published
    │   ├── RequestNotRecorded                   a request's job the ledger does not name: not run
    │   ├── PersonOnHold                         the person is under a legal hold: not erased
    │   ├── PlatformNotAuthenticated             a DSR platform's call that is forged, expired or replayed
    │   └── UnknownUserData                      a user-keyed table sessionctl cannot erase yet
    └── TransientError                   retried with backoff (arq ``Retry``), bounded tries
        ├── DatabaseUnavailable                  Postgres refused, reset, restarting, timed out
        ├── QueueUnavailable                     Redis lost or timed out mid-job
        ├── RedisUnavailable                     Redis unreachable from a producer or the CLI
        ├── PlatformUnavailable                  the xpander platform or a DSR platform's gateway unreachable
        ├── StorageFull                          no space left where the export is written
        └── ErasureIncomplete                    rows remain after the purge loop (late writes)

The built-in bases (``ValueError``, ``LookupError``, …) keep the error contract of the xpander
SDK's per-agent helpers, so code written against the SDK catches the same things.
Every message says what was wrong and what to do; none carries a user id, session content or a
DSN password.
"""

from __future__ import annotations

import asyncio


class SessionctlError(Exception):
    """sessionctl failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class PermanentError(SessionctlError):
    """The request cannot succeed as it is; retrying will not help."""


class InvalidRequest(PermanentError, ValueError):
    """The request is invalid."""


class InvalidConnectionURI(PermanentError, ValueError):
    """The database connection URI is invalid."""


class AgentNotFound(PermanentError, LookupError):
    """The agent has no session storage."""


class NotAgnoStorage(PermanentError, NotImplementedError):
    """The agent's storage is not an Agno session table."""


class AgnoNotInstalled(PermanentError, ImportError):
    """Agno's Postgres support is not installed: pip install 'agno[postgres]' sqlalchemy[asyncio] psycopg[binary]"""


class DatabaseRefused(PermanentError):
    """Postgres refused the login or the database."""


class DatabaseReadOnly(PermanentError):
    """The database is read-only (a replica, or default_transaction_read_only): point DATABASE_URL at the primary."""


class InsufficientPrivilege(PermanentError, PermissionError):
    """The database role cannot see or change every row the job must prove gone; nothing was deleted."""


class ReceiptConflict(PermanentError):
    """A receipt under this job id already records another erasure; this erasure is not reported done."""


class ExportWriteFailed(PermanentError):
    """The export file could not be written."""


class InternalError(PermanentError):
    """An unexpected error inside the worker."""


class ExportMismatch(PermanentError):
    """The export does not match its manifest or the database; nothing was erased."""


class ExportWithdrawn(PermanentError):
    """The person was erased while this export ran: nothing was published (an export never outlives an erasure)."""


class RequestNotRecorded(PermanentError):
    """This job's data-subject request is not in the ledger, or does not list this job: nothing was done."""


class PersonOnHold(PermanentError):
    """The person is under a legal hold (``sessionctl hold list``): nothing was erased; their request ends
    ``on_hold``."""


class PlatformNotAuthenticated(PermanentError):
    """A call said to come from a DSR platform whose token or secret does not verify, has expired, or
    was used before: nothing was recorded."""


class UnknownUserData(PermanentError):
    """A table holds the user's rows in a user_id column sessionctl does not know."""


class MediaStorageNotConfigured(PermanentError):
    """Sessions being erased point at offloaded media in a storage sessionctl was not given."""


class SchemaNotReady(PermanentError):
    """sessionctl's own schema is missing from the database, or older than this sessionctl."""


class StoreMisdeclared(PermanentError):
    """A store of the deployment file (SESSIONCTL_CONFIG) is malformed, of an unsupported kind, or
    names a table, collection or file that does not exist (sessionctl never creates one)."""


class ExtraMissing(PermanentError):
    """A declared store needs a client library that is not installed (an extra of sessionctl)."""


class TransientError(SessionctlError):
    """A temporary failure: retried with backoff up to SESSIONCTL_MAX_TRIES."""


class DatabaseUnavailable(TransientError):
    """The database could not be reached or failed mid-operation."""


class QueueUnavailable(TransientError):
    """Redis could not be reached mid-job."""


class RedisUnavailable(TransientError):
    """Redis could not be reached: check REDIS_URL and that Redis is up."""


class PlatformUnavailable(TransientError):
    """The xpander platform, or a DSR platform's gateway (Transcend's Sombra), could not be reached."""


class StorageFull(TransientError):
    """No space left on the device the export is written to."""


class ErasureIncomplete(TransientError):
    """Sessions of the user remain after the purge loop."""


class StoreUnreachable(TransientError):
    """A store of the deployment file could not be reached (or is held by another process)."""


class MediaDeleteFailed(TransientError):
    """Media objects of erased sessions could not be deleted yet (kept, retried)."""


def describe(exc: BaseException) -> dict[str, str]:
    """A JSON-safe description of an error for results and status output.

    Only our own errors carry their message: a foreign exception (a driver error, say) may quote
    row values in its text, so only its class name (and, for Postgres, the SQLSTATE) leaves the
    process. The ways arq itself ends a job get a sentence of their own.
    """
    name = type(exc).__name__
    if isinstance(exc, SessionctlError):
        return {"type": name, "message": str(exc)}
    if name == "JobExecutionFailed":  # arq's own: max tries exceeded, job expired, function not found
        return {"type": name, "message": arq_gave_up(str(exc))}
    if isinstance(exc, asyncio.CancelledError):
        return {"type": name, "message": "the job was cancelled (aborted) before it finished; ask again to run it"}
    if isinstance(exc, TimeoutError):
        return {
            "type": name,
            "message": "the job ran past its timeout (SESSIONCTL_PURGE_TIMEOUT / SESSIONCTL_EXPORT_TIMEOUT)"
            " and was stopped; raise the timeout, then ask again",
        }
    return {"type": name, "message": unexpected(exc)}


def unexpected(exc: BaseException) -> str:
    """One line about a foreign exception that quotes none of its text: class and SQLSTATE."""
    sqlstate = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
    where = f" (SQLSTATE {sqlstate})" if isinstance(sqlstate, str) else ""
    return f"unexpected {type(exc).__name__}{where}; see the worker log"


_ARQ_REASONS = {
    "job expired": "its queue entry expired before a worker took it",
}


def arq_gave_up(text: str) -> str:
    """arq's own reason for ending a job (its texts carry no user data), said as what to do."""
    if text.startswith("max ") and text.endswith("retries exceeded"):
        return (
            f"the job was started {text.split()[1]} times and never finished (the worker was killed or lost each"
            " time, e.g. out of memory): check the worker, then ask again"
        )
    if text.startswith("function ") and text.endswith("not found"):
        return "no worker function of this kind: the worker is older than the producer; upgrade it, then ask again"
    return f"arq ended the job: {_ARQ_REASONS.get(text, 'see the worker log')}; ask again"
