"""Which erasure covers which store, and what a re-sweep asks for again: never wider than before."""

from __future__ import annotations

from sessionctl.jobs.resweep import _covers, plan_again
from sessionctl.store.resweep import Swept


def _r(target: str, scope: str, schemas: set[str] | None = None) -> dict[str, object]:
    return {"target": target, "scope": scope, "schemas": schemas or set()}


def test_an_erasure_covers_the_stores_it_erased_and_no_other() -> None:
    sessions = Swept("ag_a", "agno_sessions", "user_id", "agent", "int8")
    memories = Swept("ag_a", "agno_memories", "user_id", "agent", "int8")
    vectors = Swept("ai", "kb", "user_id", "database", "timestamptz")
    assert _covers(_r("*", "sessions"), sessions) and not _covers(_r("*", "sessions"), memories)
    assert _covers(_r("a", "memories", {"ag_a"}), memories)
    assert not _covers(_r("b", "all", {"ag_b"}), sessions)  # another agent's erasure
    assert _covers(_r("*", "all"), vectors) and not _covers(_r("a", "all", {"ag_a"}), vectors)
    assert not _covers(_r("*", "memories"), vectors)


def test_a_resweep_asks_again_for_what_was_asked_before_never_more() -> None:
    assert plan_again({("a", "sessions")}) == [("a", "sessions")]
    assert plan_again({("a", "sessions"), ("a", "all")}) == [("a", "all")]
    # an all-agents erasure of scope sessions, and one agent's of scope all: both, each as it was
    assert plan_again({("*", "sessions"), ("a", "all")}) == [("*", "sessions"), ("a", "all")]
    # the all-agents erasure already takes what the agent's took
    assert plan_again({("*", "all"), ("a", "memories")}) == [("*", "all")]


def test_the_resweeps_hasher_gives_the_receipts_hmac() -> None:
    from sessionctl.privacy import user_hasher, user_hmac

    digest = user_hasher(b"k" * 32)
    for uid in ("alice", "", "ünïcode", "x" * 1000):
        assert digest(uid) == user_hmac(b"k" * 32, uid)


def test_a_jobs_hmacs_are_the_receipts_hmacs_in_order() -> None:
    from sessionctl.config import Settings
    from sessionctl.databases import Databases
    from sessionctl.jobs.context import JobContext
    from sessionctl.privacy import user_hmac

    key = b"k" * 32
    ctx = JobContext(settings=Settings(hash_key="k" * 32), databases=Databases(), hash_key=key, job_id="j")
    users = ["b", "a", "ünï", "a"]
    assert ctx.hmacs(users) == [user_hmac(key, u) for u in users]
    assert ctx.hmacs(["a", "c"]) == [user_hmac(key, "a"), user_hmac(key, "c")]  # known and new together
