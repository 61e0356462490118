"""The field types requests share — validated ids, labels, epochs, the choices a request offers —
and parsing a payload into a request, with a one-line reason when it is not one."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, Field, ValidationError

from sessionctl.errors import InvalidRequest
from sessionctl.identifiers import validate_agent_id, validate_user_id

# The names of the job kinds, as the CLI's choices (:data:`sessionctl.jobs.kinds.KINDS` declares
# each; a test holds the two equal).
KindName = Literal["purge_user_sessions", "export_sessions", "purge_users", "purge_expired_sessions", "resweep"]
# What an erasure erases (and an access export reads): a user's sessions, or every user-keyed table.
Scope = Literal["sessions", "all"]
WindowBy = Literal["created", "updated"]
Compression = Literal["none", "gz", "zst"]


def _label(value: str) -> str:
    if len(value) > 200 or not value.isprintable():
        raise ValueError("requested_by must be a printable label of at most 200 characters")
    return value


AgentId = Annotated[str, AfterValidator(validate_agent_id)]
UserId = Annotated[str, AfterValidator(validate_user_id)]
Label = Annotated[str, AfterValidator(_label)]
# the data-subject request a job serves (sessionctl.ledger): a job naming one runs only if the
# ledger names the job too
RequestId = Annotated[str, Field(pattern=r"^dsr_[0-9a-f]{20}$")]
# epoch seconds between the years 1 and 9999: inside Postgres bigint and Python's datetime
EPOCH_MIN, EPOCH_MAX = -62_135_596_800, 253_402_300_799
EpochSeconds = Annotated[int, Field(ge=EPOCH_MIN, le=EPOCH_MAX)]


R = TypeVar("R", bound=BaseModel)


def parse_request(model: type[R], payload: Any) -> R:
    """Validate a payload into a request, or raise :class:`InvalidRequest` with a one-line reason."""
    if not isinstance(payload, dict):
        raise InvalidRequest(f"request must be a JSON object, got {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidRequest(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(x) for x in err.get("loc", ())) or "request"
        msg = str(err.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "invalid request: " + "; ".join(parts)
