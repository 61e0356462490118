"""``sessionctl hold``: legal holds — a person under hold is not erased (their erasures end
``on_hold``, and a DSR platform is told so) nor cleaned by retention until the hold is released."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sessionctl.cli.app import PLAIN_HELP, app
from sessionctl.cli.common import EXIT_BAD_INPUT, USER_HELP, JsonOpt, fail, out, print_json, run, settings, user_value
from sessionctl.cli.service import _conn_do, _iso
from sessionctl.errors import InvalidRequest
from sessionctl.identifiers import storable_text, validate_user_id
from sessionctl.privacy import user_hmac

hold_app = typer.Typer(
    rich_markup_mode=PLAIN_HELP, no_args_is_help=True, help="Legal holds: people who must not be erased."
)
app.add_typer(hold_app, name="hold")
User = Annotated[str, typer.Option("--user", help=USER_HELP)]


def _user(user: str) -> str:
    try:
        return validate_user_id(user_value(user) or "")
    except InvalidRequest as exc:
        fail(EXIT_BAD_INPUT, str(exc))


def _person(user: str) -> str:
    return user_hmac(settings().hash_key_bytes, _user(user))


@hold_app.command("place")
def hold_place(
    user: User,
    reason: Annotated[str, typer.Option("--reason", help="Why (a matter, a ticket): kept with the hold.")],
) -> None:
    """Place a legal hold on a person: their erasures are refused (``on_hold``) and retention keeps
    everything of theirs until it is released."""
    from sessionctl.store import legal_holds

    user_id = _user(user)
    key = settings().hash_key_bytes
    person = user_hmac(key, user_id)
    try:
        why = storable_text(reason.strip(), "--reason")
    except InvalidRequest as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    if not why:
        fail(EXIT_BAD_INPUT, "--reason is empty: say why the person is held")
    sealed = legal_holds.seal(key, person, user_id)  # retention leaves the person out by it
    row, new = run(_conn_do(settings(), lambda conn: legal_holds.place(conn, person, sealed, why[:500], "cli")))
    said = "placed" if new else "already in place"
    out.print(f"hold {row['id']} {said} on user {person} since {_iso(row['placed_at'])}", markup=False)


@hold_app.command("release")
def hold_release(user: User) -> None:
    """Release a person's legal hold (it stays listed, with when it was released)."""
    from sessionctl.store import legal_holds

    person = _person(user)
    row = run(_conn_do(settings(), lambda conn: legal_holds.release(conn, person, "cli")))
    if row is None:
        fail(EXIT_BAD_INPUT, f"user {person} is under no hold: nothing to release")
    out.print(f"hold {row['id']} on user {person} released", markup=False)


@hold_app.command("list")
def hold_list(
    everything: Annotated[bool, typer.Option("--all", help="Released holds too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Holds in place (``--all``: released ones too), newest first; people as HMACs."""
    from sessionctl.store import legal_holds

    rows = run(_conn_do(settings(), lambda conn: legal_holds.listing(conn, include_released=everything, limit=1000)))
    items = [_hold(r) for r in rows]
    if as_json:
        print_json(items)
        return
    if not items:
        out.print("no holds in place", markup=False)
    for h in items:
        state = f"released {h['released_at']}" if h["released_at"] else "in place"
        out.print(
            f"{h['id']}  user {h['user_hmac']}  {state}  since {h['placed_at']}  by {h['placed_by']}: {h['reason']}",
            markup=False,
        )


def _hold(r: Any) -> dict[str, Any]:
    return {
        "id": r["id"],
        "user_hmac": r["user_hmac"],
        "reason": r["reason"],
        "placed_by": r["placed_by"],
        "placed_at": _iso(r["placed_at"]),
        "released_at": _iso(r["released_at"]),
    }
