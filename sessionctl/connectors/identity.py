"""Who a DSR platform's identifier is: the operator's mapping from the identifier a platform sends
(an email, a customer id) to the user ids Agno stored the person's sessions under — a SQL query
(``SESSIONCTL_IDENTITY_QUERY``) or a Python function (``SESSIONCTL_IDENTITY_FUNCTION``); without
either, the identifier itself is the user id. Every id is checked like any user id; none is logged."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg

from sessionctl.config import Settings
from sessionctl.errors import DatabaseUnavailable, InvalidRequest
from sessionctl.identifiers import Dsn, validate_user_id

MAX_IDS = 100  # more user ids for one person is a mapping that went wrong, not a person


def _function(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise InvalidRequest(
            f"SESSIONCTL_IDENTITY_FUNCTION {spec!r} does not name a function: write package.module:function"
        ) from None
    if not callable(found):
        raise InvalidRequest(f"SESSIONCTL_IDENTITY_FUNCTION {spec!r} is not callable")
    return found  # type: ignore[no-any-return]


async def user_ids(settings: Settings, identifier: str, kind: str) -> list[str]:
    """The person's user ids (each once, in the mapping's order; empty: nobody known by it)."""
    if settings.identity_function:
        found: Iterable[Any] = await _call(settings.identity_function, identifier, kind)
    elif settings.identity_query:
        found = await _query(settings, identifier, kind)
    else:
        found = [identifier]
    ids = [validate_user_id(str(u)) for u in found if u is not None]
    ids = list(dict.fromkeys(ids))
    if len(ids) > MAX_IDS:
        raise InvalidRequest(f"the identity mapping found {len(ids)} user ids for one identifier (at most {MAX_IDS})")
    return ids


async def _call(spec: str, identifier: str, kind: str) -> Iterable[Any]:
    """The operator's function, whatever it raises told in one line that quotes nothing of it."""
    fn = _function(spec)
    try:
        got = fn(identifier, kind)
        found = await got if inspect.isawaitable(got) else got
        return list(found)
    except Exception as exc:
        raise InvalidRequest(f"SESSIONCTL_IDENTITY_FUNCTION {spec} raised {type(exc).__name__}") from None


async def _query(settings: Settings, identifier: str, kind: str) -> list[Any]:
    secret = settings.identity_database_url
    dsn = Dsn.parse(secret.get_secret_value()) if secret is not None else settings.dsn
    try:
        conn = await asyncpg.connect(dsn.asyncpg)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(f"the identity mapping's database is unreachable ({type(exc).__name__})") from None
    try:
        query = settings.identity_query or ""
        rows = await conn.fetch(query, *((identifier, kind) if "$2" in query else (identifier,)))
    except Exception as exc:
        raise InvalidRequest(
            f"SESSIONCTL_IDENTITY_QUERY failed ({type(exc).__name__}): check it in psql with $1 as an identifier"
        ) from None
    finally:
        await conn.close()
    return [r[0] for r in rows]
