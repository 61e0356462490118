"""Prometheus metrics of the worker (prometheus-client), served on ``SESSIONCTL_METRICS_PORT`` with its
probes (``sessionctl/worker/probes.py``).

Names (all prefixed ``sessionctl_``):

- ``jobs_total{kind, outcome}`` — outcome: succeeded, dry_run, failed, retried
- ``sessions_deleted_total{kind}``, ``runs_deleted_total{kind}``, ``sessions_exported_total``
- ``batch_duration_seconds{kind}`` — one delete batch (histogram)
- ``job_duration_seconds{kind, outcome}`` — one try of a job (histogram)
- ``job_retries_total{kind}``
- ``queue_depth{queue}`` — jobs waiting in the queue (refreshed every few seconds);
  ``queue_oldest_age_seconds{queue}`` — how long the oldest job due has waited
- ``worker_ready`` — 1 while the worker is ready (``/readyz``), else 0
- ``resweep_users_found``, ``resweep_rows_found`` — erased users with data again, and their rows,
  found by the latest re-sweep; ``resweep_erasures_total`` — erasures a re-sweep enqueued
- ``media_objects_deleted_total``, ``media_delete_failures_total`` — offloaded media objects of
  erased sessions deleted, and tries a storage refused
- ``requests_open``, ``requests_overdue`` — data-subject requests of the DSR service's ledger not
  completed yet, and those past their due date; ``webhook_attempts_total{outcome}`` — completion
  webhook attempts: delivered, retrying, gave_up
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS = Counter("sessionctl_jobs_total", "Jobs finished, by kind and outcome", ["kind", "outcome"])
SESSIONS_DELETED = Counter("sessionctl_sessions_deleted_total", "Sessions deleted", ["kind"])
RUNS_DELETED = Counter("sessionctl_runs_deleted_total", "Runs deleted with their sessions", ["kind"])
SESSIONS_EXPORTED = Counter("sessionctl_sessions_exported_total", "Sessions written to export files")
BATCH_SECONDS = Histogram(
    "sessionctl_batch_duration_seconds",
    "Duration of one delete batch",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
JOB_SECONDS = Histogram(
    "sessionctl_job_duration_seconds",
    "Duration of one try of a job",
    ["kind", "outcome"],
    buckets=(0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
)
RETRIES = Counter("sessionctl_job_retries_total", "Tries that ended in a retry", ["kind"])
QUEUE_DEPTH = Gauge("sessionctl_queue_depth", "Jobs waiting in the queue", ["queue"])
QUEUE_AGE = Gauge(
    "sessionctl_queue_oldest_age_seconds", "How long the oldest job due in the queue has waited (0: none)", ["queue"]
)
WORKER_READY = Gauge("sessionctl_worker_ready", "1 while this worker is ready (its /readyz), else 0")
RESWEEP_USERS = Gauge("sessionctl_resweep_users_found", "Erased users found with data again by the latest re-sweep")
RESWEEP_ROWS = Gauge("sessionctl_resweep_rows_found", "Rows of erased users found by the latest re-sweep")
RESWEEP_ERASURES = Counter("sessionctl_resweep_erasures_total", "Erasures enqueued by re-sweeps")
MEDIA_DELETED = Counter("sessionctl_media_objects_deleted_total", "Offloaded media objects of erased sessions deleted")
MEDIA_PENDING = Counter(
    "sessionctl_media_delete_failures_total", "Media deletes a storage refused (the key stays noted, retried)"
)
REQUESTS_OPEN = Gauge("sessionctl_requests_open", "Data-subject requests not completed yet (the DSR ledger)")
REQUESTS_OVERDUE = Gauge("sessionctl_requests_overdue", "Open data-subject requests past their due date")
WEBHOOKS = Counter("sessionctl_webhook_attempts_total", "Completion webhook attempts, by outcome", ["outcome"])
