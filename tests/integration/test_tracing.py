"""OpenTelemetry: a span per job, a child per agent schema and per delete batch, the producer's
context carried to the worker through Redis; no personal data in any attribute (the SDK's
in-memory exporter, a real worker, real Postgres and Redis)."""

from __future__ import annotations

import json

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessionctl.config import Settings
from sessionctl.privacy import user_hmac
from sessionctl.producer import Producer
from tests.agno_seed import seed
from tests.conftest import HASH_KEY, run_worker

USER = "traced.user@example.com"
EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):  # a process sets its provider once
        current = TracerProvider()
        trace.set_tracer_provider(current)
    current.add_span_processor(SimpleSpanProcessor(EXPORTER))


async def test_a_purge_is_one_trace_from_the_caller_to_every_batch_without_personal_data(
    settings: Settings, agent_id: str
) -> None:
    EXPORTER.clear()
    s = settings.model_copy(update={"batch_size": 2})
    await seed(s.database_url, s.schema_for(agent_id), agent_id, USER, 5)
    with trace.get_tracer("the-caller").start_as_current_span("dsr-ticket") as caller:
        async with Producer(s) as p:
            enq = await p.purge_user_sessions(user_id=USER, agent_id=agent_id)
    await run_worker(s)
    spans = {sp.name: sp for sp in EXPORTER.get_finished_spans()}
    batches = [sp for sp in EXPORTER.get_finished_spans() if sp.name == "sessionctl.batch"]
    enqueue, job, agent = spans["sessionctl.enqueue"], spans["sessionctl.job"], spans["sessionctl.agent"]
    trace_id = caller.get_span_context().trace_id
    assert {enqueue.context.trace_id, job.context.trace_id, agent.context.trace_id} == {trace_id}
    assert enqueue.parent.span_id == caller.get_span_context().span_id
    assert job.parent.span_id == enqueue.context.span_id  # across Redis, into the worker process's loop
    assert agent.parent.span_id == job.context.span_id
    assert len(batches) == 3 and all(b.parent.span_id == agent.context.span_id for b in batches)
    assert sum(b.attributes["sessionctl.sessions"] for b in batches) == 5
    assert job.attributes["sessionctl.job_id"] == enq.job_id
    assert job.attributes["sessionctl.user_hmac"] == user_hmac(HASH_KEY.encode(), USER)
    assert job.attributes["sessionctl.sessions_deleted"] == 5 and job.attributes["sessionctl.status"] == "succeeded"
    everything = json.dumps([dict(sp.attributes or {}) for sp in EXPORTER.get_finished_spans()])
    assert USER not in everything and "traced.user" not in everything
