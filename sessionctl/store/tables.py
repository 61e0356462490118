"""The names of Agno's tables that sessionctl reads and writes, the keys it walks them by, and every
table that holds a user's data with how an erasure of scope "all" treats it."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class UserStore:
    """One Agno table that holds a user's data, and how an erasure treats it."""

    table: str
    action: str  # "delete" the user's rows, or "anonymize" them (the person's columns set to NULL)
    note: str
    # "agent": a table of each agent schema, keyed by user_id, erased with scope "all";
    # "database": found by layout anywhere in a database (store.shared_stores), erased with scope
    # "all" across all agents (or, for a vector table inside an agent schema, with that agent);
    # "media": objects of a MediaStorage that the erased sessions' runs point at (sessionctl.media_storages)
    place: str = "agent"


# Every Agno table with a user_id column, in the order an erasure visits them (children first).
# tests/test_scope_all.py fails when Agno declares a user-keyed table this list does not know.
USER_STORES: tuple[UserStore, ...] = (
    UserStore("agno_sessions", "delete", "sessions, purged first with their runs, transcripts and tool results"),
    UserStore("agno_sessions_sandbox_bindings", "delete", "sandbox leases of the user's sessions"),
    UserStore("agno_runs", "delete", "runs the user made in sessions owned by others (team sessions)"),
    UserStore("agno_memories", "delete", "what agents remember about the user"),
    UserStore("agno_learnings", "delete", "what agents learned from the user"),
    UserStore("agno_compactions", "delete", "folded transcripts (archived messages, verbatim)"),
    UserStore("agno_tool_results", "delete", "offloaded tool results and their payloads in fs.agno_fs"),
    UserStore("agno_traces", "delete", "traces of the user's runs, with their spans"),
    UserStore("agno_eval_runs", "delete", "evaluations run on the user's data"),
    UserStore("agno_approvals", "delete", "approval requests of the user's runs"),
    UserStore("agno_jobs", "delete", "queued background runs, with the user's input"),
    UserStore("agno_schedule_runs", "delete", "runs of the user's schedules"),
    UserStore("agno_schedules", "delete", "the user's schedules"),
    UserStore("agno_knowledge", "delete", "content the user added"),
    UserStore("agno_metrics", "delete", "the user's daily usage aggregates"),
    UserStore("agno_auth_tokens", "delete", "the user's OAuth tokens"),
    UserStore("agno_components", "anonymize", "agents/teams the user defined: shared configuration"),
    UserStore("agno_company_products", "anonymize", "shared business records the user created"),
    UserStore("agno_company_projects", "anonymize", "shared business records the user created"),
    UserStore("agno_company_sources", "anonymize", "shared business records the user created"),
    UserStore("agno_company_tasks", "anonymize", "shared business records the user created"),
    UserStore("agno_service_accounts", "anonymize", "service accounts the user created: still in use"),
    UserStore("PgVector tables (any name; ai by default)", "delete", "the user's knowledge chunks", "database"),
    UserStore("agno_authz_users", "delete", "the AgentOS login record: email, name, metadata", "database"),
    UserStore("agno_authz_grouping", "delete", "the user's role assignments", "database"),
    UserStore("agno_authz_audit", "anonymize", "change events keep what happened, not who (actor, target)", "database"),
    UserStore("agno_authz_decisions", "anonymize", "access events keep the route, not who (actor, token)", "database"),
    UserStore("offloaded media", "delete", "images, audio, video, files of the user's runs", "media"),
)
KNOWN_USER_TABLES = frozenset(s.table for s in USER_STORES if s.place == "agent")
