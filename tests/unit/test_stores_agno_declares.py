"""Agno's vector and authz tables, as the installed agno declares them, are recognised by
``store.shared_stores`` and declared in ``store.USER_STORES``: a new authz table, a renamed column
or a changed vector layout fails here before it fails an erasure."""

from __future__ import annotations

from agno.db.schemas import authz as agno_authz

from sessionctl import store
from sessionctl.store import shared_stores

# Agno's authz tables that name no person: role policies and role metadata.
NOT_PERSONAL = {agno_authz.AUTHZ_POLICY, agno_authz.AUTHZ_ROLES}


def test_every_authz_table_agno_declares_is_known() -> None:
    declared = set(agno_authz.AUTHZ_TABLE_SCHEMAS)
    handled = {s.kind for s in shared_stores.SHARED_LAYOUTS} - {shared_stores.VECTOR}
    assert declared == handled | NOT_PERSONAL, (
        f"Agno's authz tables changed: {sorted(declared ^ (handled | NOT_PERSONAL))} — add the new one to"
        " store.shared_stores.SHARED_LAYOUTS and store.USER_STORES (or to NOT_PERSONAL here, if it names no one)"
    )
    for kind, schema in agno_authz.AUTHZ_TABLE_SCHEMAS.items():
        columns = {c for c in schema if not c.startswith("__")}
        expected = None if kind in NOT_PERSONAL else kind
        assert shared_stores.classify(columns, vector_typed=False) == expected, kind
    names = {s.table for s in store.USER_STORES if s.place == "database"}
    for kind in handled:  # declared, by Agno's default table name (BaseDb: "agno_" + kind), in the one list
        assert f"agno_{kind}" in names, kind


def test_agnos_pgvector_table_is_recognised_by_its_layout() -> None:
    from agno.knowledge.embedder.base import Embedder
    from agno.vectordb.pgvector import PgVector

    vectors = PgVector(
        table_name="kb",
        schema="ai",
        db_url="postgresql+psycopg://nobody@127.0.0.1:9/none",
        embedder=Embedder(dimensions=3),
    )
    for table in (vectors.get_table(), vectors.get_table_v1()):  # no connection: the SQLAlchemy definition
        columns = {c.name for c in table.columns}
        assert "user_id" in columns
        assert type(table.c.embedding.type).__name__ == "VECTOR"
        assert shared_stores.classify(columns, vector_typed=True) == shared_stores.VECTOR
        assert shared_stores.classify(columns, vector_typed=False) is None  # an `embedding` of another type
    assert any(s.place == "database" and "PgVector" in s.table for s in store.USER_STORES)
    assert any(s.place == "media" for s in store.USER_STORES)
