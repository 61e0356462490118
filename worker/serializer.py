"""JSON for arq, on both sides, instead of pickle.

A pickled (or any non-JSON) payload put into the queue fails to deserialize and the job fails;
nothing in it is executed. Job results are stored without the job's arguments (which hold the
raw user id): a result carries counts and the user's HMAC only.
Errors travel as ``{"__error__": {"type": …, "message": …}}`` and come back as :class:`JobError`,
so ``Job.result()`` raises on a failed job as arq intends.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel

from sessionctl.errors import SessionctlError, describe

_RESULT_KEYS = {"t", "f", "a", "k", "et", "s", "r"}


class JobError(SessionctlError):
    """A job failed; ``error_type`` names the error class raised in the worker."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type

    def __reduce__(self) -> tuple[Any, ...]:
        return (JobError, (self.error_type, str(self)))


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, JobError):
        return {"__error__": {"type": obj.error_type, "message": str(obj)}}
    if isinstance(obj, BaseException):
        return {"__error__": describe(obj)}
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def serialize(data: Any) -> bytes:
    if isinstance(data, dict) and data.keys() >= _RESULT_KEYS:
        data = {**data, "a": [], "k": {}}  # results never keep the request (raw user id)
    return json.dumps(data, default=_default, separators=(",", ":")).encode()


def _hook(obj: dict[str, Any]) -> Any:
    err = obj.get("__error__")
    if isinstance(err, dict) and len(obj) == 1:
        return JobError(str(err.get("type", "Error")), str(err.get("message", "")))
    return obj


def deserialize(data: bytes) -> Any:
    return json.loads(data, object_hook=_hook)
