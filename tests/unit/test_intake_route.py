"""The intake routes' body, as :class:`sessionctl.api.intake_route.IntakeRoute` reads it: JSON of the
model by FastAPI's content-type rule, every error located in ``body`` and none quoting the input."""

from __future__ import annotations

import pytest
from fastapi.exceptions import RequestValidationError

from sessionctl.api.intake_route import model_of
from sessionctl.api.models import ErasureIn

SECRET = "person-7f3a"


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/vnd.dsr+json"],
)
def test_json_bodies_are_read_as_the_model(content_type: str) -> None:
    raw = f'{{"user_id": "{SECRET}", "scope": "sessions"}}'.encode()
    for sent in (raw, b"\xef\xbb\xbf" + raw):  # with a UTF-8 BOM too, as json.loads reads it
        body = model_of(ErasureIn, sent, content_type)
        assert isinstance(body, ErasureIn) and body.user_id == SECRET and body.scope == "sessions"


@pytest.mark.parametrize(
    ("raw", "content_type", "kind", "loc"),
    [
        (b"", "application/json", "missing", ["body"]),
        (f'{{"user_id": "{SECRET}"}}'.encode(), None, "model_attributes_type", ["body"]),
        (f'{{"user_id": "{SECRET}"}}'.encode(), "text/plain", "model_attributes_type", ["body"]),
        (f'{{"user_id": "{SECRET}"'.encode(), "application/json", "json_invalid", ["body"]),
        (
            f'{{"user_id": "{SECRET}", "surprise": 1}}'.encode(),
            "application/json",
            "extra_forbidden",
            ["body", "surprise"],
        ),
        (b'{"user_id": "a\\u0000b"}', "application/json", "value_error", ["body", "user_id"]),
        (b"[1]", "application/json", "model_type", ["body"]),
    ],
)
def test_a_bad_body_is_a_validation_error_in_body_without_the_input(
    raw: bytes, content_type: str | None, kind: str, loc: list[str]
) -> None:
    with pytest.raises(RequestValidationError) as caught:
        model_of(ErasureIn, raw, content_type)
    [error] = caught.value.errors()
    assert error["type"] == kind and list(error["loc"]) == loc
    assert SECRET not in str(caught.value.errors())


def test_an_intake_route_given_another_dependency_is_refused_when_the_app_is_built() -> None:
    """IntakeRoute resolves the bearer token and the body only: a dependency added to its route
    would be skipped silently, so the app refuses to build."""
    from fastapi import Depends, FastAPI

    from sessionctl.api.intake_route import IntakeRoute
    from sessionctl.api.routes_intake import erasure

    def audit() -> None: ...

    app = FastAPI()
    with pytest.raises(TypeError, match="only its bearer token"):
        app.router.add_api_route(
            "/v1/erasures", erasure, methods=["POST"], dependencies=[Depends(audit)], route_class_override=IntakeRoute
        )
