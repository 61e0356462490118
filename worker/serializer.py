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


def deserialize(data: bytes) -> Any:
    """JSON back; only a *result's* ``r`` may become a :class:`JobError` — never anything inside a
    job's payload, which is untrusted input (a payload holding ``{"__error__": …}`` stays data)."""
    obj = json.loads(data)
    if isinstance(obj, dict) and obj.keys() >= _RESULT_KEYS:
        r = obj.get("r")
        if isinstance(r, dict) and len(r) == 1 and isinstance(r.get("__error__"), dict):
            err = r["__error__"]
            obj["r"] = JobError(str(err.get("type", "Error")), str(err.get("message", "")))
    return obj
