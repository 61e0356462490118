FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 SESSIONCTL_LOG_FORMAT=json \
    SESSIONCTL_EXPORT_DIR=/exports SESSIONCTL_STATE_DIR=/var/lib/sessionctl
WORKDIR /app
COPY pyproject.toml README.md ./
COPY sessionctl ./sessionctl
# The package alone: the embedded services of `sessionctl demo` (the [demo] extra) are not shipped.
# /exports belongs to the service's user, so a volume mounted there starts writable by it.
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /var/lib/sessionctl --create-home sessionctl \
    && install -d -o 10001 -g 10001 -m 0700 /exports
USER sessionctl
# arq's own health check: the worker writes <queue>:health-check to Redis every minute.
HEALTHCHECK --interval=60s --timeout=10s --start-period=30s \
  CMD arq --check sessionctl.worker.settings.WorkerSettings || exit 1
CMD ["sessionctl", "worker"]
