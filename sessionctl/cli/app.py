"""The typer application and its sub-applications (commands register themselves on import)."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, Protocol, cast

import typer
from typer.core import TyperGroup

from sessionctl import __version__

# Plain help (click's): flags read as flags, choices as choices, and paragraphs rewrapped to the
# terminal; typer's rich help shows every flag as taking a <bool> and keeps the docstrings' breaks.
PLAIN_HELP = None


class Commands(TyperGroup):
    """The root group: a command line the parser refuses anywhere below it (an unknown option, a
    value not among the choices, a missing one) is one line on stderr, as every other error of the
    CLI, and exit 2 — not click's usage block."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _one_line():
            return super().invoke(ctx)


class _UsageError(Protocol):
    ctx: Any

    def format_message(self) -> str: ...


class _one_line(contextlib.AbstractContextManager[None]):
    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        # A usage error, by what it is (typer vendors its own click, so no class to import): exit
        # code 2 and the context it was raised in. Help shown for no arguments is not an error.
        if getattr(exc, "exit_code", None) != 2 or getattr(exc, "ctx", None) is None:
            return
        if type(exc).__name__ == "NoArgsIsHelpError":
            return
        usage = cast(_UsageError, exc)
        message = usage.format_message().replace("Value error, ", "").rstrip(".")
        path = usage.ctx.command_path
        typer.echo(f"error: {message[:1].lower()}{message[1:]} (see {path} --help)", err=True)
        raise typer.Exit(2) from None


app = typer.Typer(
    cls=Commands,
    rich_markup_mode=PLAIN_HELP,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Bulk maintenance of Agno agent sessions in Postgres: GDPR erasure as arq jobs.",
)
retention_app = typer.Typer(
    rich_markup_mode=PLAIN_HELP, no_args_is_help=True, help="The retention policy: show it, run it."
)
app.add_typer(retention_app, name="retention")
demo_app = typer.Typer(rich_markup_mode=PLAIN_HELP, no_args_is_help=True, help="Demo data to try sessionctl on.")
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
