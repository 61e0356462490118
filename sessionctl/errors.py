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
    │   ├── InternalError                        an unexpected error (a bug); its text stays in the worker
    │   ├── ExportMismatch                       an export does not verify: nothing is erased
    │   └── UnknownUserData                      a user-keyed table sessionctl cannot erase yet
    └── TransientError                   retried with backoff (arq ``Retry``), bounded tries
        ├── DatabaseUnavailable                  Postgres refused, reset, restarting, timed out
        ├── QueueUnavailable                     Redis lost or timed out mid-job
        └── ErasureIncomplete                    rows remain after the purge loop (late writes)

The built-in bases (``ValueError``, ``LookupError``, …) keep the error contract of the xpander
SDK's per-agent helpers, so code written against the SDK catches the same things.
Every message says what was wrong and what to do; none carries a user id, session content or a
DSN password.
"""

from __future__ import annotations


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


class InternalError(PermanentError):
    """An unexpected error inside the worker."""


class ExportMismatch(PermanentError):
    """The export does not match its manifest or the database; nothing was erased."""


class UnknownUserData(PermanentError):
    """A table holds the user's rows in a user_id column sessionctl does not know."""


class TransientError(SessionctlError):
    """A temporary failure; the job will be retried."""


class DatabaseUnavailable(TransientError):
    """The database could not be reached or failed mid-operation."""


class QueueUnavailable(TransientError):
    """Redis could not be reached mid-job."""


class ErasureIncomplete(TransientError):
    """Sessions of the user remain after the purge loop."""


def describe(exc: BaseException) -> dict[str, str]:
    """A JSON-safe description of an error for results and status output.

    Only our own errors carry their message: a foreign exception (a driver error, say) may quote
    row values in its text, so only its class name leaves the process.
    """
    if isinstance(exc, SessionctlError):
        return {"type": type(exc).__name__, "message": str(exc)}
    return {"type": type(exc).__name__, "message": f"unexpected {type(exc).__name__}; see the worker log"}
