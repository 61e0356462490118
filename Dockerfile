FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 SESSIONCTL_LOG_FORMAT=json
WORKDIR /app
COPY pyproject.toml README.md ./
COPY sessionctl ./sessionctl
COPY worker ./worker
COPY jobs ./jobs
RUN pip install --no-cache-dir . && useradd --system --uid 10001 sessionctl
USER sessionctl
# arq's own health check: the worker writes <queue>:health-check to Redis every minute.
HEALTHCHECK --interval=60s --timeout=10s --start-period=30s \
  CMD arq --check worker.WorkerSettings || exit 1
CMD ["sessionctl", "worker"]
