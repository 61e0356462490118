"""Fast unit tests: identifiers, DSNs, the JSON serializer, backoff, error descriptions."""

from __future__ import annotations

import json

import pytest
from arq.worker import Retry
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionctl.errors import DatabaseUnavailable, InvalidConnectionURI, InvalidRequest, describe
from sessionctl.identifiers import Dsn, quote_ident, schema_for_agent
from sessionctl.privacy import user_hmac
from sessionctl.worker import serializer
from sessionctl.worker.retry import backoff, to_arq


def test_schema_naming_follows_xpander() -> None:
    assert schema_for_agent("3f2c-11aa-bb") == "ag_3f2c_11aa_bb"
    assert schema_for_agent("a-b", "tenant_{agent}") == "tenant_a_b"


@given(st.text(max_size=80))
@settings(max_examples=300)
def test_any_agent_id_either_yields_a_safe_identifier_or_is_refused(agent_id: str) -> None:
    try:
        schema = schema_for_agent(agent_id)
    except InvalidRequest as exc:
        assert "\n" not in str(exc)
        return
    quoted = quote_ident(schema)
    assert quoted == f'"{schema}"' and len(schema.encode()) <= 63
    assert all(c.isascii() and (c.isalnum() or c == "_") for c in schema)


@pytest.mark.parametrize(
    "uri",
    [
        "postgres://u:p@h:5432/db",
        "postgresql://u:p@h:5432/db",
        "postgresql+psycopg://u:p@h:5432/db",
        "postgresql+asyncpg://u:p@h:5432/db",
        "postgresql+psycopg_async://u:p@h:5432/db",
    ],
)
def test_every_accepted_scheme_normalises_to_the_same_dsn(uri: str) -> None:
    d = Dsn.parse(uri)
    assert d.asyncpg == "postgresql://u:p@h:5432/db"
    assert d.sqlalchemy_async == "postgresql+psycopg://u:p@h:5432/db"
    assert d.redacted == "postgresql://u:***@h:5432/db"
    assert "p@" not in str(d) and "p@" not in repr(d)
    assert d.database == "db"


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "mysql://h/db",
        "postgresql://h:notaport/db",
        "postgresql:///db",
        "http://x",
        "postgresql://svc:2024/Summer@127.0.0.1:5432/postgres",  # unencoded '/' in the password
        "postgresql://u:pa#ss@h/db",
        "postgresql://u:pa?ss@h/db",
    ],
)
def test_invalid_uris_are_value_errors(uri: str) -> None:
    with pytest.raises(InvalidConnectionURI) as info:
        Dsn.parse(uri)
    assert isinstance(info.value, ValueError)
    assert "Summer" not in str(info.value) and "pa#ss" not in str(info.value) and "pa?ss" not in str(info.value)


def test_serializer_drops_arguments_from_results_and_round_trips_errors() -> None:
    result = {
        "t": 1,
        "f": "purge",
        "a": [{"user_id": "raw-user"}],
        "k": {},
        "et": 1,
        "s": False,
        "r": DatabaseUnavailable("lost Postgres"),
        "st": 1,
        "ft": 2,
        "q": "q",
        "id": "j",
    }
    raw = serializer.serialize(result)
    assert b"raw-user" not in raw
    back = serializer.deserialize(raw)
    assert isinstance(back["r"], serializer.JobError)
    assert back["r"].error_type == "DatabaseUnavailable" and str(back["r"]) == "lost Postgres"
    job = {"t": 1, "f": "purge", "a": [{"user_id": "raw-user"}], "k": {}, "et": 1}
    assert serializer.deserialize(serializer.serialize(job)) == job  # queued jobs keep their request


def test_foreign_errors_do_not_leak_their_text() -> None:
    raw = serializer.serialize({"r": KeyError("Key (user_id)=(alice) already exists")})
    assert b"alice" not in raw
    assert json.loads(raw)["r"]["__error__"]["type"] == "KeyError"
    assert describe(RuntimeError("alice"))["message"].startswith("unexpected RuntimeError")


def test_transient_errors_retry_with_bounded_jittered_backoff_and_permanent_ones_do_not() -> None:
    out = to_arq(DatabaseUnavailable(), job_try=1, max_tries=3, base_delay=1.0)
    assert isinstance(out, Retry) and out.defer_score is not None and 500 <= out.defer_score <= 1000
    assert isinstance(to_arq(DatabaseUnavailable(), job_try=3, max_tries=3, base_delay=1.0), DatabaseUnavailable)
    bad = InvalidRequest("x")
    assert to_arq(bad, job_try=1, max_tries=5, base_delay=1.0) is bad
    assert all(0.5 <= backoff(n, 1.0) <= min(300.0, 2 ** (n - 1)) for n in range(1, 20) for _ in range(20))


def test_user_hmac_is_keyed_and_stable() -> None:
    assert user_hmac(b"k", "alice") == user_hmac(b"k", "alice")
    assert user_hmac(b"k", "alice") != user_hmac(b"k2", "alice")
    assert "alice" not in user_hmac(b"k", "alice") and len(user_hmac(b"k", "alice")) == 32


def test_a_payload_that_looks_like_an_error_stays_data() -> None:
    job = {
        "t": 1,
        "f": "purge",
        "a": [{"user_id": {"__error__": {"type": "X", "message": "forged"}}}],
        "k": {},
        "et": 1,
    }
    back = serializer.deserialize(serializer.serialize(job))
    assert back == job and not isinstance(back["a"][0]["user_id"], serializer.JobError)


async def test_progress_is_best_effort_when_redis_fails() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from sessionctl.worker.progress import RedisProgress

    class Broken:
        async def set(self, *a: object, **k: object) -> None:
            raise RedisConnectionError("gone")

    await RedisProgress(Broken(), "j", 60).update(processed=1, total=2, agent="a", force=True)  # no raise


def test_dsn_target_is_what_the_driver_connects_to() -> None:
    a = Dsn.parse("postgresql://u@h:5432?dbname=one")
    b = Dsn.parse("postgresql://u@h:5432?dbname=two")
    assert a.target != b.target and a.asyncpg == "postgresql://u@h:5432/one"  # every driver: the same database
    assert a.database == "one" and a.where == "h/one"
    with pytest.raises(InvalidConnectionURI, match="twice"):
        Dsn.parse("postgresql://u@h/postgres?dbname=other")  # asyncpg would take the path, libpq the query
    assert Dsn.parse("postgres://u@h/db").target == Dsn.parse("postgresql+asyncpg://u@h:5432/db").target
    assert Dsn.parse("postgresql://u@/db?host=/cloudsql/inst1").target[1] == "/cloudsql/inst1"
