"""Settings, read from the environment (and a ``.env`` file) by pydantic-settings.

Every setting is listed, with its default, in the README's configuration table.
"""

from __future__ import annotations

import warnings
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sessionctl.errors import InvalidRequest
from sessionctl.identifiers import DEFAULT_SCHEMA_TEMPLATE, Dsn, schema_for_agent

DEV_HASH_KEY = "sessionctl-insecure-development-key"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    redis_url: str = Field(
        "redis://localhost:6379/0", validation_alias=AliasChoices("REDIS_URL", "SESSIONCTL_REDIS_URL")
    )
    redis_ssl_ca_certs: str | None = Field(None, validation_alias="SESSIONCTL_REDIS_SSL_CA_CERTS")
    redis_ssl_cert_reqs: Literal["required", "none"] = Field(
        "required", validation_alias="SESSIONCTL_REDIS_SSL_CERT_REQS"
    )
    redis_sentinels: str | None = Field(None, validation_alias="SESSIONCTL_REDIS_SENTINELS")
    redis_sentinel_master: str = Field("mymaster", validation_alias="SESSIONCTL_REDIS_SENTINEL_MASTER")
    database_url: str = Field(
        "postgresql://postgres@localhost:5432/postgres",
        validation_alias=AliasChoices("DATABASE_URL", "SESSIONCTL_DATABASE_URL"),
    )
    resolvers: str | None = Field(None, validation_alias="SESSIONCTL_RESOLVERS")
    resolver_ttl: float = Field(60, ge=0, validation_alias="SESSIONCTL_RESOLVER_TTL")
    agent_map: str | None = Field(None, validation_alias="SESSIONCTL_AGENT_MAP")
    xpander_api_key: str | None = Field(None, validation_alias="XPANDER_API_KEY")
    xpander_organization_id: str | None = Field(None, validation_alias="XPANDER_ORGANIZATION_ID")
    xpander_base_url: str = Field("https://inbound.xpander.ai", validation_alias="XPANDER_BASE_URL")
    schema_template: str = Field(DEFAULT_SCHEMA_TEMPLATE, validation_alias="SESSIONCTL_SCHEMA_TEMPLATE")
    batch_size: int = Field(5000, ge=1, le=50_000, validation_alias="SESSIONCTL_BATCH_SIZE")
    purge_walkers: int = Field(2, ge=1, le=8, validation_alias="SESSIONCTL_PURGE_WALKERS")
    poll_delay: float = Field(0.05, gt=0, le=10, validation_alias="SESSIONCTL_POLL_DELAY")
    queue_read_limit: int = Field(500, ge=1, le=100_000, validation_alias="SESSIONCTL_QUEUE_READ_LIMIT")
    max_jobs: int = Field(4, ge=1, le=1000, validation_alias="SESSIONCTL_MAX_JOBS")
    hash_key: SecretStr | None = Field(None, validation_alias="SESSIONCTL_HASH_KEY")
    queue_name: str = Field("sessionctl:queue", validation_alias="SESSIONCTL_QUEUE")
    purge_timeout: int = Field(1800, ge=5, validation_alias="SESSIONCTL_PURGE_TIMEOUT")
    export_timeout: int = Field(7200, ge=5, validation_alias="SESSIONCTL_EXPORT_TIMEOUT")
    lease_ttl: int = Field(60, ge=3, le=3600, validation_alias="SESSIONCTL_LEASE_TTL")
    job_index_size: int = Field(10_000, ge=10, validation_alias="SESSIONCTL_JOB_INDEX_SIZE")
    failed_ttl: int = Field(30 * 24 * 3600, ge=60, validation_alias="SESSIONCTL_FAILED_TTL")
    retention_file: str | None = Field(None, validation_alias="SESSIONCTL_RETENTION_FILE")
    retention_schedule: str = Field("17 3", validation_alias="SESSIONCTL_RETENTION_SCHEDULE")
    retention_budget: int = Field(600, ge=1, validation_alias="SESSIONCTL_RETENTION_BUDGET")
    retention_pause_ms: int = Field(50, ge=0, le=60_000, validation_alias="SESSIONCTL_RETENTION_PAUSE_MS")
    stop_grace: int = Field(20, ge=0, le=3600, validation_alias="SESSIONCTL_STOP_GRACE")
    progress_interval: float = Field(0.5, ge=0, le=60, validation_alias="SESSIONCTL_PROGRESS_INTERVAL")
    metrics_port: int = Field(9108, ge=0, le=65535, validation_alias="SESSIONCTL_METRICS_PORT")
    keep_result: int = Field(7 * 24 * 3600, ge=60, validation_alias="SESSIONCTL_KEEP_RESULT")
    max_tries: int = Field(5, ge=1, le=50, validation_alias="SESSIONCTL_MAX_TRIES")
    retry_base_delay: float = Field(2.0, ge=0, validation_alias="SESSIONCTL_RETRY_BASE_DELAY")
    max_databases: int = Field(32, ge=1, le=1000, validation_alias="SESSIONCTL_MAX_DATABASES")
    client_cache_size: int = Field(256, ge=1, validation_alias="SESSIONCTL_CLIENT_CACHE_SIZE")
    pool_size: int = Field(4, ge=1, le=100, validation_alias="SESSIONCTL_POOL_SIZE")
    export_dir: str = Field("exports", validation_alias=AliasChoices("SESSIONCTL_EXPORT_DIR", "EXPORT_DIR"))
    export_page_size: int = Field(500, ge=1, le=10_000, validation_alias="SESSIONCTL_EXPORT_PAGE_SIZE")
    export_readers: int = Field(2, ge=1, le=8, validation_alias="SESSIONCTL_EXPORT_READERS")
    log_format: Literal["auto", "json", "console"] = Field("auto", validation_alias="SESSIONCTL_LOG_FORMAT")
    log_level: str = Field("INFO", validation_alias="SESSIONCTL_LOG_LEVEL")

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

    @property
    def dsn(self) -> Dsn:
        return Dsn.parse(self.database_url)

    def schema_for(self, agent_id: str) -> str:
        return schema_for_agent(agent_id, self.schema_template)

    @property
    def hash_key_bytes(self) -> bytes:
        if self.hash_key is None or not self.hash_key.get_secret_value():
            warnings.warn(
                "SESSIONCTL_HASH_KEY is not set: user ids are hashed with a development key. "
                "Set a long random secret in production (and keep it: receipts are found by it).",
                RuntimeWarning,
                stacklevel=2,
            )
            return DEV_HASH_KEY.encode()
        return self.hash_key.get_secret_value().encode()


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
