"""The typer application and its sub-applications (commands register themselves on import)."""

from __future__ import annotations

from typing import Annotated

import typer

from sessionctl import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Bulk maintenance of Agno agent sessions in Postgres: GDPR erasure as arq jobs.",
)
retention_app = typer.Typer(no_args_is_help=True, help="The retention policy: show it, run it.")
app.add_typer(retention_app, name="retention")
demo_app = typer.Typer(no_args_is_help=True, help="Demo data to try sessionctl on.")
app.add_typer(demo_app, name="demo")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sessionctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Bulk maintenance of Agno agent sessions in Postgres: GDPR erasure as arq jobs."""


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
