"""Every error of the API a JSON line a caller can act on — never a server path, a connection
string, a traceback or the input (a user id)."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sessionctl.errors import AgentNotFound, NotAgnoStorage, SessionctlError

# A server path or a connection string in an error's text (an unknown agent names where it looked):
# what a caller sees is the error without them.
_SERVER_DETAIL = re.compile(r"(postgres(ql)?|rediss?)://\S+|(?<![\w.])/[\w.@-]+(/[\w.@-]+)+")


def public(message: str) -> str:
    """An error's text as a caller may read it: no server path, no connection string."""
    return _SERVER_DETAIL.sub("(server detail withheld)", message)


def install(app: FastAPI) -> None:
    """The API's error handlers."""

    @app.exception_handler(SessionctlError)
    async def _refused(request: Request, exc: SessionctlError) -> JSONResponse:
        code = 422 if isinstance(exc, ValueError | LookupError | NotImplementedError) else 503
        message = str(exc)
        if isinstance(exc, AgentNotFound | NotAgnoStorage):  # where it looked is the operator's business
            named = re.match(r"agent (\S+?):? ", message)
            message = f"agent {named.group(1) if named else ''} has no Agno session storage here: check the agent id"
        return JSONResponse({"detail": public(message), "error_type": type(exc).__name__}, status_code=code)

    @app.exception_handler(asyncpg.DataError)
    async def _unstorable(request: Request, exc: asyncpg.DataError) -> JSONResponse:
        detail = "a value in the request cannot be stored in Postgres (a NUL character, a number or date out of range)"
        return JSONResponse({"detail": detail, "error_type": "InvalidRequest"}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the default answer echoes the input (a user id): only where and what is wrong
        errors = [
            {"loc": [_safe(x) for x in e.get("loc", ())], "msg": _safe(e.get("msg", "")), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)


def _safe(value: Any) -> Any:
    """A part of an error that came from the input (a field name): text any JSON encoder writes."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")[:200]
    return value
