"""Structured logging: JSON when not on a terminal (production), a console renderer on one.

Events have stable names (``purge.start``, ``purge.batch``, ``purge.done``); ``job_id``, the
agent and the user's HMAC are bound with contextvars. arq's own job lines quote the job's
arguments, which hold the raw user id while a job is queued: :class:`ArqArgsFilter` removes them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_ARQ_START = "%6.2fs → %s(%s)%s"


class ArqArgsFilter(logging.Filter):
    """Drop the arguments from arq's "job started" line; keep the line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _ARQ_START and isinstance(record.args, tuple) and len(record.args) == 4:
            record.args = (record.args[0], record.args[1], "…", record.args[3])
        return True


def configure_logging(fmt: str = "auto", level: str = "INFO", stream: Any = None) -> None:
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not getattr(h, "_sessionctl", False)]
    handler._sessionctl = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # arq's own lines go through the same renderer (and the same filter), not arq's plain handler.
    arq_logger = logging.getLogger("arq")
    arq_logger.handlers = []
    arq_logger.propagate = True
    worker_logger = logging.getLogger("arq.worker")
    if not any(isinstance(f, ArqArgsFilter) for f in worker_logger.filters):
        worker_logger.addFilter(ArqArgsFilter())
    # Agno logs errors it swallows (with SQL that may quote values) at ERROR on its own logger.
    logging.getLogger("agno").setLevel(logging.CRITICAL)


def get_logger(name: str = "sessionctl") -> Any:
    return structlog.get_logger(name)
