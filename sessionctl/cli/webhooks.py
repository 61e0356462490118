"""``sessionctl webhooks``: the completion webhooks of the DSR service — a job's deliveries (with
their delivery and event ids), a resend (the same event id and body, due again at once), and a
signed test event sent now to a URL, so a receiver can check its verification."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from sessionctl.cli.app import PLAIN_HELP, app
from sessionctl.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, JsonOpt, fail, out, print_json, run, settings
from sessionctl.cli.service import _conn_do

webhooks_app = typer.Typer(
    rich_markup_mode=PLAIN_HELP,
    no_args_is_help=True,
    help="Completion webhooks of `sessionctl serve`: list a job's deliveries, resend one, send a test event.",
)
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("list")
def list_deliveries(
    job_id: Annotated[str, typer.Option("--job", metavar="JOB_ID", help="The job whose deliveries to show.")],
    as_json: JsonOpt = False,
) -> None:
    """A job's webhook deliveries: delivery id, event id, state and attempts (never the URL)."""
    from sessionctl.store import webhook_deliveries

    rows = run(_conn_do(settings(), lambda conn: webhook_deliveries.deliveries_of_jobs(conn, [job_id])))
    items = [_delivery(r) for r in rows]
    if as_json:
        print_json(items)
        return
    if not items:
        out.print(f"no webhook deliveries for job {job_id}", markup=False)
    for d in items:
        last = d["attempts"][-1] if d["attempts"] else {}
        answer = last.get("status_code") or last.get("error") or "-"
        out.print(
            f"{d['id']:<8} {d['event_id']}  {d['state']:<10} attempts {len(d['attempts'])}  last {answer}"
            f"  request {d['request_id']}",
            markup=False,
        )


@webhooks_app.command("resend")
def resend(
    delivery_id: Annotated[
        int, typer.Argument(metavar="DELIVERY_ID", min=1, help="The delivery's id (`sessionctl webhooks list`).")
    ],
) -> None:
    """Make a delivery due again at once — even one delivered or given up — with the same event id
    and body; a worker sends it within seconds, and its attempts list grows."""
    from sessionctl.store import webhook_deliveries

    async def call(conn: Any) -> Any:
        async with conn.transaction():
            return await webhook_deliveries.resend(conn, delivery_id)

    row = run(_conn_do(settings(), call))
    if row is None:
        fail(EXIT_BAD_INPUT, f"no webhook delivery {delivery_id} (sessionctl webhooks list --job JOB_ID)")
    out.print(
        f"delivery {row['id']} ({row['event_id']}) is due again now, after {row['tries']} attempt(s);"
        " a worker sends it within seconds",
        markup=False,
    )


@webhooks_app.command("test")
def send_test(
    url: Annotated[str, typer.Option("--url", help="Where to send it: a host on SESSIONCTL_WEBHOOK_ALLOWED_HOSTS.")],
    as_json: JsonOpt = False,
) -> None:
    """Send one signed test event (`{"event": "test", "event_id": …}`) to URL now, not queued, and
    print the answer; exit 1 unless it was a 2xx."""
    from sessionctl import webhooks
    from sessionctl.errors import InvalidRequest

    config = settings()
    try:
        webhooks.check_callback(url, config.webhook_allowed_hosts)
    except InvalidRequest as exc:
        fail(EXIT_BAD_INPUT, str(exc).replace(", or leave callback_url out", "").replace("callback_url", "--url"))
    keys = config.webhook_keys()
    if not keys:
        fail(EXIT_BAD_INPUT, "no webhook secret: set SESSIONCTL_WEBHOOK_SECRET or SESSIONCTL_WEBHOOK_SECRETS")
    attempt = run(webhooks.send_probe(url, config.webhook_scheme, keys, config.webhook_timeout))
    if as_json:
        print_json(attempt)
    else:
        answer = attempt.get("status_code") or attempt.get("error")
        verdict = "ok" if attempt["ok"] else "NOT OK"
        out.print(
            f"test event {attempt['event_id']} ({config.webhook_scheme} scheme, {len(keys)} signature(s)):"
            f" {answer} {verdict} in {attempt['ms']} ms",
            markup=False,
        )
    if not attempt["ok"]:
        raise typer.Exit(EXIT_FAILED)


def _delivery(row: Any) -> dict[str, Any]:
    """A delivery as the CLI shows it: dates in ISO 8601, its state in one word, no URL."""
    import json

    d = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in dict(row).items() if k != "url"}
    if isinstance(d.get("attempts"), str):
        d["attempts"] = json.loads(d["attempts"])
    d["state"] = "delivered" if d["delivered_at"] else "gave up" if d["gave_up_at"] else "pending"
    return d
