"""The identity mapping without a database: a Python entry point (sync or async) turns a platform's
identifier into user ids, checked like any user id, each once; a bad entry point is one line."""

from __future__ import annotations

import pytest

from sessionctl.config import Settings
from sessionctl.connectors import identity
from sessionctl.errors import InvalidRequest


def lookup(identifier: str, kind: str) -> list[str]:
    return {"jane@x.io": ["u-1", " u-1 ", "u-1", "u-2"]}.get(identifier, []) if kind == "email" else []


async def lookup_async(identifier: str, kind: str) -> list[str]:
    return ["bad\x00id"] if identifier == "nul" else [identifier.upper()]


def _settings(fn: str | None) -> Settings:
    return Settings(database_url="postgresql://u@h/db", identity_function=fn)


async def test_an_entry_point_maps_and_ids_stay_exactly_as_written() -> None:
    ids = await identity.user_ids(_settings(f"{__name__}:lookup"), "jane@x.io", "email")
    assert ids == ["u-1", " u-1 ", "u-2"]  # never normalised: " u-1 " is another id; repeats once
    assert await identity.user_ids(_settings(f"{__name__}:lookup"), "jane@x.io", "phone") == []
    assert await identity.user_ids(_settings(f"{__name__}:lookup_async"), "abc", "email") == ["ABC"]
    assert await identity.user_ids(_settings(None), "Jane@X.io", "email") == ["Jane@X.io"]  # no mapping: itself


async def test_a_bad_entry_point_or_id_is_refused_in_one_line() -> None:
    with pytest.raises(InvalidRequest, match="does not name a function"):
        await identity.user_ids(_settings("no.such.module:fn"), "x", "email")
    with pytest.raises(InvalidRequest, match="NUL"):
        await identity.user_ids(_settings(f"{__name__}:lookup_async"), "nul", "email")
