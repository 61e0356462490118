"""Every SQL statement sessionctl runs, by concept (the one place for SQL).

Schema and table names reach SQL only as quoted identifiers (:func:`~sessionctl.identifiers.quote_ident`)
— validated first when they come from input; values are always bind parameters, numbered by one
helper (:class:`~sessionctl.store.params.Params`). Agno's own client hides database errors (reads
return ``[]``, deletes ``None``), so everything that decides an outcome — what exists, how many rows
a user has left — is read here, with errors raised, never swallowed.

- :mod:`.catalog`: an agent schema's layout, discovery of agent schemas, user-keyed tables, sizes;
- :mod:`.counts`: a user's rows, counted (the proof); :mod:`.delete`: batches of deletes;
- :mod:`.export`, :mod:`.listing`, :mod:`.restore`: reading sessions out, writing them back;
- :mod:`.user_stores`: every store Agno keeps about a user and how scope "all" erases it;
  :mod:`.shared_stores`: the vector and authz tables among them, found by layout anywhere;
- :mod:`.indexes`: what ``doctor`` checks and builds; :mod:`.access`: privileges, row-level
  security, read-only databases and the grants they imply;
- :mod:`.receipts`: our own schema (receipts and its migrations).

The names of every module but ``access`` and ``receipts`` are re-exported here: ``store.read_layout``.
"""

from __future__ import annotations

from sessionctl.store.catalog import (
    LAYOUT_TABLES,
    REQUIRED_SESSION_COLUMNS,
    Layout,
    discover_agent_schemas,
    init_connection,
    read_layout,
    read_layouts,
    recorded_agent_ids,
    schema_exists,
    server_version,
    session_table_problems,
    session_tables_problems,
    table_sizes,
)
from sessionctl.store.counts import (
    Counts,
    count_expired,
    count_sessions,
    count_sessions_per_user,
    count_user,
    count_user_payloads,
    count_user_rows,
    count_user_sessions,
    count_users_per_schema,
    expired_where,
    run_ids_of,
)
from sessionctl.store.delete import (
    TidBatch,
    delete_all_of_users,
    delete_expired_sessions,
    delete_session_by_id,
    delete_sessions_by_tids,
    delete_unchanged_sessions,
    delete_user_memories,
    delete_user_range,
    delete_user_sessions,
    next_snapshot_ids,
    snapshot_expired,
    snapshot_user_session_ids,
    some_user_session_ids,
    split_keys,
    user_session_tid_batches,
)
from sessionctl.store.delete_statement import BatchOutcome
from sessionctl.store.export_reads import (
    Window,
    count_window,
    export_key,
    export_lines,
    export_page_end,
    runs_for_sessions,
    sessions_by_ids,
)
from sessionctl.store.indexes import NEEDED_INDEXES, IndexSpec, create_index, index_applies, index_status
from sessionctl.store.listing import get_session_row, list_user_sessions_page
from sessionctl.store.params import USERS_1, Params, legacy_runs_expr, rowcount
from sessionctl.store.restore_checks import (
    count_sessions_by_id,
    restore_updated_at,
    runs_of_other_sessions,
    sessions_owned_elsewhere,
)
from sessionctl.store.shared_stores import (
    VECTOR,
    SharedTable,
    count_shared,
    erase_shared,
    find_shared_tables,
)
from sessionctl.store.tables import (
    KNOWN_USER_TABLES,
    MEMORIES,
    PAYLOADS,
    RUNS,
    SESSIONS,
    SPANS,
    TOOL_RESULTS,
    TRACES,
    TRANSCRIPTS,
    USER_STORES,
    ExportKey,
    SessionKey,
    UserStore,
)
from sessionctl.store.user_stores import (
    count_user_files,
    erase_user_stores,
    remaining_user_rows,
    user_keyed_tables,
)

__all__ = [
    "KNOWN_USER_TABLES",
    "LAYOUT_TABLES",
    "MEMORIES",
    "NEEDED_INDEXES",
    "PAYLOADS",
    "REQUIRED_SESSION_COLUMNS",
    "RUNS",
    "SESSIONS",
    "SPANS",
    "TOOL_RESULTS",
    "TRACES",
    "TRANSCRIPTS",
    "USERS_1",
    "USER_STORES",
    "VECTOR",
    "BatchOutcome",
    "Counts",
    "ExportKey",
    "IndexSpec",
    "Layout",
    "Params",
    "SessionKey",
    "SharedTable",
    "TidBatch",
    "UserStore",
    "Window",
    "count_expired",
    "count_sessions",
    "count_sessions_by_id",
    "count_sessions_per_user",
    "count_shared",
    "count_user",
    "count_user_files",
    "count_user_payloads",
    "count_user_rows",
    "count_user_sessions",
    "count_users_per_schema",
    "count_window",
    "create_index",
    "delete_all_of_users",
    "delete_expired_sessions",
    "delete_session_by_id",
    "delete_sessions_by_tids",
    "delete_unchanged_sessions",
    "delete_user_memories",
    "delete_user_range",
    "delete_user_sessions",
    "discover_agent_schemas",
    "erase_shared",
    "erase_user_stores",
    "expired_where",
    "export_key",
    "export_lines",
    "export_page_end",
    "find_shared_tables",
    "get_session_row",
    "index_applies",
    "index_status",
    "init_connection",
    "legacy_runs_expr",
    "list_user_sessions_page",
    "next_snapshot_ids",
    "read_layout",
    "read_layouts",
    "recorded_agent_ids",
    "remaining_user_rows",
    "restore_updated_at",
    "rowcount",
    "run_ids_of",
    "runs_for_sessions",
    "runs_of_other_sessions",
    "schema_exists",
    "server_version",
    "session_table_problems",
    "session_tables_problems",
    "sessions_by_ids",
    "sessions_owned_elsewhere",
    "snapshot_expired",
    "snapshot_user_session_ids",
    "some_user_session_ids",
    "split_keys",
    "table_sizes",
    "user_keyed_tables",
    "user_session_tid_batches",
]
