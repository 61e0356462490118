"""What a job needs of the database, and the grants printed from it (one list for both)."""

from __future__ import annotations

from sessionctl.store import access
from sessionctl.store.catalog import Layout


def _layout(*tables: str, payloads: bool = True) -> Layout:
    return Layout(schema="ag_a", tables=frozenset(tables), legacy_runs_column=False, payload_table=payloads)


def test_a_purge_needs_to_see_and_delete_every_table_it_touches() -> None:
    layout = _layout("agno_sessions", "agno_runs", "agno_tool_results", "agno_memories")
    needs = {n.label: n.privileges for n in access.erasure_needs(layout)}
    assert needs == {
        "ag_a.agno_sessions": ("SELECT", "DELETE"),
        "ag_a.agno_runs": ("SELECT", "DELETE"),
        "ag_a.agno_tool_results": ("SELECT", "DELETE"),
        "fs.agno_fs": ("SELECT", "DELETE"),
    }
    with_memories = {n.label for n in access.erasure_needs(layout, memories=True)}
    assert "ag_a.agno_memories" in with_memories


def test_a_dry_run_needs_to_see_everything_and_delete_nothing() -> None:
    layout = _layout("agno_sessions", "agno_runs")
    assert {n.privileges for n in access.erasure_needs(layout, dry_run=True)} == {("SELECT",)}


def test_scope_all_deletes_anonymizes_or_only_counts_by_table() -> None:
    layout = _layout("agno_sessions", "agno_components", "agno_learnings", "agno_traces", "agno_spans", "x_custom")
    tables = ["agno_sessions", "agno_components", "agno_learnings", "agno_traces", "x_custom"]
    needs = {n.label: n.privileges for n in access.erasure_needs(layout, scope="all", user_tables=tables)}
    assert needs["ag_a.agno_components"] == ("SELECT", "UPDATE")
    assert needs["ag_a.agno_learnings"] == ("SELECT", "DELETE")
    assert needs["ag_a.agno_spans"] == ("SELECT", "DELETE")
    assert needs["ag_a.x_custom"] == ("SELECT",)  # unknown: counted (and refused by name), never deleted


def test_grants_are_printed_from_the_same_needs() -> None:
    needs = access.erasure_needs(_layout("agno_sessions", "agno_runs", payloads=False))
    lines = access.grant_statements("w", "agents", needs)
    assert lines[0] == 'GRANT CONNECT, TEMPORARY ON DATABASE "agents" TO "w";'
    assert 'GRANT SELECT, DELETE ON "ag_a"."agno_runs" TO "w";' in lines
    assert 'GRANT SELECT, INSERT ON "sessionctl"."receipts" TO "w";' in lines
    assert 'GRANT SELECT, INSERT, UPDATE, DELETE ON "sessionctl"."media_pending" TO "w";' in lines
    assert 'GRANT SELECT, INSERT, UPDATE ON "sessionctl"."legal_holds" TO "w";' in lines  # every erasure reads holds
    assert lines[-1] == (
        "GRANT USAGE ON SEQUENCE sessionctl.receipts_id_seq, sessionctl.media_pending_id_seq,"
        ' sessionctl.webhook_deliveries_id_seq, sessionctl.legal_holds_id_seq TO "w";'
    )
    without = access.grant_statements("w", "agents", needs, receipts=False)
    assert not any("sessionctl" in line for line in without)
    assert access.grant_statements('we"ird', "d", [])[0].endswith('TO "we""ird";')  # quoted, not injected
