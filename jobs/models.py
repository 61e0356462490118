"""Requests and results of jobs, validated with pydantic at every boundary (CLI, producer, job start)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sessionctl.errors import InvalidRequest
from sessionctl.identifiers import clean_ids, validate_agent_id, validate_user_id

PURGE_USER_SESSIONS: Literal["purge_user_sessions"] = "purge_user_sessions"


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


class PurgeRequest(BaseModel):
    """Erase one user's sessions from one agent, or from every agent (``all_agents``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    user_id: UserId
    agent_id: AgentId | None = None
    all_agents: bool = False
    dry_run: bool = False
    memories: bool = False
    scope: Literal["sessions", "all"] = "sessions"
    requested_by: Label | None = None
    # "resweep": enqueued by a re-sweep for a user erased before who has data again
    origin: Literal["request", "resweep"] = "request"
    request_id: RequestId | None = None

    @model_validator(mode="after")
    def _target(self) -> PurgeRequest:
        if (self.agent_id is None) == (not self.all_agents):
            raise ValueError("name exactly one target: an agent id, or all agents")
        return self

    @property
    def target(self) -> str:
        return "*" if self.all_agents else str(self.agent_id)


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


PURGE_USERS: Literal["purge_users"] = "purge_users"
MAX_BULK_USERS = 10_000


class BulkPurgeRequest(BaseModel):
    """Erase many users' sessions at once (the monthly batch of GDPR requests): set-based SQL."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    user_ids: list[UserId] = Field(min_length=1)
    agent_id: AgentId | None = None
    all_agents: bool = False
    dry_run: bool = False
    memories: bool = False
    scope: Literal["sessions", "all"] = "sessions"
    requested_by: Label | None = None
    # ids with surrounding whitespace or invisible characters: refused unless kept on purpose
    # (the producer strips them before the request when asked to: "strip")
    ambiguous_ids: Literal["refuse", "keep"] = "refuse"

    @field_validator("user_ids")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        unique = list(dict.fromkeys(value))
        if len(unique) > MAX_BULK_USERS:
            raise ValueError(f"at most {MAX_BULK_USERS} distinct user ids per request, got {len(unique)}")
        return unique

    @model_validator(mode="after")
    def _target(self) -> BulkPurgeRequest:
        if (self.agent_id is None) == (not self.all_agents):
            raise ValueError("name exactly one target: an agent id, or all agents")
        if self.ambiguous_ids == "refuse":
            clean_ids(self.user_ids, "refuse", "user_ids")
        return self

    @property
    def target(self) -> str:
        return "*" if self.all_agents else str(self.agent_id)


class Completeness(BaseModel):
    """Whether an erasure's person is gone: the final recount of every store ``verify`` checks, at
    every agent and outside them, whatever scope the erasure was asked for."""

    complete: bool  # nothing of the person is left anywhere sessionctl can count
    remains: dict[str, int] = Field(default_factory=dict)  # what is left: store -> rows (-1: cannot be counted)


class AgentPurgeResult(BaseModel):
    agent_id: str
    schema_name: str
    sessions_deleted: int = 0
    runs_deleted: int = 0
    transcripts_deleted: int = 0
    tool_results_deleted: int = 0
    tool_result_payloads_deleted: int = 0
    tool_results_without_payload: int = 0
    memories_deleted: int = 0
    batches: int = 0
    late_sessions: int = 0
    remaining: int = 0
    would_delete: dict[str, int] | None = None
    tables: dict[str, int] | None = None  # scope "all": rows deleted (or anonymized) per table


class PurgeResult(BaseModel):
    """The result stored in Redis: counts and an HMAC, never the raw user id."""

    job_id: str
    kind: Literal["purge_user_sessions"] = PURGE_USER_SESSIONS
    status: Literal["succeeded", "dry_run"]
    dry_run: bool
    user_hmac: str
    target: str
    sessions_deleted: int
    runs_deleted: int
    memories_deleted: int
    remaining: int
    late_sessions: int = 0
    would_delete: dict[str, int] | None = None
    agents: dict[str, AgentPurgeResult]
    # outside the agent schemas (all agents, scope "all"): rows per vector/authz table; media objects
    stores: dict[str, int] | None = None
    # agent schemas checked (an all-agents erasure lists in ``agents`` only those that held the user)
    schemas_checked: int | None = None
    started_at: str
    finished_at: str
    requested_by: str | None = None
    origin: str = "request"
    # the person gone from every store verify checks (None: a dry run, which erases nothing)
    complete: bool | None = None
    remains: dict[str, int] | None = None
    request_id: str | None = None


EXPORT_SESSIONS: Literal["export_sessions"] = "export_sessions"


class ExportRequest(BaseModel):
    """Export sessions (one user's, or every user's) of one agent or all agents to EXPORT_DIR/out."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    out: str
    user_id: UserId | None = None
    agent_id: AgentId | None = None
    all_agents: bool = False
    since: EpochSeconds | None = None
    until: EpochSeconds | None = None
    by: Literal["created", "updated"] = "created"
    compress: Literal["none", "gz", "zst"] = "none"
    then_purge: bool = False
    requested_by: Label | None = None
    # "all": one person's everything — their sessions with runs and, beside them, their rows in every
    # other store an erasure of scope "all" clears (memories, knowledge chunks, login records…) and
    # the list of their media objects
    scope: Literal["sessions", "all"] = "sessions"
    request_id: RequestId | None = None

    @field_validator("out")
    @classmethod
    def _out(cls, value: str) -> str:
        from sessionctl.exportfile import validate_name

        return validate_name(value)

    @model_validator(mode="after")
    def _checks(self) -> ExportRequest:
        if (self.agent_id is None) == (not self.all_agents):
            raise ValueError("name exactly one target: an agent id, or all agents")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be before until")
        if self.then_purge and self.user_id is None:
            raise ValueError("export-then-erase needs a user: it erases one user's sessions")
        if self.scope == "all" and self.user_id is None:
            raise ValueError("an export of scope all is one person's: name the user")
        if self.scope == "all" and self.then_purge:
            raise ValueError("export-then-erase exports and erases sessions: use scope sessions")
        return self

    @property
    def target(self) -> str:
        return "*" if self.all_agents else str(self.agent_id)


class ExportResult(BaseModel):
    job_id: str
    kind: Literal["export_sessions"] = EXPORT_SESSIONS
    status: Literal["succeeded"]
    path: str
    manifest_path: str
    format: str
    sessions: int
    agents: dict[str, int]
    bytes: int
    sha256: str
    compress: str
    user_hmac: str | None
    window: dict[str, Any]
    started_at: str
    finished_at: str
    requested_by: str | None = None
    purge: dict[str, Any] | None = None  # export-then-erase: what was erased, once the export verified
    scope: str = "sessions"
    stores: dict[str, int] | None = None  # scope "all": rows (media: objects) exported per store
    request_id: str | None = None


class BulkPurgeResult(BaseModel):
    """Per user (as HMAC): sessions deleted and remaining (0). No raw user id."""

    job_id: str
    kind: Literal["purge_users"] = PURGE_USERS
    status: Literal["succeeded", "dry_run"]
    dry_run: bool
    target: str
    users_count: int
    sessions_deleted: int
    runs_deleted: int
    remaining: int
    users: dict[str, dict[str, int]]
    agents: dict[str, AgentPurgeResult]
    would_delete: dict[str, int] | None = None
    stores: dict[str, int] | None = None  # as in PurgeResult, for all the users together
    schemas_checked: int | None = None
    started_at: str
    finished_at: str
    requested_by: str | None = None
    complete: bool | None = None  # every user gone from every store verify checks (None: a dry run)
    remains: dict[str, int] | None = None  # what is left of them, all together


PURGE_EXPIRED_SESSIONS: Literal["purge_expired_sessions"] = "purge_expired_sessions"


class RetentionRequest(BaseModel):
    """Apply the retention policy now (or as of ``as_of``) to one agent or every agent schema."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    agent_id: AgentId | None = None
    dry_run: bool = False
    as_of: EpochSeconds | None = None
    tick: str | None = Field(None, max_length=40, pattern=r"^[0-9T:-]+$")
    requested_by: Label | None = None

    @property
    def target(self) -> str:
        return "*" if self.agent_id is None else self.agent_id


class RetentionResult(BaseModel):
    job_id: str
    kind: Literal["purge_expired_sessions"] = PURGE_EXPIRED_SESSIONS
    status: Literal["succeeded", "partial", "dry_run"]
    dry_run: bool
    as_of: int
    target: str
    sessions_deleted: int
    remaining: int  # past the cutoff, counted after the run (0 unless the time budget ran out)
    media_deleted: int = 0  # offloaded media objects of the deleted sessions
    agents: dict[str, dict[str, Any]]
    started_at: str
    finished_at: str
    requested_by: str | None = None


RESWEEP: Literal["resweep"] = "resweep"


class ResweepRequest(BaseModel):
    """Find users erased before who have data again (by HMAC); with ``erase``, erase them again."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    erase: bool = False
    tick: str | None = Field(None, max_length=40, pattern=r"^[0-9T:-]+$")
    requested_by: Label | None = None


class ResweepMatch(BaseModel):
    """One store where a user erased before has rows again. No raw user id."""

    user_hmac: str
    where: str  # schema.table (database/schema.table when the deployment spans several databases)
    rows: int
    first_seen: str | None  # the oldest of those rows (created_at), when the table dates its rows
    erased_at: str  # the latest erasure receipt that covers this store


class ResweepResult(BaseModel):
    job_id: str
    kind: Literal["resweep"] = RESWEEP
    status: Literal["succeeded"] = "succeeded"
    users_matched: int
    rows: int
    stores_swept: int
    keys_seen: int  # distinct (store, person key) pairs read
    matches: list[ResweepMatch]
    erasures: dict[str, str]  # user HMAC -> the job id of the erasure enqueued for them (erase)
    media_retried: int  # keys left pending by lost jobs whose objects are now gone
    started_at: str
    finished_at: str
    requested_by: str | None = None
