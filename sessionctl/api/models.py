"""What the DSR service takes and answers, validated at the door: every text is Unicode Postgres can
store (no NUL, no lone surrogate), user and agent ids by the same rules as the CLI's, unknown
fields refused. Defaults make a request about the *person*: no target is every agent, and an
erasure's scope (an access export's too) is everything sessionctl knows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from sessionctl.identifiers import storable_text, validate_agent_id, validate_user_id

EPOCH_MIN, EPOCH_MAX = 0, 253_402_300_799  # 1970 … 9999: inside Postgres and Python's datetime


def text(value: str) -> str:
    return storable_text(value, "the value")


Text = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(text)]
UserId = Annotated[
    str,
    Field(description="the data subject's id, exactly as the agents stored it (never normalised)"),
    AfterValidator(validate_user_id),
]
AgentId = Annotated[str, AfterValidator(validate_agent_id)]
Epoch = Annotated[int, Field(ge=EPOCH_MIN, le=EPOCH_MAX)]


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DsrIn(In):
    user_id: UserId
    agent_id: AgentId | None = Field(None, description="one agent; leave it out for every agent (the person)")
    all_agents: bool | None = Field(None, description="every agent (the default when no agent_id is given)")
    requested_by: Text | None = None
    request_ref: Text | None = Field(
        None,
        description="your reference: the same reference with the same meaning returns that request;"
        " with another meaning, 409",
    )
    received_at: AwareDatetime | None = Field(
        None, description="when the request reached you (default: now; within the last 10 years)"
    )
    callback_url: Annotated[str, Field(max_length=2000), AfterValidator(text)] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> DsrIn:
        if self.agent_id is not None and self.all_agents:
            raise ValueError("name one target: agent_id, or all_agents (the default), not both")
        return self

    @property
    def target(self) -> str:
        return "*" if self.agent_id is None else self.agent_id


class ErasureIn(DsrIn):
    scope: Literal["sessions", "all"] = Field(
        "all", description="all (default): everything sessionctl knows of the person; sessions: their sessions only"
    )
    memories: bool = Field(True, description="with scope sessions: also their memories (default true)")
    dry_run: bool = False

    def options(self) -> dict[str, Any]:
        return {"scope": self.scope, "memories": self.memories, "dry_run": self.dry_run}


class ExportIn(DsrIn):
    scope: Literal["sessions", "all"] = Field(
        "all", description="all (default): everything of the person; sessions: their sessions with runs only"
    )
    since: Epoch | None = None
    until: Epoch | None = None
    by: Literal["created", "updated"] = "created"
    compress: Literal["none", "gz", "zst"] = "none"

    @model_validator(mode="after")
    def _window(self) -> ExportIn:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be before until")
        return self

    def options(self) -> dict[str, Any]:
        return {"scope": self.scope, "since": self.since, "until": self.until, "by": self.by, "compress": self.compress}


class Accepted(BaseModel):
    job_id: str
    request_id: str
    status: str = Field(
        description="queued; or, for a request asked again, its job's state; recorded: Redis was"
        " unreachable, a worker enqueues it"
    )
    due_at: datetime
    collapsed: bool = Field(description="true: this request_ref was seen before, this is that request")
    dry_run: bool


class ReceiptSearch(In):
    user_id: UserId


class HoldIn(In):
    user_id: UserId
    reason: Annotated[str, Field(min_length=1, max_length=500), AfterValidator(text)]


class HoldRelease(In):
    user_id: UserId


class DueDateChange(In):
    until: AwareDatetime
    reason: Text


class WebhookBody(BaseModel):
    """What a callback_url receives when a request's job ends (signed as ``SESSIONCTL_WEBHOOK_SCHEME`` says:
    ``X-Sessionctl-Signature``, or Standard Webhooks' ``webhook-signature``)."""

    event: Literal[
        "erasure.completed",
        "erasure.dry_run",
        "erasure.on_hold",
        "erasure.failed",
        "export.completed",
        "export.dry_run",
        "export.failed",
    ]
    event_id: str = Field(
        description="this delivery's id (evt_…), the same across its retries and resends: drop a repeat by it"
        " (delivery is at least once); also in the header webhook-id or X-Sessionctl-Event-Id"
    )
    job_id: str
    request_id: str
    request_ref: str | None
    kind: str
    status: Literal["succeeded", "dry_run", "on_hold", "failed"] = Field(
        description="on_hold: the person is under a legal hold, nothing was erased"
    )
    user_hmac: str = Field(description="the person, as the HMAC of their id under the operator's key: never the id")
    complete: bool | None = Field(
        None,
        description="an erasure: true exactly when the final recount of every store sessionctl checks found nothing"
        " of the person, whatever scope was asked",
    )
    remains: dict[str, int] | None = Field(
        None, description="what is left of the person: store -> rows (-1: cannot be counted)"
    )
    late: bool | None = Field(None, description="completed after its due date")
    receipt_id: int | None = None
    sessions_deleted: int | None = None
    runs_deleted: int | None = None
    memories_deleted: int | None = None
    remaining: int | None = None
    sessions: int | None = None
    bytes: int | None = None
    stores: dict[str, int] | None = None
    would_delete: dict[str, int] | None = None
    error: dict[str, str] | None = None


class WebhookTestIn(In):
    url: Annotated[str, Field(max_length=2000, description="where to send the test event"), AfterValidator(text)]


class WebhookAttempt(BaseModel):
    """One attempt to deliver a test event, sent at once (not queued)."""

    event_id: str
    ok: bool = Field(description="the receiver answered 2xx")
    status_code: int | None = Field(None, description="the receiver's answer (none: no answer)")
    error: str | None = Field(None, description="why there was no answer (a timeout, a refused connection)")
    ms: float


class Resent(BaseModel):
    """A delivery due again at once, with its event id and body."""

    delivery_id: int
    event_id: str
    request_id: str
    job_id: str
    attempts: int = Field(description="attempts made so far (the next ones are added)")
