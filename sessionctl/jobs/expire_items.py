"""Retention beyond sessions: the items of an agent schema a rule names (``items``: memories,
traces with their spans, evaluation runs), and the declared stores the policy names (``[stores]``:
sessions and memories of a session database, files of AgentFS) — each by its own time, each
recounted after; the items of people under a legal hold are left out. A vector store or an event
stream keeps no time per item: a policy that names one is refused before anything is deleted."""

from __future__ import annotations

import time
from typing import Any

from sessionctl import deployment
from sessionctl.backends import opened
from sessionctl.errors import InvalidRequest
from sessionctl.jobs.context import JobContext
from sessionctl.jobs.targets import Target
from sessionctl.retention_policy import DAY, Policy, Rule
from sessionctl.store import access, expiry
from sessionctl.store.tables import SPANS

TIMED = ("sqlite", "mysql", "redis", "agentfs")  # the declared kinds that keep a time per item


async def clean_items(
    ctx: JobContext,
    target: Target,
    rule: Rule,
    as_of: int,
    *,
    dry_run: bool,
    deadline: float,
    keep: list[str] | None = None,
) -> dict[str, dict[str, int]]:
    """The rule's items of one agent schema older than their cutoff, none of the people of ``keep``
    (under a legal hold): per item, deleted (in a dry run, ``would_delete``) and ``remaining``."""
    out: dict[str, dict[str, int]] = {}
    async with ctx.databases.connect(target.dsn) as conn:
        for item, days in sorted(rule.items.items()):
            cutoff = as_of - days * DAY
            found = await expiry.count_expired_items(conn, target.layout, item, cutoff, keep)
            if dry_run:
                out[item] = {"would_delete": found, "remaining": found}
                continue
            deleted = 0
            while found and time.monotonic() < deadline:
                n = await expiry.delete_expired_items(conn, target.layout, item, cutoff, ctx.settings.batch_size, keep)
                deleted += n
                if n < ctx.settings.batch_size:
                    break
            left = await expiry.count_expired_items(conn, target.layout, item, cutoff, keep)
            out[item] = {"deleted": deleted, "remaining": left}
    return out


def item_needs(layout: Any, items: set[str], *, dry_run: bool) -> list[access.Need]:
    """What cleaning these items of a schema needs of the role (SELECT, and DELETE unless a dry run)."""
    tables = [expiry.ITEMS[i].table for i in sorted(items)] + ([SPANS] if "traces" in items else [])
    how = access.READ if dry_run else access.ERASE
    return [access.Need(layout.schema, t, how) for t in tables if layout.has(t)]


def _chosen(ctx: JobContext, policy: Policy) -> deployment.Deployment:
    """The declared stores the policy names; refused when it names one the file does not declare,
    or one that keeps no time per item."""
    declared = deployment.load(ctx.settings.config_file)
    known = {s.label: s for s in declared.stores}
    unknown = sorted(set(policy.stores) - set(known))
    if unknown:
        raise InvalidRequest(
            f"the retention policy names store(s) {', '.join(unknown)} the deployment file does not declare"
            f" (declared: {', '.join(known) or 'none'})"
        )
    timeless = sorted(label for label in policy.stores if known[label].kind not in TIMED)
    if timeless:
        raise InvalidRequest(
            f"the retention policy names {', '.join(timeless)}, which keep(s) no time per item: such a store"
            " cannot be cleaned by age (event streams expire on their own); remove it from [stores]"
        )
    return deployment.Deployment(stores=tuple(known[label] for label in sorted(policy.stores)))


async def check_stores(ctx: JobContext, policy: Policy | None) -> None:
    """Before a retention run deletes anything: the stores its policy names are declared, keep a
    time per item, and answer."""
    if policy is None or not policy.stores:
        return
    async with opened(_chosen(ctx, policy)):
        return


async def clean_stores(
    ctx: JobContext, policy: Policy, as_of: int, *, dry_run: bool, keep: list[str] | None = None
) -> dict[str, dict[str, int]]:
    """The declared stores the policy names, cleaned of items older than their cutoff — none of the
    people of ``keep`` (under a legal hold)."""
    if not policy.stores:
        return {}
    out: dict[str, dict[str, Any]] = {}
    async with opened(_chosen(ctx, policy)) as backends:
        for b in backends:
            cutoff = as_of - policy.stores[b.label].max_age_days * DAY
            done, left = await b.expire(cutoff, dry_run=dry_run, keep=keep)
            out[b.label] = {("would_delete" if dry_run else "deleted"): done, "remaining": left}
    return out
