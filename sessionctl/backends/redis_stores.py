"""Agno's stores in Redis: its session database (``agno.db.redis.RedisDb``) and AgentOS's run event
streams (``agno.os.event_streams.redis.RedisEventStream``).

``RedisDb`` keeps each record as a JSON string at ``<prefix>:<table>:<id>`` and, for sessions,
runs, memories and traces, a set of a person's ids at ``<prefix>:<table>:index:user_id:<id>``
(whose name is itself the person's id: it goes too). Records of tables without that index (evals,
knowledge, metrics) and the spans of the person's traces are found by a scan of their table's keys.
A record whose JSON names the person is theirs; an index entry whose record expired is dropped.

An event stream is keyed by its run (``<prefix><run_id>:1:events``, ``:status``, ``:idx``,
``:gen``), never by a person: it is found through the ids of the person's runs, collected from
every session database before anything is deleted, and expires on its own (30 minutes by default;
a paused run's is kept alive by its process)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sessionctl.backends.base import Backend, Person
from sessionctl.errors import StoreMisdeclared, StoreUnreachable

INDEXED = ("sessions", "runs", "memories", "traces")  # tables with an index:user_id set
SCANNED = ("evals", "knowledge", "metrics")  # records naming a user, without an index
QUEUES = ("queued", "all", "running")  # Agno's job queue: sorted sets of job ids
SCAN_COUNT = 1000


class _RedisBackend(Backend):
    url_field = "db_url"

    async def open(self) -> None:
        secret = getattr(self.decl, self.url_field)
        self.redis = Redis.from_url(secret.get_secret_value(), decode_responses=True)
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnreachable(f"{self.label}: Redis did not answer ({type(exc).__name__})") from None

    async def close(self) -> None:
        redis = getattr(self, "redis", None)
        if redis is not None:
            await redis.aclose()
        self._thread.shutdown(wait=False)

    def _open(self) -> None:  # pragma: no cover - the async open above replaces it
        raise NotImplementedError

    def _count(self, person: Person) -> int:  # pragma: no cover
        raise NotImplementedError

    def _erase(self, person: Person) -> int:  # pragma: no cover
        raise NotImplementedError

    def _rows(self, user: str) -> list[dict[str, Any]]:  # pragma: no cover
        raise NotImplementedError


class RedisSessionBackend(_RedisBackend):
    holds_runs = True
    expires = True

    async def open(self) -> None:
        await super().open()
        self.prefix = self.decl.db_prefix
        async for _ in self.redis.scan_iter(match=f"{_glob_literal(self.prefix)}:*", count=SCAN_COUNT):
            return
        raise StoreMisdeclared(
            f"{self.label}: nothing under {self.prefix}:* in that Redis database: another db_prefix, or another"
            " database number? (an unused prefix and a mistyped one look alike: it would always count 0)"
        )

    async def _records(self, users: list[str]) -> dict[str, dict[str, Any]]:
        """Every record of the users (key -> JSON), and the spans of their traces."""
        wanted = set(users)
        keys: set[str] = set()
        for table in INDEXED:
            for user in users:
                keys |= {f"{self.prefix}:{table}:{i}" for i in await self.redis.smembers(self._index(table, user))}
        for table in SCANNED:
            keys |= {k async for k in self._scan(table)}
        found = await self._read(keys)
        mine = {k: v for k, v in found.items() if v.get("user_id") in wanted}
        return mine | await self._hanging_off(mine, wanted)

    async def _hanging_off(self, mine: dict[str, dict[str, Any]], wanted: set[str]) -> dict[str, dict[str, Any]]:
        """Every run of the users' sessions (whoever made it), the spans of their traces, and their
        queued runs (with their input)."""
        more: dict[str, dict[str, Any]] = {}
        sessions = {v["session_id"] for k, v in mine.items() if k.startswith(f"{self.prefix}:sessions:")}
        for sid in sessions:
            runs = await self.redis.zrange(f"{self.prefix}:runs:by_session:{sid}", 0, -1)
            more |= await self._read({f"{self.prefix}:runs:{r}" for r in runs})
        traces = {v.get("trace_id") for k, v in mine.items() if k.startswith(f"{self.prefix}:traces:")}
        if traces - {None}:
            spans = await self._read({k async for k in self._scan("spans")})
            more |= {k: v for k, v in spans.items() if v.get("trace_id") in traces}
        pattern = f"{_glob_literal(self.prefix)}:jobs:job:*"
        jobs = await self._read({k async for k in self.redis.scan_iter(match=pattern, count=SCAN_COUNT)})
        return more | {k: v for k, v in jobs.items() if v.get("user_id") in wanted}

    async def _idempotency_keys(self, users: list[str]) -> list[str]:
        """Agno's job-queue dedup keys of the users (their id is in the key's name)."""
        out: list[str] = []
        for user in users:
            head = _glob_literal(f"{self.prefix}:jobs:idem:u{len(user)}:{user}:")
            out += [k async for k in self.redis.scan_iter(match=head + "*", count=SCAN_COUNT)]
        return out

    def _index(self, table: str, user: str) -> str:
        return f"{self.prefix}:{table}:index:user_id:{user}"

    async def _scan(self, table: str) -> Any:
        async for key in self.redis.scan_iter(match=f"{_glob_literal(self.prefix)}:{table}:*", count=SCAN_COUNT):
            if ":index:" not in key and ":by_session:" not in key:
                yield key

    async def _read(self, keys: set[str]) -> dict[str, dict[str, Any]]:
        ordered = sorted(keys)
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ordered), 500):
            part = ordered[i : i + 500]
            for key, raw in zip(part, await self.redis.mget(part), strict=True):
                try:
                    value = json.loads(raw) if raw is not None else None
                except ValueError:
                    value = None
                if isinstance(value, dict):
                    out[key] = value
        return out

    async def count(self, person: Person) -> int:
        return len(await self._records(person.users)) + len(await self._idempotency_keys(person.users))

    async def erase(self, person: Person) -> int:
        mine = await self._records(person.users)
        idem = await self._idempotency_keys(person.users)
        index_sets = [self._index(t, u) for t in INDEXED for u in person.users]
        by_session = [f"{self.prefix}:runs:by_session:{v['session_id']}" for k, v in mine.items() if ":sessions:" in k]
        keys = sorted(mine)
        async with self.redis.pipeline(transaction=True) as pipe:
            for i in range(0, len(keys), 500):
                pipe.unlink(*keys[i : i + 500])
            pipe.unlink(*index_sets, *by_session, *idem)
            await pipe.execute()
        await self._drop_entries(keys)
        return len(mine) + len(idem)

    async def _drop_entries(self, keys: list[str]) -> None:
        """Take the erased records' ids out of Agno's other index sets of their own table (agent,
        session, status…) and out of its job queues."""
        by_table: dict[str, set[str]] = {}
        for key in keys:
            table, _, record = key.removeprefix(f"{self.prefix}:").partition(":")
            if table == "jobs":
                table, record = "jobs", record.removeprefix("job:")
            by_table.setdefault(table, set()).add(record)
        for table, ids in by_table.items():
            if table == "jobs":
                for queue in QUEUES:
                    await self.redis.zrem(f"{self.prefix}:jobs:{queue}", *ids)
                continue
            pattern = f"{_glob_literal(self.prefix)}:{_glob_literal(table)}:index:*"
            async for key in self.redis.scan_iter(match=pattern, count=SCAN_COUNT):
                if await self.redis.type(key) == "set":
                    await self.redis.srem(key, *ids)

    async def rows(self, user: str) -> Any:
        for key, value in sorted((await self._records([user])).items()):
            yield {"key": key.removeprefix(f"{self.prefix}:").split(":", 1)[0], "record": value}

    async def owners(self) -> list[tuple[str, int]]:
        found: Counter[str] = Counter()
        for table in INDEXED:
            prefix = f"{self.prefix}:{table}:index:user_id:"
            async for key in self.redis.scan_iter(match=f"{prefix}*", count=SCAN_COUNT):
                found[key.removeprefix(prefix)] += int(await self.redis.scard(key))
        return [(u, n) for u, n in found.items() if n]

    async def expire(self, cutoff: int, *, dry_run: bool, keep: list[str] | None = None) -> tuple[int, int]:
        """Sessions (with their runs) and memories last updated, else created, before ``cutoff``;
        none of the users of ``keep`` (under a legal hold)."""
        held = set(keep or ())
        old = await self._older(cutoff, held)
        if dry_run or not old:
            return len(old), len(old)
        runs: set[str] = set()
        for key, value in old.items():
            if ":sessions:" in key:
                listed = f"{self.prefix}:runs:by_session:{value['session_id']}"
                runs |= {f"{self.prefix}:runs:{r}" for r in await self.redis.zrange(listed, 0, -1)} | {listed}
        keys = sorted(set(old) | runs)
        for i in range(0, len(keys), 500):
            await self.redis.unlink(*keys[i : i + 500])
        await self._drop_entries([k for k in keys if ":by_session:" not in k])
        return len(old), len(await self._older(cutoff, held))

    async def _older(self, cutoff: int, keep: set[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for table in ("sessions", "memories"):
            records = await self._read({k async for k in self._scan(table)})
            found |= {k: v for k, v in records.items() if _time(v, cutoff) < cutoff and v.get("user_id") not in keep}
        return found

    async def run_ids(self, users: list[str]) -> set[str]:
        mine = await self._records(users)
        return {str(v["run_id"]) for k, v in mine.items() if ":runs:" in k and v.get("run_id")}


class EventStreamBackend(_RedisBackend):
    url_field = "redis_url"
    by_runs = True
    lists_owners = False
    exemption = (
        "AgentOS keys a run's event stream by the run, not the person: streams are found through the ids of"
        " the person's runs in the session databases sessionctl knows, and expire on their own"
    )

    def _keys(self, run_id: str) -> list[str]:
        p = self.decl.key_prefix
        return [f"{p}{run_id}:1:events", f"{p}{run_id}:status", f"{p}{run_id}:idx", f"{p}{run_id}:gen"]

    async def count(self, person: Person) -> int:
        runs = sorted(person.run_ids)
        n = 0
        for i in range(0, len(runs), 250):
            n += int(await self.redis.exists(*[k for r in runs[i : i + 250] for k in self._keys(r)][:1000] or ["-"]))
        return n

    async def erase(self, person: Person) -> int:
        runs = sorted(person.run_ids)
        n = 0
        for i in range(0, len(runs), 250):
            n += int(await self.redis.unlink(*[k for r in runs[i : i + 250] for k in self._keys(r)] or ["-"]))
        return n

    async def rows(self, user: str) -> Any:  # streams are not exported: they hold what the runs hold
        for _ in ():
            yield {}


def _time(record: dict[str, Any], default: int) -> int:
    """A record's last update, else its creation (epoch seconds); ``default`` when it has neither."""
    value = record.get("updated_at") or record.get("created_at")
    return int(value) if isinstance(value, int | float) else default


def _glob_literal(text: str) -> str:
    """``text`` matched literally by a Redis ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
