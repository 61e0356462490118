"""The one way values reach a statement: ``Params`` numbers the bind parameters (``$n``), and
the conditions every module shares are written once here."""

from __future__ import annotations

from typing import Any


class Params:
    """The bind parameters of one statement: ``p(value)`` adds one and returns its ``$n``."""

    def __init__(self, values: list[Any] | None = None) -> None:
        self.values: list[Any] = [] if values is None else values  # appended to: the caller's list

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"



# "user_id IN (SELECT unnest($n::text[]))", never "user_id = ANY($n)", wherever a list of users is
# matched: Postgres hashes an ANY array only when it is a constant of the plan, and a statement
# prepared by asyncpg soon runs a generic plan, where ANY scans the whole array for every row
# (docs/decisions.md). IN (subquery) is a hashed lookup, or a join on the index, in every plan.
USERS_1 = "user_id IN (SELECT unnest($1::text[]))"  # the users of parameter $1

# The one exception: the counts that prove a few people gone from every table of a fleet
# (store/counts.py) keep one generic plan per table on each pooled connection, and a plan of
# ``= ANY`` holds about half the memory of the semi-join's (docs/decisions.md). Up to 8 users the
# array is scanned per row (Postgres itself hashes a constant array only from 9 elements on).
FEW_USERS = 8


def users_match(users: int, column: str = "user_id") -> str:
    """The condition on ``column`` for ``users`` people in parameter ``$1``: ``= ANY`` for a few
    (:data:`FEW_USERS`), the hashed semi-join for more."""
    if users <= FEW_USERS:
        return f"{column} = ANY($1::text[])"
    return f"{column} IN (SELECT unnest($1::text[]))"



def legacy_runs_expr(alias: str) -> str:
    """How many runs an agno 2.x session row holds in its ``runs`` jsonb (0 when it is not an array)."""
    return f"CASE WHEN jsonb_typeof({alias}.runs) = 'array' THEN jsonb_array_length({alias}.runs) ELSE 0 END"


def rowcount(status: str) -> int:
    # asyncpg returns the command tag, e.g. "DELETE 42"
    return int(status.rsplit(" ", 1)[1])
