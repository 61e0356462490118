"""Settings, read from the environment (and a ``.env`` file) by pydantic-settings.

Every setting is listed, with its default, in the README's configuration table.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sessionctl.errors import InvalidRequest
from sessionctl.identifiers import DEFAULT_SCHEMA_TEMPLATE, Dsn, schema_for_agent

DEV_HASH_KEY = "sessionctl-insecure-development-key"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        use_attribute_docstrings=True,
        hide_input_in_errors=True,  # a secret set wrong never shows in the error about it
    )

    redis_url: str = Field(
        "redis://localhost:6379/0", validation_alias=AliasChoices("REDIS_URL", "SESSIONCTL_REDIS_URL")
    )
    """arq's Redis (`redis://[user:password@]host:port/db`, `rediss://` for TLS)"""
    redis_ssl_ca_certs: str | None = Field(None, validation_alias="SESSIONCTL_REDIS_SSL_CA_CERTS")
    """with `rediss://`: a PEM file of the CA that signed Redis's certificate"""
    redis_ssl_cert_reqs: Literal["required", "none"] = Field(
        "required", validation_alias="SESSIONCTL_REDIS_SSL_CERT_REQS"
    )
    """with `rediss://`: `required` or `none` (no verification; not for production)"""
    redis_sentinels: str | None = Field(None, validation_alias="SESSIONCTL_REDIS_SENTINELS")
    """Redis Sentinel: `host1:26379,host2:26379`; password and database still come from `REDIS_URL` (unset by
    default)
    """
    redis_sentinel_master: str = Field("mymaster", validation_alias="SESSIONCTL_REDIS_SENTINEL_MASTER")
    """the Sentinel master name"""
    database_url: str = Field(
        "postgresql://postgres@localhost:5432/postgres",
        validation_alias=AliasChoices("DATABASE_URL", "SESSIONCTL_DATABASE_URL"),
    )
    """the agents' database; `postgres://`, `postgresql://`, `postgresql+psycopg://`, `postgresql+asyncpg://` (and
    `+psycopg_async`, `+psycopg2`) are all accepted and normalised; percent-encode `/ ? # @` in the password (an
    unencoded one is refused: drivers would read a wrong host)
    """
    resolvers: str | None = Field(None, validation_alias="SESSIONCTL_RESOLVERS")
    """where agents live, tried in order: `static`, `map`, `xpander`, or `module:Class` of your own (see [Where
    agents live](../operations.md#where-agents-live))
    """
    resolver_ttl: float = Field(60, ge=0, validation_alias="SESSIONCTL_RESOLVER_TTL")
    """seconds a worker keeps an agent's resolved location"""
    agent_map: str | None = Field(None, validation_alias="SESSIONCTL_AGENT_MAP")
    """the map resolver's TOML file (unset by default)"""
    config_file: str | None = Field(None, validation_alias="SESSIONCTL_CONFIG")
    """the deployment file (TOML): the stores outside Agno's Postgres schemas that hold a person's data — vector
    databases, Agno's SQLite, MySQL and Redis session databases, AgentFS files, AgentOS event streams (see [What an
    erasure covers](../what-is-erased.md#declared-stores)) (unset: none)"""
    xpander_api_key: str | None = Field(None, validation_alias="XPANDER_API_KEY")
    """the xpander SDK's own variables; with `XPANDER_API_KEY` set, the xpander resolver is on (unset)*, *(unset)*,
    `https://inbound.xpander.ai`)
    """
    xpander_organization_id: str | None = Field(None, validation_alias="XPANDER_ORGANIZATION_ID")
    """the xpander SDK's own variables; with `XPANDER_API_KEY` set, the xpander resolver is on (unset)*, *(unset)*,
    `https://inbound.xpander.ai`)
    """
    xpander_base_url: str = Field("https://inbound.xpander.ai", validation_alias="XPANDER_BASE_URL")
    """the xpander SDK's own variables; with `XPANDER_API_KEY` set, the xpander resolver is on (unset)*, *(unset)*,
    `https://inbound.xpander.ai`)
    """
    schema_template: str = Field(DEFAULT_SCHEMA_TEMPLATE, validation_alias="SESSIONCTL_SCHEMA_TEMPLATE")
    """an agent's schema; `{agent}` is the agent id with `-` → `_` (xpander's rule), `{agent_id}` the id as is"""
    batch_size: int = Field(5000, ge=1, le=50_000, validation_alias="SESSIONCTL_BATCH_SIZE")
    """sessions deleted per transaction (1–50,000): smaller batches hold their rows' locks for less time, and pay
    a fixed cost per batch more often (figures: Decisions)"""
    purge_walkers: int = Field(2, ge=1, le=8, validation_alias="SESSIONCTL_PURGE_WALKERS")
    """connections one purge may use at once to delete a big user's sessions (index ranges, or batches of tuple ids
    without the index) (1–8; 1: one walker). Extra
    walkers only take connections the pool has free at that moment (never waiting for one) and give them back as
    soon as another job waits; each keeps one Postgres backend busy: lower it to spare the database's CPU
    """
    poll_delay: float = Field(0.05, gt=0, le=10, validation_alias="SESSIONCTL_POLL_DELAY")
    """seconds between queue polls (arq's default 0.5 s caps a worker near 200 jobs/s)"""
    queue_read_limit: int = Field(500, ge=1, le=100_000, validation_alias="SESSIONCTL_QUEUE_READ_LIMIT")
    """job ids read per poll (arq reads only `max_jobs`, leaving slots idle between polls)"""
    max_jobs: int = Field(4, ge=1, le=1000, validation_alias="SESSIONCTL_MAX_JOBS")
    """jobs one worker runs at once"""
    hash_key: SecretStr | None = Field(None, validation_alias="SESSIONCTL_HASH_KEY")
    """secret for the HMAC of user ids in logs, results and job ids; set a long random value and keep it (unset: a
    development key, with a warning)
    """
    queue_name: str = Field("sessionctl:queue", validation_alias="SESSIONCTL_QUEUE")
    """arq queue name"""
    purge_timeout: int = Field(1800, ge=5, validation_alias="SESSIONCTL_PURGE_TIMEOUT")
    """seconds one try of a purge may run"""
    export_timeout: int = Field(7200, ge=5, validation_alias="SESSIONCTL_EXPORT_TIMEOUT")
    """seconds one try of an export may run"""
    lease_ttl: int = Field(60, ge=3, le=3600, validation_alias="SESSIONCTL_LEASE_TTL")
    """a running job's lease, renewed every third of it: a killed worker's job runs again within this many seconds,
    whatever the timeouts
    """
    job_index_size: int = Field(10_000, ge=10, validation_alias="SESSIONCTL_JOB_INDEX_SIZE")
    """jobs kept in the index that `sessionctl jobs` reads"""
    failed_ttl: int = Field(30 * 24 * 3600, ge=60, validation_alias="SESSIONCTL_FAILED_TTL")
    """seconds failed jobs stay in the failed-job list (30 days)"""
    media_storages: str = Field("", validation_alias="SESSIONCTL_MEDIA_STORAGES")
    """where the agents offload media (Agno's `media_storage`), comma-separated: `local:///abs/dir`,
    `s3://bucket?region=eu-west-1&endpoint_url=https://…` (credentials: boto3's usual chain),
    `gcs://bucket?project=…`; objects the erased sessions point at are deleted there"""
    resweep_schedule: str | None = Field(None, validation_alias="SESSIONCTL_RESWEEP_SCHEDULE")
    """when the re-sweep cron runs (`minute hour`, as the retention schedule) (unset: no cron)"""
    resweep_erase: bool = Field(False, validation_alias="SESSIONCTL_RESWEEP_ERASE")
    """a re-sweep enqueues a new erasure (`origin: resweep`) for each erased user it finds back"""
    retention_file: str | None = Field(None, validation_alias="SESSIONCTL_RETENTION_FILE")
    """the retention policy (TOML, see [Retention](../retention.md)) (unset: no retention, no cron)"""
    retention_schedule: str = Field("17 3", validation_alias="SESSIONCTL_RETENTION_SCHEDULE")
    """when the cron runs: `minute hour` (or `second minute hour`), with `*`, `*/n`, lists and ranges"""
    retention_budget: int = Field(600, ge=1, validation_alias="SESSIONCTL_RETENTION_BUDGET")
    """seconds one retention run may delete before it stops (status `partial`; the next run continues)"""
    retention_pause_ms: int = Field(50, ge=0, le=60_000, validation_alias="SESSIONCTL_RETENTION_PAUSE_MS")
    """pause between retention batches, leaving room for the agents' own traffic"""
    stop_grace: int = Field(20, ge=0, le=3600, validation_alias="SESSIONCTL_STOP_GRACE")
    """on SIGTERM, seconds running jobs may finish before they are cancelled (their batch rolls back) and re-queued"""
    progress_interval: float = Field(0.5, ge=0, le=60, validation_alias="SESSIONCTL_PROGRESS_INTERVAL")
    """at most one progress update per this many seconds per job"""
    metrics_port: int = Field(9108, ge=0, le=65535, validation_alias="SESSIONCTL_METRICS_PORT")
    """the worker's Prometheus `/metrics` port (`0`: off; a port in use is logged and skipped)"""
    keep_result: int = Field(7 * 24 * 3600, ge=60, validation_alias="SESSIONCTL_KEEP_RESULT")
    """seconds results (and job records) stay in Redis (7 days)"""
    max_tries: int = Field(5, ge=1, le=50, validation_alias="SESSIONCTL_MAX_TRIES")
    """tries for transient failures (database unreachable, late writes)"""
    retry_base_delay: float = Field(2.0, ge=0, validation_alias="SESSIONCTL_RETRY_BASE_DELAY")
    """backoff base in seconds: try *n* waits a random time in [base/2, base·2ⁿ⁻¹], capped at 300 s"""
    max_databases: int = Field(32, ge=1, le=1000, validation_alias="SESSIONCTL_MAX_DATABASES")
    """distinct databases a worker keeps pools for (least recently used idle pool closed past that)"""
    client_cache_size: int = Field(256, ge=1, validation_alias="SESSIONCTL_CLIENT_CACHE_SIZE")
    """Agno clients kept (LRU) per worker"""
    pool_size: int = Field(4, ge=1, le=100, validation_alias="SESSIONCTL_POOL_SIZE")
    """connections per database, for our pool and for Agno's engine each"""
    statement_cache_size: int = Field(1024, ge=0, le=100_000, validation_alias="SESSIONCTL_STATEMENT_CACHE_SIZE")
    """prepared statements kept per pooled connection (our statements name an agent's schema: an erasure at many
    agents needs many; `0`: none)"""

    export_dir: str = Field(
        default_factory=lambda: str(state_dir() / "exports"),
        validation_alias=AliasChoices("SESSIONCTL_EXPORT_DIR", "EXPORT_DIR"),
    )
    """where exports are written (created 0700 if missing), as an absolute path: one directory every worker and
    `sessionctl serve` share (default: `exports` in the state directory, `$SESSIONCTL_STATE_DIR` or
    `~/.local/state/sessionctl`); requests name a file inside it"""
    export_page_size: int = Field(500, ge=1, le=10_000, validation_alias="SESSIONCTL_EXPORT_PAGE_SIZE")
    """sessions read per keyset page while exporting (bounds the worker's memory)"""
    export_readers: int = Field(2, ge=1, le=8, validation_alias="SESSIONCTL_EXPORT_READERS")
    """pages one export may read at once (1–8; 1: one page at a time). Pages after the first are read on spare
    connections only — free at that moment, never waited for, back in the pool after each page; each keeps one
    Postgres backend busy rendering JSON: lower it to spare the database's CPU
    """
    export_ttl: int = Field(7 * 24 * 3600, ge=60, validation_alias="SESSIONCTL_EXPORT_TTL")
    """seconds an export made for a data-subject request over HTTP is kept after it was written (7 days); then
    its file is deleted (an erasure of its person deletes it at once)"""
    openapi: Literal["off", "token", "public"] = Field("off", validation_alias="SESSIONCTL_OPENAPI")
    """the DSR service's OpenAPI spec: `off`; `token`: `/openapi.json` for any valid bearer token; `public`: the
    spec, `/docs` and `/redoc` without a token (a private network only)"""
    webhook_scheme: Literal["stripe", "standard"] = Field("stripe", validation_alias="SESSIONCTL_WEBHOOK_SCHEME")
    """how completion webhooks are signed: `stripe` (`X-Sessionctl-Signature: t=…,v1=…`, as Stripe signs) or
    `standard` ([Standard Webhooks](https://www.standardwebhooks.com): `webhook-id`, `webhook-timestamp`,
    `webhook-signature`; every secret is then `whsec_` + base64 of a key of 24 to 64 bytes)"""
    webhook_secret: SecretStr | None = Field(None, validation_alias="SESSIONCTL_WEBHOOK_SECRET")
    """a secret completion webhooks are signed with (one more besides `SESSIONCTL_WEBHOOK_SECRETS`); a request with
    a `callback_url` is refused while neither is set"""
    webhook_secrets: SecretStr | None = Field(None, validation_alias="SESSIONCTL_WEBHOOK_SECRETS")
    """comma-separated secrets, all valid at once: every webhook carries one signature per secret, so a secret is
    rotated without a gap (add the new one, deploy the receivers, remove the old one) (unset)"""
    webhook_allowed_hosts: str = Field("", validation_alias="SESSIONCTL_WEBHOOK_ALLOWED_HOSTS")
    """comma-separated `host` (any port) or `host:port` a `callback_url` may point at; empty: no callbacks"""
    webhook_timeout: float = Field(10.0, gt=0, le=120, validation_alias="SESSIONCTL_WEBHOOK_TIMEOUT")
    """seconds one delivery attempt may take; a worker that dies mid-delivery leaves it to another after twice
    this"""
    webhook_give_up_hours: float = Field(24.0, gt=0, le=24 * 30, validation_alias="SESSIONCTL_WEBHOOK_GIVE_UP_HOURS")
    """hours a webhook is retried (backoff 1 s, 2 s, 4 s … at most an hour apart) before it is given up"""
    dsr_deadline_days: int | None = Field(None, ge=1, le=366, validation_alias="SESSIONCTL_DSR_DEADLINE_DAYS")
    """days a data-subject request is due in after it was received; unset: one calendar month (GDPR art. 12(3))"""
    transcend_sombra_url: str | None = Field(None, validation_alias="SESSIONCTL_TRANSCEND_SOMBRA_URL")
    """Transcend: your Sombra gateway (`https://multi-tenant.sombra.transcend.io` or your own); set, with the
    audience and API key, `POST /v1/connectors/transcend` takes Transcend's webhooks and workers answer Sombra"""
    transcend_audience: str | None = Field(None, validation_alias="SESSIONCTL_TRANSCEND_AUDIENCE")
    """Transcend: the audience Sombra's tokens must name (your organization's URI in Transcend)"""
    transcend_api_key: SecretStr | None = Field(None, validation_alias="SESSIONCTL_TRANSCEND_API_KEY")
    """Transcend: the API key of this data silo (sent as `authorization: Bearer …` to Sombra)"""
    transcend_sombra_api_key: SecretStr | None = Field(None, validation_alias="SESSIONCTL_TRANSCEND_SOMBRA_API_KEY")
    """Transcend: a self-hosted Sombra's internal key (sent as `x-sombra-authorization: Bearer …`)"""
    transcend_data_silo_id: str | None = Field(None, validation_alias="SESSIONCTL_TRANSCEND_DATA_SILO_ID")
    """Transcend pull mode: the data silo whose pending requests workers fetch (nothing inbound needed)"""
    transcend_pull_seconds: float = Field(300.0, ge=5, le=86400, validation_alias="SESSIONCTL_TRANSCEND_PULL_SECONDS")
    """Transcend pull mode: seconds between two fetches of pending requests"""
    transcend_inline_max_bytes: int = Field(
        5_000_000, ge=1000, le=50_000_000, validation_alias="SESSIONCTL_TRANSCEND_INLINE_MAX_BYTES"
    )
    """Transcend: an access export up to this size goes in one `POST /v1/data-silo`; a larger one in pages
    of `POST /v1/datapoint-chunked`"""
    ketch_secret: SecretStr | None = Field(None, validation_alias="SESSIONCTL_KETCH_SECRET")
    """Ketch: the `Authorization` value Ketch's DSR forwarder sends (set in Ketch's connection); set, it turns
    `POST /v1/connectors/ketch` on"""
    ketch_identity_spaces: str = Field("", validation_alias="SESSIONCTL_KETCH_IDENTITY_SPACES")
    """Ketch: the comma-separated identity spaces whose raw values identify the person here (empty: any); without
    an identity mapping, a request with identities of several spaces is refused — a value of another space could be
    someone else's user id"""
    identity_query: str | None = Field(None, validation_alias="SESSIONCTL_IDENTITY_QUERY")
    """the SQL that turns a DSR platform's identifier into the person's user ids: `$1` the identifier, `$2` its
    type (`email`, `account_id`…), the first column of each row a user id; unset: the identifier is the user id"""
    identity_database_url: SecretStr | None = Field(None, validation_alias="SESSIONCTL_IDENTITY_DATABASE_URL")
    """the Postgres database `SESSIONCTL_IDENTITY_QUERY` runs in (default: `DATABASE_URL`)"""
    identity_function: str | None = Field(None, validation_alias="SESSIONCTL_IDENTITY_FUNCTION")
    """instead of a query: `package.module:function`, called with (identifier, type), returning the user ids
    (a list, or an awaitable of one)"""
    log_format: Literal["auto", "json", "console"] = Field("auto", validation_alias="SESSIONCTL_LOG_FORMAT")
    """`json`, `console`, or `auto` (JSON unless stderr is a terminal)"""
    log_level: str = Field("INFO", validation_alias="SESSIONCTL_LOG_LEVEL")
    """log level"""

    @field_validator("schema_template")
    @classmethod
    def _template_ok(cls, value: str) -> str:
        if "{agent}" not in value and "{agent_id}" not in value:
            raise ValueError("SESSIONCTL_SCHEMA_TEMPLATE must contain {agent} (or {agent_id})")
        try:
            schema_for_agent("a0", value)
        except (KeyError, IndexError, InvalidRequest) as exc:
            raise ValueError("SESSIONCTL_SCHEMA_TEMPLATE must yield a safe schema name, e.g. ag_{agent}") from exc
        return value

    @field_validator("webhook_secret", "webhook_secrets")
    @classmethod
    def _webhook_secrets_fit_scheme(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and info.data.get("webhook_scheme") == "standard":
            from sessionctl.webhooks import standard_key

            for n, secret in enumerate(_entries(value), 1):
                try:
                    standard_key(secret)
                except ValueError as exc:
                    raise ValueError(f"with SESSIONCTL_WEBHOOK_SCHEME=standard, secret {n} {exc}") from None
        return value

    @field_validator("ketch_secret", "transcend_api_key")
    @classmethod
    def _platform_secret_long_enough(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """A platform's secret that is set is a real one: an empty or short value (a blank line in
        ``.env``) would let anyone in, or answer nobody."""
        if value is not None and len(value.get_secret_value().strip()) < 16:
            name = "SESSIONCTL_KETCH_SECRET" if info.field_name == "ketch_secret" else "SESSIONCTL_TRANSCEND_API_KEY"
            raise ValueError(f"{name} is set but shorter than 16 characters: set the real secret, or unset it")
        return value

    @field_validator("transcend_sombra_url")
    @classmethod
    def _sombra_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = value.strip().rstrip("/")
        if not url.startswith(("https://", "http://")):
            raise ValueError("SESSIONCTL_TRANSCEND_SOMBRA_URL must be an https:// URL (your Sombra gateway)")
        return url

    @field_validator("export_dir")
    @classmethod
    def _export_dir_absolute(cls, value: str) -> str:
        path = Path(value).expanduser()
        if not path.is_absolute():
            raise ValueError(
                f"must be an absolute path, not {value!r}: a relative one is another directory for every process"
                " started elsewhere (the worker would write where the service does not look)"
            )
        return str(path)

    @property
    def dsn(self) -> Dsn:
        return _parsed_dsn(self.database_url)

    def schema_for(self, agent_id: str) -> str:
        return schema_for_agent(agent_id, self.schema_template)

    @property
    def webhook_secret_values(self) -> list[str]:
        """Every webhook secret, `SESSIONCTL_WEBHOOK_SECRETS`' then `SESSIONCTL_WEBHOOK_SECRET`, each once."""
        both = [*_entries(self.webhook_secrets), *_entries(self.webhook_secret)]
        return list(dict.fromkeys(both))

    def webhook_keys(self) -> list[bytes]:
        """The keys every webhook is signed with, one signature each (none: webhooks cannot be sent)."""
        from sessionctl.webhooks import standard_key

        values = self.webhook_secret_values
        return [standard_key(v) if self.webhook_scheme == "standard" else v.encode() for v in values]

    @property
    def hash_key_bytes(self) -> bytes:
        if self.hash_key is None or not self.hash_key.get_secret_value():
            _warn_dev_key()
            return DEV_HASH_KEY.encode()
        return self.hash_key.get_secret_value().encode()


def _entries(value: SecretStr | None) -> list[str]:
    """A comma-separated secret's entries, blanks dropped."""
    if value is None:
        return []
    return [e.strip() for e in value.get_secret_value().split(",") if e.strip()]


def state_dir() -> Path:
    """Where sessionctl keeps what it writes locally (the default export directory, the embedded
    services of ``sessionctl demo``): ``SESSIONCTL_STATE_DIR``, else ``~/.local/state/sessionctl``."""
    path = Path(os.environ.get("SESSIONCTL_STATE_DIR") or Path.home() / ".local" / "state" / "sessionctl")
    path = path.expanduser()
    if not path.is_absolute():
        raise InvalidRequest(
            f"SESSIONCTL_STATE_DIR must be an absolute path, not {str(path)!r}: a relative one is another directory"
            " for every process started elsewhere"
        )
    return path


_warned: list[bool] = []


def _warn_dev_key() -> None:
    """One plain line on stderr, once per process (no Python warning: its file, line and source
    line would stand before every command's output)."""
    if not _warned:
        _warned.append(True)
        sys.stderr.write(
            "warning: SESSIONCTL_HASH_KEY is not set: user ids are hashed with a public development key;"
            " set it to a long random secret, and keep it (receipts are found by it)\n"
        )


def load_settings(**overrides: object) -> Settings:
    """The settings: the environment, then ``.env``, then the embedded services' file while
    ``sessionctl demo start`` keeps them running (sessionctl.embedded)."""
    from sessionctl.embedded import services_file

    return Settings(_env_file=(str(services_file()), ".env"), **overrides)  # type: ignore[arg-type,call-arg]


@functools.lru_cache(maxsize=64)
def _parsed_dsn(database_url: str) -> Dsn:
    """``DATABASE_URL`` parsed once per value: the service and the worker ask for it on every
    request and every connection."""
    return Dsn.parse(database_url)
