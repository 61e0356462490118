"""How FastAPI serves the two intake routes (:class:`IntakeRoute`): the caller checked, then the JSON
body validated by its model, then the endpoint — what FastAPI's generic handler does for such a
route, without the rest of it (each request's content type parsed as a MIME header, the dependency
solver, the body decoded twice — to Python, then validated): a backlog replayed or a connector storm
arrives here. The route stays FastAPI's for everything else (matching, the spec, the errors)."""

from __future__ import annotations

import typing
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from sessionctl.api.auth import Bearer

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class IntakeRoute(APIRoute):
    """A route whose endpoint is ``async def f(body: Model, request: Request, who: Annotated[Caller,
    Security(Bearer(...))]) -> Response``: the token is checked first (401/403 before anything is
    read), then the body — JSON of the model, or 422 as FastAPI words it (``loc`` from ``body``)."""

    def get_route_handler(self) -> Handler:
        model: type[BaseModel] = typing.get_type_hints(self.endpoint)["body"]
        endpoint = self.endpoint
        # this handler resolves the caller and the body, nothing else: a dependency added to the
        # route (or the app) would be skipped silently, so it is refused when the app is built
        calls = [d.call for d in self.dependant.dependencies]
        if len(calls) != 1 or not isinstance(calls[0], Bearer):
            raise TypeError(f"{self.path}: an IntakeRoute resolves only its bearer token, no other dependency")
        bearer = calls[0]

        async def handle(request: Request) -> Response:
            who = await bearer(request)
            try:
                raw = await request.body()
            except ClientDisconnect as exc:  # as FastAPI answers it
                raise HTTPException(400, "There was an error parsing the body") from exc
            body = model_of(model, raw, request.headers.get("content-type"))
            response: Response = await endpoint(body, request, who)
            return response

        return handle


def model_of(model: type[BaseModel], raw: bytes, content_type: str | None) -> BaseModel:
    """The body as ``model``, or :class:`RequestValidationError` located in ``body``."""
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    if not _json(content_type):
        msg = "send the body as JSON (Content-Type: application/json)"
        raise RequestValidationError([{"type": "model_attributes_type", "loc": ("body",), "msg": msg}])
    try:
        return model.model_validate_json(raw.removeprefix(_BOM))  # a BOM, as json.loads accepts it
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


_BOM = b"\xef\xbb\xbf"


def _json(content_type: str | None) -> bool:
    """``application/json`` or ``application/…+json``, parameters aside (FastAPI's rule)."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))
