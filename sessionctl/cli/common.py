"""What every command shares: the consoles, exit codes, settings, the one way a command runs its
async call, user ids read from argv, stdin or a file, and the options several commands take."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from sessionctl.config import Settings, load_settings
from sessionctl.errors import InvalidRequest, PermanentError, SessionctlError, TransientError, unexpected
from sessionctl.identifiers import Ambiguous, read_id_lines

if TYPE_CHECKING:
    from sessionctl.producer import Producer

T = TypeVar("T")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 0, 1, 2, 3

# -- options several commands take, declared once ---------------------------------------------------

USER_HELP = "The user id; `-` reads it from stdin (keeps it out of the process list)."
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the job and print its result.")]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait with --wait; then exit 1 (the job goes on).")
]
WAIT_DEFAULT = 600.0
AgentOpt = Annotated[str | None, typer.Option("--agent", help="The agent id.")]
OneAgentOpt = Annotated[str | None, typer.Option("--agent", help="One agent (default: every agent schema).")]
AllAgentsOpt = Annotated[bool, typer.Option("--all-agents", help="Every agent schema in the database.")]
UserOpt = Annotated[str | None, typer.Option("--user", help=USER_HELP)]
RequiredUserOpt = Annotated[str, typer.Option("--user", help=USER_HELP)]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")]
RequestedByOpt = Annotated[str | None, typer.Option("--requested-by", help="A label for who asked (ticket id).")]


def fail(code: int, message: str) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    err.print(f"error: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


def settings() -> Settings:
    """The settings, or exit 2 naming the variable and the rule (never the value: a DSN password)."""
    from pydantic import ValidationError

    try:
        loaded = load_settings()
    except PermanentError as exc:  # SESSIONCTL_STATE_DIR, read before the settings themselves
        fail(EXIT_BAD_INPUT, f"invalid configuration: {exc}")
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(x) for x in e.get('loc', ())) or 'settings'}: {e.get('msg', 'invalid')}".replace(
                ": Value error, ", ": "
            )
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        fail(EXIT_BAD_INPUT, "invalid configuration: " + "; ".join(problems))
    from sessionctl.logs import configure_logging

    # commands print their output on stdout; their own log lines (warnings) go to stderr
    configure_logging(loaded.log_format, "WARNING")
    return loaded


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's async call; our errors become their exit code and one line, a foreign one
    its class and SQLSTATE only (its text may quote row values), never a traceback."""
    try:
        return asyncio.run(coro)
    except typer.Exit:  # a command's own exit, from inside its call
        raise
    except PermanentError as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    except TransientError as exc:
        fail(EXIT_UNAVAILABLE, str(exc))
    except SessionctlError as exc:
        fail(EXIT_FAILED, str(exc))
    except Exception as exc:
        fail(EXIT_FAILED, unexpected(exc))


def with_producer(config: Settings, call: Callable[[Producer], Awaitable[T]]) -> T:
    """``run`` ``call(producer)`` inside an open :class:`~sessionctl.producer.Producer`."""

    async def go() -> T:
        from sessionctl.producer import Producer

        async with Producer(config) as producer:
            return await call(producer)

    return run(go())


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def user_value(user: str | None) -> str | None:
    """The ``--user`` value; ``-`` reads one id from stdin (one line, exactly as written, the
    line's ending removed), so the id never sits in the process list for the command's life."""
    if user != "-":
        return user
    try:
        ids = read_id_lines(sys.stdin.buffer.read(), source="--user - (stdin)")
    except InvalidRequest as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    if len(ids) != 1:
        fail(EXIT_BAD_INPUT, f"--user - reads exactly one user id from stdin, got {len(ids)}")
    return ids[0]


def read_users_file(path: Path, ambiguous: Ambiguous) -> list[str]:
    """One user id per line, exactly as written (identifiers.read_id_lines: split on \\n only, an
    ambiguous line refuses the file unless ``ambiguous`` says how to read it); duplicates dropped."""
    try:
        data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        fail(EXIT_BAD_INPUT, f"cannot read --users-file {path}: {(exc.strerror or type(exc).__name__).lower()}")
    try:
        ids = read_id_lines(data, source=f"--users-file {path}", ambiguous=ambiguous)
    except InvalidRequest as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    if not ids:
        fail(EXIT_BAD_INPUT, f"--users-file {path} holds no user ids")
    unique = list(dict.fromkeys(ids))
    if len(unique) < len(ids):
        err.print(f"{len(ids) - len(unique)} repeated user id(s) ignored", markup=False)
    return unique


def one_target(agent: str | None, all_agents: bool) -> None:
    if (agent is None) == (not all_agents):
        fail(EXIT_BAD_INPUT, "name exactly one target: --agent ID or --all-agents")


def epoch(value: str | None, flag: str) -> int | None:
    """ISO 8601 date or datetime (UTC unless it says otherwise), or epoch seconds."""
    if value is None:
        return None
    from datetime import UTC, datetime

    try:
        return int(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        fail(EXIT_BAD_INPUT, f"{flag} {value!r} is not a date: use 2026-01-31, 2026-01-31T12:00:00Z or epoch seconds")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())
