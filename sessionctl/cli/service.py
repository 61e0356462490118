"""The DSR service's commands: ``serve`` (HTTP intake and the console), ``token`` (API tokens) and
``requests`` (the deadline ledger)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from sessionctl.cli.app import PLAIN_HELP, app
from sessionctl.cli.common import EXIT_BAD_INPUT, JsonOpt, fail, out, print_json, run, settings
from sessionctl.config import Settings
from sessionctl.errors import SchemaNotReady

token_app = typer.Typer(
    rich_markup_mode=PLAIN_HELP, no_args_is_help=True, help="API tokens of `sessionctl serve` (stored as SHA-256 only)."
)
app.add_typer(token_app, name="token")


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
) -> None:
    """Serve the DSR API (/v1, OpenAPI at /openapi.json) and the console (/console) over HTTP."""
    import uvicorn

    from sessionctl.api.app import create_app
    from sessionctl.logs import configure_logging

    config = settings()
    configure_logging(config.log_format, config.log_level)
    _ = config.dsn  # a bad DATABASE_URL is bad input, said before anything starts
    # uvicorn's access log holds paths only: no endpoint takes a user id in its path or query.
    uvicorn.run(create_app(config), host=host, port=port, log_level=config.log_level.lower(), proxy_headers=True)


async def _conn_do(config: Settings, call: Any) -> Any:
    from sessionctl.databases import Databases
    from sessionctl.store import migrations

    dbs = Databases(pool_size=1)
    try:
        async with dbs.connect(config.dsn) as conn:
            version = await migrations.version(conn)
            if version == 0:
                raise SchemaNotReady(
                    f"sessionctl's schema does not exist in {config.dsn.redacted} yet: run `sessionctl migrate` there"
                )
            if version is not None and version < migrations.LATEST:
                raise SchemaNotReady("the sessionctl schema is older than this sessionctl: run `sessionctl migrate`")
            return await call(conn)
    finally:
        await dbs.close()


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="A name to know and revoke it by.")],
    scopes: Annotated[
        str,
        typer.Option(
            "--scopes",
            help="Comma-separated: read (its own requests and jobs), erase, export, audit (every request, and the"
            " console).",
        ),
    ] = "read",
) -> None:
    """Create a token; it is printed once, as the last line of stdout (only its hash is stored)."""
    from sessionctl.store import api_tokens
    from sessionctl.tokens import check_name, new_token, parse_scopes, token_hash

    try:
        check_name(name)
        wanted = parse_scopes(scopes)
    except ValueError as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    token = new_token()
    created = run(_conn_do(settings(), lambda conn: api_tokens.create_token(conn, name, token_hash(token), wanted)))
    if not created:
        fail(EXIT_BAD_INPUT, f"a token named {name!r} exists already (names are never reused): pick another name")
    out.print(f"token {name} created with scopes {','.join(wanted)}; it is shown once, below:", markup=False)
    print(token)  # the last line of stdout, alone, for scripts


@token_app.command("list")
def token_list(as_json: JsonOpt = False) -> None:
    """Tokens by name, scopes, when created and revoked (never the tokens)."""
    from sessionctl.store import api_tokens

    rows = run(_conn_do(settings(), api_tokens.list_tokens))
    if as_json:
        print_json([{**r, "created_at": _iso(r["created_at"]), "revoked_at": _iso(r["revoked_at"])} for r in rows])
        return
    if not rows:
        out.print("no tokens yet: sessionctl token create --name NAME --scopes read,erase", markup=False)
    for r in rows:
        state = f"revoked {_iso(r['revoked_at'])}" if r["revoked_at"] else "live"
        out.print(f"{r['name']:<24} {','.join(r['scopes']):<18} created {_iso(r['created_at'])}  {state}", markup=False)


@token_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Argument(metavar="NAME", help="The token's name.")]) -> None:
    """Revoke a token (it stops working within 5 seconds)."""
    from sessionctl.store import api_tokens

    if not run(_conn_do(settings(), lambda conn: api_tokens.revoke_token(conn, name))):
        fail(EXIT_BAD_INPUT, f"no live token named {name!r} (sessionctl token list)")
    out.print(f"token {name} revoked", markup=False)


@app.command()
def requests(
    open_only: Annotated[bool, typer.Option("--open", help="Only requests not completed yet.")] = False,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only open requests past their due date.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """The deadline ledger of data-subject requests (received through `sessionctl serve`)."""
    from sessionctl.store import dsr_requests

    rows = run(
        _conn_do(
            settings(),
            lambda conn: dsr_requests.list_requests(conn, open_only=open_only, overdue_only=overdue, limit=limit),
        )
    )
    now = datetime.now(UTC)
    items = []
    for r in rows:
        d = dict(r)
        d["overdue"] = d["status"] == "open" and d["due_at"] < now
        d.pop("callback_url", None)
        d["job_ids"] = list(d["job_ids"])
        for k in ("options", "extensions", "remains"):
            if isinstance(d.get(k), str):
                d[k] = json.loads(d[k])
        items.append(d)
    if as_json:
        print_json([{k: _iso(v) if isinstance(v, datetime) else v for k, v in d.items()} for d in items])
        return
    if not items:
        out.print(
            "no requests" + (" open" if open_only or overdue else "") + " (they come in through sessionctl serve)"
        )
    for d in items:
        left = (d["due_at"] - now).total_seconds() / 86400
        when: str
        if d["overdue"]:
            when = f"OVERDUE by {-left:.1f} d"
        elif d["status"] == "open":
            when = f"{left:.1f} d left"
        else:
            when = {True: "LATE", False: "on time"}.get(d["late"]) or str(d["status"])
        extended = f"  extended x{len(d['extensions'])}" if d["extensions"] else ""
        whole = {True: "  complete", False: "  INCOMPLETE"}.get(d["complete"], "")
        out.print(
            f"{d['request_id']}  {d['kind']:<7} {d['status']:<9} due {d['due_at']:%Y-%m-%d}  {when:<20}"
            f" user {d['user_hmac']}  {d['request_ref'] or ''}{extended}{whole}",
            markup=False,
            style="bold red" if d["overdue"] or d["late"] else None,
        )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
