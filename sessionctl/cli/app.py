"""The typer application and its sub-applications (commands register themselves on import)."""

from __future__ import annotations

import warnings

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Bulk maintenance of Agno agent sessions in Postgres: GDPR erasure as arq jobs.",
)
retention_app = typer.Typer(no_args_is_help=True, help="The retention policy: show it, run it.")
app.add_typer(retention_app, name="retention")


def main() -> None:
    warnings.filterwarnings("once", category=RuntimeWarning, module="sessionctl")
    try:
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
