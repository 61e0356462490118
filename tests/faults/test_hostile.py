"""Hostile input, generated (hypothesis) on three surfaces: the producer API, the CLI (in process),
and job payloads put straight into Redis for a real worker.

The contract under test (README, "Exit codes" and "Producer API"): bad input is refused with one
line (``InvalidRequest``, a ``ValueError``, or exit 2) before anything is enqueued, good input is
enqueued, and whatever a hostile producer puts in the queue fails that job only: the worker keeps
running, no row changes unless the request was valid and meant it.

Each test checks its inputs against an oracle written from the documented rules (user id: not
blank, at most 1,024 characters, no NUL; agent id: ASCII letters, digits, '-' and '_', at most 63,
starting with a letter or digit; export name: a plain file name, ...), so a success for an invalid
request fails the test as surely as a refusal of a valid one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import pickle
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import hypothesis
import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from typer.testing import CliRunner

from sessionctl.cli import app
from sessionctl.config import Settings
from sessionctl.errors import InvalidRequest
from sessionctl.producer import Producer
from tests.agno_seed import agno_db, seed, seed_sessions, table_rows
from tests.conftest import run_worker

USER = "hostile-hana-3301@example.com"  # seeded: 3 sessions; the only user a hostile request could hurt
BYSTANDER = "bystander-olaf-77@example.com"  # seeded: 2 sessions
PURGE, EXPORT = "purge_user_sessions", "export_sessions"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
from sessionctl.jobs.fields import EPOCH_MAX, EPOCH_MIN  # noqa: E402

JOB_ID_RE = re.compile(r"[\w:-]+:(purge_user_sessions|export_sessions):[0-9a-f]{24}:[0-9a-f]{16,}")
SESSIONCTL = [sys.executable, "-m", "sessionctl.cli"]

FIXTURE_CHECKS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
NO_SHRINK = (Phase.explicit, Phase.generate)  # a worker run per example: report the first failure as is
NO_EXPLAIN = (Phase.explicit, Phase.generate, Phase.shrink)

# -- the documented rules, written out independently of the code under test ----------------------

_AGENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def ok_user(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != "" and len(v) <= 1024 and "\x00" not in v


def ok_cli_user(v: Any) -> bool:
    """On the command line, ``-`` is no id: it reads one from stdin (the runner gives none)."""
    return ok_user(v) and v != "-"


def ok_agent(v: Any) -> bool:
    """A safe agent id whose schema (``ag_`` + id, '-' as '_': the default template) fits Postgres' 63 bytes."""
    return isinstance(v, str) and _AGENT_RE.fullmatch(v) is not None and len("ag_" + v) <= 63


def ok_out(v: Any) -> bool:
    return (
        isinstance(v, str)
        and _NAME_RE.fullmatch(v) is not None
        and ".." not in v
        and not v.endswith((".manifest.json", ".partial"))
    )


def ok_label(v: Any) -> bool:
    return v is None or (isinstance(v, str) and len(v) <= 200 and v.isprintable())


def ok_flag(v: Any) -> bool:
    return type(v) is bool


def ok_epoch(v: Any) -> bool:
    return v is None or (type(v) is int and EPOCH_MIN <= v <= EPOCH_MAX)


def _known(settings: Settings, schema: str, agent: Any) -> bool:
    """Whether a (valid) agent id names the seeded agent's schema (``a-b`` and ``a_b`` name one)."""
    return ok_agent(agent) and settings.schema_for(agent) == schema


def _same_target(settings: Settings, queued: str | None, asked: str | None, *, collapsed: bool) -> bool:
    """The queued job acts on the agent asked for; a collapsed one may spell it as the job it joined did."""
    if queued is None or asked is None or not collapsed:
        return queued == asked
    return settings.schema_for(queued) == settings.schema_for(asked)


def purge_valid(d: dict[str, Any]) -> bool:
    fields = {"user_id", "agent_id", "all_agents", "dry_run", "memories", "requested_by"}
    if not set(d) <= fields or "user_id" not in d:
        return False
    agent, all_agents = d.get("agent_id"), d.get("all_agents", False)
    return (
        ok_user(d["user_id"])
        and (agent is None or ok_agent(agent))
        and all(ok_flag(d.get(f, False)) for f in ("all_agents", "dry_run", "memories"))
        and ok_label(d.get("requested_by"))
        and (agent is not None) != (all_agents is True)
    )


def export_valid(d: dict[str, Any]) -> bool:
    fields = {"out", "user_id", "agent_id", "all_agents", "since", "until", "by", "compress", "then_purge"}
    if not set(d) <= fields | {"requested_by"} or "out" not in d:
        return False
    agent, all_agents, user = d.get("agent_id"), d.get("all_agents", False), d.get("user_id")
    since, until = d.get("since"), d.get("until")
    return (
        ok_out(d["out"])
        and (user is None or ok_user(user))
        and (agent is None or ok_agent(agent))
        and all(ok_flag(d.get(f, False)) for f in ("all_agents", "then_purge"))
        and ok_epoch(since)
        and ok_epoch(until)
        and (since is None or until is None or since < until)
        and d.get("by", "created") in ("created", "updated")
        and d.get("compress", "none") in ("none", "gz", "zst")
        and ok_label(d.get("requested_by"))
        and (agent is not None) != (all_agents is True)
        and not (d.get("then_purge") is True and user is None)
    )


def one_line(message: str) -> bool:
    return message != "" and len(message.splitlines()) == 1 and not message.endswith(("\n", "\r"))


# -- strategies ------------------------------------------------------------------------------------

SQL = [
    "'; drop table x; --",
    'x"; drop schema y; --',
    "1' OR '1'='1",
    "$1",
    "%s%s%n",
    "ag_x; --",
    "\\'",
    "*",
    "agno_sessions",
    "); DELETE FROM agno_sessions; --",
]
PATHS = [
    "../..",
    "..",
    ".",
    "/",
    "/etc/passwd",
    "..\\..\\x",
    "a/../b",
    "./x",
    "x/",
    "~root",
    ".hidden",
    "CON",
    "x.partial",
    "x.manifest.json",
    "a..b",
    "-rf",
    "file:///etc/passwd",
]
ODD = [
    "",
    " ",
    "\t\n",
    "\x00",
    "a\x00b",
    "\n",
    "a\nb",
    "\r\n",
    "\u2028",
    "\u00a0",
    "\ufeff",
    "\u202e",
    "é",
    "😀",
    "İ",
    "\x1b[31m",
    "[bold]x[/bold]",
    "%(x)s",
    "{agent}",
    "null",
    "-",
    "_",
    "a-",
]
FRAGMENTS = SQL + PATHS + ODD
LIMITS = [0, 1, 60, 61, 62, 63, 64, 199, 200, 201, 1023, 1024, 1025, 10_240]

hostile_text = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.text(max_size=30),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,70}", fullmatch=True),  # look-alike ids and names
    st.builds(lambda a, b, c: a + b + c, st.sampled_from(FRAGMENTS), st.text(max_size=6), st.sampled_from(FRAGMENTS)),
    st.builds(lambda c, n: c * n, st.sampled_from(["u", "é", "😀", "-", "a", " ", "\x00"]), st.sampled_from(LIMITS)),
)
non_str = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.binary(max_size=6),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)
agent_like = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", fullmatch=True)
name_like = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True)
flag = st.one_of(st.booleans(), st.booleans(), non_str)
epoch_int = st.one_of(
    st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
    st.integers(min_value=-(10**10), max_value=10**10),
    st.sampled_from([0, -1, 1, INT64_MIN, INT64_MAX, 1_764_000_000]),
)
epoch = st.one_of(st.none(), epoch_int, st.booleans(), st.floats(), st.text(max_size=12))

user_like = st.one_of(
    st.just(USER),
    st.emails(),
    st.uuids().map(str),
    st.text(min_size=1, max_size=40).filter(lambda u: u.strip() != "" and "\x00" not in u),
)


@st.composite
def _mutated(
    draw: Any, base: dict[str, Any], hostile: dict[str, st.SearchStrategy[Any]], required: str
) -> dict[str, Any]:
    """A valid request with 0-3 of its fields made hostile (or dropped, but for the required keyword
    argument: leaving it out is a TypeError of the call, not input): most bad input is almost good."""
    kw = dict(base)
    for name in draw(st.lists(st.sampled_from([*hostile, "<drop>"]), max_size=3, unique=True)):
        if name == "<drop>":
            kw.pop(draw(st.sampled_from(sorted(set(kw) - {required}))), None)
        else:
            kw[name] = draw(hostile[name])
    return kw


@st.composite
def purge_kwargs(draw: Any) -> dict[str, Any]:
    target = draw(st.one_of(agent_like.map(lambda a: {"agent_id": a}), st.just({"all_agents": True})))
    base = {
        "user_id": draw(user_like),
        **target,
        "dry_run": draw(st.booleans()),
        "memories": draw(st.booleans()),
        "requested_by": draw(st.one_of(st.none(), st.just("DSR-1042"))),
    }
    hostile = {
        "user_id": st.one_of(hostile_text, hostile_text, non_str),
        "agent_id": st.one_of(hostile_text, non_str),
        "all_agents": flag,
        "dry_run": flag,
        "memories": flag,
        "requested_by": st.one_of(hostile_text, non_str),
    }
    return draw(_mutated(base, hostile, "user_id"))


@st.composite
def export_kwargs(draw: Any) -> dict[str, Any]:
    target = draw(st.one_of(agent_like.map(lambda a: {"agent_id": a}), st.just({"all_agents": True})))
    user = draw(st.one_of(st.none(), user_like))
    since = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=2_000_000_000)))
    base = {
        "out": draw(name_like),
        "user_id": user,
        **target,
        "since": since,
        "until": None if since is None else since + draw(st.integers(min_value=1, max_value=10**9)),
        "by": draw(st.sampled_from(["created", "updated"])),
        "compress": draw(st.sampled_from(["none", "gz", "zst"])),
        "then_purge": user is not None and draw(st.booleans()),
    }
    hostile = {
        "out": st.one_of(hostile_text, hostile_text, non_str),
        "user_id": st.one_of(hostile_text, non_str),
        "agent_id": st.one_of(hostile_text, non_str),
        "all_agents": flag,
        "since": epoch,
        "until": epoch,
        "by": st.one_of(hostile_text, non_str),
        "compress": st.one_of(hostile_text, non_str),
        "then_purge": flag,
        "requested_by": st.one_of(hostile_text, non_str),
    }
    return draw(_mutated(base, hostile, "out"))


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def xsettings(settings: Settings, tmp_path: Path) -> Settings:
    """The test settings, exporting into this test's own directory."""
    return settings.model_copy(update={"export_dir": str(tmp_path / "exports")})


@pytest.fixture
async def seeded(settings: Settings, agent_id: str) -> AsyncIterator[str]:
    """The agent's schema, with USER's 3 sessions and a bystander's 2 (runs included)."""
    schema = settings.schema_for(agent_id)
    db = agno_db(settings.database_url, schema)
    await seed_sessions(db, agent_id, USER, 3)
    await seed_sessions(db, agent_id, BYSTANDER, 2)
    await db.close()
    yield schema


# == 1. the producer API ===========================================================================


async def _queue_len(producer: Producer) -> int:
    return int(await (await producer.redis()).zcard(producer.settings.queue_name))


async def _queued_request(producer: Producer, job_id: str) -> dict[str, Any]:
    raw = await (await producer.redis()).get("arq:job:" + job_id)
    assert raw is not None, f"{job_id} was reported enqueued but is not in Redis"
    job = json.loads(raw)
    assert len(job["a"]) == 1 and job["k"] == {}
    return dict(job["a"][0])


def _assert_refusal(exc: InvalidRequest, user: Any) -> None:
    msg = str(exc)
    assert isinstance(exc, ValueError)
    assert one_line(msg), repr(msg)
    if isinstance(user, str) and len(user.strip()) >= 12:
        assert user not in msg, "the refusal quotes the user id"


async def _refused_or_enqueued(
    settings: Settings,
    case: dict[str, Any],
    enqueue: Callable[[Producer], Awaitable[Any]],
    valid: bool,
    queued_as_asked: Callable[[dict[str, Any]], None],
) -> None:
    """A request is refused in one line with nothing enqueued (and only when invalid), or
    enqueued once (and only when valid), under a job id of the right shape, as it was asked."""
    async with Producer(settings) as producer:
        before = await _queue_len(producer)
        try:
            enq = await enqueue(producer)
        except InvalidRequest as exc:
            hypothesis.event("refused")
            _assert_refusal(exc, case.get("user_id"))
            assert not valid, f"a valid request was refused: {exc}"
            assert await _queue_len(producer) == before, "refused, yet something was enqueued"
            return
        hypothesis.event("enqueued")
        assert valid, "an invalid request was enqueued"
        assert JOB_ID_RE.fullmatch(enq.job_id), enq.job_id
        queued = await _queued_request(producer, enq.job_id)
        queued_as_asked(queued)
        assert _same_target(settings, queued["agent_id"], case.get("agent_id"), collapsed=enq.collapsed)
        assert await _queue_len(producer) == before + (0 if enq.collapsed else 1)


# The fuzz tests' settings: fixtures are shared across examples, no example database, no explain phase.
PRODUCER_FUZZ = hypothesis.settings(
    max_examples=250, deadline=None, suppress_health_check=FIXTURE_CHECKS, database=None, phases=NO_EXPLAIN
)
CLI_FUZZ = hypothesis.settings(
    max_examples=150, deadline=None, suppress_health_check=FIXTURE_CHECKS, database=None, phases=NO_EXPLAIN
)


@given(case=purge_kwargs())
@PRODUCER_FUZZ
async def test_producer_purge_refuses_with_one_line_or_enqueues(settings: Settings, case: dict[str, Any]) -> None:
    def as_asked(queued: dict[str, Any]) -> None:
        assert queued["user_id"] == case["user_id"]
        assert queued["dry_run"] is case.get("dry_run", False)

    await _refused_or_enqueued(
        settings, case, lambda p: p.purge_user_sessions(check_agent=False, **case), purge_valid(case), as_asked
    )


@given(case=export_kwargs())
@PRODUCER_FUZZ
async def test_producer_export_refuses_with_one_line_or_enqueues(settings: Settings, case: dict[str, Any]) -> None:
    def as_asked(queued: dict[str, Any]) -> None:
        for key in ("out", "user_id", "since", "until", "then_purge"):
            assert queued[key] == case.get(key, False if key == "then_purge" else None), key

    await _refused_or_enqueued(
        settings, case, lambda p: p.export_sessions(check_agent=False, **case), export_valid(case), as_asked
    )


surrogate_user = st.builds(
    lambda a, s, b: a + s + b,
    st.text(max_size=6),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.text(max_size=6),
)


@given(user=surrogate_user, export=st.booleans())
@hypothesis.settings(
    max_examples=20, deadline=None, suppress_health_check=FIXTURE_CHECKS, database=None, phases=NO_SHRINK
)
async def test_producer_user_id_with_a_lone_surrogate_is_invalid_request(
    settings: Settings, user: str, export: bool
) -> None:
    async with Producer(settings) as producer:
        call = (
            producer.export_sessions(out="dsr.jsonl", agent_id="a-1", user_id=user, check_agent=False)
            if export
            else producer.purge_user_sessions(agent_id="a-1", user_id=user, check_agent=False)
        )
        with pytest.raises(InvalidRequest) as info:
            await call
        assert one_line(str(info.value))
        assert await _queue_len(producer) == 0


# == 2. the CLI, in process ========================================================================

_runner = CliRunner()


def _time_arg(value: str | None) -> tuple[bool, int | None]:
    """(parses, epoch seconds) for --since/--until: epoch seconds, or an ISO date/datetime (UTC unless it says)."""
    if value is None:
        return True, None
    try:
        return True, int(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return False, None
    return True, int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp())


def _agent_values(agent_id: str) -> st.SearchStrategy[str | None]:
    alias = agent_id.replace("-", "_")  # names the same schema: the same agent
    return st.one_of(
        st.none(),
        st.sampled_from([agent_id, alias, agent_id.upper(), agent_id + "-x", agent_id + "\n", " " + agent_id]),
        agent_like,
        hostile_text,
    )


def _cli_options(
    data: st.DataObject, base: dict[str, Any], hostile: dict[str, st.SearchStrategy[Any]]
) -> dict[str, Any]:
    """Good options with 0-3 of them made hostile."""
    opts = dict(base)
    for name in data.draw(st.lists(st.sampled_from(sorted(hostile)), max_size=3, unique=True), label="hostile"):
        opts[name] = data.draw(hostile[name], label=name)
    return opts


def _invoke(env: dict[str, str], argv: list[str]) -> Any:
    result = _runner.invoke(app, argv, env=env, catch_exceptions=True)
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 2), (result.exit_code, result.stderr)
    if result.exit_code == 2:
        assert one_line(result.stderr.rstrip("\n")) and result.stderr.startswith("error: "), repr(result.stderr)
        assert result.stdout == ""
    else:  # a success says nothing on stderr but one-line warnings (no worker serving the queue yet)
        assert all(line.startswith("warning: ") for line in result.stderr.splitlines()), result.stderr
    return result


def _opt(name: str, value: str | None) -> list[str]:
    return [] if value is None else [f"{name}={value}"]  # '=' form: a value like '--json' stays a value


@pytest.mark.slow
@given(data=st.data())
@CLI_FUZZ
def test_cli_purge_exits_0_or_2_with_one_line(
    settings: Settings, seeded: str, agent_id: str, worker_env: dict[str, str], data: st.DataObject
) -> None:
    alias = agent_id.replace("-", "_")
    use_all = data.draw(st.booleans(), label="target all")
    base = {
        "agent": None if use_all else data.draw(st.sampled_from([agent_id, alias]), label="agent"),
        "all_agents": use_all,
        "user": data.draw(user_like, label="user"),
        "requested_by": data.draw(st.sampled_from([None, "DSR-1042"]), label="requested_by"),
        "dry_run": data.draw(st.booleans(), label="dry_run"),
    }
    hostile = {
        "agent": _agent_values(agent_id),
        "all_agents": st.booleans(),
        "user": hostile_text,
        "requested_by": hostile_text,
    }
    o = _cli_options(data, base, hostile)
    agent, all_agents, user, label, dry_run = (o[k] for k in ("agent", "all_agents", "user", "requested_by", "dry_run"))
    argv = ["purge", *_opt("--user", user), *_opt("--agent", agent), *_opt("--requested-by", label), "--json"]
    argv += ["--all-agents"] * all_agents + ["--dry-run"] * dry_run

    known = _known(settings, seeded, agent)
    valid = (
        (agent is not None) != all_agents
        and ok_cli_user(user)
        and ok_label(label)
        and (agent is None or (ok_agent(agent) and known))
    )
    r = redis.Redis.from_url(settings.redis_url)
    try:
        before = r.zcard(settings.queue_name)
        result = _invoke(worker_env, argv)
        hypothesis.event(f"exit {result.exit_code}")
        assert result.exit_code == (0 if valid else 2), (argv, result.stdout, result.stderr)
        if result.exit_code == 2:
            assert r.zcard(settings.queue_name) == before, "exit 2, yet something was enqueued"
            return
        enq = json.loads(result.stdout)
        queued = json.loads(r.get("arq:job:" + enq["job_id"]))["a"][0]
        assert (queued["user_id"], queued["dry_run"], queued["all_agents"]) == (user, dry_run, all_agents)
        assert _same_target(settings, queued["agent_id"], agent, collapsed=enq["collapsed"])
    finally:
        r.close()


@pytest.mark.slow
@given(data=st.data())
@CLI_FUZZ
def test_cli_export_exits_0_or_2_with_one_line(
    settings: Settings, seeded: str, agent_id: str, worker_env: dict[str, str], data: st.DataObject
) -> None:
    time_text = st.one_of(
        st.none(),
        st.integers(min_value=-(10**12), max_value=10**12).map(str),
        st.datetimes().map(datetime.isoformat),
        st.dates().map(lambda d: d.isoformat()),
        st.sampled_from(["2026-01-31", "2026-01-31T12:00:00Z", "2026-01-31T12:00:00+14:00", "1e9", "nan", "-0"]),
        st.sampled_from(["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", " 17 ", "1_000", "٣"]),
        hostile_text,
    )
    alias = agent_id.replace("-", "_")
    use_all = data.draw(st.booleans(), label="target all")
    user0 = data.draw(st.one_of(st.none(), user_like), label="user")
    since0 = data.draw(st.one_of(st.none(), st.dates().map(lambda d: d.isoformat())), label="since")
    base = {
        "agent": None if use_all else data.draw(st.sampled_from([agent_id, alias]), label="agent"),
        "all_agents": use_all,
        "user": user0,
        "out": data.draw(name_like, label="out"),
        "since": since0,
        "until": None,
        "by": data.draw(st.sampled_from([None, "created", "updated"]), label="by"),
        "compress": data.draw(st.sampled_from([None, "none", "gz", "zst"]), label="compress"),
        "then_purge": user0 is not None and data.draw(st.booleans(), label="then_purge"),
    }
    hostile = {
        "agent": _agent_values(agent_id),
        "all_agents": st.booleans(),
        "user": st.one_of(st.none(), hostile_text),
        "out": hostile_text,
        "since": time_text,
        "until": time_text,
        "by": hostile_text,
        "compress": hostile_text,
        "then_purge": st.booleans(),
    }
    o = _cli_options(data, base, hostile)
    agent, all_agents, user, out = o["agent"], o["all_agents"], o["user"], o["out"]
    since, until, by, compress, then_purge = o["since"], o["until"], o["by"], o["compress"], o["then_purge"]
    argv = ["export", *_opt("--out", out), *_opt("--agent", agent), *_opt("--user", user)]
    argv += [*_opt("--since", since), *_opt("--until", until), *_opt("--by", by), *_opt("--compress", compress)]
    argv += ["--all-agents"] * all_agents + ["--then-purge"] * then_purge + ["--json"]

    (since_ok, since_s), (until_ok, until_s) = _time_arg(since), _time_arg(until)
    known = _known(settings, seeded, agent)
    valid: bool | None = (
        (agent is not None) != all_agents
        and ok_out(out)
        and (user is None or ok_cli_user(user))
        and since_ok
        and until_ok
        and (since_s is None or until_s is None or since_s < until_s)
        and by in (None, "created", "updated")
        and compress in (None, "none", "gz", "zst")
        and not (then_purge and user is None)
        and (agent is None or (ok_agent(agent) and known))
    )
    if valid and any(t is not None and not EPOCH_MIN <= t <= EPOCH_MAX for t in (since_s, until_s)):
        valid = False  # outside the years 1-9999: refused at the boundary
    r = redis.Redis.from_url(settings.redis_url)
    try:
        before = r.zcard(settings.queue_name)
        result = _invoke(worker_env, argv)
        hypothesis.event(f"exit {result.exit_code}")
        if valid is not None:
            assert result.exit_code == (0 if valid else 2), (argv, result.stdout, result.stderr)
        if result.exit_code == 2:
            assert r.zcard(settings.queue_name) == before, "exit 2, yet something was enqueued"
            return
        enq = json.loads(result.stdout)
        queued = json.loads(r.get("arq:job:" + enq["job_id"]))["a"][0]
        assert (queued["out"], queued["user_id"], queued["all_agents"]) == (out, user, all_agents)
        assert _same_target(settings, queued["agent_id"], agent, collapsed=enq["collapsed"])
        assert (queued["since"], queued["until"], queued["then_purge"]) == (since_s, until_s, then_purge)
    finally:
        r.close()


def _run_cli(env: dict[str, str], *args: str | bytes, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*SESSIONCTL, *args], env=env, capture_output=True, timeout=timeout, check=False)


def _one_error_line(stderr: bytes) -> bool:
    lines = stderr.decode("utf-8", "replace").splitlines()
    return len(lines) == 1 and lines[0].startswith("error: ")


@pytest.mark.slow
async def test_cli_subprocess_hostile_values_exit_2_with_one_line(
    settings: Settings, seeded: str, agent_id: str, worker_env: dict[str, str]
) -> None:
    cases = [
        ["purge", "--agent", 'x"; drop schema y; --', "--user", USER],
        ["purge", "--agent", agent_id, "--user", "x" * 10_240],
        ["export", "--agent", "../..", "--out", "dsr.jsonl"],
        ["export", "--agent", agent_id, "--user", USER, "--out", "../../../etc/passwd", "--since", "yesterday"],
    ]
    results = await asyncio.gather(*[asyncio.to_thread(_run_cli, worker_env, *argv) for argv in cases])
    for argv, res in zip(cases, results, strict=True):
        assert res.returncode == 2, (argv[:3], res.stderr[-500:])
        assert _one_error_line(res.stderr) and b"Traceback" not in res.stderr, res.stderr[-500:]
        assert res.stdout == b""
    r = aioredis.from_url(settings.redis_url)
    assert await r.zcard(settings.queue_name) == 0
    await r.aclose()


async def test_cli_subprocess_undecodable_user_bytes_exit_2(
    seeded: str, agent_id: str, worker_env: dict[str, str]
) -> None:
    res = await asyncio.to_thread(_run_cli, worker_env, "purge", "--agent", agent_id, "--user", b"u-\xff\xfe")
    assert b"Traceback" not in res.stderr
    assert res.returncode == 2 and _one_error_line(res.stderr), (res.returncode, res.stderr[-500:])


# == 3. job payloads straight into Redis, a real worker ============================================


async def _enqueue_raw(r: aioredis.Redis, queue: str, job_id: str, raw: bytes) -> None:
    """Put a job straight into Redis, as a hostile or buggy producer would (as tests/test_job_payloads.py)."""
    await r.psetex(f"arq:job:{job_id}", 120_000, raw)
    await r.zadd(queue, {job_id: 1})


def _envelope(fn: Any, args: Any, **over: Any) -> dict[str, Any]:
    return {"t": 1, "f": fn, "a": args, "k": {}, "et": 1_764_000_000_000, **over}


json_junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)
json_value = st.one_of(json_junk, st.just({"__error__": {"type": "InternalError", "message": "forged"}}))


@st.composite
def hostile_request(draw: Any, agent_id: str) -> tuple[str, dict[str, Any]]:
    """A request that starts out valid (for the seeded agent and user) and gets 1-3 fields made hostile."""
    fn = draw(st.sampled_from([PURGE, EXPORT]))
    agent_values = st.one_of(
        st.sampled_from([agent_id, agent_id.replace("-", "_"), agent_id.upper(), "ai", "public", "fs"]),
        agent_like,
        hostile_text,
        json_value,
    )
    text_or_junk = st.one_of(hostile_text, hostile_text, json_value)
    if fn == PURGE:
        req: dict[str, Any] = {"user_id": USER, "agent_id": agent_id}
        fields = {
            "user_id": st.one_of(hostile_text, hostile_text, json_value),
            "agent_id": agent_values,
            "all_agents": st.one_of(st.booleans(), json_value),
            "dry_run": st.one_of(st.booleans(), json_value, st.sampled_from(["false", "true", 0, 1])),
            "memories": st.one_of(st.booleans(), json_value),
            "requested_by": st.one_of(st.none(), text_or_junk),
        }
    else:
        req = {"out": draw(name_like), "agent_id": agent_id, "user_id": USER}
        fields = {
            "out": st.one_of(name_like, text_or_junk),
            "user_id": st.one_of(st.none(), text_or_junk),
            "agent_id": agent_values,
            "all_agents": st.one_of(st.booleans(), json_value),
            "since": st.one_of(st.none(), epoch_int, json_value),
            "until": st.one_of(st.none(), epoch_int, json_value),
            "by": st.one_of(st.sampled_from(["created", "updated"]), text_or_junk),
            "compress": st.one_of(st.sampled_from(["none", "gz", "zst"]), text_or_junk),
            "then_purge": st.one_of(st.booleans(), json_value),
            "requested_by": st.one_of(st.none(), text_or_junk),
        }
    weighted = [*fields, "user_id", "user_id", "<extra>", "<drop>"]  # a hostile user in a valid request: often
    names = draw(st.lists(st.sampled_from(weighted), min_size=1, max_size=3, unique=True))
    for name in names:
        if name == "<extra>":
            req[draw(st.sampled_from(["surprise", "user", "__class__", "sql", ""]))] = draw(json_value)
        elif name == "<drop>":
            req.pop(draw(st.sampled_from(sorted(req))), None)
        else:
            req[name] = draw(fields[name])
    valid = purge_valid(req) if fn == PURGE else export_valid(req)
    if valid and req.get("user_id") == USER:  # the one valid request that could erase: make it harmless
        if fn == PURGE:
            req["dry_run"] = True
        else:
            req["then_purge"] = False
    return fn, req


@st.composite
def broken_envelope(draw: Any, agent_id: str) -> bytes:
    """A job whose *request* is valid and would erase USER's sessions, in an envelope that is not a job."""
    fn = draw(st.sampled_from([PURGE, EXPORT]))
    req = {"user_id": USER, "agent_id": agent_id}
    if fn == EXPORT:
        req |= {"out": draw(name_like), "then_purge": True}
    env = _envelope(fn, [req])
    how = draw(st.sampled_from(["a", "k", "f", "missing", "t", "top"]))
    if how == "a":  # not exactly one request object
        env["a"] = draw(st.sampled_from([[], [req, req], [req, {}], req, [[req]], json.dumps(req), None, 7]))
    elif how == "k":
        env["k"] = draw(st.sampled_from([{"user_id": USER}, {"x": 1}, [req], "k", 5, None]))
    elif how == "f":
        env["f"] = draw(
            st.one_of(
                st.sampled_from([fn.upper(), fn + " ", "", "startup", "print", 0, None, 1.5]), st.text(max_size=8)
            )
        )
    elif how == "missing":
        env.pop(draw(st.sampled_from(["t", "f", "a", "k", "et"])))
    elif how == "t":  # a try number beyond max_tries: never run
        env["t"] = draw(st.integers(min_value=6, max_value=10**9))
    else:
        return json.dumps(draw(st.sampled_from([[env], list(env.values()), fn, None, 1, True]))).encode()
    return json.dumps(env).encode()


@st.composite
def garbage_bytes(draw: Any, agent_id: str) -> bytes:
    """Not a JSON object at all: random bytes, truncated or mangled JSON, other encodings, pickle."""
    valid = json.dumps(_envelope(PURGE, [{"user_id": USER, "agent_id": agent_id}])).encode()
    how = draw(st.sampled_from(["random", "truncated", "prefixed", "pickle", "empty", "latin1"]))
    if how == "random":
        return draw(st.binary(min_size=1, max_size=64))
    if how == "truncated":
        return valid[: draw(st.integers(min_value=1, max_value=len(valid) - 1))]
    if how == "prefixed":
        return draw(st.sampled_from([b"\xff", b"\x00", b")]}'\n", b"\x80"])) + valid
    if how == "pickle":
        return pickle.dumps(_envelope(PURGE, [{"user_id": USER, "agent_id": agent_id}]))
    if how == "empty":
        return b""
    return '{"t":1,"f":"purge_user_sessions","a":[{"user_id":"é","agent_id":"x"}],"k":{},"et":1}'.encode("latin-1")


@dataclass
class Case:
    job_id: str
    raw: bytes
    shape: str  # "request" (a proper envelope), "envelope" (a valid request in a broken one), "bytes"
    fn: str = ""
    request: dict[str, Any] | None = None
    valid: bool = False


_batches = itertools.count()


async def _worker(settings: Settings, timeout: float = 90) -> Any:
    return await asyncio.wait_for(run_worker(settings), timeout)  # a hang is a failure, not a CI timeout


@pytest.mark.slow
@given(data=st.data())
@hypothesis.settings(
    max_examples=8, deadline=None, suppress_health_check=FIXTURE_CHECKS, database=None, phases=NO_SHRINK
)
async def test_worker_survives_hostile_payloads_and_touches_nothing(
    xsettings: Settings, pg: asyncpg.Connection, seeded: str, agent_id: str, data: st.DataObject
) -> None:
    batch = next(_batches)
    cases: list[Case] = []
    for fn, req in data.draw(st.lists(hostile_request(agent_id), min_size=30, max_size=40), label="requests"):
        valid = purge_valid(req) if fn == PURGE else export_valid(req)
        raw = json.dumps(_envelope(fn, [req])).encode()
        cases.append(Case(f"{xsettings.queue_name}:hostile-{batch}-{len(cases)}", raw, "request", fn, req, valid))
    for raw in data.draw(st.lists(broken_envelope(agent_id), min_size=8, max_size=12), label="envelopes"):
        cases.append(Case(f"{xsettings.queue_name}:hostile-{batch}-{len(cases)}", raw, "envelope"))
    for raw in data.draw(st.lists(garbage_bytes(agent_id), min_size=4, max_size=6), label="bytes"):
        cases.append(Case(f"{xsettings.queue_name}:hostile-{batch}-{len(cases)}", raw, "bytes"))

    canary = f"canary-{batch}-{uuid.uuid4().hex[:6]}"  # proves afterwards that the worker still does its job
    await seed(xsettings.database_url, seeded, agent_id, canary, 1)
    exports = Path(xsettings.export_dir)
    existing = {p.name for p in exports.iterdir()} if exports.exists() else set()
    before = await table_rows(pg, seeded)

    r = aioredis.from_url(xsettings.redis_url)
    try:
        for c in cases:
            await _enqueue_raw(r, xsettings.queue_name, c.job_id, c.raw)
        worker = await _worker(xsettings)  # returns: the worker survived the whole batch
        assert await r.zcard(xsettings.queue_name) == 0
    finally:
        await r.aclose()
    assert worker.jobs_retried == 0
    assert await table_rows(pg, seeded) == before, "a hostile batch changed the agent's rows"

    published: set[str] = set()
    async with Producer(xsettings) as producer:
        states = {c.job_id: await producer.status(c.job_id) for c in cases}
        by_out: dict[str, list[Case]] = {}
        for c in cases:
            st_ = states[c.job_id]
            what = (c.shape, c.fn, c.request if c.request is None else json.dumps(c.request)[:300], st_.error)
            assert st_.done, what
            if not c.valid:
                assert st_.status == "failed", what
                if c.shape == "request":
                    assert st_.error is not None and st_.error["type"] == "InvalidRequest", what
                    assert one_line(st_.error["message"]), what
                continue
            assert c.request is not None
            target_ok = c.request.get("all_agents") is True or _known(xsettings, seeded, c.request.get("agent_id"))
            if not target_ok:
                assert st_.status == "failed" and st_.error is not None, what
                assert st_.error["type"] == "AgentNotFound", what
            elif c.fn == PURGE:
                assert st_.ok and st_.result is not None, what
                assert st_.status == ("dry_run" if c.request.get("dry_run") else "succeeded"), what
                assert st_.result["sessions_deleted"] == 0, what  # no hostile user owns a session; USER: dry runs
                if c.request.get("dry_run"):
                    assert st_.result["remaining"] == st_.result["would_delete"]["sessions"], what
                    if c.request["user_id"] == USER and c.request.get("agent_id") is not None:
                        assert st_.result["would_delete"]["sessions"] == 3, what
                else:
                    assert st_.result["remaining"] == 0, what
            else:
                by_out.setdefault(c.request["out"], []).append(c)
            user = c.request.get("user_id")
            if st_.result is not None and isinstance(user, str) and len(user) >= 12:
                rest = json.dumps({k: v for k, v in c.request.items() if k != "user_id"}, ensure_ascii=False)
                if user not in rest:
                    assert user not in json.dumps(st_.result, ensure_ascii=False), "the result quotes the user id"
        for out, group in by_out.items():
            ok = [c for c in group if states[c.job_id].ok]
            if out in existing:
                assert not ok, f"{out!r} existed already, yet an export overwrote it"
            else:
                assert len(ok) == 1, f"{out!r}: {len(ok)} of {len(group)} exports succeeded"
                published.add(out)
            for c in group:
                if not states[c.job_id].ok:
                    assert states[c.job_id].status == "failed", out

        # the monitoring side survives the batch too: every request that failed in a job is listed as failed
        listed = {row["job_id"] for row in await producer.jobs(failed_only=True, limit=10_000)}
        assert {c.job_id for c in cases if c.shape == "request" and not states[c.job_id].ok} <= listed
        assert all(row["job_id"] for row in await producer.jobs(limit=10_000))  # listing does not choke either

        # what is in the export directory: exactly the exports that succeeded, no partial file left over
        now = {p.name for p in exports.iterdir()} if exports.exists() else set()
        assert now - existing == published | {o + ".manifest.json" for o in published}

        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=canary)
        await _worker(xsettings)
        state = await producer.status(enq.job_id)
    assert state.status == "succeeded" and state.result is not None, state
    assert state.result["sessions_deleted"] == 1 and state.result["remaining"] == 0


WRONG_TYPES = {  # envelope fields of a type arq does not expect
    "f": st.one_of(
        st.lists(st.sampled_from([PURGE, EXPORT]), min_size=1, max_size=2),
        st.dictionaries(st.sampled_from([PURGE, EXPORT]), st.integers(), min_size=1),
    ),
    "t": st.one_of(st.text(min_size=1, max_size=5), st.lists(st.integers(), min_size=1, max_size=2)),
    "et": st.one_of(
        st.text(max_size=5),
        st.none(),
        st.lists(st.integers(), max_size=2),
        st.integers(min_value=10**15, max_value=10**30),
        st.integers(min_value=-(10**30), max_value=-(10**15)),
        st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e300]),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("field", sorted(WRONG_TYPES))
@given(data=st.data())
@hypothesis.settings(
    max_examples=10, deadline=None, suppress_health_check=FIXTURE_CHECKS, database=None, phases=NO_SHRINK
)
async def test_worker_survives_a_job_envelope_of_the_wrong_types(
    xsettings: Settings, seeded: str, agent_id: str, field: str, data: st.DataObject
) -> None:
    envelope = {field: data.draw(WRONG_TYPES[field], label=field)}
    s = xsettings.model_copy(update={"queue_name": f"sessionctl:test:{uuid.uuid4().hex[:8]}"})
    raw = json.dumps(_envelope(PURGE, [{"user_id": USER, "agent_id": agent_id}], **envelope)).encode()
    job_id = f"{s.queue_name}:poison-{uuid.uuid4().hex[:8]}"  # a crashed run leaves its in-progress key behind
    r = aioredis.from_url(s.redis_url)
    try:
        await _enqueue_raw(r, s.queue_name, job_id, raw)
        worker = await _worker(s, timeout=30)
        assert worker.jobs_failed == 1 and worker.jobs_complete == 0
        assert await r.zcard(s.queue_name) == 0
    finally:
        await r.aclose()
    async with Producer(s) as producer:
        assert (await producer.status(job_id)).status == "failed"
        enq = await producer.purge_user_sessions(agent_id=agent_id, user_id=USER, dry_run=True)
        await _worker(s, timeout=30)
        assert (await producer.status(enq.job_id)).status == "dry_run"


@pytest.mark.slow
@given(
    bound=st.sampled_from(["since", "until"]),
    value=st.one_of(st.integers(min_value=INT64_MAX + 1), st.integers(max_value=INT64_MIN - 1)),
)
@hypothesis.settings(
    max_examples=10, deadline=None, suppress_health_check=FIXTURE_CHECKS, database=None, phases=NO_SHRINK
)
async def test_export_window_beyond_bigint_is_refused_or_runs(
    xsettings: Settings, seeded: str, agent_id: str, bound: str, value: int
) -> None:
    out = f"window-{uuid.uuid4().hex[:8]}.jsonl"
    async with Producer(xsettings) as producer:
        try:
            enq = await producer.export_sessions(out=out, agent_id=agent_id, user_id=USER, **{bound: value})
        except InvalidRequest as exc:
            assert one_line(str(exc))
            return
        await _worker(xsettings, timeout=30)
        state = await producer.status(enq.job_id)
    assert state.ok or (state.error is not None and state.error["type"] == "InvalidRequest"), state.error


@pytest.mark.slow
async def test_cli_worker_reports_a_poison_job_without_a_traceback(
    settings: Settings, seeded: str, agent_id: str, worker_env: dict[str, str]
) -> None:
    raw = json.dumps(_envelope([PURGE], [{"user_id": USER, "agent_id": agent_id}])).encode()
    r = aioredis.from_url(settings.redis_url)
    await _enqueue_raw(r, settings.queue_name, "poison-cli", raw)
    await r.aclose()
    res = await asyncio.to_thread(_run_cli, worker_env, "worker", "--burst")
    assert b"Traceback" not in res.stderr, res.stderr[-800:]
    assert res.returncode == 1  # burst mode: a job failed
