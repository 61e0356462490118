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
        if isinstance(result := data["r"], BaseModel):
            # A job's result encoded by pydantic itself, in Rust: a bulk erasure's result holds an
            # entry per user, and json.dumps of its dict is ten times slower (docs/decisions.md).
            # (Any "r":null inside a string value of the envelope would be escaped: \"r\":null.)
            envelope = json.dumps({**data, "r": None}, default=_default, separators=(",", ":"))
            head, _, tail = envelope.rpartition('"r":null')
            return (head + '"r":' + result.model_dump_json() + tail).encode()
    return json.dumps(data, default=_default, separators=(",", ":")).encode()


MAX_EPOCH_MS = 253_402_300_799_000  # 9999-12-31: past that arq's datetime arithmetic overflows


def _check_envelope(obj: dict[str, Any]) -> None:
    """A queued job is untrusted input: arq trusts its envelope's types outside its own error
    handling, so a wrong one would kill the worker. Refuse it here: arq then fails that job alone."""

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    ok = (
        isinstance(obj.get("f"), str)
        and isinstance(obj.get("a"), list)
        and isinstance(obj.get("k"), dict)
        and (obj.get("t") is None or (is_int(obj["t"]) and 0 <= obj["t"] < 1_000_000))
        and is_int(obj.get("et"))
        and 0 <= obj["et"] <= MAX_EPOCH_MS
    )
    if not ok:
        raise ValueError("malformed job envelope")


def deserialize(data: bytes) -> Any:
    """JSON back; only a *result's* ``r`` may become a :class:`JobError` — never anything inside a
    job's payload, which is untrusted input (a payload holding ``{"__error__": …}`` stays data).
    A job envelope of the wrong shape is refused (arq fails that job; the worker lives on)."""
    obj = json.loads(data)
    if isinstance(obj, dict) and "f" in obj and "s" not in obj:
        _check_envelope(obj)
    if isinstance(obj, dict) and obj.keys() >= _RESULT_KEYS:
        r = obj.get("r")
        if isinstance(r, dict) and len(r) == 1 and isinstance(r.get("__error__"), dict):
            err = r["__error__"]
            obj["r"] = JobError(str(err.get("type", "Error")), str(err.get("message", "")))
    return obj
