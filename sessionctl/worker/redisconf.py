"""Redis connection settings for producers, workers and checks: one URL, plus TLS and Sentinel.

- ``REDIS_URL``: ``redis://[user:password@]host:port/db`` or ``rediss://…`` (TLS).
- TLS with a private CA: ``SESSIONCTL_REDIS_SSL_CA_CERTS`` (a PEM file);
  ``SESSIONCTL_REDIS_SSL_CERT_REQS`` = ``required`` (default) or ``none``.
- Sentinel: ``SESSIONCTL_REDIS_SENTINELS=host1:26379,host2:26379`` and
  ``SESSIONCTL_REDIS_SENTINEL_MASTER=mymaster``; the password and database still come from
  ``REDIS_URL`` (its host is then ignored).
"""

from __future__ import annotations

from arq.connections import ArqRedis, RedisSettings, create_pool

from sessionctl.config import Settings
from sessionctl.errors import InvalidRequest


def redis_settings(settings: Settings) -> RedisSettings:
    try:
        rs = RedisSettings.from_dsn(settings.redis_url)
    except (RuntimeError, ValueError) as exc:
        raise InvalidRequest("REDIS_URL is invalid: expected redis://[:password@]host:6379/0 or rediss://…") from exc
    if rs.ssl:
        rs.ssl_cert_reqs = settings.redis_ssl_cert_reqs
        rs.ssl_ca_certs = settings.redis_ssl_ca_certs
    if settings.redis_sentinels:
        hosts = []
        for part in settings.redis_sentinels.split(","):
            host, _, port = part.strip().rpartition(":")
            if not host or not port.isdigit():
                raise InvalidRequest("SESSIONCTL_REDIS_SENTINELS must be host:port[,host:port…], e.g. sentinel-1:26379")
            hosts.append((host, int(port)))
        rs.host = hosts
        rs.sentinel = True
        rs.sentinel_master = settings.redis_sentinel_master
    return rs


async def connect(settings: Settings, *, retries: int = 0) -> ArqRedis:
    """An arq Redis pool with our JSON serializer on both sides."""
    from sessionctl.worker import serializer

    rs = redis_settings(settings)
    rs.conn_retries = retries
    return await create_pool(
        rs,
        job_serializer=serializer.serialize,
        job_deserializer=serializer.deserialize,
        default_queue_name=settings.queue_name,
    )
