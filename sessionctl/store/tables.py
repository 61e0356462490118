"""The names of Agno's tables that sessionctl reads and writes, and the keys it walks them by."""

from __future__ import annotations

SESSIONS = "agno_sessions"
RUNS = "agno_runs"
MEMORIES = "agno_memories"
TRANSCRIPTS = "agno_transcripts"
TOOL_RESULTS = "agno_tool_results"
SPANS = "agno_spans"
TRACES = "agno_traces"
PAYLOADS = '"fs".agno_fs'  # Agno's default store of offloaded tool-result payloads, shared by all agents

SessionKey = tuple[int, str]  # (created_at, session_id): a session's place in the user_id index
# An export's place in (created_at, session_id) order (created_at None among undated sessions)
ExportKey = tuple[int | None, str]
