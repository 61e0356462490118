"""OpenTelemetry traces, when ``opentelemetry-api`` is installed (``pip install sessionctl[otel]``;
configure the SDK and exporter as usual, e.g. ``opentelemetry-instrument`` or your own
``TracerProvider``). Without it every call here is a no-op.

A job is one span (``sessionctl.job``), with a child per agent schema (``sessionctl.agent``) and per
delete batch (``sessionctl.batch``). Attributes carry no personal data: job id, kind, agent label
and schema, counts, the user's HMAC. The producer's context (the CLI's, the API's request) reaches
the worker through Redis: the producer stores the W3C ``traceparent`` under
``sessionctl:trace:<job_id>`` when it enqueues, and the worker starts the job's span as its child.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

try:
    from opentelemetry import propagate, trace

    ENABLED = True
except ImportError:  # the optional dependency is not installed
    ENABLED = False

TRACER_NAME = "sessionctl"
KEY = "sessionctl:trace:{}"


def carrier() -> dict[str, str]:
    """The current context as W3C headers (``traceparent``…); empty without a span or without OTel."""
    if not ENABLED:
        return {}
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


@contextlib.contextmanager
def span(name: str, parent: dict[str, str] | None = None, **attributes: Any) -> Iterator[Any]:
    """A span (a child of the current one, or of ``parent``'s context); ``None`` without OTel."""
    if not ENABLED:
        yield None
        return
    ctx = propagate.extract(parent) if parent else None
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(name, context=ctx, attributes=_clean(attributes)) as current:
        yield current


def record(name: str, started_monotonic: float, **attributes: Any) -> None:
    """A span for something that ran from ``started_monotonic`` until now (a delete batch,
    reported when it ended), a child of the current span."""
    if not ENABLED:
        return
    elapsed_ns = int((time.monotonic() - started_monotonic) * 1e9)
    end = time.time_ns()
    tracer = trace.get_tracer(TRACER_NAME)
    s = tracer.start_span(name, attributes=_clean(attributes), start_time=end - elapsed_ns)
    s.end(end_time=end)


def set_attributes(current: Any, **attributes: Any) -> None:
    if current is not None:
        current.set_attributes(_clean(attributes))


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {f"sessionctl.{k}": v for k, v in attributes.items() if isinstance(v, str | int | float | bool)}
