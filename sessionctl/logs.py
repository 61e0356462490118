"""Structured logging: JSON when not on a terminal (production), a console renderer on one.

Events have stable names (``purge.start``, ``purge.batch``, ``purge.done``); ``job_id``, the
agent and the user's HMAC are bound with contextvars. arq's own job lines quote the job's
arguments, which hold the raw user id while a job is queued: :class:`ArqArgsFilter` removes them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_ARQ_START = "%6.2fs → %s(%s)%s"
_configured = 0  # configure_logging's calls so far: a logger bound under an earlier one binds again


class ArqArgsFilter(logging.Filter):
    """Drop the arguments from arq's "job started" line; keep the line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _ARQ_START and isinstance(record.args, tuple) and len(record.args) == 4:
            record.args = (record.args[0], record.args[1], "…", record.args[3])
        return True


def _no_exception_text(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A logged exception becomes its class name: an exception's text and traceback may quote row
    values (a user id, session content), and a log line never does."""
    info = event.pop("exc_info", None)
    if info:
        exc = info[1] if isinstance(info, tuple) else info if isinstance(info, BaseException) else None
        if exc is not None:
            event.setdefault("exc_type", type(exc).__name__)
    event.pop("exception", None)
    event.pop("stack_info", None)
    return event


def configure_logging(fmt: str = "auto", level: str = "INFO", stream: Any = None) -> None:
    global _configured
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
    _configured += 1
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _no_exception_text, renderer],
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
    return _Logger(name)


class _Logger:
    """What :func:`get_logger` returns: a structlog logger bound once per configuration. structlog's
    own lazy logger binds anew at every call — the level filter, the processors, the stdlib logger
    looked up — which an endpoint answering thousands of requests a second pays on each."""

    __slots__ = ("_bound", "_name", "_seen")

    def __init__(self, name: str) -> None:
        self._name, self._bound, self._seen = name, None, -1

    def __getattr__(self, attr: str) -> Any:
        if self._seen != _configured:
            self._bound = structlog.get_logger(self._name).bind()
            self._seen = _configured
        return getattr(self._bound, attr)
