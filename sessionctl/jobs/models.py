"""Requests and results of jobs, validated with pydantic at every boundary (CLI, producer, job start)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sessionctl.config import Settings
from sessionctl.identifiers import clean_ids
from sessionctl.jobs.fields import (
    AgentId,
    Compression,
    EpochSeconds,
    Label,
    RequestId,
    Scope,
    UserId,
    WindowBy,
)

PURGE_USER_SESSIONS: Literal["purge_user_sessions"] = "purge_user_sessions"


class PurgeRequest(BaseModel):
    """Erase one user's sessions from one agent, or from every agent (``all_agents``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    user_id: UserId
    agent_id: AgentId | None = None
    all_agents: bool = False
    dry_run: bool = False
    memories: bool = False
    scope: Scope = "sessions"
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

    def identity(self, settings: Settings) -> tuple[str, ...]:
        """What makes two requests the same job (keyed into its id; ``requested_by``, ``origin`` and
        ``request_id`` are not part of it)."""
        return (
            target_identity(settings, self.target),
            self.user_id,
            f"dry_run={self.dry_run}",
            f"memories={self.memories}",
            f"scope={self.scope}",
        )


def target_identity(settings: Settings, target: str) -> str:
    """Where a request acts — queue, database, schema — in its identity: two deployments sharing a
    Redis, or two agent ids naming one schema (``a-b``, ``a_b``), never share or split a job."""
    schema = "*" if target == "*" else settings.schema_for(target)
    return f"{settings.queue_name}|{settings.dsn.redacted}|{schema}"


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
    scope: Scope = "sessions"
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

    def identity(self, settings: Settings) -> tuple[str, ...]:
        return (
            target_identity(settings, self.target),
            "\x00".join(sorted(self.user_ids)),
            f"dry_run={self.dry_run}",
            f"memories={self.memories}",
            f"scope={self.scope}",
        )


class Completeness(BaseModel):
    """Whether an erasure's person is gone: the final recount of every store ``verify`` checks, at
    every agent and outside them, whatever scope the erasure was asked for."""

    complete: bool  # nothing of the person is left anywhere sessionctl can count
    remains: dict[str, int] = Field(default_factory=dict)  # what is left: store -> rows (-1: cannot be counted)
    # declared stores where Agno keeps no owner of its own: how the person was found there
    exemptions: dict[str, str] = Field(default_factory=dict)


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
    exemptions: dict[str, str] | None = None  # declared stores where Agno keeps no owner: how they were searched
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
    by: WindowBy = "created"
    compress: Compression = "none"
    then_purge: bool = False
    requested_by: Label | None = None
    # "all": one person's everything — their sessions with runs and, beside them, their rows in every
    # other store an erasure of scope "all" clears (memories, knowledge chunks, login records…) and
    # the list of their media objects
    scope: Scope = "sessions"
    request_id: RequestId | None = None

    @field_validator("out")
    @classmethod
    def _out(cls, value: str) -> str:
        from sessionctl.export_files import validate_name

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

    def identity(self, settings: Settings) -> tuple[str, ...]:
        return (
            target_identity(settings, self.target),
            "\x00all-users" if self.user_id is None else self.user_id,
            f"since={self.since}",
            f"until={self.until}",
            f"by={self.by}",
            f"out={self.out}",
            f"compress={self.compress}",
            f"then_purge={self.then_purge}",
            f"scope={self.scope}",
        )


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
    exemptions: dict[str, str] | None = None


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

    def identity(self, settings: Settings) -> tuple[str, ...]:
        return (
            target_identity(settings, self.target),
            f"dry_run={self.dry_run}",
            f"as_of={self.as_of}",
            f"tick={self.tick}",
        )


class RetentionResult(BaseModel):
    job_id: str
    kind: Literal["purge_expired_sessions"] = PURGE_EXPIRED_SESSIONS
    status: Literal["succeeded", "partial", "dry_run"]
    dry_run: bool
    as_of: int
    target: str
    sessions_deleted: int
    remaining: int  # past the cutoff, counted after the run (0 unless the time budget ran out)
    held: int = 0  # people under a legal hold: everything of theirs kept, not counted as remaining
    media_deleted: int = 0  # offloaded media objects of the deleted sessions
    agents: dict[str, dict[str, Any]]
    stores: dict[str, dict[str, int]] | None = None  # the declared stores the policy names
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

    def identity(self, settings: Settings) -> tuple[str, ...]:
        return (f"erase={self.erase}", f"tick={self.tick}")


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
    stores_not_swept: list[str] = Field(default_factory=list)  # declared stores whose owners cannot be listed
    started_at: str
    finished_at: str
    requested_by: str | None = None
