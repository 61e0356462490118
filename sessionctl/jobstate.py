"""What a producer hands back and reads: an enqueued job, and a job's state (no queue types)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

State = Literal["queued", "deferred", "running", "succeeded", "dry_run", "partial", "failed", "not_found"]
FINAL_STATES = frozenset({"succeeded", "dry_run", "partial", "failed", "not_found"})

# The states of the job index, in the order a job goes through them — the one list the CLI's
# ``jobs --status``, the API's ``/v1/jobs?status=`` and the index share. ``ended`` selects every
# final one. (An erasure's ``complete`` is another thing: whether the person is gone.)
JOB_STATES = ("queued", "running", "retrying", "succeeded", "dry_run", "partial", "failed")
ENDED = "ended"
# ``StatusFilter`` spells the same list for the CLI's choices (a test holds the two equal).
StatusFilter = Literal["queued", "running", "retrying", "succeeded", "dry_run", "partial", "failed", "ended"]
STATUS_FILTERS: dict[str, frozenset[str]] = {s: frozenset({s}) for s in JOB_STATES} | {
    ENDED: frozenset({"succeeded", "dry_run", "partial", "failed"})
}


def job_kind(job_id: str, queue_name: str) -> str:
    """The job kind a job id names: ``<queue>:<kind>:…`` (every job id of a deployment starts with
    its ``SESSIONCTL_QUEUE``)."""
    rest = job_id[len(queue_name) + 1 :] if job_id.startswith(queue_name + ":") else job_id
    return rest.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class Enqueued:
    job_id: str
    collapsed: bool  # an identical request was already queued or running: this is that job

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class JobState:
    job_id: str
    status: State
    attempt: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    enqueued_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    progress: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def ok(self) -> bool:
        return self.status in ("succeeded", "dry_run", "partial")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return d
