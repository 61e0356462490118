"""``resweep``: find users who were erased before and have data again — an agent that held a session
in memory wrote it back, a backup was restored, or the person simply came back.

Receipts keep HMACs, never ids, so the sweep goes the other way: for every store that names a
person (each user-keyed table of every agent schema, and the deployment's vector and AgentOS
tables), it reads the distinct keys with their row counts in one ``GROUP BY`` scan, streamed in
batches from a server-side cursor; hashes them under the deployment's key; and looks the HMACs up
in the receipts (by index, a batch at a time). A user matches a store only when one of their
erasure receipts *covers* it: an erasure at every agent covers every agent schema, one at an agent
covers that agent's schema; scope ``sessions`` covers ``agno_sessions``, scope ``all`` every table
there, and — for an all-agents erasure — the vector and AgentOS tables too.

Matches (HMAC, where, rows, since when, erased when) go to the result, a metric and the log. With
``erase`` (or ``SESSIONCTL_RESWEEP_ERASE``) each matched user gets a new erasure job, with its own
receipt, marked ``origin: resweep`` — at every agent when an all-agents erasure covered them, else
at each agent whose erasure did. The sweep also retries media keys that lost jobs left pending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sessionctl import deployment, metrics, store
from sessionctl.backends import opened
from sessionctl.errors import InsufficientPrivilege
from sessionctl.identifiers import Dsn
from sessionctl.jobs.common import now_iso
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.models import ResweepMatch, ResweepRequest, ResweepResult
from sessionctl.jobs.targets import Target, resolve_targets
from sessionctl.logs import get_logger
from sessionctl.privacy import user_hasher
from sessionctl.store import access
from sessionctl.store import resweep as sweep_sql
from sessionctl.store.tables import MEMORIES, SESSIONS

log = get_logger("sessionctl.resweep")

# The column that names the person in each kind of shared table.
SHARED_KEYS = {
    store.VECTOR: "user_id",
    "authz_users": "id",
    "authz_grouping": "subject",
    "authz_audit": "actor",
    "authz_decisions": "actor",
}
STALE_MEDIA_S = 600  # keys pending this long belong to a job that is gone (its own tries retry sooner)


SCOPES = ("sessions", "memories", "all")  # how much of an agent an erasure took, narrowest first


@dataclass(slots=True)
class _Found:
    """A matched user, raw id kept in memory only to ask for their erasure again, and the (target,
    scope) of each erasure that covered a store they are back in."""

    user_id: str
    covered_by: set[tuple[str, str]] = field(default_factory=set)


async def resweep(ctx: JobContext, req: ResweepRequest) -> ResweepResult:
    started = now_iso()
    erase = req.erase or ctx.settings.resweep_erase
    blog = log.bind(job_id=ctx.job_id, job_try=ctx.job_try)
    blog.info("resweep.start", erase=erase, tick=req.tick)
    targets = await resolve_targets(ctx, None, True)
    by_db: dict[tuple[str, str, int, str], list[Target]] = {}
    for t in targets:
        by_db.setdefault(t.dsn.target, []).append(t)
    if not by_db:
        by_db[ctx.settings.dsn.target] = []
    matches: list[ResweepMatch] = []
    found: dict[str, _Found] = {}
    seen = swept_count = media_retried = 0
    multi = len(by_db) > 1
    async with ctx.databases.connect(ctx.settings.dsn) as rconn:
        erased = await sweep_sql.erased_hmacs(rconn)
    for group in by_db.values():
        dsn = group[0].dsn if group else ctx.settings.dsn
        swept = await _stores(ctx, dsn, group)
        swept_count += len(swept)
        prefix = f"{dsn.database}/" if multi else ""
        same = dsn.target == ctx.settings.dsn.target
        for st in swept:
            # Both connections are held before the cursor opens (never one waiting for another);
            # in the receipts' own database the cursor's connection answers the lookups too.
            async with ctx.databases.connect(dsn) as conn:
                if same:
                    async for batch in sweep_sql.person_counts(conn, st):
                        seen += len(batch)
                        await _match(ctx, conn, erased, st, batch, prefix, matches, found)
                    continue
                async with ctx.databases.connect(ctx.settings.dsn) as rconn:
                    async for batch in sweep_sql.person_counts(conn, st):
                        seen += len(batch)
                        await _match(ctx, rconn, erased, st, batch, prefix, matches, found)
        media_retried += await _stale_media(ctx, dsn)
    declared_swept, declared_seen, not_swept = await _sweep_declared(ctx, erased, matches, found)
    swept_count, seen = swept_count + declared_swept, seen + declared_seen
    erasures = await _erase_again(ctx, found) if erase and found else {}
    users = {m.user_hmac for m in matches}
    metrics.RESWEEP_USERS.set(len(users))
    metrics.RESWEEP_ROWS.set(sum(m.rows for m in matches))
    for m in matches:
        blog.warning("resweep.match", **m.model_dump())
    blog.info("resweep.done", users_matched=len(users), stores=swept_count, keys_seen=seen, erasures=len(erasures))
    return ResweepResult(
        job_id=ctx.job_id,
        users_matched=len(users),
        rows=sum(m.rows for m in matches),
        stores_swept=swept_count,
        keys_seen=seen,
        matches=matches,
        erasures=erasures,
        media_retried=media_retried,
        stores_not_swept=not_swept,
        started_at=started,
        finished_at=now_iso(),
        requested_by=req.requested_by,
    )


async def _sweep_declared(
    ctx: JobContext, erased: set[str] | None, matches: list[ResweepMatch], found: dict[str, _Found]
) -> tuple[int, int, list[str]]:
    """The owners of each store the deployment file declares, matched as the vector and AgentOS
    tables are (an all-agents erasure of scope ``all`` covers them); stores swept, owners seen, and
    the stores whose owners cannot be listed (Agno keeps no id there: a hash, or a run)."""
    declared = deployment.load(ctx.settings.config_file)
    if not declared.stores:
        return 0, 0, []
    swept = seen = 0
    not_listed: list[str] = []
    async with opened(declared) as backends, ctx.databases.connect(ctx.settings.dsn) as rconn:
        for b in backends:
            if not b.lists_owners:
                not_listed.append(b.label)
                continue
            owners = await b.owners()
            swept, seen = swept + 1, seen + len(owners)
            st = sweep_sql.Swept(b.label, "items", "user_id", "database", None)
            for i in range(0, len(owners), 1000):
                batch = [(key, n, None) for key, n in owners[i : i + 1000]]
                await _match(ctx, rconn, erased, st, batch, "", matches, found)
    return swept, seen, not_listed


async def _stores(ctx: JobContext, dsn: Dsn, group: list[Target]) -> list[sweep_sql.Swept]:
    """The stores of one database that name a person; refused when the role cannot read them all."""
    schemas = [t.layout.schema for t in group]
    async with ctx.databases.connect(dsn) as conn:
        shared = await store.find_shared_tables(conn)
        dated = await sweep_sql.created_types(conn, sorted({*schemas, *(s.schema for s in shared)}))
        swept: list[sweep_sql.Swept] = []
        for schema in schemas:
            for table in await store.user_keyed_tables(conn, schema):
                swept.append(sweep_sql.Swept(schema, table, "user_id", "agent", dated.get((schema, table))))
        for s in shared:
            if s.kind == store.VECTOR and s.schema in schemas:
                continue  # swept with its agent
            swept.append(
                sweep_sql.Swept(s.schema, s.table, SHARED_KEYS[s.kind], "database", dated.get((s.schema, s.table)))
            )
        problems = await access.problems(conn, [access.Need(s.schema, s.table, access.READ) for s in swept])
        if problems:
            who = await access.role(conn)
            raise InsufficientPrivilege(
                f"role {who} cannot read every store a re-sweep looks at ({'; '.join(problems[:6])}): a sweep that"
                f" cannot see a row cannot find it — run `sessionctl grants --role {who}` and apply what it prints"
            )
    return swept


async def _match(
    ctx: JobContext,
    rconn: Any,
    erased: set[str] | None,
    st: sweep_sql.Swept,
    batch: list[tuple[str, int, Any]],
    prefix: str,
    matches: list[ResweepMatch],
    found: dict[str, _Found],
) -> None:
    digest = user_hasher(ctx.hash_key)
    by_hmac = {digest(key): (key, n, first) for key, n, first in batch}
    candidates = list(by_hmac) if erased is None else [h for h in by_hmac if h in erased]
    if not candidates:
        return
    receipts = await sweep_sql.erasures_of(rconn, candidates)
    for h, rows in receipts.items():
        covering = [r for r in rows if _covers(r, st)]
        if not covering:
            continue
        key, n, first = by_hmac[h]
        latest: datetime = max(r["finished_at"] for r in covering)
        matches.append(
            ResweepMatch(
                user_hmac=h,
                where=prefix + st.label,
                rows=n,
                first_seen=first.isoformat() if first is not None else None,
                erased_at=latest.isoformat(),
            )
        )
        f = found.setdefault(h, _Found(key))
        f.covered_by.update((r["target"], r["scope"]) for r in covering)


def _covers(receipt: dict[str, Any], st: sweep_sql.Swept) -> bool:
    """Did this erasure erase this store?"""
    every, scope = receipt["target"] == "*", receipt["scope"]
    if st.place == "database":
        return bool(every and scope == "all")
    if not (every or st.schema in receipt["schemas"]):
        return False
    if st.table == SESSIONS:
        return True
    return bool(scope == "all" or (scope == "memories" and st.table == MEMORIES))


def plan_again(covered_by: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """The erasures to ask for again: one per (target, scope) that covered a store the user is back
    in — the widest scope per target, and none at an agent that an all-agents erasure of at least
    that scope already covers. Never wider than what was asked for before."""
    widest: dict[str, str] = {}
    for target, scope in covered_by:
        if target not in widest or SCOPES.index(scope) > SCOPES.index(widest[target]):
            widest[target] = scope
    everywhere = SCOPES.index(widest["*"]) if "*" in widest else -1
    return sorted((t, s) for t, s in widest.items() if t == "*" or SCOPES.index(s) > everywhere)


def _payload(user_id: str, target: str, scope: str) -> dict[str, Any]:
    where: dict[str, Any] = {"all_agents": True} if target == "*" else {"agent_id": target}
    how = {"scope": "all"} if scope == "all" else {"scope": "sessions", "memories": scope == "memories"}
    return {"user_id": user_id, **where, **how}


async def _erase_again(ctx: JobContext, found: dict[str, _Found]) -> dict[str, str]:
    """New erasure jobs for each matched user (:func:`plan_again`); their job ids, by HMAC."""
    if ctx.enqueue_erasure is None:  # outside a worker: nothing to enqueue with
        return {}
    out: dict[str, str] = {}
    for h, f in found.items():
        ids = [await ctx.enqueue_erasure(_payload(f.user_id, t, s)) for t, s in plan_again(f.covered_by)]
        out[h] = ",".join(ids)
        metrics.RESWEEP_ERASURES.inc(len(ids))
    return out


async def _stale_media(ctx: JobContext, dsn: Dsn) -> int:
    """Media keys a lost job left pending (its own tries retry sooner): deleted now if they can be."""
    if ctx.media is None:
        return 0
    async with ctx.databases.connect(dsn) as conn:
        return await ctx.media.retry_stale(conn, STALE_MEDIA_S)
